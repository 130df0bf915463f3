"""Every listing pages with `limit` and a cursor, refuses query parameters it does not declare,
and `GET /invoices` lists the business's invoices with filters (moto table, through the handler)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, advance_clock, make_contact, make_product

KEY = "bk_test_listings"
KEY_B = "bk_test_listings_b"
ADVANCE = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-l", "Tenant L", KEY)
    add_tenant("tenant-lb", "Tenant LB", KEY_B)
    yield InProcessClient(KEY)


def every_page(api: InProcessClient, path: str, key: str = "items", limit: int = 2) -> list[list[Any]]:
    """Each page of a listing, following its cursor to the end."""
    pages, cursor = [], None
    joiner = "&" if "?" in path else "?"
    while True:
        reply = api.get(f"{path}{joiner}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply.body
        assert len(reply.body[key]) <= limit
        pages.append(reply.body[key])
        cursor = reply.body["cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor does not move"


def subscribed(api: InProcessClient, frozen: str = "2024-01-10T10:00:00+00:00") -> dict[str, Any]:
    """A contact on a test clock with one advance monthly service ordered (its first invoice issued)."""
    product = make_product(api, ADVANCE)
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": frozen})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
    assert placed.status == 201, placed.body
    return {"contact": contact, "product": product, "placed": placed.body}


def test_an_unknown_query_parameter_is_refused_on_every_route(api: InProcessClient) -> None:
    product = make_product(api)
    contact = make_contact(api)
    for path in (
        "/products?limt=1",
        f"/products/{product['id']}?expand=terms",
        "/contacts?page=2",
        f"/contacts/{contact['id']}/subscriptions?status=active",
        "/invoices?stauts=paid",
        "/settings?x=1",
    ):
        reply = api.get(path)
        assert reply.status == 422, (path, reply.body)
        assert reply.body["error"] == "request.unknown_parameter", path
        assert reply.body["fields"][0]["field"] == path.split("?")[1].split("=")[0]
    assert api.post("/contacts?dry_run=1", {"name": "A", "email": "a@example.com"}).status == 422
    assert api.get("/products?limit=1").status == 200  # declared parameters still pass


def test_products_page_with_their_terms(api: InProcessClient) -> None:
    made = {make_product(api, ADVANCE, name=f"P{i}")["id"] for i in range(5)}
    # a product with several terms must not be split over two pages
    several = api.post("/products", {"name": "Many", "terms": [ADVANCE, {**ADVANCE, "price": "20.00"}]}).body
    made.add(several["id"])
    first = api.get("/products?limit=1")
    assert first.status == 200 and len(first.body["items"]) == 1 and first.body["cursor"]
    pages = every_page(api, "/products")
    listed = [p for page in pages for p in page]
    assert sorted(p["id"] for p in listed) == sorted(made)
    assert next(p for p in listed if p["id"] == several["id"])["terms"] == several["terms"]
    assert len(pages) == 3 and pages[-1]  # 6 products in pages of 2: no empty last page


def test_a_cursor_of_another_listing_or_tenant_is_refused(api: InProcessClient) -> None:
    for i in range(3):
        make_product(api, name=f"P{i}")
    other = InProcessClient(KEY_B)
    make_product(other, name="B1")
    make_product(other, name="B2")
    foreign = other.get("/products?limit=1").body["cursor"]
    contacts_cursor = None
    for i in range(2):
        make_contact(api, f"C{i}")
    contacts_cursor = api.get("/contacts?limit=1").body["cursor"]
    for bad in (foreign, contacts_cursor, "not-a-cursor", "e30="):
        reply = api.get(f"/products?limit=1&cursor={bad}")
        assert reply.status == 422, bad
        assert reply.body["fields"][0]["field"] == "cursor"


def test_a_contacts_subscriptions_and_an_action_log_page(api: InProcessClient) -> None:
    contact = make_contact(api)
    currencies = ["USD", "EUR", "GBP"]
    for currency in currencies:
        product = make_product(api, {**ADVANCE, "currency": currency})
        item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
        assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    pages = every_page(api, f"/contacts/{contact['id']}/subscriptions")
    subscriptions = [s for page in pages for s in page]
    assert sorted(s["currency"] for s in subscriptions) == sorted(currencies)

    subscription = subscriptions[0]
    service = subscription["services"][0]["id"]
    base = f"/subscriptions/{subscription['id']}"
    for days in (30, 40, 50):
        reply = api.post(f"{base}/services/{service}/pause", {"in_days": days, "days": 3})
        assert reply.status == 202, reply.body
    log = [a for page in every_page(api, f"{base}/actions", key="actions") for a in page]
    assert [a["on"] for a in log] == sorted(a["on"] for a in log) and len(log) == 3


def test_invoices_list_tenant_wide_with_filters_and_pages(api: InProcessClient) -> None:
    a = subscribed(api)
    b = subscribed(api)
    contact_a = a["contact"]["id"]
    # Three monthly invoices for A (Jan, Feb, Mar), one for B (Jan); B's is paid.
    advance_clock(api, contact_a, "2024-03-10T12:00:00+00:00")
    (b_invoice,) = b["placed"]["invoices"]
    paid = api.post(
        f"/invoices/{b_invoice['id']}/payments",
        {"amount": "10.00", "currency": "USD", "reference": "wire-1", "received_on": "2024-01-10"},
    )
    assert paid.status == 201, paid.body

    everything = api.get("/invoices")
    assert everything.status == 200, everything.body
    listed = everything.body["items"]
    assert len(listed) == 4 and everything.body["cursor"] is None
    assert [i["issue_date"] for i in listed] == sorted(i["issue_date"] for i in listed)

    pages = every_page(api, "/invoices", limit=1)
    assert [i["id"] for page in pages for i in page] == [i["id"] for i in listed]

    def ids(query: str) -> set[str]:
        reply = api.get(f"/invoices?{query}")
        assert reply.status == 200, (query, reply.body)
        return {i["id"] for page in every_page(api, f"/invoices?{query}") for i in page}

    a_invoices = {i["id"] for i in listed if i["contact_id"] == contact_a}
    assert ids(f"contact_id={contact_a}") == a_invoices
    assert ids("status=paid") == {b_invoice["id"]}
    # On A's clock (2024-03-10) its January and February invoices are past due (14 days' terms).
    overdue = {i["id"] for i in listed if i["status"] == "overdue"}
    assert len(overdue) == 2 and overdue <= a_invoices
    assert ids("status=overdue") == overdue
    assert ids("status=open") == a_invoices - overdue
    assert ids("kind=credit_note") == set()
    assert ids("kind=invoice") == {i["id"] for i in listed}
    february = {i["id"] for i in listed if "2024-02-01" <= i["issue_date"] < "2024-03-01"}
    assert len(february) == 1
    assert ids("issued_from=2024-02-01&issued_before=2024-03-01") == february
    assert ids(f"issued_from=2024-02-01&issued_before=2024-03-01&contact_id={contact_a}") == february
    assert api.get("/invoices?status=late").status == 422
    assert api.get("/invoices?issued_from=2024-03-01&issued_before=2024-02-01").status == 422


def test_the_contact_route_lists_the_same_invoices(api: InProcessClient) -> None:
    a = subscribed(api)
    contact = a["contact"]["id"]
    advance_clock(api, contact, "2024-04-10T12:00:00+00:00")
    pages = every_page(api, f"/contacts/{contact}/invoices")
    assert [i["id"] for page in pages for i in page] == [i["id"] for i in api.get("/invoices").body["items"]]
    assert api.get(f"/contacts/{contact}/invoices?status=paid").body == {"items": [], "cursor": None}
