"""Bad input through the real API handler (moto table, authorizer and events as the gateway makes them):
a clear 4xx naming the field or the reason, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from billow.local.stack import add_tenant
from billow.storage.models import BillowItem

from tests.support import InProcessClient, make_contact, make_product

KEY_A, KEY_B = "bk_test_tenant_a", "bk_test_tenant_b"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-a", "Tenant A", KEY_A)
    add_tenant("tenant-b", "Tenant B", KEY_B)
    yield InProcessClient(KEY_A)


def item_count() -> int:
    return sum(1 for _ in BillowItem.scan())


def test_malformed_json_is_a_400_and_writes_nothing(api: InProcessClient) -> None:
    before = item_count()
    reply = api.post("/products", raw=b'{"name": "Pro", "terms": [')
    assert reply.status == 400
    assert reply.body["error"] == "request.malformed_json"
    assert item_count() == before


def test_unknown_fields_are_named(api: InProcessClient) -> None:
    reply = api.post("/contacts", {"name": "Ann", "email": "a@example.com", "nickname": "annie"})
    assert reply.status == 422
    assert {"field": "nickname", "reason": "unknown field"} in reply.body["fields"]


def test_wrong_types_are_named(api: InProcessClient) -> None:
    reply = api.post("/products", {"name": "Pro", "terms": [{"price": "abc", "currency": "USD", "cycle": "fortnight"}]})
    assert reply.status == 422
    fields = {f["field"] for f in reply.body["fields"]}
    assert {"terms[0].price", "terms[0].cycle"} <= fields


def test_negative_prices_are_refused(api: InProcessClient) -> None:
    before = item_count()
    reply = api.post("/products", {"name": "Pro", "terms": [{"price": "-5.00", "currency": "USD", "cycle": "month"}]})
    assert reply.status == 422
    assert reply.body["fields"][0]["field"] == "terms[0].price"
    assert "no sign" in reply.body["fields"][0]["reason"]
    assert item_count() == before


def test_unknown_currency_is_refused(api: InProcessClient) -> None:
    reply = api.post("/products", {"name": "Pro", "terms": [{"price": "5.00", "currency": "XYZ", "cycle": "month"}]})
    assert reply.status == 422
    assert reply.body["fields"][0]["field"] == "terms[0].currency"
    assert "ISO 4217" in reply.body["fields"][0]["reason"]


def test_too_many_decimals_for_the_currency(api: InProcessClient) -> None:
    reply = api.post("/products", {"name": "Pro", "terms": [{"price": "5.5", "currency": "JPY", "cycle": "month"}]})
    assert reply.status == 422
    assert reply.body["fields"][0]["field"] == "terms[0].price"


def test_json_numbers_with_fractions_are_refused_as_amounts(api: InProcessClient) -> None:
    reply = api.post("/products", {"name": "Pro", "terms": [{"price": 19.99, "currency": "USD", "cycle": "month"}]})
    assert reply.status == 422
    assert "decimal strings" in reply.body["fields"][0]["reason"]


@pytest.mark.parametrize("key", [None, "bk_test_wrong"])
def test_missing_or_wrong_api_key_is_401_on_every_route(api: InProcessClient, key: str | None) -> None:
    for method, path in [
        ("GET", "/products"),
        ("POST", "/contacts"),
        ("GET", "/invoices/inv_x"),
        ("POST", "/orders"),
        ("GET", "/no-such-route"),
    ]:
        reply = api.request(method, path, {}, key=key)
        assert reply.status == 401, (method, path)
        assert reply.body == {"error": "auth.unauthorized", "message": "missing or invalid API key", "fields": []}


def test_another_tenants_ids_are_not_found_and_untouched(api: InProcessClient) -> None:
    product = make_product(api)
    contact = make_contact(api)
    placed = api.post(
        "/orders",
        {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]},
    )
    assert placed.status == 201
    other = InProcessClient(KEY_B)
    before = item_count()
    assert other.get(f"/products/{product['id']}").status == 404
    assert other.get(f"/contacts/{contact['id']}").status == 404
    assert other.get(f"/contacts/{contact['id']}/invoices").status == 404
    subscription_id = placed.body["order"]["services"][0]["subscription_id"]
    assert other.get(f"/subscriptions/{subscription_id}").status == 404
    reply = other.post(
        "/orders",
        {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]},
    )
    assert reply.status == 404
    assert reply.body["fields"][0]["field"] == "contact_id"
    assert item_count() == before
    assert other.get("/products").body["items"] == []


def test_ordering_unknown_terms_names_the_item(api: InProcessClient) -> None:
    product = make_product(api)
    contact = make_contact(api)
    reply = api.post(
        "/orders", {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": "terms_nope"}]}
    )
    assert reply.status == 404
    assert reply.body["fields"][0]["field"] == "items[0].terms_id"


def test_flat_terms_refuse_a_quantity(api: InProcessClient) -> None:
    product = make_product(api)
    contact = make_contact(api)
    before = item_count()
    reply = api.post(
        "/orders",
        {
            "contact_id": contact["id"],
            "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"], "quantity": 3}],
        },
    )
    assert reply.status == 422
    assert reply.body["fields"][0]["field"] == "items[0].quantity"
    assert item_count() == before


def test_contacts_page_by_cursor_and_refuse_a_cursor_from_elsewhere(api: InProcessClient) -> None:
    names = {make_contact(api, f"C{i}")["name"] for i in range(3)}
    seen, cursor = [], None
    while True:
        page = api.get("/contacts?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200
        seen += [c["name"] for c in page.body["items"]]
        cursor = page.body["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names)

    other = InProcessClient(KEY_B)
    make_contact(other, "B1")
    make_contact(other, "B2")
    foreign = other.get("/contacts?limit=1").body["cursor"]
    assert foreign
    for bad in (foreign, "not-a-cursor", "e30="):  # e30= is "{}"
        reply = api.get(f"/contacts?limit=1&cursor={bad}")
        assert reply.status == 422, bad
        assert reply.body["fields"][0]["field"] == "cursor"


def test_an_unknown_credit_limit_currency_names_its_own_field(api: InProcessClient) -> None:
    reply = api.post("/contacts", {"name": "Ann", "email": "a@example.com", "credit_limit": {"ABC": "100"}})
    assert reply.status == 422
    assert reply.body["fields"][0]["field"] == "credit_limit.ABC"


def test_days_the_calendar_cannot_bill_are_refused_not_a_500(api: InProcessClient) -> None:
    contact = make_contact(api)
    clock = api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "9999-12-31T10:00:00Z"})
    assert clock.status == 422 and clock.body["fields"][0]["field"] == "frozen_time"
    product = make_product(api, {"price": "1.00", "currency": "USD", "cycle": "year"})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    quote = api.post("/orders/quote", {"contact_id": contact["id"], "items": [item], "start_date": "9999-06-01"})
    assert quote.status == 422 and quote.body["fields"][0]["field"] == "start_date"
    weekly = {"cycle": "week", "billing_model": "advance", "price": "1", "currency": "USD"}
    far = api.post("/billing/preview", {"terms": weekly, "start": "2000-01-03", "as_of": "2030-01-01"})
    assert far.status == 422 and far.body["fields"][0]["field"] == "as_of"
    assert "over 1000 invoices" in far.body["fields"][0]["reason"]
