"""Cold start: what importing each Lambda handler loads, as Lambda imports it (bench/cold_start.py
measures how long it takes; these check the causes, which do not depend on the machine's load)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cold_start import cumulative_us, handler_modules, lambda_environment, stage

HANDLERS = ("api.handler", "authorizer.handler", "billing_run.handler", "clock_advance.handler")

PROBE = """
import gc, json, sys
collections = []
gc.callbacks.append(lambda phase, info: phase == "stop" and collections.append(info["generation"]))
import {module}
collected_while_importing = list(collections)
loaded = sorted(sys.modules)
from billow.services.inputs import Body

bodies, todo = [], [Body]
while todo:
    model = todo.pop()
    bodies.append(model)
    todo.extend(model.__subclasses__())
traced = None
if "aws_xray_sdk" in sys.modules:
    import botocore.client, botocore.httpsession
    traced = {{
        "botocore": hasattr(botocore.client.BaseClient._make_api_call, "__wrapped__"),
        "pynamodb": hasattr(botocore.httpsession, "_xray_enabled"),
    }}
print(json.dumps({{
    "modules": loaded,
    "bodies_built": sorted(m.__name__ for m in bodies if m.__pydantic_complete__),
    "traced": traced,
    "collected_while_importing": collected_while_importing,
    "gc": {{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}},
}}))
"""


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """What each handler's import left behind, in a fresh interpreter with Lambda's environment and
    the code staged as deployed (no billow.local)."""
    task_root, layer = stage(tmp_path_factory.mktemp("cold-start"))
    found = {}
    for module in HANDLERS:
        run = subprocess.run(
            [sys.executable, "-c", PROBE.format(module=module)],
            env=lambda_environment(task_root, layer, module),
            cwd=task_root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        found[module] = json.loads(run.stdout)
    return found


def test_every_function_under_functions_is_measured(tmp_path: Path) -> None:
    for name in ("invoices_out", "api"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "handler.py").write_text("def lambda_handler(event, context): ...\n")
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "__init__.py").write_text("")
    assert handler_modules(tmp_path) == ["api.handler", "invoices_out.handler"]
    assert set(HANDLERS) <= set(handler_modules())


def test_the_import_time_is_the_modules_outermost_cumulative() -> None:
    report = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       900 |        900 |     api.handler",  # a nested import of the same name
            "import time:      9086 |       9086 |   api",
            "import time:      5369 |     599561 | api.handler",
            "import time:       196 |     230453 | boto3",
        ]
    )
    assert cumulative_us(report, "api.handler") == 599561
    assert cumulative_us(report, "boto3") == 230453
    with pytest.raises(SystemExit):
        cumulative_us(report, "authorizer.handler")


@pytest.mark.parametrize("module", HANDLERS)
def test_no_handler_imports_what_it_never_uses(imported: dict[str, dict[str, object]], module: str) -> None:
    modules = set(imported[module]["modules"])  # type: ignore[arg-type]
    # X-Ray's default patches import every HTTP library installed; the local stack is not deployed.
    assert not modules & {"httpx", "requests", "billow.local"}
    # The OpenAPI document is built on demand (make openapi, tests), never on a cold start.
    assert "aws_lambda_powertools.event_handler.openapi.models" not in modules
    # Request bodies build their validators when a request first needs them.
    assert imported[module]["bodies_built"] == []


@pytest.mark.parametrize("module", ["api.handler", "billing_run.handler", "clock_advance.handler"])
def test_traced_handlers_trace_each_aws_call_once(imported: dict[str, dict[str, object]], module: str) -> None:
    # Tracing stays on (Lambda's Tracing.ACTIVE), through botocore's client only: pynamodb's patch
    # would wrap botocore's HTTP session too and trace each DynamoDB request twice.
    assert imported[module]["traced"] == {"botocore": True, "pynamodb": False}


def test_the_authorizer_loads_neither_the_tracer_nor_the_billing_engine(
    imported: dict[str, dict[str, object]],
) -> None:
    modules = set(imported["authorizer.handler"]["modules"])  # type: ignore[arg-type]
    assert "aws_xray_sdk" not in modules
    assert "billow.services.billing" not in modules
    assert "aws_lambda_powertools.event_handler" not in modules


@pytest.mark.parametrize("module", ["api.handler", "billing_run.handler", "clock_advance.handler"])
def test_no_garbage_collection_runs_while_a_handler_imports(
    imported: dict[str, dict[str, object]], module: str
) -> None:
    # The collector ran full collections over the objects the import makes (all long-lived): it is
    # off during the import, then those objects are frozen and it is back on for the requests.
    # (A young-generation pass may run while the handler's own source compiles, before it can stop.)
    assert [g for g in imported[module]["collected_while_importing"] if g > 0] == []  # type: ignore[attr-defined]
    gc = imported[module]["gc"]
    assert gc["enabled"] is True  # type: ignore[index]
    assert gc["frozen"] > 10_000  # type: ignore[index,operator]
