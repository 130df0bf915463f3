"""The "invoke a function asynchronously" port, and its AWS implementation.

Work that must not run on a request's path (a test-clock advance) is handed to another function
with an event and no reply. On AWS that is a Lambda `Invoke` with `InvocationType=Event` (queued by
Lambda, retried twice on error); locally `billow.local.invoke.BackgroundInvoker` runs the same
handler in the background. `BILLOW_ASYNC_INVOKER` names the implementation (`module:Class`; the
default is the Lambda one), so handlers never import the local stack.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Protocol

CLOCK_ADVANCE = "clock-advance"
"""The function that bills a test clock's advance (functions/clock_advance)."""


class AsyncInvoker(Protocol):
    def invoke_async(self, concern: str, event: dict[str, Any]) -> None:
        """Queue `event` for the function of `concern` (e.g. "clock-advance"); returns at once."""
        ...


def function_env(concern: str) -> str:
    """The environment variable holding the deployed name of the function of `concern`."""
    return "BILLOW_FUNCTION_" + concern.upper().replace("-", "_")


def handler_of(concern: str) -> str:
    """The handler of the function of `concern`: "clock-advance" -> clock_advance.handler.lambda_handler."""
    return f"{concern.replace('-', '_')}.handler.lambda_handler"


class LambdaInvoker:
    """`Invoke` with `InvocationType=Event`: Lambda queues the event and answers 202 at once."""

    def __init__(self) -> None:
        self._client: Any = None

    def invoke_async(self, concern: str, event: dict[str, Any]) -> None:
        if self._client is None:
            import boto3

            self._client = boto3.client("lambda")
        self._client.invoke(
            FunctionName=os.environ[function_env(concern)],
            InvocationType="Event",
            Payload=json.dumps(event).encode(),
        )


class EnvironmentInvoker:
    """The implementation `BILLOW_ASYNC_INVOKER` names, chosen at the first invocation (not at
    import: a process may import the handlers before its environment is complete)."""

    def __init__(self) -> None:
        self._chosen: AsyncInvoker | None = None

    def invoke_async(self, concern: str, event: dict[str, Any]) -> None:
        if self._chosen is None:
            spec = os.environ.get("BILLOW_ASYNC_INVOKER", "")
            module, _, name = spec.partition(":")
            self._chosen = getattr(importlib.import_module(module), name)() if spec else LambdaInvoker()
        assert self._chosen is not None
        self._chosen.invoke_async(concern, event)
