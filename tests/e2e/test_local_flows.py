"""The local stack runs the dunning flows in moto's Step Functions on loopback: the synthesized
definition (its artifact), its Lambda tasks run in the stack's process, every handler process
pointed at it, and nothing left pointing at it once stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from billow.gateways.flows import ENDPOINT_ENV, STATE_MACHINE_ENV, flows_from_env
from billow.local import stack
from billow.local.stepfunctions import load_definition

from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_the_local_stack_runs_the_dunning_state_machine_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)
    monkeypatch.setenv(STATE_MACHINE_ENV, "arn:aws:states:eu-west-1:000000000000:stateMachine:set-before")
    running = stack.start(schedule=False, stripe=False, workers=1, table_name="billow-e2e-flows")
    try:
        endpoint = os.environ[ENDPOINT_ENV]
        assert endpoint.startswith("http://127.0.0.1:")
        machine = os.environ[STATE_MACHINE_ENV]
        assert machine == "arn:aws:states:us-east-1:123456789012:stateMachine:billow-local-dunning"
        client = boto3.client("stepfunctions", region_name="us-east-1", endpoint_url=endpoint)
        described = client.describe_state_machine(stateMachineArn=machine)
        assert json.loads(described["definition"]) == json.loads(load_definition("dunning"))

        # A handler in another process reaches it by its environment (an unknown token waits for nothing).
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "from billow.gateways.flows import flows_from_env; print(flows_from_env().resume('t'))",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=60,
        )
        assert other.stdout.strip() == "False", other.stderr

        # An execution's tasks are the dunning function, run in this process.
        flows_from_env().start("dun_e2e_EUR_1", {"tenant_id": "t", "mode": "test", "case_id": "dun_e2e_EUR_1"})
        assert running.flows is not None
        assert eventually(lambda: running.flows is not None and running.flows.invocations, timeout=30)
        name, event = running.flows.invocations[0]
        assert name == "billow-local-dunning"
        assert event == {"task": "decide", "tenant_id": "t", "mode": "test", "case_id": "dun_e2e_EUR_1"}
    finally:
        running.stop()
    assert ENDPOINT_ENV not in os.environ
    assert os.environ[STATE_MACHINE_ENV] == "arn:aws:states:eu-west-1:000000000000:stateMachine:set-before"
    with pytest.raises(Exception, match="Could not connect"):
        boto3.client(
            "stepfunctions", region_name="us-east-1", endpoint_url=endpoint, config=_no_retries()
        ).list_state_machines()


def _no_retries() -> object:
    from botocore.config import Config

    return Config(retries={"max_attempts": 0}, connect_timeout=2)
