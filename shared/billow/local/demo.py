"""Demo data for `make run`, loaded through the public API exactly as a user would."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from billow.domain.pricing import EXAMPLE_USAGE_PRICE
from billow.local.clocks import advance_clock
from billow.local.stripe import DECLINES_AT_CHARGE, VISA, LocalStripe

DEMO_TENANT = "demo"
DEMO_KEY = "bk_test_demo_local_only"


DEMO_CREDIT_COSTS = {"sms": 1, "ai_report": 5, "export": 0}
"""The demo's credit price list: what each billable action costs in credits (0 = free)."""
DEMO_CREDIT_PACKS = {"pack_500": {"credits": 500, "price": "10.00", "currency": "USD"}}
"""The credit packs the demo sells (a top-up buys one)."""


def call(url: str, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


DEMO_DUNNING = {"deactivation_threshold": {"USD": "50.00"}}
"""The demo's dunning policy: the default schedule, and services deactivated while a USD debt is
over 50.00 (past the 14 days' grace), so that Grace's case shows a deactivation."""


DEMO_USAGE_PRICE = EXAMPLE_USAGE_PRICE


def load(url: str, key: str = DEMO_KEY, stripe: LocalStripe | None = None) -> dict[str, Any]:
    """Three products, three contacts, their orders; one contact on a test clock, advanced a quarter.
    With localstripe: Ada saved a card that pays (4242...), Grace one that is declined at every
    charge (4000000000000341), so a dunning case follows her debt (its id answered as
    `grace_case`, None when it did not open in time); Kenji pays by bank transfer."""

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, reply = call(url, method, path, key, body)
        if status >= 400:
            raise RuntimeError(f"demo data failed: {method} {path} -> {status} {reply}")
        return reply

    def post(path: str, body: dict[str, Any]) -> Any:
        return send("POST", path, body)

    send("PATCH", "/settings/dunning", DEMO_DUNNING)
    post("/credits/prices", {"effective_from": "2020-01-01", "costs": DEMO_CREDIT_COSTS, "packs": DEMO_CREDIT_PACKS})

    def product(name: str, description: str = "", **terms: Any) -> Any:
        return post("/products", {"name": name, "description": description, "terms": [terms]})

    def contact(name: str, email: str, **extra: Any) -> Any:
        return post("/contacts", {"name": name, "email": email, **extra})

    def order(who: dict[str, Any], reference: str, *items: tuple[dict[str, Any], int]) -> Any:
        lines = [{"product_id": p["id"], "terms_id": p["terms"][0]["id"], "quantity": q} for p, q in items]
        return post("/orders", {"contact_id": who["id"], "reference": reference, "items": lines})

    starter = product(
        "Starter",
        "For small teams",
        price="29.00",
        currency="USD",
        cycle="month",
        billing_model="advance",
        setup_fee="49.00",
        included_credits=1000,
        features=["api", "exports"],
        limits={"seats": 5},
    )
    team = product(
        "Team seats",
        "Per seat, billed at month end",
        price="12.00",
        currency="USD",
        cycle="month",
        billing_model="arrears",
        pricing_model="per_unit",
    )
    tokyo = product("Tokyo annual", price="36000", currency="JPY", cycle="year")
    api_calls = post(
        "/products",
        {
            "name": "API calls",
            "description": "Usage in arrears: Stripe's graduated tiers",
            "terms": [
                {
                    "price": "0.00",
                    "currency": "USD",
                    "cycle": "month",
                    "billing_model": "advance",
                    "usage": DEMO_USAGE_PRICE,
                }
            ],
        },
    )

    ada = contact(
        "Ada Lovelace",
        "ada@example.com",
        billing_address={"line1": "12 St James's Square", "city": "London", "country": "GB"},
    )
    grace = contact("Grace Hopper", "grace@example.com")
    # Kenji pays by transfer: collected manually, so his invoices are never charged (nor reported
    # failed for want of a card) whatever the tenant's default mode.
    kenji = contact("Kenji Sato", "kenji@example.jp", preferred_payment_method="bank_transfer", collection="manual")

    def save_card(who: dict[str, Any], card: str) -> None:
        if stripe is None:
            return
        setup = post(f"/contacts/{who['id']}/payment-methods/setup", {})
        stripe.confirm_setup(setup["setup_id"], card)  # as Stripe.js would, on the tenant's page
        post(f"/contacts/{who['id']}/payment-methods", {"setup_id": setup["setup_id"]})

    save_card(ada, VISA)
    save_card(grace, DECLINES_AT_CHARGE)
    order(ada, "demo-ada", (starter, 1), (api_calls, 1))
    metered = next(
        (sub["id"], svc["id"])
        for sub in send("GET", f"/contacts/{ada['id']}/subscriptions")["items"]
        for svc in sub["services"]
        if svc["product_id"] == api_calls["id"]
    )
    # 1,500 API calls so far this month, in three records (sent twice: the second time all duplicates).
    calls = [
        {"id": f"demo-calls-{n}", "subscription_id": metered[0], "service_id": metered[1], "quantity": q}
        for n, q in enumerate(("1000", "400", "100"))
    ]
    post("/usage", {"records": calls})
    post("/usage", {"records": calls})
    # Ada's Starter plan includes 1,000 credits a month: 24 AI reports (5 each) used so far, and a
    # promotional 200 that expires in 30 days (burned after the included ones).
    promo_ends = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
    post(
        f"/contacts/{ada['id']}/credits/grants",
        {"id": "demo-welcome", "kind": "promotional", "credits": 200, "expires_at": promo_ends},
    )
    post(
        f"/contacts/{ada['id']}/credits/consume",
        {"action": "ai_report", "quantity": 24, "request_id": "demo-reports-1"},
    )
    # Grace is on a test clock started on 31 January: advancing it shows month-end billing days.
    post(f"/contacts/{grace['id']}/test-clock", {"frozen_time": datetime(2026, 1, 31, 9, tzinfo=UTC).isoformat()})
    order(grace, "demo-grace", (team, 5), (starter, 1))
    # One advance reaches two months (the shortest cycle's two intervals): this takes two.
    advance_clock(lambda m, p, b: call(url, m, p, key, b), grace["id"], datetime(2026, 4, 30, 9, tzinfo=UTC))
    order(kenji, "demo-kenji", (tokyo, 1))
    return {
        "ada": ada["id"],
        "grace": grace["id"],
        "kenji": kenji["id"],
        "grace_case": first_case(send, grace["id"]),
        "ada_usage": metered,
    }


def first_case(send: Any, contact_id: str, wait: float = 30.0) -> str | None:
    """The contact's newest dunning case, once its failed charge's event opened it (the local bus
    delivers in the background): polled for `wait` seconds at most."""
    deadline = time.monotonic() + wait
    while True:
        items = send("GET", f"/contacts/{contact_id}/dunning-cases")["items"]
        if items or time.monotonic() > deadline:
            return items[0]["id"] if items else None
        time.sleep(0.25)
