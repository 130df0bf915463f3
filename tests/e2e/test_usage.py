"""Usage-based billing end to end on the local stack, over HTTP with test clocks: a graduated API
calls meter billed at the cycle end with the right total (the same batch sent twice counting once,
the view bill showing the usage so far), a late record landing in its own period and billed on the
next invoice in its own line, an allowance refused at submission with what remains, overage billed
past an allowance, and a charge limit crossed mid-cycle issuing one immediate invoice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.domain.pricing import EXAMPLE_USAGE_PRICE

from tests.support import HttpClient, advance_clock, local_stack, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_usage_e2e"
TENANT = "usageco"
START = "2026-03-01T12:00:00+00:00"
GRADUATED = dict(EXAMPLE_USAGE_PRICE)


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_stack("billow-e2e-usage", TENANT, KEY) as running:
        yield HttpClient(running.url, KEY)


def _terms(usage: dict[str, Any]) -> dict[str, Any]:
    return {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "arrears", "usage": usage}


def _customer(api: HttpClient, *products: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """A contact on a test clock (1 March 2026) who ordered `products`: its id, its subscription's
    id and its service ids by meter."""
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": START}).status == 201
    items = [{"product_id": p["id"], "terms_id": p["terms"][0]["id"]} for p in products]
    placed = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert placed.status == 201, placed.body
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    by_meter = {}
    for service, product in zip(subscription["services"], products, strict=True):
        by_meter[product["terms"][0]["usage"]["meter"]] = service["id"]
    return contact["id"], subscription["id"], by_meter


def _records(contact_id: str, meter: str, prefix: str, quantities: list[str], at: str) -> dict[str, Any]:
    return {
        "records": [
            {"id": f"{prefix}-{n}", "contact_id": contact_id, "meter": meter, "quantity": q, "at": at}
            for n, q in enumerate(quantities)
        ]
    }


def _invoices(api: HttpClient, contact_id: str) -> list[dict[str, Any]]:
    listed = api.get(f"/invoices?contact_id={contact_id}&limit=100")
    assert listed.status == 200, listed.body
    found = [api.get(f"/invoices/{i['id']}").body for i in listed.body["items"]]
    return sorted(found, key=lambda i: (i["issue_date"], i["id"]))


def _usage_lines(invoice: dict[str, Any]) -> list[tuple[str, str]]:
    return [(x["description"], x["amount"]["amount"]) for x in invoice["lines"] if x["kind"] == "usage"]


def test_a_graduated_meter_is_billed_at_the_cycle_end_and_a_late_record_on_the_next_invoice(api: HttpClient) -> None:
    product = make_product(api, _terms(GRADUATED), name="API")
    contact_id, subscription_id, _ = _customer(api, product)
    batch = _records(contact_id, "api_calls", "mar", ["1000", "400", "100"], "2026-03-01T10:00:00Z")
    sent = api.post("/usage", batch)
    assert sent.status == 200 and sent.body["accepted"] == 3, sent.body
    again = api.post("/usage", batch)  # the same batch sent twice counts once
    assert again.status == 200 and (again.body["accepted"], again.body["duplicates"]) == (0, 3), again.body
    # the view bill shows March's usage so far, rated as the run will
    upcoming = api.get(f"/subscriptions/{subscription_id}/upcoming?count=1").body["invoices"][0]
    (so_far,) = [x for x in upcoming["lines"] if x["kind"] == "usage"]
    assert (so_far["amount"]["amount"], so_far["usage_so_far"]) == ("140.00", True)

    advance_clock(api, contact_id, "2026-04-02T12:00:00+00:00")
    (march,) = [i for i in _invoices(api, contact_id) if _usage_lines(i)]
    assert _usage_lines(march) == [("API usage (api_calls)", "140.00")]  # Stripe's example: 1,500 units

    late = api.post("/usage", _records(contact_id, "api_calls", "late", ["100"], "2026-03-20T10:00:00Z"))
    assert late.status == 200, late.body
    (outcome,) = late.body["records"]
    assert (outcome["status"], outcome["late"], outcome["period"]["start"]) == ("accepted", True, "2026-03-01")
    advance_clock(api, contact_id, "2026-05-02T12:00:00+00:00")
    april = [i for i in _invoices(api, contact_id) if _usage_lines(i) and i["id"] != march["id"]]
    # March rated again with 1,600 units is 145.00: 5.00 more, on April's invoice, naming March
    assert [_usage_lines(i) for i in april] == [
        [("API: late usage for 2026-03-01 – 2026-04-01 (api_calls)", "5.00")]  # noqa: RUF001
    ]


def test_allowances_charge_limits_and_overage(api: HttpClient) -> None:
    refusing = make_product(
        api,
        _terms(
            {
                "meter": "seats",
                "aggregation": "sum",
                "model": "per_unit",
                "unit_price": "1.00",
                "allowance": {"per_cycle": "1000", "beyond": "refuse"},
            }
        ),
        name="Seats",
    )
    overage = make_product(
        api,
        _terms(
            {
                "meter": "storage_gb",
                "aggregation": "sum",
                "model": "per_unit",
                "unit_price": "0.10",
                "allowance": {"per_cycle": "1000", "beyond": "overage"},
            }
        ),
        name="Storage",
    )
    limited = make_product(
        api,
        _terms(
            {
                "meter": "sms",
                "aggregation": "sum",
                "model": "per_unit",
                "unit_price": "0.50",
                "charge_limit": {"amount": "25.00"},
            }
        ),
        name="SMS",
    )
    contact_id, _, _ = _customer(api, refusing, overage, limited)
    at = "2026-03-01T10:00:00Z"
    one = {"id": "seats-1", "contact_id": contact_id, "meter": "seats", "quantity": "800", "at": at}
    assert api.post("/usage", one).status == 200
    refused = api.post("/usage", {**one, "id": "seats-2", "quantity": "300"})
    assert refused.status == 409 and refused.body["error"] == "usage.allowance_exceeded", refused.body
    assert "200 of 1000 remain" in refused.body["message"]

    assert api.post("/usage", _records(contact_id, "storage_gb", "gb", ["700", "500"], at)).body["accepted"] == 2
    # 60 SMS (30.00) cross the 25.00 limit: one immediate invoice at once, mid-cycle
    assert api.post("/usage", _records(contact_id, "sms", "sms", ["1"] * 60, at)).body["accepted"] == 60
    (immediate,) = [i for i in _invoices(api, contact_id) if _usage_lines(i)]
    assert immediate["issue_date"] == "2026-03-01" and immediate["total"]["amount"] == "30.00"
    assert api.post("/usage", _records(contact_id, "sms", "sms-more", ["1"] * 10, at)).body["accepted"] == 10
    assert len([i for i in _invoices(api, contact_id) if _usage_lines(i)]) == 1  # 5.00 more: under the limit

    advance_clock(api, contact_id, "2026-04-02T12:00:00+00:00")
    final = [i for i in _invoices(api, contact_id) if _usage_lines(i) and i["id"] != immediate["id"]]
    (lines,) = [_usage_lines(i) for i in final]
    amounts = {description.split(" ")[0]: amount for description, amount in lines}
    # the 800 seats are included (inside the allowance); storage: the 200 GB past the 1,000 included;
    # SMS: 35.00 in all, 30.00 invoiced before
    assert amounts == {"Seats": "0.00", "Storage": "20.00", "SMS": "5.00"}
