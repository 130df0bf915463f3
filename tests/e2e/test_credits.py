"""Credits and entitlements end to end on the local stack, over HTTP with a test clock and the
events its bus delivers: a plan's 1,000 included credits, 800 used, are 1,000 again the next cycle
(not 1,200); 500 purchased then 1,200 consumed burn the included first and leave 300 purchased that
survive the next reset; a promotional grant expires on its day; each ledger entry is an event.
Entitlements follow an upgrade at once, vanish when the service is deactivated and return on its
re-activation after payment, each with its `entitlements.changed` event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import HttpClient, advance_clock, bus_events, eventually, local_api, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_credits_e2e"
MONTHLY = {"currency": "USD", "cycle": "month"}


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-e2e-credits", "creditco", KEY) as client:
        prices = client.post("/credits/prices", {"effective_from": "2020-01-01", "costs": {"sms": 1, "report": 0}})
        assert prices.status == 201, prices.body
        yield client


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    with bus_events() as seen:
        yield seen


def _subscribed(api: HttpClient, *products: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    items = [{"product_id": p["id"], "terms_id": p["terms"][0]["id"]} for p in products]
    assert api.post("/orders", {"contact_id": contact, "items": items}).status == 201
    (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    return contact, subscription


def _balance(api: HttpClient, contact: str) -> dict[str, Any]:
    reply = api.get(f"/contacts/{contact}/credits")
    assert reply.status == 200, reply.body
    return dict(reply.body["balance"])


def _consume(api: HttpClient, contact: str, request_id: str, quantity: int, action: str = "sms") -> Any:
    body = {"action": action, "quantity": quantity, "request_id": request_id}
    return api.post(f"/contacts/{contact}/credits/consume", body)


def test_included_credits_reset_purchased_roll_over_promotional_expire(
    api: HttpClient, events: list[dict[str, Any]]
) -> None:
    plan = make_product(api, {**MONTHLY, "price": "20.00", "included_credits": 1000}, "Plan")
    contact, _ = _subscribed(api, plan)
    assert _consume(api, contact, "march", 800).status == 201
    assert _consume(api, contact, "free", 3, "report").body["entry"]["credits"] == 0  # free, still counted
    assert _consume(api, contact, "march", 800).status == 200  # a retry: taken once
    assert _balance(api, contact)["total"] == 200
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")
    assert _balance(api, contact)["total"] == 1000  # not 1,200: the remainder never rolls over
    bought = api.post(f"/contacts/{contact}/credits/grants", {"id": "pack-1", "kind": "purchased", "credits": 500})
    assert bought.status == 201, bought.body
    used = _consume(api, contact, "april", 1200)
    assert [(p["kind"], p["credits"]) for p in used.body["entry"]["parts"]] == [("included", 1000), ("purchased", 200)]
    advance_clock(api, contact, "2026-05-01T12:00:00+00:00")
    balance = _balance(api, contact)
    assert (balance["included"], balance["purchased"]) == (1000, 300)  # the purchased survive the reset
    promo = {"id": "spring", "kind": "promotional", "credits": 50, "expires_at": "2026-05-10T00:00:00+00:00"}
    assert api.post(f"/contacts/{contact}/credits/grants", promo).status == 201
    advance_clock(api, contact, "2026-05-10T00:00:00+00:00")
    assert _balance(api, contact)["promotional"] == 0  # gone on its day
    assert _consume(api, contact, "may", 1).status == 201  # books the expiries due
    breakdown = api.get(f"/contacts/{contact}/credits/breakdown?from=2026-04-01&to=2026-05-01").body["actions"]
    assert [(a["action"], a["credits"], a["by_kind"]) for a in breakdown] == [
        ("sms", 1200, {"included": 1000, "purchased": 200})
    ]

    def credit_events() -> list[tuple[str, int]]:
        mine = [e for e in events if e["contact_id"] == contact and e["type"].startswith("credits.")]
        return [(e["type"], e["data"]["delta"]) for e in mine]

    expected = [
        ("credits.granted", 1000),
        ("credits.consumed", -800),
        ("credits.consumed", 0),
        ("credits.expired", -200),
        ("credits.granted", 1000),
        ("credits.granted", 500),
        ("credits.consumed", -1200),
        ("credits.granted", 1000),
        ("credits.granted", 50),
        ("credits.expired", -50),
        ("credits.consumed", -1),
    ]
    assert sorted(eventually(lambda: credit_events() if len(credit_events()) >= len(expected) else None)) == sorted(
        expected
    )


def test_entitlements_follow_an_upgrade_a_deactivation_and_a_paid_reactivation(
    api: HttpClient, events: list[dict[str, Any]]
) -> None:
    basic = make_product(api, {**MONTHLY, "price": "10.00", "features": ["api"], "limits": {"seats": 3}}, "Basic")
    pro = make_product(api, {**MONTHLY, "price": "30.00", "features": ["api", "sso"], "limits": {"seats": 10}}, "Pro")
    contact, subscription = _subscribed(api, basic)
    base = f"/subscriptions/{subscription['id']}/services/{subscription['services'][0]['id']}"

    def now() -> tuple[list[str], dict[str, int]]:
        body = api.get(f"/contacts/{contact}/entitlements").body
        return body["features"], body["limits"]

    assert now() == (["api"], {"seats": 3})
    assert api.post(f"{base}/change", {"product_id": pro["id"], "terms_id": pro["terms"][0]["id"]}).status == 201
    assert now() == (["api", "sso"], {"seats": 10})  # an upgrade applies at once
    assert api.post(f"{base}/deactivate", {}).status == 201  # as dunning deactivates
    assert now() == ([], {})
    for invoice in api.get(f"/invoices?contact_id={contact}").body["items"]:
        due = invoice["amount_due"]
        if due["amount"] != "0.00":
            paid = {**due, "reference": f"pay-{invoice['id']}", "received_on": invoice["issue_date"]}
            assert api.post(f"/invoices/{invoice['id']}/payments", paid).status == 201
    assert api.post(f"{base}/activate", {}).status == 201
    assert now() == (["api", "sso"], {"seats": 10})

    def changes() -> list[list[str]]:
        mine = [e for e in events if e["contact_id"] == contact and e["type"] == "entitlements.changed"]
        return [e["data"]["features"] for e in mine]

    expected = [["api"], ["api", "sso"], [], ["api", "sso"]]
    assert eventually(lambda: changes() if len(changes()) >= len(expected) else None) == expected
