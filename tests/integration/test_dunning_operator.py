"""An operator's pause and end of a dunning case on DynamoDB Local: racing the flow's writes from
separate processes (as separate Lambda containers), each step is recorded exactly once and none is
lost; and the case's steps reach the bus through the table's stream, each once, under the same ids
when the stream is read again."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.dunning import DunningCase, DunningPolicy, Remind, StepKind, reminder_outcome
from billow.domain.errors import ConcurrentModification
from billow.domain.money import Money
from billow.local.dynamodb import DynamoDBLocal
from billow.local.events import StreamPoller, local_bus
from billow.services import contacts
from billow.services.context import SystemClock, TenantContext, edit_versioned, keyed_ids
from billow.services.dunning_cases import OperatorStep, get_case, operate
from billow.services.ports import StoredCase
from billow.services.tenants import tenant_context
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.integration.test_billing_run import setup_tenant
from tests.support import in_processes

pytestmark = pytest.mark.integration

OPENED = date(2027, 3, 1)


class Flows:
    """The `DunningFlows` port of a process: an execution is parked (resumed once), none started."""

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        raise AssertionError("a live case is not restarted")

    def resume(self, token: str) -> bool:
        return True

    def running(self, execution_name: str) -> bool:
        return True


def seed(store: DynamoStore) -> tuple[TenantContext, str]:
    """A tenant, a contact and its open case, decided just now (its execution is live)."""
    ctx = setup_tenant(store)
    contact = contacts.create_contact(
        store, ctx, name="Ann", email="ann@example.com", billing_address=None, classification=None,
        credit_limit=None, preferred_payment_method=None, clock=SystemClock(), new_id=keyed_ids("seed", "dun"),
    )  # fmt: skip
    policy = DunningPolicy(deactivation_threshold={"USD": Money(0, "USD")})
    case = DunningCase.open(contact.id, "USD", 1, policy, OPENED)
    work = store.unit_of_work("case")
    work.save_case(ctx.scope, StoredCase(case, decided_at=datetime.now(UTC)), 0)
    work.commit()
    return ctx, case.id


def flow_reminds(store: DynamoStore, ctx: TenantContext, case_id: str) -> None:
    """The flow's write of a step: recorded on the case as read, conditioned on its version."""

    def save(stored: StoredCase) -> StoredCase:
        work = store.unit_of_work("flow")
        saved = work.save_case(ctx.scope, stored, stored.version)
        work.commit()
        return saved

    def remind(stored: StoredCase) -> StoredCase | None:
        if stored.case.ended or stored.case.reminded >= 2:
            return None
        return StoredCase(stored.case.record(Remind(2), date(2027, 3, 8)), decided_at=datetime.now(UTC))

    edit_versioned(lambda: get_case(store, ctx, case_id), save, remind, "flow")


def _in_own_process(table: str, endpoint: str, case_id: str, who: str, go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    ctx = tenant_context(store, "t1", "test")
    read = store.get_case
    reads: list[int] = []

    def read_then_meet(*args: Any) -> Any:
        found = read(*args)
        reads.append(1)
        if len(reads) == (1 if who == "flow" else 2):  # the read its write is conditioned on
            with contextlib.suppress(threading.BrokenBarrierError):
                met.wait(20)  # every process has read the case before any writes it
        return found

    store.get_case = read_then_meet  # type: ignore[method-assign]
    go.wait()
    try:
        if who == "flow":
            flow_reminds(store, ctx, case_id)
        else:
            operate(store, Flows, ctx, case_id, OperatorStep.PAUSE, f"by {who}", SystemClock())
        out.put((who, "ok"))
    except ConcurrentModification as error:  # pragma: no cover - reported by the assertion
        out.put((who, error.code))


def test_operators_pausing_while_the_flow_records_a_step_record_each_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    ctx, case_id = seed(store)
    who = ["op-1", "op-2", "op-3", "flow", "flow"]
    results = in_processes(
        _in_own_process, [(local_table, dynamodb_local.endpoint, case_id, w) for w in who], meet=len(who)
    )
    assert sorted(results) == sorted((w, "ok") for w in who), results
    case = get_case(store, ctx, case_id).case
    kinds = [s.kind for s in case.history]
    assert kinds.count(StepKind.PAUSE) == 1 and kinds.count(StepKind.REMIND) == 1, kinds
    assert case.status.value == "paused" and case.reminded == 2


class Subscriber:
    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.details.append(event["detail"])


def test_the_cases_steps_reach_the_bus_once_each_and_a_wake_publishes_nothing(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    subscriber = Subscriber()
    unsubscribe: Callable[[], None] = local_bus().subscribe(None, subscriber)
    try:
        poller = StreamPoller(dynamodb_local.endpoint, local_table)
        ctx, case_id = seed(store)
        stored = get_case(store, ctx, case_id)
        work = store.unit_of_work("flow")
        reminded = stored.case.record(Remind(1), OPENED, reminder_outcome(Money(3_100, "USD")))
        work.save_case(ctx.scope, StoredCase(reminded, decided_at=datetime.now(UTC)), stored.version)
        work.commit()
        assert store.park_case(ctx.scope, case_id, 0, "token")
        operate(store, Flows, ctx, case_id, OperatorStep.PAUSE, "disputed", SystemClock())  # a write, then a wake
        operate(store, Flows, ctx, case_id, OperatorStep.PAUSE, "again", SystemClock())  # a wake alone
        # An operator's end of a case still owed (this contact owes nothing, so `operate` would
        # leave the case to end by itself): its write, as `operate` makes it.
        paused = get_case(store, ctx, case_id)
        work = store.unit_of_work("operator")
        work.save_case(
            ctx.scope, replace(paused, case=paused.case.ended_by_operator(OPENED, "settled")), paused.version
        )
        work.commit()
        poller.drain()
        dunning = [d for d in subscriber.details if d["type"].startswith("dunning.")]
        assert [d["type"] for d in dunning] == [
            "dunning.case_opened",
            "dunning.reminder_due",
            "dunning.case_paused",
            "dunning.case_ended",
        ]
        remind = dunning[1]["data"]
        assert remind["number"] == 1 and remind["owed"] == {"amount": "31.00", "currency": "USD"}
        assert dunning[3]["data"]["why"] == "operator" and dunning[3]["data"]["service_ids"] == []
        assert {d["tenant_id"] for d in dunning} == {"t1"} and {d["mode"] for d in dunning} == {"test"}
        before = len(subscriber.details)
        StreamPoller(dynamodb_local.endpoint, local_table).drain()  # the stream read again from the start
        again = [d for d in subscriber.details[before:] if d["type"].startswith("dunning.")]
        assert [d["id"] for d in again] == [d["id"] for d in dunning], "a redelivery: the very same ids"
    finally:
        unsubscribe()
