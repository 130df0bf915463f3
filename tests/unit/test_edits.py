"""Products, price terms, contacts and the business profile can be edited and archived
(moto table, through the handler)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, advance_clock, make_contact, make_product

KEY = "bk_test_edits"
ADVANCE = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}
CLOCK = "2024-01-10T10:00:00+00:00"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-e", "Tenant E", KEY)
    yield InProcessClient(KEY)


def item(product: dict[str, Any], terms_id: str | None = None) -> dict[str, Any]:
    return {"product_id": product["id"], "terms_id": terms_id or product["terms"][0]["id"]}


def clocked_contact(api: InProcessClient) -> str:
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": CLOCK}).status == 201
    return contact


def order(api: InProcessClient, contact: str, *items: dict[str, Any]) -> Any:
    return api.post("/orders", {"contact_id": contact, "items": list(items)})


def test_a_product_is_renamed_and_archived(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    renamed = api.patch(f"/products/{product['id']}", {"name": "Pro 2", "description": "More"})
    assert renamed.status == 200, renamed.body
    assert (renamed.body["name"], renamed.body["description"]) == ("Pro 2", "More")
    assert api.get(f"/products/{product['id']}").body["name"] == "Pro 2"
    assert api.patch(f"/products/{product['id']}", {"name": ""}).status == 422

    contact = clocked_contact(api)
    assert order(api, contact, item(product)).status == 201
    archived = api.post(f"/products/{product['id']}/archive")
    assert archived.status == 200 and archived.body["archived"] is True
    assert api.post(f"/products/{product['id']}/archive").status == 200  # repeating changes nothing

    refused = order(api, make_contact(api)["id"], item(product))
    assert refused.status == 409 and refused.body["error"] == "catalog.product_archived"
    assert api.patch(f"/products/{product['id']}", {"name": "X"}).body["error"] == "catalog.product_archived"
    # its subscription keeps billing
    before = len(api.get(f"/contacts/{contact}/invoices").body["items"])
    advance_clock(api, contact, "2024-03-10T12:00:00+00:00")
    assert len(api.get(f"/contacts/{contact}/invoices").body["items"]) == before + 2

    assert api.post(f"/products/{product['id']}/unarchive").body["archived"] is False
    assert order(api, make_contact(api)["id"], item(product)).status == 201


def test_a_service_cannot_change_to_an_archived_product(api: InProcessClient) -> None:
    basic = make_product(api, ADVANCE, name="Basic")
    gold = make_product(api, {**ADVANCE, "price": "30.00"}, name="Gold")
    contact = clocked_contact(api)
    placed = order(api, contact, item(basic)).body
    service = placed["order"]["services"][0]
    api.post(f"/products/{gold['id']}/archive")
    path = f"/subscriptions/{service['subscription_id']}/services/{service['service_id']}/change"
    refused = api.post(path, {"product_id": gold["id"], "terms_id": gold["terms"][0]["id"]})
    assert refused.status == 409 and refused.body["error"] == "catalog.product_archived"


def test_editing_price_terms_makes_a_new_version_and_subscriptions_keep_theirs(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    old = product["terms"][0]
    contact = clocked_contact(api)
    assert order(api, contact, item(product)).status == 201

    edited = api.patch(
        f"/products/{product['id']}/terms/{old['id']}", {"price": "12.50"}, headers={"Idempotency-Key": "v2"}
    )
    assert edited.status == 201, edited.body
    new = edited.body
    assert new["id"] != old["id"] and new["price"] == {"amount": "12.50", "currency": "USD"}
    assert new["cycle"] == old["cycle"] and new["billing_model"] == old["billing_model"]
    again = api.patch(
        f"/products/{product['id']}/terms/{old['id']}", {"price": "12.50"}, headers={"Idempotency-Key": "v2"}
    )
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true"  # a replay
    assert again.body["id"] == new["id"]  # a retry makes no third version

    shown = {t["id"]: t for t in api.get(f"/products/{product['id']}").body["terms"]}
    assert len(shown) == 2
    assert shown[old["id"]]["archived"] is True and shown[old["id"]]["replaced_by"] == new["id"]
    assert shown[new["id"]]["archived"] is False

    refused = order(api, make_contact(api)["id"], item(product, old["id"]))
    assert refused.status == 409 and refused.body["error"] == "catalog.terms_archived"
    assert new["id"] in refused.body["message"]
    edit_old = api.patch(f"/products/{product['id']}/terms/{old['id']}", {"price": "13.00"})
    assert edit_old.status == 409 and edit_old.body["error"] == "catalog.terms_archived"

    # the existing subscription keeps 10.00; a new order gets 12.50
    before = {i["id"] for i in api.get(f"/contacts/{contact}/invoices").body["items"]}
    advance_clock(api, contact, "2024-02-10T12:00:00+00:00")
    (february,) = [i for i in api.get(f"/contacts/{contact}/invoices").body["items"] if i["id"] not in before]
    assert february["total"] == {"amount": "10.00", "currency": "USD"}
    newcomer = clocked_contact(api)
    (first,) = order(api, newcomer, item(product, new["id"])).body["invoices"]
    assert first["total"] == {"amount": "12.50", "currency": "USD"}


def test_price_terms_are_archived(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    terms = product["terms"][0]["id"]
    archived = api.post(f"/products/{product['id']}/terms/{terms}/archive")
    assert archived.status == 200 and archived.body["terms"][0]["archived"] is True
    refused = order(api, make_contact(api)["id"], item(product))
    assert refused.status == 409 and refused.body["error"] == "catalog.terms_archived"
    assert api.post(f"/products/{product['id']}/terms/terms_nope/archive").status == 404


def test_a_contact_is_edited(api: InProcessClient) -> None:
    contact = make_contact(api)
    changed = api.patch(
        f"/contacts/{contact['id']}",
        {
            "name": "Ann Other",
            "email": "ann@other.example",
            "billing_address": {"line1": "1 Main St", "city": "Oslo", "country": "NO"},
            "classification": "vip",
            "credit_limit": {"EUR": "500.00", "JPY": "20000"},
            "preferred_payment_method": "card",
        },
    )
    assert changed.status == 200, changed.body
    shown = api.get(f"/contacts/{contact['id']}").body
    assert (shown["name"], shown["email"], shown["classification"]) == ("Ann Other", "ann@other.example", "vip")
    assert shown["billing_address"]["city"] == "Oslo"
    assert shown["credit_limit"] == {"EUR": "500.00", "JPY": "20000"}
    assert shown["preferred_payment_method"] == "card"
    cleared = api.patch(f"/contacts/{contact['id']}", {"classification": None, "credit_limit": None}).body
    assert (cleared["classification"], cleared["credit_limit"], cleared["name"]) == (None, {}, "Ann Other")
    bad = api.patch(f"/contacts/{contact['id']}", {"credit_limit": {"EUR": "-1.00"}})
    assert bad.status == 422
    assert api.patch(f"/contacts/{contact['id']}", {"email": "not-an-email"}).status == 422
    assert api.patch("/contacts/con_nope", {"name": "X"}).status == 404


def test_a_contact_with_live_services_cannot_be_archived(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    contact = clocked_contact(api)
    placed = order(api, contact, item(product)).body
    refused = api.post(f"/contacts/{contact}/archive")
    assert refused.status == 409 and refused.body["error"] == "contact.has_live_services"

    service = placed["order"]["services"][0]
    path = f"/subscriptions/{service['subscription_id']}/services/{service['service_id']}/cancel"
    assert api.post(path, {}).status in (201, 202)
    advance_clock(api, contact, "2024-03-10T12:00:00+00:00")
    archived = api.post(f"/contacts/{contact}/archive")
    assert archived.status == 200, archived.body
    assert archived.body["archived"] is True
    refused_order = order(api, contact, item(product))
    assert refused_order.status == 409 and refused_order.body["error"] == "contact.archived"
    assert api.post("/orders/quote", {"contact_id": contact, "items": [item(product)]}).status == 409
    assert api.post(f"/contacts/{contact}/unarchive").body["archived"] is False
    assert order(api, contact, item(product)).status == 201


def test_the_business_profile_is_edited(api: InProcessClient) -> None:
    changed = api.patch(
        "/settings/profile",
        {"name": "Acme AS", "timezone": "Europe/Oslo", "invoice_prefix": "ACME", "payment_terms_days": 30},
    )
    assert changed.status == 200, changed.body
    settings = api.get("/settings").body
    assert (settings["name"], settings["timezone"], settings["invoice_prefix"], settings["payment_terms_days"]) == (
        "Acme AS",
        "Europe/Oslo",
        "ACME",
        30,
    )
    bad = api.patch("/settings/profile", {"timezone": "Mars/Olympus"})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "timezone"
    assert api.patch("/settings/profile", {"invoice_prefix": "A-B"}).status == 422
    assert api.patch("/settings/profile", {"payment_terms_days": 400}).status == 422
    assert api.get("/settings").body["timezone"] == "Europe/Oslo"  # a refused change changes nothing

    product = make_product(api, ADVANCE)
    contact = clocked_contact(api)
    (invoice,) = order(api, contact, item(product)).body["invoices"]
    assert invoice["number"].startswith("ACME-")
    assert invoice["due_date"] == "2024-02-09"  # 30 days after 2024-01-10


def test_an_order_landing_while_a_contact_is_archived_stops_the_archiving(api: InProcessClient) -> None:
    """The archiving reads the contact's subscriptions, then writes; an order placed in between
    moves the contact's version on, so the archiving retries, sees the service and refuses."""
    from billow.domain.errors import Conflict
    from billow.domain.subscriptions import Subscription
    from billow.services.contacts import set_contact_archived
    from billow.services.tenants import tenant_context
    from billow.storage.repository import DynamoStore

    product = make_product(api, ADVANCE)
    contact = make_contact(api)["id"]

    class OrderSlipsIn(DynamoStore):
        slipped = False

        def subscriptions_of(self, tenant_id: str, contact_id: str) -> list[Subscription]:
            seen = super().subscriptions_of(tenant_id, contact_id)
            if not self.slipped:
                self.slipped = True
                assert order(api, contact, item(product)).status == 201
            return seen

    store = OrderSlipsIn()
    with pytest.raises(Conflict) as refused:
        set_contact_archived(store, tenant_context(store, "tenant-e", "test"), contact, True)
    assert refused.value.code == "contact.has_live_services"
    assert api.get(f"/contacts/{contact}").body["archived"] is False
