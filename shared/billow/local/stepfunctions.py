"""Step Functions without AWS: the state machines CDK synthesizes, executed by moto's ASL
interpreter, with their Lambda tasks routed in-process to the very handlers in functions/.

    with LocalStepFunctions({"billow-test-billing-run": "billing_run.handler.lambda_handler"}) as sfn:
        arn = sfn.create(name, resolve_definition(template, logical_id))
        result = sfn.run(arn, execution_name, input)

By default moto is in-process (`mock_aws`: boto3 clients of this process reach it); with
`serve=True` it is moto's server on 127.0.0.1 and a free port (`endpoint`), which handlers in other
processes reach over HTTP (the local stack's dunning flows, `BILLOW_STEPFUNCTIONS_ENDPOINT`). Either
way only the Lambda calls are intercepted: anything else the handlers do (DynamoDB Local over HTTP)
goes where it would go without moto. One at a time per process: moto's backends and the patches
below are the process's.

Two patches make moto's interpreter do what Step Functions does (docs/dunning.md "Locally"):
- its docker-less Lambda backend's `invoke` runs the function's handler in-process (an unhandled
  error comes back as Lambda reports one, so Retry/Catch match its `errorType`);
- a task token is good for one answer: SendTaskSuccess/Failure on a token whose task was answered
  already, timed out or was stopped raises `TaskTimedOut` (moto would accept it silently while its
  execution runs).

The state machines the local stack runs are checked-in artifacts of the synthesized definitions
(`definitions/<concern>.asl.json`, `make definitions`, `local_definition`): tests/infra fails when
one differs from what CDK synthesizes.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

ACCOUNT = "123456789012"
REGION = "us-east-1"
MOTO_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
LOCAL_STAGE = "local"
DEFINITIONS_DIR = Path(__file__).with_name("definitions")
LOCAL_MACHINES = ("dunning",)
"""Concerns of the state machines the local stack runs, each from its artifact in DEFINITIONS_DIR."""


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def local_name(concern: str) -> str:
    """`billow-local-<concern>`: a function's or state machine's name in the local stack."""
    return f"billow-{LOCAL_STAGE}-{concern}"


def state_machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def resolve_definition(
    template: dict[str, Any], state_machine_id: str, function_name: Callable[[str], str] = str
) -> str:
    """The state machine's DefinitionString with CloudFormation references resolved: Lambda
    functions to moto ARNs by their FunctionName (mapped by `function_name`), pseudo parameters to
    the local account."""
    resources = template["Resources"]

    def value(node: Any) -> Any:
        if isinstance(node, str):
            return node
        if "Fn::Join" in node:
            separator, parts = node["Fn::Join"]
            return separator.join(str(value(p)) for p in parts)
        if "Fn::GetAtt" in node:
            logical_id, attribute = node["Fn::GetAtt"]
            resource = resources[logical_id]
            if resource["Type"] == "AWS::Lambda::Function" and attribute == "Arn":
                return function_arn(function_name(resource["Properties"]["FunctionName"]))
            raise ValueError(f"cannot resolve {logical_id}.{attribute} locally")
        if "Ref" in node:
            pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
            if node["Ref"] in pseudo:
                return pseudo[node["Ref"]]
            raise ValueError(f"cannot resolve Ref {node['Ref']} locally")
        raise ValueError(f"unsupported intrinsic {node}")

    definition = value(resources[state_machine_id]["Properties"]["DefinitionString"])
    json.loads(definition)  # fail here, not in the interpreter, if it is not JSON
    return str(definition)


def local_definition(template: dict[str, Any], stage: str, concern: str) -> str:
    """The definition of the state machine `billow-<stage>-<concern>` of a synthesized template as
    the local stack runs it: resolved, its functions renamed to the local stage, indented JSON (the
    artifact `definitions/<concern>.asl.json`, whatever stage the template was synthesized for)."""
    prefix = f"billow-{stage}-"
    resources = template["Resources"]
    [machine_id] = [
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
        and resource["Properties"].get("StateMachineName") == prefix + concern
    ]
    definition = resolve_definition(
        template, machine_id, lambda name: local_name(name.removeprefix(prefix)) if name.startswith(prefix) else name
    )
    return json.dumps(json.loads(definition), indent=2) + "\n"


def definition_file(concern: str) -> Path:
    return DEFINITIONS_DIR / f"{concern}.asl.json"


def write_definitions(template: dict[str, Any], stage: str) -> list[Path]:
    """`make definitions`: the artifact of every state machine the local stack runs."""
    written = []
    for concern in LOCAL_MACHINES:
        path = definition_file(concern)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(local_definition(template, stage, concern), encoding="utf-8")
        written.append(path)
    return written


def load_definition(concern: str) -> str:
    return definition_file(concern).read_text(encoding="utf-8")


@dataclass
class Execution:
    status: str
    output: Any
    error: str | None
    cause: str | None


@contextmanager
def _patched(handlers: dict[str, str], invocations: list[tuple[str, dict[str, Any]]]) -> Iterator[None]:
    """moto made to do what AWS does for Billow (the module's docstring): Lambda tasks run the
    handlers in-process; a task token takes one answer."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.exceptions import AWSError
    from moto.stepfunctions.parser.asl.eval.callback.callback import CallbackOutcome, CallbackPoolManager

    from billow.local.lambda_runtime import invoke

    def routed(
        backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        name = function_name.rsplit(":function:", 1)[-1].split(":")[0]
        event = json.loads(body or "{}")
        invocations.append((name, event))
        try:
            return json.dumps(invoke(handlers[name], event), default=str).encode()
        except Exception as error:  # what Lambda reports for an unhandled error
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "stackTrace": traceback.format_exception(error)[-3:],
                }
            ).encode()

    original_notify = CallbackPoolManager.notify

    def answered_once(pool: CallbackPoolManager, callback_id: str, outcome: CallbackOutcome) -> bool:
        endpoint = pool.get(callback_id)
        # Set once the task stopped waiting on it: answered, timed out, or interrupted.
        if endpoint is not None and endpoint._notify_event.is_set():
            raise AWSError("Task Timed Out: its task is not waiting any more", exception_type="TaskTimedOut")
        return bool(original_notify(pool, callback_id, outcome))

    with (
        mock.patch.object(LambdaSimpleBackend, "invoke", routed),
        mock.patch.object(CallbackPoolManager, "notify", answered_once),
    ):
        yield


