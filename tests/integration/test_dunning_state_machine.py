"""The dunning state machine, as the local stack runs it: the checked-in artifact of the synthesized
definition (tests/infra checks it is current) executed by moto's server on loopback, its Lambda
tasks routed in-process to a scripted stand-in of the dunning function (tests/dunning_flow_support),
started and resumed through the real gateway (billow.gateways.flows)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from billow.gateways.flows import ENDPOINT_ENV, STATE_MACHINE_ENV, StepFunctionsFlows, flows_from_env
from billow.local.stepfunctions import LocalStepFunctions, load_definition, local_name

from tests import dunning_flow_support as stand_in
from tests.support import eventually

pytestmark = [pytest.mark.integration]

FUNCTION = local_name("dunning")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[LocalStepFunctions, str]]:
    sfn = LocalStepFunctions({FUNCTION: stand_in.HANDLER}, serve=True).start()
    before = {name: os.environ.get(name) for name in (ENDPOINT_ENV, STATE_MACHINE_ENV)}
    try:
        machine = sfn.create(FUNCTION, load_definition("dunning"))
        assert sfn.endpoint is not None and sfn.endpoint.startswith("http://127.0.0.1:")
        os.environ[ENDPOINT_ENV] = sfn.endpoint
        os.environ[STATE_MACHINE_ENV] = machine
        yield sfn, machine
    finally:
        sfn.stop()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _case(case_id: str, *script: str) -> dict[str, Any]:
    stand_in.CASES[case_id] = stand_in.Case(list(script))
    return {"tenant_id": "t_flow", "mode": "test", "case_id": case_id}


def _execution(machine: str, name: str) -> str:
    return machine.replace(":stateMachine:", ":execution:") + f":{name}"


def _parked(case_id: str, tokens: int = 1) -> stand_in.Case:
    case = stand_in.CASES[case_id]
    assert eventually(lambda: case.token is not None and len(case.tokens) >= tokens, timeout=30), case
    return case


def test_a_case_runs_its_steps_parks_and_a_wake_resumes_it_to_its_end(
    server: tuple[LocalStepFunctions, str],
) -> None:
    sfn, machine = server
    payload = _case("dun_c1_EUR_1", "remind", "wait", "retry", "end", "ended")
    flows_from_env().start("dun_c1_EUR_1", payload)

    case = _parked("dun_c1_EUR_1")
    assert case.tasks == ["decide", "remind", "park"]
    assert sfn.describe(_execution(machine, "dun_c1_EUR_1"))["status"] == "RUNNING"
    flows = flows_from_env()
    assert flows.running("dun_c1_EUR_1") and not flows.running("dun_c1_EUR_1-r1")  # never started

    assert stand_in.wake("dun_c1_EUR_1") is True
    done = sfn.wait(_execution(machine, "dun_c1_EUR_1"), timeout_s=30)
    assert done.status == "SUCCEEDED", (done.error, done.cause)
    assert case.tasks == ["decide", "remind", "park", "decide", "retry", "end"]
    assert done.output == {**payload, "action": "ended", "due": None, "wake_seq": 1}
    assert not flows.running("dun_c1_EUR_1")  # ended: a wake may start the next run


def test_a_duplicate_start_is_refused_by_step_functions_and_is_success_for_the_gateway(
    server: tuple[LocalStepFunctions, str],
) -> None:
    sfn, machine = server
    payload = _case("dun_c2_EUR_1", "wait", "ended")
    flows = flows_from_env()
    flows.start("dun_c2_EUR_1", payload)
    _parked("dun_c2_EUR_1")
    flows.start("dun_c2_EUR_1", payload)  # the schedule firing twice
    flows.start("dun_c2_EUR_1", {**payload, "extra": 1})  # another input: ExecutionAlreadyExists
    with pytest.raises(Exception, match="ExecutionAlreadyExists"):
        sfn.client.start_execution(stateMachineArn=machine, name="dun_c2_EUR_1", input=json.dumps({"x": 1}))

    assert stand_in.wake("dun_c2_EUR_1") is True
    assert sfn.wait(_execution(machine, "dun_c2_EUR_1"), timeout_s=30).status == "SUCCEEDED"
    flows.start("dun_c2_EUR_1", payload)  # the event delivered again after the case ended
    executions = sfn.client.list_executions(stateMachineArn=machine)["executions"]
    assert [e["name"] for e in executions].count("dun_c2_EUR_1") == 1
    assert stand_in.CASES["dun_c2_EUR_1"].tasks == ["decide", "park", "decide"]  # never run twice


def test_a_token_takes_one_answer_a_used_one_is_refused(server: tuple[LocalStepFunctions, str]) -> None:
    sfn, machine = server
    _case_payload = _case("dun_c3_EUR_1", "wait", "wait", "ended")
    flows_from_env().start("dun_c3_EUR_1", _case_payload)
    first = _parked("dun_c3_EUR_1").token
    assert first is not None
    assert stand_in.wake("dun_c3_EUR_1") is True
    case = _parked("dun_c3_EUR_1", tokens=2)  # parked again, with a new token
    assert case.token != first
    # A late wake holding the first token: the execution moved on; it is not resumed by it.
    assert flows_from_env().resume(first) is False
    assert sfn.describe(_execution(machine, "dun_c3_EUR_1"))["status"] == "RUNNING"
    assert case.tasks == ["decide", "park", "decide", "park"]

    assert stand_in.wake("dun_c3_EUR_1") is True
    assert sfn.wait(_execution(machine, "dun_c3_EUR_1"), timeout_s=30).status == "SUCCEEDED"
    assert flows_from_env().resume(case.tokens[-1]) is False  # its execution ended


def test_a_wake_between_the_decision_and_the_park_resumes_it_at_once(
    server: tuple[LocalStepFunctions, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sfn, machine = server
    payload = _case("dun_c4_EUR_1", "remind", "wait", "ended")
    # The wake lands after `remind` decided "wait" (wake_seq 0) and before `park` ran: simulated by
    # bumping wake_seq once the remind task ran, before the park is invoked.
    original = stand_in._decision

    def decide_then_wake(event: dict[str, Any], case: stand_in.Case) -> dict[str, Any]:
        decision = original(event, case)
        if event["task"] == "remind":
            case.wake_seq += 1  # nothing parked yet: nothing to resume
        return decision

    monkeypatch.setattr(stand_in, "_decision", decide_then_wake)
    flows_from_env().start("dun_c4_EUR_1", payload)
    done = sfn.wait(_execution(machine, "dun_c4_EUR_1"), timeout_s=30)
    assert done.status == "SUCCEEDED", (done.error, done.cause)
    assert stand_in.CASES["dun_c4_EUR_1"].tasks == ["decide", "remind", "park", "decide"]


def test_a_park_that_times_out_decides_again(server: tuple[LocalStepFunctions, str]) -> None:
    """moto honours a task's TimeoutSeconds (in real seconds): the artifact's day is made 2 s."""
    sfn, _ = server
    definition = json.loads(load_definition("dunning"))
    assert definition["States"]["Park"]["TimeoutSeconds"] == 86400
    definition["States"]["Park"]["TimeoutSeconds"] = 2
    machine = sfn.create(f"{FUNCTION}-short-park", json.dumps(definition))
    flows = StepFunctionsFlows(machine, sfn.endpoint)
    payload = _case("dun_c5_EUR_1", "wait", "ended")
    flows.start("dun_c5_EUR_1", payload)

    done = sfn.wait(_execution(machine, "dun_c5_EUR_1"), timeout_s=30)
    assert done.status == "SUCCEEDED", (done.error, done.cause)
    case = stand_in.CASES["dun_c5_EUR_1"]
    assert case.tasks == ["decide", "park", "decide"]  # nobody woke it: the timeout did
    history = sfn.client.get_execution_history(executionArn=_execution(machine, "dun_c5_EUR_1"))["events"]
    assert "TaskTimedOut" in {event["type"] for event in history}
    assert flows.resume(case.tokens[0]) is False  # the timed-out token


def test_any_other_refusal_is_raised_not_taken_for_success(server: tuple[LocalStepFunctions, str]) -> None:
    from billow.local.stepfunctions import state_machine_arn
    from botocore.exceptions import ClientError

    sfn, _ = server
    missing = StepFunctionsFlows(state_machine_arn("billow-local-no-such-machine"), sfn.endpoint)
    with pytest.raises(ClientError, match="StateMachineDoesNotExist"):
        missing.start("dun_c6_EUR_1", {"tenant_id": "t", "mode": "test", "case_id": "dun_c6_EUR_1"})
