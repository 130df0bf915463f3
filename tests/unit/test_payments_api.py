"""Payments as an integrator reads them and staff record them, through the API handler (moto, the
fake rail): an invoice's payments listed (an empty list when none), each showing what was refunded
of it and what its invoice could not take; a staff payment quoting a collected charge's reference
refused, never taken for that payment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from billow.local.stack import add_tenant
from billow.storage.repository import DynamoStore

from tests.fake_rail import FakeRail
from tests.refund_support import Seeded, seed
from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_payments_api"
TENANT = "t-pay"


@pytest.fixture
def rail(tmp_path: Path) -> FakeRail:
    return FakeRail(tmp_path / "rail.sqlite")


@pytest.fixture
def api(moto_table: str, rail: FakeRail, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InProcessClient, Seeded]]:
    import runtime

    add_tenant(TENANT, "Payments Ltd", KEY)
    monkeypatch.setattr(runtime, "payment_gateway", lambda scope: rail, raising=False)
    yield InProcessClient(KEY), seed(DynamoStore(), rail, tenant_id=TENANT)


def usd(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "USD"}


def test_an_invoices_payments_are_a_list_showing_refunded_and_unapplied(api: tuple[InProcessClient, Seeded]) -> None:
    client, seeded = api
    product = make_product(client, {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(client)
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    (unpaid,) = client.post("/orders", {"contact_id": contact["id"], "items": items}).body["invoices"]
    none = client.get(f"/invoices/{unpaid['id']}/payments")
    assert none.status == 200 and none.body["items"] == [], none.body
    assert client.get(f"/invoices/{unpaid['id']}").body["payments"] == []

    refunded = client.post(
        f"/credit-notes/{seeded.note.id}/refund", {"method": "card", "reference": "r-1", "amount": "12.00"}
    )
    assert refunded.status == 201, refunded.body
    (card,) = client.get(f"/invoices/{seeded.invoice.id}/payments").body["items"]
    assert card["id"] == seeded.payment.id and card["reference"] == seeded.payment.reference
    assert (card["amount"], card["amount_refunded"], card["amount_unapplied"]) == (
        usd("31.00"),
        usd("12.00"),
        usd("0.00"),
    )
    assert client.get(f"/invoices/{seeded.invoice.id}").body["payments"] == [card]
    assert client.get("/invoices/inv_nowhere/payments").status == 404


def test_a_staff_payment_quoting_a_collected_charge_is_refused_and_the_charge_stays_as_it_was(
    api: tuple[InProcessClient, Seeded],
) -> None:
    client, seeded = api
    charge = seeded.payment.reference
    path = f"/invoices/{seeded.invoice.id}/payments"
    for method in ("card", "bank_transfer"):
        staff = {
            "amount": "31.00",
            "currency": "USD",
            "method": method,
            "reference": charge,
            "received_on": "2025-01-01",
        }
        refused = client.post(path, staff)
        assert (refused.status, refused.body["error"]) == (409, "payment.reference_taken"), refused.body
        assert [f["field"] for f in refused.body["fields"]] == ["reference"]
    (only,) = client.get(path).body["items"]
    assert (only["id"], only["method"], only["amount"]) == (seeded.payment.id, "card", usd("31.00"))
