"""Ordering and manual payments through the API handler (moto table)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_orders"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-o", "Tenant O", KEY)
    yield InProcessClient(KEY)


def items(product: dict) -> list[dict]:
    return [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]


def test_the_quote_is_the_first_invoice_placing_creates(api: InProcessClient) -> None:
    product = make_product(
        api, {"price": "29.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "setup_fee": "49.00"}
    )
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-31T10:00:00+00:00"})
    quote = api.post("/orders/quote", {"contact_id": contact["id"], "items": items(product)})
    assert quote.status == 200
    (quoted,) = quote.body["invoices"]
    assert quoted["period"] == {"start": "2024-01-31", "end": "2024-02-29"}
    assert quoted["billing_date"] == "2024-01-31"
    assert quoted["due_date"] == "2024-02-14"
    assert quoted["total"] == {"amount": "78.00", "currency": "USD"}
    assert api.get(f"/contacts/{contact['id']}/invoices").body["items"] == []  # quoting writes nothing

    placed = api.post("/orders", {"contact_id": contact["id"], "items": items(product), "reference": "po-1"})
    assert placed.status == 201
    (invoice,) = placed.body["invoices"]
    for key in ("period", "billing_date", "issue_date", "due_date", "kind", "currency", "total"):
        assert invoice[key] == quoted[key]
    # The quote shows no ids for what the order creates (placing makes its own); the rest is the same.
    assert quoted["subscription_id"] is None and [x["service_id"] for x in quoted["lines"]] == [None, None]
    assert [{**x, "service_id": None} for x in invoice["lines"]] == quoted["lines"]
    assert invoice["subscription_id"] and all(x["service_id"] for x in invoice["lines"])


def test_placing_twice_with_one_reference_places_once(api: InProcessClient) -> None:
    product = make_product(api, {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    first = api.post("/orders", {"contact_id": contact["id"], "items": items(product), "reference": "po-7"})
    again = api.post("/orders", {"contact_id": contact["id"], "items": items(product), "reference": "po-7"})
    assert (first.status, again.status) == (201, 200)
    assert again.body["replayed"] is True
    assert again.body["order"]["id"] == first.body["order"]["id"]
    assert len(api.get(f"/contacts/{contact['id']}/invoices").body["items"]) == 1
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    assert len(subscription["services"]) == 1


def test_services_group_by_cycle_model_and_currency(api: InProcessClient) -> None:
    monthly = make_product(api, {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    monthly_too = make_product(api, {"price": "5.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    yearly = make_product(api, {"price": "100.00", "currency": "USD", "cycle": "year", "billing_model": "advance"})
    euro = make_product(api, {"price": "10.00", "currency": "EUR", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    placed = api.post(
        "/orders",
        {"contact_id": contact["id"], "items": [*items(monthly), *items(monthly_too), *items(yearly), *items(euro)]},
    )
    assert placed.status == 201
    subscriptions = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    assert sorted(len(s["services"]) for s in subscriptions) == [1, 1, 2]
    assert {(s["cycle"], s["currency"]) for s in subscriptions} == {("month", "USD"), ("year", "USD"), ("month", "EUR")}


def test_a_bank_transfer_marks_the_invoice_paid_once(api: InProcessClient) -> None:
    product = make_product(api, {"price": "29.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    (invoice,) = api.post("/orders", {"contact_id": contact["id"], "items": items(product)}).body["invoices"]
    payment = {
        "amount": "29.00",
        "currency": "USD",
        "method": "bank_transfer",
        "reference": "BANK-42",
        "received_on": invoice["issue_date"],
    }
    first = api.post(f"/invoices/{invoice['id']}/payments", payment)
    assert first.status == 201
    assert first.body["invoice"]["status"] == "paid"
    assert first.body["invoice"]["amount_due"] == {"amount": "0.00", "currency": "USD"}
    again = api.post(f"/invoices/{invoice['id']}/payments", payment)
    assert again.status == 200 and again.body["replayed"] is True
    assert len(api.get(f"/invoices/{invoice['id']}").body["payments"]) == 1


def test_partial_payments_and_overpayment(api: InProcessClient) -> None:
    product = make_product(api, {"price": "100.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    (invoice,) = api.post("/orders", {"contact_id": contact["id"], "items": items(product)}).body["invoices"]
    pay = {"currency": "USD", "method": "bank_transfer", "received_on": invoice["issue_date"]}
    part = api.post(f"/invoices/{invoice['id']}/payments", {**pay, "amount": "40.00", "reference": "A"})
    assert part.body["invoice"]["status"] == "open"
    too_much = api.post(f"/invoices/{invoice['id']}/payments", {**pay, "amount": "60.01", "reference": "B"})
    assert too_much.status == 422 and too_much.body["fields"][0]["field"] == "amount"
    other_amount = api.post(f"/invoices/{invoice['id']}/payments", {**pay, "amount": "1.00", "reference": "A"})
    assert (other_amount.status, other_amount.body["error"]) == (422, "idempotency.key_reused")
    rest = api.post(f"/invoices/{invoice['id']}/payments", {**pay, "amount": "60.00", "reference": "C"})
    assert rest.body["invoice"]["status"] == "paid"
    wrong_currency = api.post(
        f"/invoices/{invoice['id']}/payments", {**pay, "currency": "EUR", "amount": "1.00", "reference": "D"}
    )
    assert wrong_currency.status == 409  # a paid invoice takes no more payments


def test_test_clocks_need_test_mode_and_move_forward_only(api: InProcessClient, moto_table: str) -> None:
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-01T00:00:00"}).status == 422
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-01T00:00:00Z"}).status == 201
    back = api.post(f"/contacts/{contact['id']}/test-clock/advance", {"to": "2023-12-31T00:00:00Z"})
    assert back.status == 409 and "only moves forward" in back.body["message"]
    add_tenant("tenant-live", "Live", "bk_live_key", mode="live")
    live = InProcessClient("bk_live_key")
    live_contact = make_contact(live)
    assert (
        live.post(f"/contacts/{live_contact['id']}/test-clock", {"frozen_time": "2024-01-01T00:00:00Z"}).status == 409
    )


def create_with_key(api: InProcessClient, path: str, body: dict, key: str) -> dict:
    reply = api.post(path, body, headers={"Idempotency-Key": key})
    replayed = reply.headers.get("Idempotent-Replayed") == "true"
    assert reply.status == (200 if replayed else 201), reply.body  # a replay created nothing now
    return dict(reply.body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/products", {"name": "Pro", "terms": [{"price": "10.00", "currency": "USD", "cycle": "month"}]}),
        ("/contacts", {"name": "Ann", "email": "ann@example.com"}),
    ],
)
def test_a_retried_create_with_an_idempotency_key_creates_once(api: InProcessClient, path: str, body: dict) -> None:
    first, retry, other = (
        create_with_key(api, path, body, "key-1"),
        create_with_key(api, path, body, "key-1"),
        create_with_key(api, path, body, "key-2"),
    )
    assert retry == first
    assert other["id"] != first["id"]
    listed = api.get(path).body["items"]
    assert sorted(x["id"] for x in listed) == sorted({first["id"], other["id"]})


def test_retried_price_terms_with_an_idempotency_key_are_added_once(api: InProcessClient) -> None:
    product = make_product(api)
    path = f"/products/{product['id']}/terms"
    body = {"price": "300.00", "currency": "USD", "cycle": "year"}
    first, retry = create_with_key(api, path, body, "terms-1"), create_with_key(api, path, body, "terms-1")
    assert retry == first
    assert len(api.get(f"/products/{product['id']}").body["terms"]) == 2


def test_a_retried_test_clock_create_answers_like_the_first(api: InProcessClient) -> None:
    contact = make_contact(api)
    body = {"frozen_time": "2024-01-01T00:00:00Z"}
    first = api.post(f"/contacts/{contact['id']}/test-clock", body)
    retry = api.post(f"/contacts/{contact['id']}/test-clock", body)
    assert (first.status, retry.status) == (201, 201) and retry.body == first.body
    other_time = api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-02-01T00:00:00Z"})
    assert other_time.status == 409


def test_a_contact_keeps_its_billing_address_and_credit_limit(api: InProcessClient) -> None:
    body = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "billing_address": {
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
        "credit_limit": {"KWD": "500", "JPY": "1000"},
        "classification": "enterprise",
    }
    created = api.post("/contacts", body)
    assert created.status == 201
    read = api.get(f"/contacts/{created.body['id']}").body
    assert read == created.body
    assert read["billing_address"] == {**body["billing_address"], "line2": "", "region": ""}
    assert read["credit_limit"] == {"JPY": "1000", "KWD": "500.000"}
