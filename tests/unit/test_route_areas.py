"""The API's route areas are imported when a request first needs them (functions/api/areas.py), and
the lazy app answers every request as the complete app does: the right route, 405 with `Allow`, or
404, whatever was loaded before."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
from api.areas import AREAS, INDEX_FILE, route_index
from api.handler import complete_app

from bench.cold_start import lambda_environment, stage


def test_the_committed_route_index_is_current() -> None:
    assert json.loads(INDEX_FILE.read_text()) == route_index(complete_app()), "run `make openapi` and commit"


def test_every_module_with_routes_is_an_area() -> None:
    import api

    routed = {
        info.name
        for info in pkgutil.iter_modules(api.__path__)
        if hasattr(importlib.import_module(f"api.{info.name}"), "router")
    }
    assert routed == set(AREAS)


def _could_both_match(rule: str, other: str) -> bool:
    """Whether one path can match both rules: a parameter takes one segment (never a `/`)."""
    left, right = rule.strip("/").split("/"), other.strip("/").split("/")
    return len(left) == len(right) and all(
        a == b or a.startswith("<") or b.startswith("<") for a, b in zip(left, right, strict=True)
    )


def test_no_path_is_matched_by_two_dynamic_routes_of_one_method() -> None:
    # So the order areas are loaded in cannot change which route answers (Powertools tries dynamic
    # routes in registration order, after every static one).
    dynamic = [(r.method, r.path) for r in complete_app()._dynamic_routes]
    clashes = [(a, b) for a, b in combinations(dynamic, 2) if a[0] == b[0] and _could_both_match(a[1], b[1])]
    assert clashes == []
    assert _could_both_match("/orders/<order_id>", "/orders/quote")  # the check itself


PROBE = """
import json, sys
import api.handler as handler

class Context:
    function_name, memory_limit_in_mb, aws_request_id = "api", 256, "r-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:api"

before = sorted(m for m in sys.modules if m.startswith("api."))
method, path = sys.argv[1], sys.argv[2]
event = {{"path": path, "resource": path, "httpMethod": method, "headers": {{}}, "multiValueHeaders": {{}},
         "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
         "body": None, "isBase64Encoded": False,
         "requestContext": {{"requestId": "r-1", "stage": "v1", "httpMethod": method, "path": path}}}}

def answered():
    answer = handler.lambda_handler(event, Context())
    allow = (answer.get("multiValueHeaders") or {{}}).get("Allow")
    return {{"status": answer["statusCode"], "error": json.loads(answer["body"])["error"], "allow": allow}}

lazy = answered()
loaded = sorted(handler.areas.loaded)
handler.complete_app()
print(json.dumps({{"before": before, "loaded": loaded, "lazy": lazy, "complete": answered()}}))
"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return stage(tmp_path_factory.mktemp("areas"))


def first_request(deployed: tuple[Path, Path], method: str, path: str) -> dict[str, object]:
    """A fresh container's first request (the code staged as deployed, Lambda's environment)."""
    task_root, layer = deployed
    env = {**lambda_environment(task_root, layer, "api.handler"), "POWERTOOLS_TRACE_DISABLED": "true"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(), method, path],
        env=env,
        cwd=task_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("method", "path", "loaded", "status", "allow"),
    [
        # the route is found (401: no authorizer context in this probe; 422: its body is validated
        # first, and none was sent), and only its area loaded
        ("GET", "/contacts", ["contacts"], 401, None),
        ("GET", "/contacts/c1/balance", ["receivables"], 401, None),
        ("POST", "/subscriptions/s1/services/v1/cancel", ["actions"], 422, None),
        # another area's route at a path that starts alike does not load it
        ("GET", "/subscriptions/s1", ["orders"], 401, None),
        # the path is known under other methods: 405 with all of them, across areas
        ("GET", "/subscriptions/s1/services/v1/cancel", ["actions"], 405, "POST"),
        ("POST", "/subscriptions/s1", ["orders"], 405, "GET"),
        # a static path is its own (not /orders/{order_id} with the id "quote")
        ("GET", "/orders/quote", ["orders"], 405, "POST"),
        # no route at the path: 404, and nothing loaded
        ("GET", "/nowhere/at/all", [], 404, None),
    ],
)
def test_a_fresh_container_loads_only_the_areas_its_first_request_needs_and_answers_as_the_complete_app(
    deployed: tuple[Path, Path], method: str, path: str, loaded: list[str], status: int, allow: str | None
) -> None:
    answer = first_request(deployed, method, path)
    assert answer["before"] == ["api.areas", "api.bodies", "api.handler"]
    assert answer["loaded"] == loaded
    assert answer["lazy"] == answer["complete"]
    assert (answer["lazy"]["status"], answer["lazy"]["allow"]) == (status, allow and [allow])  # type: ignore[index]
