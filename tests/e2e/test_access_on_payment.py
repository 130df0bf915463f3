"""Access on payment over HTTP on the local stack (docs/payments.md, "Access on payment"): with the
business's setting on, an order's service stays draft until its first invoice is paid — the payment
is published as invoice.paid by the stream, the bus routes it to the activation function's queue,
which activates the service — and an order whose invoice stays unpaid lapses when the contact's
test clock passes its lapse day: service cancelled, invoice voided, nothing more billed; each with
its events, once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import HttpClient, advance_clock, bus_events, eventually, local_api, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_access_on_payment"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-e2e-access-on-payment", "aop", KEY) as client:
        settings = client.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7})
        assert settings.status == 200, settings.body
        yield client


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    with bus_events() as seen:
        yield seen


def order(api: HttpClient) -> tuple[str, dict[str, Any], str]:
    """A contact on a clock at 1 January 2025 orders the monthly product: (contact, invoice, subscription)."""
    product = make_product(api, MONTHLY)
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact, "items": [item]})
    assert placed.status == 201, placed.body
    (invoice,) = placed.body["invoices"]
    return contact, invoice, invoice["subscription_id"]


def service(api: HttpClient, subscription_id: str) -> dict[str, Any]:
    (only,) = api.get(f"/subscriptions/{subscription_id}").body["services"]
    return dict(only)


def of_contact(events: list[dict[str, Any]], contact: str) -> list[tuple[str, Any]]:
    """(type, what changed) of the contact's service, action and invoice events."""
    shown = []
    for e in events:
        if e["contact_id"] != contact:
            continue
        data = e["data"]
        if e["type"] == "service.state_changed":
            shown.append((e["type"], (data["from"], data["to"], data["since"])))
        elif e["type"] == "action.executed":
            shown.append((e["type"], (data["kind"], data["by"], data["on"])))
        elif e["type"].startswith("invoice."):
            shown.append((e["type"], data["status_reason"]))
    return shown


def test_a_service_stays_draft_until_its_first_invoice_is_paid(api: HttpClient, events: list[dict[str, Any]]) -> None:
    contact, invoice, subscription = order(api)
    assert invoice["period"] == {"start": "2025-01-01", "end": "2025-02-01"} and invoice["lapses_on"] == "2025-01-08"
    assert service(api, subscription)["state"] == "draft"
    advance_clock(api, contact, "2025-01-03T10:00:00Z")
    assert service(api, subscription)["state"] == "draft"

    body = {**invoice["total"], "method": "bank_transfer", "reference": "tr-1", "received_on": "2025-01-03"}
    assert api.post(f"/invoices/{invoice['id']}/payments", body).status == 201
    activated = eventually(lambda: service(api, subscription)["state"] == "effective")
    assert activated, "the service was not activated after its first invoice was paid"
    now = service(api, subscription)
    assert (now["state_since"], now["billed_through"]) == ("2025-01-03", "2025-02-01")
    expected = [
        ("invoice.paid", None),
        ("service.state_changed", ("draft", "effective", "2025-01-03")),
        ("action.executed", ("activate_on_payment", "system", "2025-01-03")),
    ]
    assert eventually(lambda: of_contact(events, contact)[-3:] == expected, 5), of_contact(events, contact)

    advance_clock(api, contact, "2025-02-01T10:00:00Z")  # the next cycle, right where the first ended
    periods = [i["period"] for i in api.get(f"/contacts/{contact}/invoices").body["items"]]
    assert periods == [{"start": "2025-01-01", "end": "2025-02-01"}, {"start": "2025-02-01", "end": "2025-03-01"}]
    assert service(api, subscription)["state"] == "effective"


def test_the_first_invoice_is_due_before_its_order_lapses_and_paying_on_the_due_day_activates(api: HttpClient) -> None:
    """The tenant's payment terms (14 days) would make the invoice due after its order lapses
    (7 days): it is due the day before the lapse, and a transfer received on that day is taken."""
    contact, invoice, subscription = order(api)
    assert (invoice["due_date"], invoice["lapses_on"]) == ("2025-01-07", "2025-01-08")
    advance_clock(api, contact, "2025-01-07T22:00:00Z")
    body = {**invoice["total"], "method": "bank_transfer", "reference": "tr-due", "received_on": "2025-01-07"}
    paid = api.post(f"/invoices/{invoice['id']}/payments", body)
    assert paid.status == 201, paid.body
    assert eventually(lambda: service(api, subscription)["state"] == "effective")
    advance_clock(api, contact, "2025-01-09T10:00:00Z")
    assert service(api, subscription)["state"] == "effective"
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "paid"


def test_an_order_unpaid_past_its_lapse_day_lapses(api: HttpClient, events: list[dict[str, Any]]) -> None:
    contact, invoice, subscription = order(api)
    advance_clock(api, contact, "2025-01-07T10:00:00Z")
    assert service(api, subscription)["state"] == "draft"
    advance_clock(api, contact, "2025-01-08T10:00:00Z")
    lapsed = service(api, subscription)
    assert (lapsed["state"], lapsed["state_since"], lapsed["end_date"]) == ("cancelled", "2025-01-08", "2025-01-01")
    voided = api.get(f"/invoices/{invoice['id']}").body
    assert (voided["status"], voided["status_reason"]) == ("void", "unpaid: its order lapsed on 2025-01-08")
    expected = [
        ("service.state_changed", ("draft", "cancelled", "2025-01-08")),
        ("action.executed", ("lapse", "system", "2025-01-08")),
        ("invoice.voided", "unpaid: its order lapsed on 2025-01-08"),
    ]
    assert eventually(lambda: sorted(of_contact(events, contact)[-3:]) == sorted(expected), 10), of_contact(
        events, contact
    )

    advance_clock(api, contact, "2025-03-15T10:00:00Z")  # nothing more is billed
    assert [i["id"] for i in api.get(f"/contacts/{contact}/invoices").body["items"]] == [invoice["id"]]
    body = {**invoice["total"], "method": "bank_transfer", "reference": "late", "received_on": "2025-03-15"}
    late = api.post(f"/invoices/{invoice['id']}/payments", body)
    assert (late.status, late.body["error"]) == (409, "payment.invoice_not_open")
    assert service(api, subscription)["state"] == "cancelled"
