"""Dunning cases on DynamoDB Local, racing as separate processes (separate Lambda containers) and
with faults injected: one case per debt however many open it at once, one charge per retry however
often and however it dies, no deactivation once the debt is paid, nothing after the end, one resume
per parked execution however many wake it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from billow.domain.dunning import CaseStatus, StepKind
from billow.domain.rules import ServiceState
from billow.local.dynamodb import DynamoDBLocal
from billow.services import dunning
from billow.services.billing import InvoiceNumbers
from billow.services.context import Scope, TenantContext
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.dunning_support import (
    START,
    Clock,
    Debtor,
    RecordingFlows,
    logged,
    opened,
    pay,
    seed_debtor,
    service_state,
    step,
    take_steps,
)
from tests.fake_rail import Crash, FakeRail
from tests.support import in_processes

pytestmark = pytest.mark.integration

SCOPE = Scope("t1", "test")


@pytest.fixture
def store(local_table: str) -> DynamoStore:
    return DynamoStore()


def _context(store: DynamoStore) -> TenantContext:
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    return TenantContext(SCOPE.tenant_id, SCOPE.mode, settings)


def _step(store: DynamoStore, case_id: str, kind: StepKind, clock: Clock, rail: FakeRail) -> dunning.Decided:
    numbers = InvoiceNumbers(store)
    return dunning.take_step(store, _context(store), case_id, kind, clock=clock, gateway=rail, numbers=numbers)


# -- processes ---------------------------------------------------------------------------------------
def _opener(table: str, endpoint: str, flows_path: str, contact_id: str, go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    go.wait()
    met.wait()
    case = dunning.open_case(store, _context(store), contact_id, "USD", RecordingFlows(Path(flows_path)), clock=Clock())
    out.put(None if case is None else case.id)


def test_two_openers_in_separate_processes_make_one_case_and_one_start(
    store: DynamoStore, local_table: str, dynamodb_local: DynamoDBLocal, tmp_path: Path
) -> None:
    debtor = seed_debtor(store, FakeRail(tmp_path / "rail.db"))
    flows_path = str(tmp_path / "flows.db")
    RecordingFlows(Path(flows_path))
    each = [(local_table, dynamodb_local.endpoint, flows_path, debtor.contact_id)] * 3
    opened = in_processes(_opener, each, meet=3)
    case_id = f"dun_{debtor.contact_id}_USD_1"
    assert opened == [case_id] * 3
    assert [c.id for c in store.cases_of(SCOPE, debtor.contact_id)] == [case_id]
    assert RecordingFlows(Path(flows_path)).started == [case_id]


def _retrier(table: str, endpoint: str, rail_path: str, case_id: str, go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    go.wait()
    met.wait()
    decided = _step(store, case_id, StepKind.RETRY, Clock().days(1), FakeRail(Path(rail_path)))
    out.put(decided.action)


def test_a_retry_run_by_two_processes_at_once_charges_once(
    store: DynamoStore, local_table: str, dynamodb_local: DynamoDBLocal, tmp_path: Path
) -> None:
    rail_path = tmp_path / "rail.db"
    debtor = seed_debtor(store, FakeRail(rail_path))
    case_id = opened(store, debtor, RecordingFlows(tmp_path / "f.db"))
    take_steps(store, debtor, case_id, FakeRail(rail_path), 1)
    each = [(local_table, dynamodb_local.endpoint, str(rail_path), case_id)] * 2
    assert in_processes(_retrier, each, meet=2) == ["wait", "wait"]
    assert [a.number for a in store.attempts_of(SCOPE, debtor.contact_id)] == [1, 2]
    # The card was tried twice: the first charge and one retry. Both processes may create the
    # retry's PaymentIntent (the rail ignores idempotency keys); the one whose attempt record lost
    # cancels its own without confirming it (docs/payments.md), so it never reaches the card.
    tried = [c for c in FakeRail(rail_path).charges() if c.decline_code is not None or c.received.minor > 0]
    assert len(tried) == 2
    assert sorted(c.metadata["attempt_id"] for c in tried) == sorted(
        a.id for a in store.attempts_of(SCOPE, debtor.contact_id)
    )
    stored = store.get_case(SCOPE, case_id)
    assert stored is not None and [s.kind for s in stored.case.history].count(StepKind.RETRY) == 1, stored.case.history


@pytest.mark.parametrize("crash_after", [1, 2])  # after the charge is created; after it is confirmed
def test_a_retry_that_died_after_charging_is_resumed_not_charged_again(
    store: DynamoStore, tmp_path: Path, crash_after: int
) -> None:
    rail = FakeRail(tmp_path / "rail.db")
    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, RecordingFlows(tmp_path / "f.db"))
    take_steps(store, debtor, case_id, rail, 1)
    dying = FakeRail(tmp_path / "rail.db")
    dying.crash_after = crash_after
    with pytest.raises(Crash):
        step(store, debtor, case_id, StepKind.RETRY, Clock().days(1), dying)
    # Run again (the state machine retries the task): the attempt it started is taken on from its
    # record, with the charge the dead run created: no second attempt, no second charge.
    again = step(store, debtor, case_id, StepKind.RETRY, Clock().days(1), FakeRail(tmp_path / "rail.db"))
    assert again.action == "wait"
    attempts = store.attempts_of(SCOPE, debtor.contact_id)
    assert [(a.number, a.status.value) for a in attempts] == [(1, "failed"), (2, "failed")]
    assert len(rail.charges()) == 2
    assert again.stored.case.retried == {f"att_{debtor.invoice.id}_2"}
    after = dunning.decide_case(store, debtor.ctx, case_id, clock=Clock().days(3))
    assert after.action == "retry"  # the schedule goes on from there: attempt 3


class PaidMeanwhile(DynamoStore):
    """A store on which the debt is paid (by another process, a manual payment) right after the
    deactivation step decided and before its write: when it loads the subscription to act on."""

    def __init__(self, debtor: Debtor) -> None:
        super().__init__()
        self.debtor, self.paid = debtor, False

    def load_subscription(self, scope: Scope, contact_id: str, subscription_id: str) -> Any:
        if not self.paid:
            self.paid = True
            pay(DynamoStore(), self.debtor, Clock().days(2))
        return super().load_subscription(scope, contact_id, subscription_id)


def test_a_payment_between_the_decision_and_the_deactivation_ends_the_case_instead(
    store: DynamoStore, tmp_path: Path
) -> None:
    rail = FakeRail(tmp_path / "rail.db")
    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, RecordingFlows(tmp_path / "f.db"))
    take_steps(store, debtor, case_id, rail, 2)
    racing = PaidMeanwhile(debtor)
    day2 = Clock().days(2)
    assert dunning.decide_case(racing, debtor.ctx, case_id, clock=day2).action == "deactivate"
    decided = dunning.take_step(
        racing, _context(store), case_id, StepKind.DEACTIVATE, clock=day2, gateway=rail, numbers=InvoiceNumbers(store)
    )
    assert racing.paid and decided.action == "end"
    assert service_state(store, debtor) is ServiceState.EFFECTIVE
    assert logged(store, debtor, "deactivate") == []
    ended = step(store, debtor, case_id, StepKind.END, day2, rail)
    assert ended.action == "ended" and ended.stored.case.status is CaseStatus.ENDED


def test_a_payment_three_days_after_the_case_ended_changes_nothing(store: DynamoStore, tmp_path: Path) -> None:
    rail = FakeRail(tmp_path / "rail.db")
    flows = RecordingFlows(tmp_path / "f.db")
    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, flows)
    pay(store, debtor, Clock())
    step(store, debtor, case_id, StepKind.END, Clock(), rail)
    ended = store.get_case(SCOPE, case_id)
    late = Clock().days(3)
    # payment.succeeded (a webhook three days late) wakes the contact's open cases: none.
    assert dunning.wake_contact(store, debtor.ctx, debtor.contact_id, lambda: flows, clock=late) == 0
    assert dunning.open_for_invoice(store, debtor.ctx, debtor.invoice.id, flows, clock=late) is None
    assert store.get_case(SCOPE, case_id) == ended
    assert flows.started == [case_id] and flows.resumed == []


def _waker(table: str, endpoint: str, flows_path: str, case_id: str, go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    go.wait()
    met.wait()
    out.put(dunning.wake(store, _context(store), case_id, RecordingFlows(Path(flows_path)), clock=Clock()))


def test_the_schedule_firing_twice_at_once_resumes_the_execution_once(
    store: DynamoStore, local_table: str, dynamodb_local: DynamoDBLocal, tmp_path: Path
) -> None:
    flows_path = tmp_path / "flows.db"
    debtor = seed_debtor(store, FakeRail(tmp_path / "rail.db"))
    case_id = opened(store, debtor, RecordingFlows(flows_path))
    assert dunning.park(store, debtor.ctx, case_id, 0, "tok-1", RecordingFlows(flows_path))
    each = [(local_table, dynamodb_local.endpoint, str(flows_path), case_id)] * 3
    assert sorted(in_processes(_waker, each, meet=3)) == [False, False, True]
    assert RecordingFlows(flows_path).resumed == ["tok-1"]
    stored = store.get_case(SCOPE, case_id)
    assert stored is not None and stored.wake_seq == 3 and stored.token is None
    assert START.date() == stored.case.opened_on
