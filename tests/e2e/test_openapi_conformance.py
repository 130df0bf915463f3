"""docs/openapi.json against the running local stack: schemathesis generates requests for every
operation from the document (valid and invalid ones, with seeded, derandomized generation so a run
is reproducible) and fails on any 5xx and on any response the document does not describe: an
undocumented status code or content type, or a body that breaks the documented schema.

Every operation runs twice per example: with the ids schemathesis generates (unknown ones: 404) and
with the ids of real entities seeded below, so the happy paths and the state rules are reached too."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from billow.local import stack
from schemathesis.config import SchemathesisConfig

from tests.support import HttpClient, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("openapi")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
KEY = "bk_test_openapi"
MAX_EXAMPLES = 6
"""Per operation and phase: the whole run stays around a minute on two cores."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20240131,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
        },
    }
)
schema = schemathesis.openapi.from_path(DOC, config=CONFIG)


class Seeded:
    """The local stack with one tenant and real entities whose ids replace generated ones."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        product = make_product(client, {"price": "30.00", "currency": "USD", "cycle": "month"})
        contact = make_contact(client)
        clock = client.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-31T10:00:00Z"})
        assert clock.status == 201, clock.body
        item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
        placed = client.post("/orders", {"contact_id": contact["id"], "items": [item]})
        assert placed.status == 201 and placed.body["invoices"], placed.body
        (subscription,) = client.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
        subscription_id = subscription["id"]
        service_id = subscription["services"][0]["id"]
        scheduled = client.post(
            f"/subscriptions/{subscription_id}/services/{service_id}/cancel", {"in_days": 40, "reason": "schema run"}
        )
        assert scheduled.status == 202, scheduled.body
        self.ids = {
            "product_id": product["id"],
            "terms_id": product["terms"][0]["id"],
            "contact_id": contact["id"],
            "order_id": placed.body["order"]["id"],
            "invoice_id": placed.body["invoices"][0]["id"],
            "subscription_id": subscription_id,
            "service_id": service_id,
            "action_id": scheduled.body["action"]["id"],
        }

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    local = stack.start(schedule=False, table_name="billow-openapi")
    try:
        stack.add_tenant("openapi", "OpenAPI Tenant", KEY)
        yield Seeded(HttpClient(local.url, KEY))
    finally:
        local.stop()


def _with_real_ids(case: Any, ids: dict[str, str]) -> bool:
    """Put the seeded ids in the case's path and body (at any depth: an order's items name a product
    and its terms); whether anything changed."""
    changed = False
    for name in list(case.path_parameters or {}):
        if name in ids:
            case.path_parameters[name] = ids[name]
            changed = True

    def replace(node: Any) -> None:
        nonlocal changed
        if isinstance(node, list):
            for item in node:
                replace(item)
        elif isinstance(node, dict):
            for name, value in node.items():
                if name in ids and isinstance(value, str):
                    node[name] = ids[name]
                    changed = True
                else:
                    replace(value)

    replace(case.body)
    return changed


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck), print_blob=True)
def test_the_api_does_what_its_document_says(case: Any, seeded: Seeded) -> None:
    case.call_and_validate(base_url=seeded.client.base_url, headers=seeded.headers)
    if _with_real_ids(case, seeded.ids):
        case.call_and_validate(base_url=seeded.client.base_url, headers=seeded.headers)


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "OPTIONS"])
def test_a_method_without_a_route_is_a_405_in_the_error_shape(seeded: Seeded, method: str) -> None:
    # the HTTP server's own answer to a method it does not know was a 501 HTML page (a 5xx)
    reply = seeded.client.request(method, "/products")
    assert reply.status == 405, reply.body
    assert set(reply.body) >= {"error", "message", "fields"}


def test_a_head_request_is_answered_with_headers_and_no_body(seeded: Seeded) -> None:
    # HEAD reaches the API like any method (no route takes it: 405), and its answer carries no body:
    # bytes after the headers would be read by the client as the start of the next answer
    host, port = urllib.parse.urlsplit(seeded.client.base_url).netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        request = f"HEAD /products HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        connection.sendall(request.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"405", head
    assert b"\r\nallow: get, post" in head.lower(), head
    assert rest == b"", rest
