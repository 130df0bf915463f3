"""Changing a subscription's billing day through the API (in-process, moto): a repeat is refused
and bills nothing, and a cancellation right after a change credits the whole charge at once."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_billing_day"
TEN_A_MONTH = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("billing-day", "Billing Day Tenant", KEY)
    yield InProcessClient(KEY)


def order(api: InProcessClient) -> dict[str, Any]:
    """$10 a month in advance, ordered on 1 December 2026 (anniversary billing: day 1)."""
    contact = make_contact(api)
    clock = api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2026-12-01T09:00:00Z"})
    assert clock.status == 201, clock.body
    product = make_product(api, TEN_A_MONTH)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
    assert placed.status == 201, placed.body
    return dict(placed.body["order"]["services"][0])


def totals(api: InProcessClient, service: dict[str, Any]) -> list[str]:
    subscription = api.get(f"/subscriptions/{service['subscription_id']}").body
    invoices = api.get(f"/contacts/{subscription['contact_id']}/invoices").body["items"]
    return sorted(i["total"]["amount"] for i in invoices)


def test_the_billing_day_already_set_is_refused_and_bills_nothing(api: InProcessClient) -> None:
    service = order(api)
    base = f"/subscriptions/{service['subscription_id']}"
    first = api.post(f"{base}/billing-day", {"billing_day": 20})
    assert first.status == 201 and first.body["subscription"]["billing_day"] == 20
    for _ in range(2):
        again = api.post(f"{base}/billing-day", {"billing_day": 20})
        assert again.status == 409, again.body
        assert again.body["error"] == "billing_day.unchanged" and again.body["fields"] == []
    assert totals(api, service) == ["10.00"]  # the days from today go on the 20 December invoice
    # back to the 1st, today's billing day: December is credited and charged again on one invoice
    assert api.post(f"{base}/billing-day", {"billing_day": 1}).status == 201
    assert totals(api, service) == ["0.00", "10.00"]
    log = api.get(f"{base}/actions").body["actions"]
    assert sorted((a["status"], a.get("rule")) for a in log) == [
        ("executed", None),
        ("executed", None),
        ("rejected", "billing_day.unchanged"),
        ("rejected", "billing_day.unchanged"),
    ]


def test_a_cancel_right_after_a_billing_day_change_credits_the_whole_charge(api: InProcessClient) -> None:
    service = order(api)
    base = f"/subscriptions/{service['subscription_id']}"
    assert api.post(f"{base}/billing-day", {"billing_day": 20}).status == 201
    cancel = api.post(f"{base}/services/{service['service_id']}/cancel", {})
    assert cancel.status == 201, cancel.body
    assert totals(api, service) == ["-10.00", "10.00"]
    assert sum(Decimal(t) for t in totals(api, service)) == 0
    assert api.get(f"{base}/upcoming").body["invoices"] == []  # no credit left waiting for later
