"""Credits and entitlements end to end on the local stack, over HTTP with a test clock, localstripe
and the events its bus delivers: a plan's 1,000 included credits, 800 used, are 1,000 again the
next cycle (not 1,200); 500 bought by a top-up charged to the saved card, then 1,200 consumed, burn
the included first and leave 300 purchased that survive the next reset; a promotional grant expires
on its day; each ledger entry is an event. A top-up with a declining card grants nothing; an auto
top-up fires once when the balance crosses its threshold, however much is consumed below it.
Entitlements follow an upgrade at once, vanish when the service is deactivated and return on its
re-activation after payment, each with its `entitlements.changed` event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local import stack

from tests.stripe_support import DECLINES_AT_CHARGE, VISA, confirm_setup
from tests.support import HttpClient, advance_clock, bus_events, eventually, local_stack, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_credits_e2e"
MONTHLY = {"currency": "USD", "cycle": "month"}


PACK = {"credits": 500, "price": "10.00", "currency": "USD"}


@pytest.fixture(scope="module")
def local() -> Iterator[stack.LocalStack]:
    with local_stack("billow-e2e-credits", "creditco", KEY) as running:
        client = HttpClient(running.url, KEY)
        body = {"effective_from": "2020-01-01", "costs": {"sms": 1, "report": 0}, "packs": {"pack_500": PACK}}
        prices = client.post("/credits/prices", body)
        assert prices.status == 201, prices.body
        yield running


@pytest.fixture(scope="module")
def api(local: stack.LocalStack) -> HttpClient:
    return HttpClient(local.url, KEY)


def _card(api: HttpClient, local: stack.LocalStack, contact: str, card: str = VISA) -> None:
    """The contact saves `card` (its SetupIntent confirmed as Stripe.js would)."""
    setup = api.post(f"/contacts/{contact}/payment-methods/setup")
    assert setup.status == 201, setup.body
    assert local.stripe is not None
    confirm_setup(local.stripe, setup.body["setup_id"], card)
    assert api.post(f"/contacts/{contact}/payment-methods", {"setup_id": setup.body["setup_id"]}).status == 201


def _top_up(api: HttpClient, contact: str, request_id: str) -> Any:
    return api.post(f"/contacts/{contact}/credits/top-ups", {"pack": "pack_500", "request_id": request_id})


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
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    plan = make_product(api, {**MONTHLY, "price": "20.00", "included_credits": 1000}, "Plan")
    contact, _ = _subscribed(api, plan)
    _card(api, local, contact)
    assert _consume(api, contact, "march", 800).status == 201
    assert _consume(api, contact, "free", 3, "report").body["entry"]["credits"] == 0  # free, still counted
    assert _consume(api, contact, "march", 800).status == 200  # a retry: taken once
    assert _balance(api, contact)["total"] == 200
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")
    assert _balance(api, contact)["total"] == 1000  # not 1,200: the remainder never rolls over
    bought = _top_up(api, contact, "april-pack")  # charged to the saved card, granted once paid
    assert bought.status == 201, bought.body
    assert (bought.body["status"], bought.body["grant"]["credits"], bought.body["amount"]) == (
        "succeeded",
        500,
        {"amount": "10.00", "currency": "USD"},
    )
    invoice = api.get(f"/invoices/{bought.body['invoice_id']}").body  # a line records the top-up
    assert (invoice["status"], [line["description"] for line in invoice["lines"]]) == (
        "paid",
        ["500 credits (pack_500)"],
    )
    again = _top_up(api, contact, "april-pack")
    assert again.status == 200 and again.body["grant"] == bought.body["grant"]  # a retry: bought once
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
        ("credits.top_up_succeeded", 500),
        ("credits.consumed", -1200),
        ("credits.granted", 1000),
        ("credits.granted", 50),
        ("credits.expired", -50),
        ("credits.consumed", -1),
    ]
    assert sorted(eventually(lambda: credit_events() if len(credit_events()) >= len(expected) else None)) == sorted(
        expected
    )


def test_a_declined_top_up_grants_nothing_and_an_auto_top_up_fires_once_per_crossing(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    declined = make_contact(api)["id"]
    _card(api, local, declined, DECLINES_AT_CHARGE)
    refused = _top_up(api, declined, "pack-1")
    assert refused.status == 402 and refused.body["error"] == "credits.top_up_failed", refused.body
    assert _balance(api, declined)["total"] == 0
    assert _top_up(api, declined, "pack-1").status == 402  # the same purchase again: still failed, not charged again

    contact = make_contact(api)["id"]
    _card(api, local, contact)
    assert _top_up(api, contact, "first").status == 201
    low = api.request("PUT", f"/contacts/{contact}/credits/low-balance", {"threshold": 100, "top_up_pack": "pack_500"})
    assert low.status == 200 and low.body == {"threshold": 100, "top_up_pack": "pack_500"}, low.body
    assert _consume(api, contact, "a", 450).status == 201  # 50 left: below 100
    for n in range(5):  # consumed on below the threshold: one crossing, one top-up
        assert _consume(api, contact, f"b{n}", 1).status == 201
    assert eventually(lambda: _balance(api, contact)["total"] == 545)  # 45 + the pack, bought once

    def mine(kind: str) -> list[dict[str, Any]]:
        return [e for e in events if e.get("contact_id") in (contact, declined) and e["type"] == kind]

    assert [e["data"]["balance"] for e in eventually(lambda: mine("credits.low_balance"))] == [50]
    assert eventually(lambda: len(mine("credits.top_up_succeeded")) == 2)
    assert len({e["data"]["invoice_id"] for e in mine("credits.top_up_succeeded")}) == 2
    failed = eventually(lambda: mine("credits.top_up_failed"))
    assert [(e["contact_id"], e["data"]["pack"]) for e in failed] == [(declined, "pack_500")]
    assert len(mine("credits.top_up_succeeded")) == 2


def test_a_payment_driven_service_runs_while_the_wallet_pays_and_comes_back_on_a_top_up(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    terms = {**MONTHLY, "price": "0.00", "billing_model": "advance", "prepaid_credits": 300, "features": ["bot"]}
    plan = make_product(api, terms, "Wallet plan")
    contact = make_contact(api)["id"]
    _card(api, local, contact)
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    assert _top_up(api, contact, "start").status == 201  # 500 credits
    item = {"product_id": plan["id"], "terms_id": plan["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact, "items": [item]}).status == 201

    def now() -> tuple[str, int, list[str]]:
        (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
        features = api.get(f"/contacts/{contact}/entitlements").body["features"]
        return subscription["services"][0]["state"], _balance(api, contact)["total"], features

    assert now() == ("effective", 200, ["bot"])  # March paid from the wallet
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")
    assert now() == ("not_effective", 200, [])  # April: 200 cannot pay 300
    assert _top_up(api, contact, "refill").status == 201
    assert now() == ("effective", 400, ["bot"])  # 700 - April's 300, re-activated
    advance_clock(api, contact, "2026-05-01T12:00:00+00:00")
    assert now() == ("effective", 100, ["bot"])

    def changes() -> list[list[str]]:
        mine = [e for e in events if e["contact_id"] == contact and e["type"] == "entitlements.changed"]
        return [e["data"]["features"] for e in mine]

    expected = [["bot"], [], ["bot"]]
    assert eventually(lambda: changes() if len(changes()) >= len(expected) else None) == expected
    invoices = api.get(f"/invoices?contact_id={contact}").body["items"]
    assert {i["total"]["amount"] for i in invoices if not i["id"].startswith("inv_top_")} <= {"0.00"}


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