class LocalStepFunctions:
    def __init__(self, handlers: dict[str, str], *, serve: bool = False) -> None:
        self._handlers = handlers
        self._serve = serve
        self._stack = ExitStack()
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        self.endpoint: str | None = None
        """The server's URL (`serve=True`), for clients in other processes."""
        self.client: Any = None
        """Its Step Functions client (once started)."""
        self._machines: list[str] = []

    def __enter__(self) -> LocalStepFunctions:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> LocalStepFunctions:
        import boto3

        make_client: Any = boto3.client  # by a service name held in a str

        try:
            self._stack.enter_context(_patched(self._handlers, self.invocations))
            client: Callable[[str], Any]
            if self._serve:
                self.endpoint = self._stack.enter_context(_server())
                endpoint = self.endpoint

                def client(service: str) -> Any:
                    return make_client(
                        service,
                        region_name=REGION,
                        endpoint_url=endpoint,
                        aws_access_key_id="local",
                        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
                    )

            else:
                from moto import mock_aws

                self._stack.enter_context(mock_aws(config=MOTO_CONFIG))

                def client(service: str) -> Any:
                    return make_client(service, region_name=REGION)

            iam = client("iam")
            self._role = iam.create_role(RoleName="billow-local-sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
            lambdas = client("lambda")
            for name in self._handlers:
                lambdas.create_function(
                    FunctionName=name,
                    Runtime="python3.12",
                    Role=self._role,
                    Handler="routed.in_process",
                    Code={"ZipFile": b"routed in-process"},
                )
            self.client = client("stepfunctions")
        except BaseException:
            self._stack.close()
            raise
        return self

    def stop(self) -> None:
        """Stops the executions still running (server only: an in-process mock ends with its
        context), then moto."""
        try:
            if self._serve:
                for machine in self._machines:
                    for running in self.client.list_executions(stateMachineArn=machine, statusFilter="RUNNING")[
                        "executions"
                    ]:
                        self.client.stop_execution(executionArn=running["executionArn"])
        finally:
            self._stack.close()

    def create(self, name: str, definition: str) -> str:
        arn: str = self.client.create_state_machine(name=name, definition=definition, roleArn=self._role)[
            "stateMachineArn"
        ]
        self._machines.append(arn)
        return arn

    def run(self, state_machine_arn: str, name: str, payload: dict[str, Any], timeout_s: float = 120) -> Execution:
        """Start a named execution and wait for it to end."""
        execution = self.client.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )["executionArn"]
        return self.wait(execution, timeout_s)

    def describe(self, execution_arn: str) -> dict[str, Any]:
        described: dict[str, Any] = self.client.describe_execution(executionArn=execution_arn)
        return described

    def wait(
        self, execution_arn: str, timeout_s: float = 120, until: Callable[[dict[str, Any]], bool] | None = None
    ) -> Execution:
        """Wait for the execution to end (or for `until(description)` to hold) and describe it."""
        deadline = time.monotonic() + timeout_s
        while True:
            described = self.describe(execution_arn)
            if described["status"] != "RUNNING" or (until is not None and until(described)):
                output = described.get("output")
                return Execution(
                    described["status"],
                    None if output is None else json.loads(output),
                    described.get("error"),
                    described.get("cause"),
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still running after {timeout_s} s")
            time.sleep(0.05)


@contextmanager
def _server() -> Iterator[str]:
    """moto's server on 127.0.0.1 and a free port, executing state machines, its Lambda docker-less
    (the config is the process's while it runs), its interpreter calling Lambda on it; its backends
    emptied before and after (moto's backends are the process's)."""
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer
    from moto.stepfunctions.parser.asl.utils import boto_client

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request, in tests and `make run`
    with ExitStack() as stack:
        stack.enter_context(mock.patch.dict(default_user_config, MOTO_CONFIG))
        _reset_backends()
        stack.callback(_reset_backends)
        server.start()
        stack.callback(server.stop)
        host, port = server.get_host_and_port()
        # The interpreter calls Lambda at localhost:<MOTO_PORT> when not in-process.
        stack.enter_context(mock.patch.object(boto_client, "moto_server_port", lambda: str(port)))
        yield f"http://{host}:{port}"


def _reset_backends() -> None:
    from moto.awslambda_simple.models import lambda_simple_backends
    from moto.iam.models import iam_backends
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    for backends in (stepfunctions_parser_backends, lambda_simple_backends, iam_backends):
        if ACCOUNT in backends:
            backends[ACCOUNT].reset()
