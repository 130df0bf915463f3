"""Load and invoke the very Lambda handlers of functions/ in-process, as the Lambda runtime would."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billow.local.dynamodb import REPO_ROOT

FUNCTIONS_DIR = REPO_ROOT / "functions"

LOCAL_POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "billow",
    "POWERTOOLS_METRICS_NAMESPACE": "Billow",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


@dataclass
class FakeLambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def prepare_environment(functions_dir: Path = FUNCTIONS_DIR) -> None:
    # Locally metrics are disabled, so "nothing to publish" is expected, not a warning.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    for key, value in LOCAL_POWERTOOLS_ENV.items():
        os.environ.setdefault(key, value)
    # Asynchronous invocations (a test-clock advance) run the handler on a background thread.
    os.environ.setdefault("BILLOW_ASYNC_INVOKER", "billow.local.invoke:BackgroundInvoker")
    # The events publisher puts on the in-process bus (billow.local.events).
    os.environ.setdefault("BILLOW_EVENT_BUS_CLIENT", "billow.local.events:LocalBusClient")
    os.environ.setdefault("BILLOW_EVENT_BUS", "billow-local")
    # Rail secrets (Stripe keys, webhook endpoint secrets) come from the local configuration.
    os.environ.setdefault("BILLOW_SECRETS_SOURCE", "billow.local.secrets:LocalSecrets")
    if str(functions_dir) not in sys.path:
        sys.path.insert(0, str(functions_dir))


def handler(dotted: str) -> Any:
    """`"api.handler.lambda_handler"` -> the function, imported like the Lambda runtime does."""
    prepare_environment()
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def invoke(dotted: str, event: dict[str, Any]) -> Any:
    return handler(dotted)(event, FakeLambdaContext(function_name=dotted.split(".")[0]))
