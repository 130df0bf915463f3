"""Test mode and live mode are separate worlds: every route of the API, called with a key of the
other mode of the same tenant, finds nothing of this mode's contacts (and all beneath them), and
test clocks exist only in test mode. The routes come from the app's own route table, so a new
route is covered (or must be classified here) automatically."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from api.handler import complete_app
from api.openapi import document_json
from billow.local.stack import add_tenant

from tests.support import InProcessClient, dunning_case_record, make_contact, make_product, saved_method_records

KEYS = {"test": "bk_test_modes", "live": "bk_live_modes"}
app = complete_app()
ROUTES = sorted({(r.method, r.path) for r in app._static_routes + app._dynamic_routes})

SHARED = {
    # The catalog and the tenant's settings are shared by both modes (docs/auth.md).
    ("GET", "/products"),
    ("POST", "/products"),
    ("GET", "/products/<product_id>"),
    ("POST", "/products/<product_id>/terms"),
    ("PATCH", "/products/<product_id>"),
    ("POST", "/products/<product_id>/archive"),
    ("POST", "/products/<product_id>/unarchive"),
    ("PATCH", "/products/<product_id>/terms/<terms_id>"),
    ("POST", "/products/<product_id>/terms/<terms_id>/archive"),
    ("GET", "/settings"),
    ("PATCH", "/settings/profile"),
    ("PATCH", "/settings/billing"),
    ("PATCH", "/settings/subscriptions"),
    ("PATCH", "/settings/collection"),
    ("GET", "/settings/dunning"),
    ("PATCH", "/settings/dunning"),
    ("POST", "/billing/preview"),  # a dry run: reads and writes no data
    ("GET", "/credits/prices"),  # the credit price list is the tenant's, as the catalog (docs/credits.md)
    ("POST", "/credits/prices"),
}
WHEN: dict[str, Any] = {}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/contacts"): {"name": "Other", "email": "other@example.com"},
    ("PATCH", "/contacts/<contact_id>"): {"name": "Renamed"},
    ("POST", "/contacts/<contact_id>/test-clock"): {"frozen_time": "2024-01-01T00:00:00Z"},
    ("POST", "/contacts/<contact_id>/test-clock/advance"): {"to": "2024-01-15T00:00:00Z"},
    ("POST", "/orders"): {"contact_id": "{contact_id}", "items": "{items}"},
    ("POST", "/orders/quote"): {"contact_id": "{contact_id}", "items": "{items}"},
    ("POST", "/invoices/<invoice_id>/payments"): {
        "amount": "1.00",
        "currency": "USD",
        "reference": "cross-mode",
        "received_on": "{issue_date}",
    },
    ("POST", "/subscriptions/<subscription_id>/services/<service_id>/change"): {"quantity": 2},
    ("POST", "/subscriptions/<subscription_id>/services/<service_id>/change/preview"): {"quantity": 2},
    ("POST", "/subscriptions/<subscription_id>/bill-ahead"): {"cycles": 1},
    ("PATCH", "/subscriptions/<subscription_id>/actions/<action_id>"): {"on": "{later}"},
    ("POST", "/invoices/<invoice_id>/void"): {"reason": "cross-mode"},
    ("POST", "/credit-notes/<credit_note_id>/apply"): {"invoice_id": "{invoice_id}"},
    ("POST", "/credit-notes/<credit_note_id>/refund"): {"reference": "cross-mode"},
    ("POST", "/usage"): {
        "id": "cross-mode",
        "subscription_id": "{subscription_id}",
        "service_id": "{service_id}",
        "quantity": "1",
    },
    ("PUT", "/contacts/<contact_id>/allowances/<meter>"): {"per_cycle": "10", "beyond": "refuse"},
    ("POST", "/contacts/<contact_id>/credits/consume"): {"action": "sms", "quantity": 1, "request_id": "cross-mode"},
    ("POST", "/contacts/<contact_id>/credits/grants"): {"id": "cross-mode", "kind": "purchased", "credits": 1},
    ("POST", "/contacts/<contact_id>/credits/top-ups"): {"pack": "pack_1", "request_id": "cross-mode"},
    ("PUT", "/contacts/<contact_id>/credits/low-balance"): {"threshold": 1, "top_up_pack": None},
}
"""Bodies naming the world's data, or that a rule beyond the schema needs. Any other route is
sent `minimal_body`: each required field of its request schema at its smallest valid value, so a
new action route with plain required fields (a number, a flag, a word) needs no line here."""
QUERIES = {("GET", "/invoices"): "?contact_id={contact_id}"}
SCHEMA = json.loads(document_json(app))


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _smallest(schema: dict[str, Any]) -> Any:
    schema = _resolve(schema)
    if "anyOf" in schema:
        return _smallest(next(s for s in schema["anyOf"] if s.get("type") != "null"))
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "boolean":
        return False
    if kind == "integer":
        return int(schema.get("minimum", 1))
    word = "x" * int(schema.get("minLength", 1))
    if kind == "string" and "format" not in schema and re.fullmatch(schema.get("pattern", ".*"), word):
        return word
    raise LookupError(f"no obvious valid value for {schema}: give the route its body in BODIES")


def minimal_body(method: str, path: str) -> dict[str, Any] | None:
    """What the route's request schema accepts with only its required fields, at their smallest
    values (an empty one, or none for a GET, when the route takes no body)."""
    operation = SCHEMA["paths"][re.sub(r"<(\w+)>", r"{\1}", path)][method.lower()]
    if "requestBody" not in operation:
        return {} if method in ("POST", "PATCH") else None
    schema = _resolve(operation["requestBody"]["content"]["application/json"]["schema"])
    return {name: _smallest(schema["properties"][name]) for name in schema.get("required", [])}


@dataclass
class World:
    """One mode's data: a contact on a test clock (test mode) with a subscription, its first
    invoice, a payment on it and a scheduled action."""

    ids: dict[str, str]
    items: list[dict[str, Any]]
    days: dict[str, str]  # the invoice's issue date, a day two months later

    def fill(self, text: str) -> str:
        for name, value in {**self.ids, **self.days}.items():
            text = text.replace(f"<{name}>", value).replace(f"{{{name}}}", value)
        return text

    def body(self, template: dict[str, Any] | None) -> dict[str, Any] | None:
        if template is None:
            return None
        return {
            k: self.items if v == "{items}" else self.fill(v) if isinstance(v, str) else v for k, v in template.items()
        }

    def snapshot(self, api: InProcessClient) -> str:
        """Everything a user of this mode sees of the contact (compared before and after)."""
        paths = [
            "/contacts/<contact_id>",
            "/contacts/<contact_id>/subscriptions",
            "/contacts/<contact_id>/invoices",
            "/subscriptions/<subscription_id>/actions",
            "/invoices/<invoice_id>/payments",
            "/dunning-cases/<case_id>",
        ]
        return json.dumps([api.get(self.fill(p)).body for p in paths], sort_keys=True)


def build_world(api: InProcessClient, mode: str, product: dict[str, Any]) -> World:
    contact = make_contact(api, f"{mode} contact")
    if mode == "test":
        clock = api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-01T10:00:00Z"})
        assert clock.status == 201, clock.body
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    placed = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert placed.status == 201, placed.body
    ordered = placed.body["order"]["services"][0]
    (invoice,) = placed.body["invoices"]
    paid = api.post(
        f"/invoices/{invoice['id']}/payments",
        {"amount": "1.00", "currency": "USD", "reference": f"{mode}-1", "received_on": invoice["issue_date"]},
    )
    assert paid.status == 201, paid.body
    path = f"/subscriptions/{ordered['subscription_id']}/services/{ordered['service_id']}/cancel"
    scheduled = api.post(path, {"in_days": 30})
    assert scheduled.status in (200, 201, 202), scheduled.body
    method_id = f"pm_{mode}_saved"
    saved_method_records(contact["id"], [method_id], "modes", mode)
    case_id = dunning_case_record(contact["id"], "modes", mode)
    return World(
        {
            "contact_id": contact["id"],
            "subscription_id": ordered["subscription_id"],
            "service_id": ordered["service_id"],
            "order_id": placed.body["order"]["id"],
            "invoice_id": invoice["id"],
            "payment_id": paid.body["payment"]["id"],
            "credit_note_id": invoice["id"],  # an id of this mode's: the other mode must not find it at all
            "top_up_id": invoice["id"],
            "action_id": scheduled.body["action"]["id"],
            "product_id": product["id"],
            "method_id": method_id,
            "case_id": case_id,
            "meter": "api_calls",
        },
        items,
        {"issue_date": invoice["issue_date"], "later": str(date.fromisoformat(invoice["issue_date"]) + timedelta(60))},
    )


@pytest.fixture
def clients(moto_table: str) -> dict[str, InProcessClient]:
    add_tenant("modes", "Modes", KEYS["test"], mode="test")
    add_tenant("modes", "Modes", KEYS["live"], mode="live")
    return {mode: InProcessClient(key) for mode, key in KEYS.items()}


def test_every_route_is_classified() -> None:
    """A route that reads or writes no contact-level data must say so here; every other one is
    called across modes below."""
    paths = {path for _, path in ROUTES}
    assert {path for _, path in SHARED} <= paths
    assert {key for key in BODIES if key not in ROUTES} == set()


@pytest.mark.parametrize("owner", ["test", "live"])
@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r not in SHARED])
def test_a_key_of_the_other_mode_finds_nothing(
    clients: dict[str, InProcessClient], owner: str, method: str, path: str
) -> None:
    other = "live" if owner == "test" else "test"
    product = make_product(clients[owner], {"price": "31.00", "currency": "USD", "cycle": "month"})
    world = build_world(clients[owner], owner, product)
    before = world.snapshot(clients[owner])

    target = world.fill(path) + world.fill(QUERIES.get((method, path), ""))
    body = world.body(BODIES[method, path] if (method, path) in BODIES else minimal_body(method, path))
    reply = clients[other].request(method, target, body)

    if (method, path) == ("POST", "/contacts"):
        assert reply.status == 201, reply.body  # created in its own mode, invisible to the owner
        assert clients[owner].get(f"/contacts/{reply.body['id']}").status == 404
    elif path.startswith("/contacts/<contact_id>/test-clock") and other == "live":
        assert reply.status == 409 and reply.body["error"] == "test_clock.live_mode", reply.body
    elif reply.status == 200 and "items" in reply.body:
        assert world.ids["contact_id"] not in json.dumps(reply.body)
        assert all(i.get("contact_id") != world.ids["contact_id"] for i in reply.body["items"])
    else:
        assert reply.status == 404, (reply.status, reply.body)
    asked = target + json.dumps(body)
    leaked = {name for name, value in world.ids.items() if value in json.dumps(reply.body) and value not in asked}
    assert leaked == set(), reply.body  # nothing of the owner's beyond what the request itself named
    assert world.snapshot(clients[owner]) == before  # and nothing of the owner's changed


def test_test_clocks_exist_only_in_test_mode(clients: dict[str, InProcessClient]) -> None:
    live = clients["live"]
    contact = make_contact(live)
    for method, path, body in (
        ("POST", "/test-clock", {"frozen_time": "2024-01-01T00:00:00Z"}),
        ("GET", "/test-clock", None),
        ("POST", "/test-clock/advance", {"to": "2024-01-02T00:00:00Z"}),
    ):
        reply = live.request(method, f"/contacts/{contact['id']}{path}", body)
        assert reply.status == 409 and reply.body["error"] == "test_clock.live_mode", reply.body
