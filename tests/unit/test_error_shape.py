"""One error shape everywhere (`{"error", "message", "fields"}`, `fields` always present) with a
stable dotted code, through the real API handler in-process (moto); and every code the source can
answer is documented in docs/errors.md."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from billow.local import gateway
from billow.local.lambda_runtime import invoke
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_shape"
ROOT = Path(__file__).resolve().parents[2]
DOTTED = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("shape", "Shape Tenant", KEY)
    yield InProcessClient(KEY)


def assert_shape(body: object, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error", "message", "fields"}, body
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fields"], list)


def test_an_unknown_route_is_a_404_in_the_error_shape(api: InProcessClient) -> None:
    reply = api.get("/no-such-route")
    assert reply.status == 404
    assert_shape(reply.body, "route.not_found")
    assert reply.body["fields"] == []


def test_a_known_path_with_another_method_is_a_405_naming_the_allowed_ones(api: InProcessClient) -> None:
    reply = api.request("PUT", "/products", {})
    assert reply.status == 405
    assert_shape(reply.body, "route.method_not_allowed")
    assert reply.headers["Allow"] == "GET, POST"
    product = make_product(api)
    one = api.request("DELETE", f"/products/{product['id']}")  # a path with a parameter
    assert one.status == 405 and one.headers["Allow"] == "GET, PATCH"


@pytest.mark.parametrize("method", ["OPTIONS", "GET", "DELETE"])
def test_a_static_path_takes_only_its_own_methods_not_a_parameters(api: InProcessClient, method: str) -> None:
    reply = api.request(method, "/orders/quote")  # not the order "quote" of GET /orders/{order_id}
    assert (reply.status, reply.headers.get("Allow")) == (405, "POST"), reply.body
    assert_shape(reply.body, "route.method_not_allowed")
    order = api.request("OPTIONS", "/orders/ord_1")
    assert (order.status, order.headers.get("Allow")) == (405, "GET")
    assert api.get("/orders/ord_1").body["error"] == "resource.not_found"


def test_a_body_that_is_not_json_is_a_415_in_the_error_shape(api: InProcessClient) -> None:
    reply = api.post("/contacts", raw=b"name=Ann", headers={"Content-Type": "text/plain"})
    assert reply.status == 415
    assert_shape(reply.body, "request.unsupported_media_type")
    assert reply.body["fields"] == [{"field": "Content-Type", "reason": "unsupported content type"}]


def test_every_refusal_has_fields_even_when_empty(api: InProcessClient) -> None:
    missing = api.get("/contacts/cont_nope")
    assert missing.status == 404
    assert_shape(missing.body, "resource.not_found")
    invalid = api.post("/contacts", {"name": "Ann"})  # no email: schema validation
    assert invalid.status == 422
    assert_shape(invalid.body, "request.validation_failed")
    contact = make_contact(api)
    path = f"/contacts/{contact['id']}/test-clock"
    assert api.post(path, {"frozen_time": "2030-01-01T00:00:00Z"}).status == 201
    again = api.post(path, {"frozen_time": "2031-01-01T00:00:00Z"})  # a conflict with no field
    assert again.status == 409
    assert_shape(again.body, "test_clock.exists")
    assert again.body["fields"] == []
    unauthorized = api.get("/contacts", key=None)
    assert unauthorized.status == 401
    assert_shape(unauthorized.body, "auth.unauthorized")


def raised_codes() -> set[str]:
    """Every code the source can answer: class defaults, `code=`, `rule=`, the handlers' literals,
    the named kinds of a refused body (`PydanticCustomError`) and the generic one."""
    found: set[str] = set()
    patterns = (
        r"""\bcode = "([^"]+)\"""",
        r"""\b(?:code|rule)="([^"]+)\"""",
        r"""error_(?:response|body)\(\s*(?:\d+,\s*)?"([^"]+)\"""",
        r""""error": "([^"]+)\"""",
        r"""PydanticCustomError\(\s*"([^"]+)\"""",
        r"""\bVALIDATION_FAILED = "([^"]+)\"""",
    )
    for folder in ("shared/billow", "functions", "infra/billow_infra"):
        for source in (ROOT / folder).rglob("*.py"):
            text = source.read_text()
            for pattern in patterns:
                found.update(re.findall(pattern, text, re.MULTILINE))
    return found


def test_every_code_is_dotted_and_documented_in_one_table() -> None:
    codes = raised_codes()
    assert {"lifecycle.illegal_transition", "regret.period", "route.not_found", "auth.unauthorized"} <= codes
    assert [c for c in sorted(codes) if not DOTTED.match(c)] == []
    documented = set(re.findall(r"^\| `([^`]+)` \|", (ROOT / "docs/errors.md").read_text(), re.MULTILINE))
    assert sorted(codes - documented) == []
    assert sorted(documented - codes) == []


def test_the_handlers_own_guard_without_an_authorizer_answers_the_shape(api: InProcessClient) -> None:
    """Behind API Gateway the authorizer refuses first; the handler's own guard answers alike."""
    event = gateway.api_gateway_event("GET", "/contacts", {}, None, None)
    result = invoke("api.handler.lambda_handler", event)
    assert result["statusCode"] == 401
    assert_shape(json.loads(result["body"]), "auth.unauthorized")
