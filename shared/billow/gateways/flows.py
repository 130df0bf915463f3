"""The dunning flows port (`DunningFlows`, billow.services.ports) on Step Functions.

Each dunning case runs as one execution of the state machine `billow-<stage>-dunning`
(infra/billow_infra/dunning.py), named after the case: `start` is StartExecution, `resume` is
SendTaskSuccess on the task token its `Park` state waits with. The machine's ARN is in
`BILLOW_DUNNING_STATE_MACHINE_ARN`; locally `BILLOW_STEPFUNCTIONS_ENDPOINT` points the client at the
local stack's moto server (billow.local.stepfunctions). boto3 is imported at the first call, not at
import (cold start).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from functools import cache
from typing import Any

DUNNING = "dunning"
"""The concern of the dunning state machine and of its function (billow-<stage>-dunning)."""


def state_machine_env(concern: str) -> str:
    """The variable holding the ARN of the state machine of `concern`: "dunning" -> STATE_MACHINE_ENV."""
    return f"BILLOW_{concern.upper().replace('-', '_')}_STATE_MACHINE_ARN"


STATE_MACHINE_ENV = state_machine_env(DUNNING)  # BILLOW_DUNNING_STATE_MACHINE_ARN
WAKE_EVERY = timedelta(hours=1)
"""The dunning function's wake schedule (EventBridge on AWS, billow.local.scheduler locally): it
wakes the cases whose day came."""
ENDPOINT_ENV = "BILLOW_STEPFUNCTIONS_ENDPOINT"
TOKEN_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})
"""SendTaskSuccess's refusals of a token nothing waits on any more: the task was resumed already,
timed out, or its execution ended. Its execution (if any) has moved on and re-reads the case."""


@cache
def _client(region: str, endpoint: str | None) -> Any:
    import boto3

    return boto3.client("stepfunctions", region_name=region, endpoint_url=endpoint or None)


def _error_code(error: Exception) -> str:
    response: dict[str, Any] = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))


class StepFunctionsFlows:
    def __init__(self, state_machine_arn: str, endpoint: str | None = None) -> None:
        self.state_machine_arn = state_machine_arn
        self.endpoint = endpoint
        self._region = state_machine_arn.split(":")[3]  # arn:aws:states:<region>:<account>:stateMachine:<name>

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        """StartExecution; an execution of that name existing already is success (Step Functions
        refuses a second one, running or ended: that is the point of naming it)."""
        from botocore.exceptions import ClientError

        try:
            _client(self._region, self.endpoint).start_execution(
                stateMachineArn=self.state_machine_arn, name=execution_name, input=json.dumps(payload)
            )
        except ClientError as error:
            if _error_code(error) != "ExecutionAlreadyExists":
                raise

    def resume(self, token: str) -> bool:
        """SendTaskSuccess(token, "{}"): True if the parked task took it, False if the token waits
        no more (`TOKEN_GONE`)."""
        from botocore.exceptions import ClientError

        try:
            _client(self._region, self.endpoint).send_task_success(taskToken=token, output="{}")
        except ClientError as error:
            if _error_code(error) in TOKEN_GONE:
                return False
            raise
        return True

    def running(self, execution_name: str) -> bool:
        """DescribeExecution of the execution of that name: RUNNING; an execution that does not exist
        (never started: a crash between a case's write and its start) is not running."""
        from botocore.exceptions import ClientError

        machine = self.state_machine_arn.split(":")
        execution_arn = ":".join([*machine[:5], "execution", machine[6], execution_name])
        try:
            described = _client(self._region, self.endpoint).describe_execution(executionArn=execution_arn)
        except ClientError as error:
            if _error_code(error) == "ExecutionDoesNotExist":
                return False
            raise
        return bool(described["status"] == "RUNNING")


def flows_from_env() -> StepFunctionsFlows:
    """The flows of this function's environment (read now, not at import)."""
    return StepFunctionsFlows(os.environ[STATE_MACHINE_ENV], os.environ.get(ENDPOINT_ENV) or None)


class EnvironmentFlows:
    """`DunningFlows` on the state machine the environment names at each call (`flows_from_env`): what
    a function keeps for its lifetime (`runtime.flows`). On AWS the environment never changes; a
    process that runs one local stack after another (the e2e tests) reaches each stack's own."""

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        flows_from_env().start(execution_name, payload)

    def resume(self, token: str) -> bool:
        return flows_from_env().resume(token)

    def running(self, execution_name: str) -> bool:
        return flows_from_env().running(execution_name)
