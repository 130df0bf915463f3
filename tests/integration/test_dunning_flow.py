"""The dunning function run by the dunning state machine itself: the synthesized definition
(billow.local.definitions, tests/infra checks it is current) executed by moto's Step Functions on
loopback, its Lambda tasks routed in-process to functions/dunning, on DynamoDB Local. A declining
card's case is reminded, parked; the hourly wake on day 1 retries it, on day 2 deactivates its
service; a payment wakes it, and it reactivates the service and ends: its execution succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import runtime
from billow.domain.dunning import StepKind
from billow.domain.rules import ServiceState
from billow.gateways.flows import ENDPOINT_ENV, STATE_MACHINE_ENV, flows_from_env
from billow.local.stepfunctions import LocalStepFunctions, load_definition, local_name
from billow.services import dunning
from billow.storage.repository import DynamoStore

from tests.dunning_support import Clock, pay, seed_debtor, service_state
from tests.fake_rail import FakeRail
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def machine(
    local_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalStepFunctions, str, FakeRail, Clock]]:
    sfn = LocalStepFunctions({local_name("dunning"): "dunning.handler.lambda_handler"}, serve=True).start()
    try:
        arn = sfn.create(local_name("dunning"), load_definition("dunning"))
        monkeypatch.setenv(ENDPOINT_ENV, sfn.endpoint or "")
        monkeypatch.setenv(STATE_MACHINE_ENV, arn)
        rail, clock = FakeRail(tmp_path / "rail.db"), Clock()
        monkeypatch.setattr(runtime, "payment_gateway", lambda scope: rail, raising=False)
        monkeypatch.setattr(runtime, "clock", clock, raising=False)
        monkeypatch.setattr(runtime, "flows", flows_from_env(), raising=False)
        yield sfn, arn, rail, clock
    finally:
        sfn.stop()


def test_a_case_runs_on_the_state_machine_from_its_failure_to_its_end(
    machine: tuple[LocalStepFunctions, str, FakeRail, Clock],
) -> None:
    sfn, arn, rail, clock = machine
    store = DynamoStore()
    debtor = seed_debtor(store, rail, clock=clock)
    case = dunning.open_case(store, debtor.ctx, debtor.contact_id, "USD", flows_from_env(), clock=clock)
    assert case is not None

    def parked_after(kind: StepKind) -> bool:
        stored = store.get_case(debtor.ctx.scope, case.id)
        return stored is not None and stored.token is not None and stored.case.step is kind

    assert eventually(lambda: parked_after(StepKind.REMIND), timeout=30)
    for days, kind in ((1, StepKind.RETRY), (2, StepKind.DEACTIVATE)):
        clock.instant = Clock().days(days).instant
        assert dunning.wake_due(store, flows_from_env(), clock=clock).woken == 1
        assert eventually(lambda kind=kind: parked_after(kind), timeout=30)  # type: ignore[misc]
    assert [a.number for a in store.attempts_of(debtor.ctx.scope, debtor.contact_id)] == [1, 2]
    assert service_state(store, debtor) is ServiceState.NOT_EFFECTIVE

    pay(store, debtor, clock)
    assert dunning.wake_contact(store, debtor.ctx, debtor.contact_id, flows_from_env, clock=clock) == 1
    done = sfn.wait(arn.replace(":stateMachine:", ":execution:") + f":{case.id}", timeout_s=30)
    assert done.status == "SUCCEEDED", (done.error, done.cause)
    assert done.output == {
        "tenant_id": "t1",
        "mode": "test",
        "case_id": case.id,
        "action": "ended",
        "due": None,
        "wake_seq": 3,
    }
    assert service_state(store, debtor) is ServiceState.EFFECTIVE
    stored = store.get_case(debtor.ctx.scope, case.id)
    assert stored is not None and [s.kind.value for s in stored.case.history] == [
        "open",
        "remind",
        "retry",
        "deactivate",
        "end",
    ]
