"""The dunning function on moto: its events (a case opened by payment.failed, woken by a payment),
the state machine's tasks with their output, the hourly schedule, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import runtime
from billow.domain.errors import InvalidInput, NotFound, TemporaryFailure
from billow.gateways.events import CONSUMER_RULES, consumer_of
from billow.gateways.invoke import handler_of
from billow.local.events import sqs_message
from billow.local.lambda_runtime import invoke
from billow.services import time_travel
from billow.storage.repository import DynamoStore

from tests.dunning_support import START, Clock, Debtor, RecordingFlows, seed_debtor
from tests.fake_rail import FakeRail
from tests.support import RecordingInvoker

DUNNING = "dunning.handler.lambda_handler"


@pytest.fixture
def wired(moto_table: str, tmp_path: Path) -> Iterator[tuple[DynamoStore, FakeRail, RecordingFlows]]:
    """The handler's runtime with the fake rail, the recording flows and a fixed clock."""
    rail, flows = FakeRail(tmp_path / "rail.db"), RecordingFlows(tmp_path / "flows.db")
    runtime.payment_gateway = lambda scope: rail  # type: ignore[attr-defined]
    runtime.flows = flows  # type: ignore[attr-defined]
    runtime.clock = Clock()  # type: ignore[attr-defined]
    yield DynamoStore(), rail, flows
    for name in ("payment_gateway", "flows", "clock"):
        delattr(runtime, name)


