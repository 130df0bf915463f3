"""Changes of price terms with usage (DynamoDB Local, test clock; the attacker's review of issue 14):
a change to another meter takes effect only at a period's start, so no period's records are rated at
another meter's price; metered, unmetered and metered again within a period bills each record once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.integration.test_usage_billing import KEY, TENANT, _bill, _move_clock, _usage_lines, records, submit
from tests.support import InProcessClient, make_contact, make_product


@pytest.fixture
def api(local_table: str) -> InProcessClient:
    add_tenant(TENANT, "Tenant UB", KEY)
    return InProcessClient(KEY)


def _subscribe(api: InProcessClient, product: dict[str, Any]) -> dict[str, str]:
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    (sub,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    return {"contact_id": contact["id"], "subscription_id": sub["id"], "service_id": sub["services"][0]["id"]}


def test_a_change_to_another_meter_takes_effect_only_at_a_periods_start(api: InProcessClient) -> None:
    # Before: accepted mid-period, the 1,000 calls were billed as 1,000 GB (5,010.00).
    calls = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.01"}
    storage = {"meter": "storage_gb", "aggregation": "sum", "model": "per_unit", "unit_price": "5.00"}
    monthly = {"currency": "USD", "cycle": "month", "billing_model": "advance"}
    old = make_product(api, {**monthly, "price": "10.00", "usage": calls}, "Calls")
    new = make_product(api, {**monthly, "price": "20.00", "usage": storage}, "Storage")
    svc = _subscribe(api, old)
    _move_clock(svc, datetime(2026, 3, 5, 12, tzinfo=UTC))
    assert {o.status for o in submit(records(svc, "c", 1000, "1", at="2026-03-05T10:00:00Z"))} == {"accepted"}
    _move_clock(svc, datetime(2026, 3, 15, 12, tzinfo=UTC))
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/change"
    to_storage = {"product_id": new["id"], "terms_id": new["terms"][0]["id"]}
    refused = api.post(path, to_storage)  # an upgrade: at once, mid-period
    assert refused.status == 409 and refused.body["error"] == "change.meter", refused.body
    assert "schedule it for 2026-04-01" in refused.body["message"]
    assert api.post(path, {**to_storage, "on": "2026-04-01"}).status in (200, 201, 202)
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    assert {o.status for o in submit(records(svc, "g", 1, "2", at="2026-04-01T10:00:00Z"))} == {"accepted"}
    _move_clock(svc, datetime(2026, 5, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 5, 1))
    assert _usage_lines(svc) == [("Calls usage (api_calls)", "10.00"), ("Storage usage (storage_gb)", "10.00")]


def test_metered_to_unmetered_and_back_in_one_period_bills_each_record_once(api: InProcessClient) -> None:
    # Before: the change back closed the open period (usage.period_closed for every record after it).
    assert api.patch("/settings/subscriptions", {"downgrade": "immediate"}).status == 200
    calls = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.10"}
    monthly = {"currency": "USD", "cycle": "month", "billing_model": "advance"}
    a = make_product(api, {**monthly, "price": "10.00", "usage": calls}, "A")
    u = make_product(api, {**monthly, "price": "20.00"}, "U")
    svc = _subscribe(api, a)
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/change"
    _move_clock(svc, datetime(2026, 3, 5, 12, tzinfo=UTC))
    assert {o.status for o in submit(records(svc, "a", 100, "1", at="2026-03-05T10:00:00Z"))} == {"accepted"}  # 10.00
    _move_clock(svc, datetime(2026, 3, 10, 12, tzinfo=UTC))
    to_u = api.post(path, {"product_id": u["id"], "terms_id": u["terms"][0]["id"]})
    assert to_u.body["action"]["status"] == "executed", to_u.body
    _move_clock(svc, datetime(2026, 3, 20, 12, tzinfo=UTC))
    to_a = api.post(path, {"product_id": a["id"], "terms_id": a["terms"][0]["id"]})
    assert to_a.body["action"]["status"] == "executed", to_a.body
    late = submit(records(svc, "c", 50, "1", at="2026-03-20T10:00:00Z"))
    assert {o.status for o in late} == {"accepted"}, late[0]  # 5.00
    for when in (datetime(2026, 4, 1, 12, tzinfo=UTC), datetime(2026, 5, 1, 12, tzinfo=UTC)):
        _move_clock(svc, when)
        _bill(svc, when.date())
    lines = _usage_lines(svc)
    assert sum(Decimal(a) for _, a in lines) == Decimal("15.00"), lines
