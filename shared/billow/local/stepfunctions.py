"""Step Functions without AWS: the state machines CDK synthesizes, executed by moto's ASL
interpreter, with their Lambda tasks routed in-process to the very handlers in functions/.

    with LocalStepFunctions({"billow-test-billing-run": "billing_run.handler.lambda_handler"}) as sfn:
        arn = sfn.create(name, resolve_definition(template, logical_id))
        result = sfn.run(arn, execution_name, input)

Only the Lambda calls are intercepted: anything else the handlers do (DynamoDB Local over HTTP)
goes where it would go without moto.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
MOTO_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def resolve_definition(template: dict[str, Any], state_machine_id: str) -> str:
    """The state machine's DefinitionString with CloudFormation references resolved: Lambda
    functions to moto ARNs by their FunctionName, pseudo parameters to the local account."""
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
                return function_arn(resource["Properties"]["FunctionName"])
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


@dataclass
class Execution:
    status: str
    output: Any
    error: str | None
    cause: str | None


class LocalStepFunctions:
    def __init__(self, handlers: dict[str, str]) -> None:
        self._handlers = handlers
        self._stack: AbstractContextManager[Any] | None = None
        self.invocations: list[tuple[str, dict[str, Any]]] = []

    def __enter__(self) -> LocalStepFunctions:
        self._stack = self._mocked()
        self._stack.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stack is not None
        self._stack.__exit__(*exc)

    @contextmanager
    def _mocked(self) -> Iterator[None]:
        import boto3
        from moto import mock_aws
        from moto.awslambda_simple.models import LambdaSimpleBackend

        from billow.local.lambda_runtime import invoke

        handlers, invocations = self._handlers, self.invocations

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

        original = LambdaSimpleBackend.invoke
        LambdaSimpleBackend.invoke = routed  # type: ignore[method-assign,assignment]
        try:
            with mock_aws(config=MOTO_CONFIG):
                iam = boto3.client("iam", region_name=REGION)
                role = iam.create_role(RoleName="billow-local-sfn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
                self._role = role
                lambdas = boto3.client("lambda", region_name=REGION)
                for name in handlers:
                    lambdas.create_function(
                        FunctionName=name,
                        Runtime="python3.12",
                        Role=role,
                        Handler="routed.in_process",
                        Code={"ZipFile": b"routed in-process"},
                    )
                self._client = boto3.client("stepfunctions", region_name=REGION)
                yield
        finally:
            LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]

    def create(self, name: str, definition: str) -> str:
        arn: str = self._client.create_state_machine(name=name, definition=definition, roleArn=self._role)[
            "stateMachineArn"
        ]
        return arn

    def run(self, state_machine_arn: str, name: str, payload: dict[str, Any], timeout_s: float = 120) -> Execution:
        """Start a named execution and wait for it to end."""
        execution = self._client.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
        )["executionArn"]
        deadline = time.monotonic() + timeout_s
        while True:
            described = self._client.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                output = described.get("output")
                return Execution(
                    described["status"],
                    None if output is None else json.loads(output),
                    described.get("error"),
                    described.get("cause"),
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {name} still running after {timeout_s} s")
            time.sleep(0.05)