def _event(debtor: Debtor, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    detail = {
        "id": f"evt_{kind}",
        "type": kind,
        "version": 1,
        "tenant_id": debtor.ctx.tenant_id,
        "mode": debtor.ctx.mode,
        "contact_id": debtor.contact_id,
        "data": data,
    }
    return {"source": "billow", "detail-type": f"billow.{kind}", "detail": detail}


def test_the_dunning_rule_feeds_the_dunning_function() -> None:
    assert handler_of(consumer_of("dunning")) == DUNNING
    assert "billow.payment.failed" in CONSUMER_RULES["dunning"]["detail-type"]
    assert "billow.payment_method.saved" in CONSUMER_RULES["dunning"]["detail-type"]


def test_payment_failed_opens_a_case_and_tasks_run_it(wired: tuple[DynamoStore, FakeRail, RecordingFlows]) -> None:
    store, rail, flows = wired
    debtor = seed_debtor(store, rail, clock=runtime.clock)  # type: ignore[attr-defined]
    failed = sqs_message(_event(debtor, "payment.failed", {"invoice_id": debtor.invoice.id}))
    stranger = sqs_message({"source": "elsewhere"})
    answer = invoke(DUNNING, {"Records": [failed, stranger]})
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [stranger["messageId"]]
    case_id = f"dun_{debtor.contact_id}_USD_1"
    assert flows.started == [case_id]
    stored = store.get_case(debtor.ctx.scope, case_id)
    assert stored is not None
    (opening,) = stored.case.history
    assert opening.targets == (debtor.invoice.id,) and opening.opened_by == "payment.failed", "what opened it"

    task = {"tenant_id": "t1", "mode": "test", "case_id": case_id}
    decided = invoke(DUNNING, {"task": "decide", **task})
    assert decided == {**task, "action": "remind", "due": "2025-03-03", "wake_seq": 0}
    reminded = invoke(DUNNING, {"task": "remind", **task})
    assert reminded == {**task, "action": "wait", "due": "2025-03-04", "wake_seq": 0}
    assert invoke(DUNNING, {"task": "park", **task, "wake_seq": 0, "token": "tok-1"}) == {}

    paid = sqs_message(_event(debtor, "payment_method.saved", {"payment_method_id": "pm_new"}))
    assert invoke(DUNNING, {"Records": [paid]})["batchItemFailures"] == []
    assert flows.resumed == ["tok-1"]


def test_the_schedule_wakes_due_cases(wired: tuple[DynamoStore, FakeRail, RecordingFlows]) -> None:
    store, rail, flows = wired
    debtor = seed_debtor(store, rail, clock=runtime.clock)  # type: ignore[attr-defined]
    invoke(DUNNING, {"Records": [sqs_message(_event(debtor, "payment.failed", {"invoice_id": debtor.invoice.id}))]})
    task = {"tenant_id": "t1", "mode": "test", "case_id": f"dun_{debtor.contact_id}_USD_1"}
    invoke(DUNNING, {"task": "park", **task, "wake_seq": 0, "token": "tok-1"})
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2025-03-03T11:00:00Z"}
    assert invoke(DUNNING, scheduled) == {"woken": 1, "seen": 1, "done": True}  # due today: its opening day
    assert flows.resumed == ["tok-1"]


def test_a_task_it_does_not_know_or_of_no_tenant_is_refused(
    wired: tuple[DynamoStore, FakeRail, RecordingFlows],
) -> None:
    with pytest.raises(InvalidInput):
        invoke(DUNNING, {"task": "charge_twice", "tenant_id": "t1", "mode": "test", "case_id": "dun_c_USD_1"})
    with pytest.raises(NotFound):
        invoke(DUNNING, {"task": "decide", "tenant_id": "nobody", "mode": "test", "case_id": "dun_c_USD_1"})


def test_a_test_clock_advance_wakes_the_contacts_case_once_it_is_billed(
    wired: tuple[DynamoStore, FakeRail, RecordingFlows],
) -> None:
    store, rail, flows = wired
    debtor = seed_debtor(store, rail, clock=runtime.clock, test_clock=True)  # type: ignore[attr-defined]
    invoke(DUNNING, {"Records": [sqs_message(_event(debtor, "payment.failed", {"invoice_id": debtor.invoice.id}))]})
    task = {"tenant_id": "t1", "mode": "test", "case_id": f"dun_{debtor.contact_id}_USD_1"}
    invoke(DUNNING, {"task": "park", **task, "wake_seq": 0, "token": "tok-1"})
    held = RecordingInvoker()
    to = START + timedelta(days=2)
    time_travel.request_advance(store, debtor.ctx, debtor.contact_id, to, held)
    assert flows.resumed == []  # moved, not billed yet: not woken
    ((_, event),) = held.events
    invoke("clock_advance.handler.lambda_handler", event)
    assert flows.resumed == ["tok-1"]
    decided = invoke(DUNNING, {"task": "decide", **task})
    assert decided["action"] == "retry"  # on the clock's day: the first retry (day 1) is due
    stored = store.get_case(debtor.ctx.scope, task["case_id"])
    assert stored is not None and stored.decided_on == to.date()


def test_a_retry_the_rail_could_not_serve_fails_as_temporary_and_its_rerun_charges_once(
    wired: tuple[DynamoStore, FakeRail, RecordingFlows],
) -> None:
    store, rail, _ = wired
    debtor = seed_debtor(store, rail, clock=runtime.clock)  # type: ignore[attr-defined]
    invoke(DUNNING, {"Records": [sqs_message(_event(debtor, "payment.failed", {"invoice_id": debtor.invoice.id}))]})
    task = {"tenant_id": "t1", "mode": "test", "case_id": f"dun_{debtor.contact_id}_USD_1"}
    invoke(DUNNING, {"task": "remind", **task})
    runtime.clock = Clock().days(1)  # type: ignore[attr-defined]
    rail.unavailable_at = rail.requests + 1  # the retry's first rail request answers 503
    with pytest.raises(TemporaryFailure):
        invoke(DUNNING, {"task": "retry", **task})
    assert invoke(DUNNING, {"task": "retry", **task})["action"] == "wait"
    assert [a.status.value for a in store.attempts_of(debtor.ctx.scope, debtor.contact_id)] == ["failed", "failed"]
    assert len(rail.charges()) == 2


def test_the_functions_flows_follow_the_environment_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """`runtime.flows` is made once per process; a process running one local stack after another
    (the e2e tests) must reach each stack's own Step Functions, not the first one's (found when
    the dunning e2e ran after another e2e module: its starts went to a stopped server)."""
    from billow.gateways import flows as gateway

    reached: list[tuple[str, str | None]] = []
    monkeypatch.setattr(
        gateway.StepFunctionsFlows,
        "start",
        lambda self, name, payload: reached.append((self.state_machine_arn, self.endpoint)),
    )
    kept = gateway.EnvironmentFlows()
    for port in (1111, 2222):
        monkeypatch.setenv(gateway.STATE_MACHINE_ENV, f"arn:aws:states:us-east-1:123456789012:stateMachine:m{port}")
        monkeypatch.setenv(gateway.ENDPOINT_ENV, f"http://127.0.0.1:{port}")
        kept.start("dun_c_USD_1", {})
    assert [endpoint for _, endpoint in reached] == ["http://127.0.0.1:1111", "http://127.0.0.1:2222"]
