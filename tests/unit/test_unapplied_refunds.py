"""A card payment's unapplied money (what its invoice never took) and its refunds: a credit note's
refund never spends it and its own refund never spends what the invoice took, so the two together
never exceed the payment; the route's answers and refusals (moto, the fake rail)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from billow.domain.errors import Conflict
from billow.domain.invoices import InvoiceKind, InvoiceStatus, Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.receivables import refund_settled, refund_to_payment, refund_unapplied
from billow.local.stack import add_tenant
from billow.storage.repository import DynamoStore

from tests.collection_support import make_invoice
from tests.fake_rail import FakeRail
from tests.integration.test_unapplied_refunds import unapplied_card_payment
from tests.support import InProcessClient

NOW = datetime(2025, 1, 10, 12, tzinfo=UTC)
DAY = date(2025, 1, 10)
KEY = "bk_test_unapplied"


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def test_a_credit_notes_refund_and_an_unapplied_refund_never_spend_the_same_money() -> None:
    invoice = replace(make_invoice("con_1", "inv_1", "31.00"), amount_unapplied=usd("10.00"))
    card = Payment(
        "pay_1", "inv_1", usd("41.00"), PaymentMethod.CARD, "pi_1", DAY, NOW, version=1, unapplied=usd("10.00")
    )
    note = replace(make_invoice("con_1", "cn_1", "-41.00"), status=InvoiceStatus.ISSUED)  # a credit note
    assert note.kind is InvoiceKind.CREDIT_NOTE
    assert card.refundable_for_credit == usd("31.00")
    with pytest.raises(Conflict) as beyond:  # 31.00 came for the invoice: the credit note cannot reach the rest
        refund_to_payment(note, card, usd("31.01"), credited={"inv_1"}, refund_id="r1", reference="a", on=DAY, now=NOW)
    assert beyond.value.code == "refund.exceeds_payment"  # the credit note has 41.00: the payment's bound refused

    invoice2, card2, unapplied = refund_unapplied(
        invoice, card, usd("4.00"), refund_id="r2", reference="b", on=DAY, now=NOW
    )
    assert (card2.unapplied, card2.refunded, invoice2.unapplied) == (usd("6.00"), usd("4.00"), usd("6.00"))
    assert card2.refundable_for_credit == usd("31.00")  # unchanged: the unapplied refund took its own money
    with pytest.raises(Conflict) as over:
        refund_unapplied(invoice2, card2, usd("6.01"), refund_id="r3", reference="c", on=DAY, now=NOW)
    assert (over.value.code, over.value.field) == ("refund.exceeds_unapplied", "amount")
    _, card3, _ = refund_to_payment(
        note, card2, usd("31.00"), credited={"inv_1"}, refund_id="r4", reference="d", on=DAY, now=NOW
    )
    assert (card3.refundable, card3.refundable_for_credit, card3.unapplied) == (usd("6.00"), usd("0.00"), usd("6.00"))

    back_invoice, back_card, failed = refund_settled(invoice2, card2, unapplied, rail_ref=None, failure="refused")
    assert (back_card.unapplied, back_card.refunded, back_invoice.unapplied) == (
        usd("10.00"),
        usd("0.00"),
        usd("10.00"),
    )
    assert failed.unapplied and back_invoice.refunded == invoice.refunded  # an invoice's refunded is untouched


@pytest.fixture
def api(
    moto_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[InProcessClient, Payment, FakeRail]]:
    import runtime

    rail = FakeRail(tmp_path / "rail.sqlite")
    add_tenant("t1", "Tenant One", KEY)
    monkeypatch.setattr(runtime, "payment_gateway", lambda scope: rail, raising=False)
    yield InProcessClient(KEY), unapplied_card_payment(DynamoStore(), rail), rail


def test_the_route_refunds_unapplied_money_and_answers_refusals_in_the_error_shape(
    api: tuple[InProcessClient, Payment, FakeRail],
) -> None:
    client, card, rail = api
    path = f"/invoices/{card.invoice_id}/payments/{card.id}/refund-unapplied"
    shown = client.get(f"/invoices/{card.invoice_id}").body
    assert shown["amount_unapplied"]["amount"] == "30.00"
    done = client.post(path, {"reference": "t-1", "amount": "12.50"})
    assert done.status == 201, done.body
    assert done.body["refund"]["unapplied"] is True and done.body["refund"]["credit_note_id"] is None
    assert done.body["refund"]["status"] == "succeeded" and done.body["refund"]["rail_ref"]
    assert done.body["invoice"]["amount_unapplied"]["amount"] == "17.50"
    assert (done.body["payment"]["amount_unapplied"]["amount"], done.body["payment"]["amount_refunded"]["amount"]) == (
        "17.50",
        "12.50",
    )
    again = client.post(path, {"reference": "t-1", "amount": "12.50"})
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (200, "true")
    reused = client.post(path, {"reference": "t-1", "amount": "1.00"})
    assert (reused.status, reused.body["error"]) == (422, "idempotency.key_reused")
    over = client.post(path, {"reference": "t-2", "amount": "17.51"})
    assert (over.status, over.body["error"], over.body["fields"][0]["field"]) == (
        409,
        "refund.exceeds_unapplied",
        "amount",
    )
    other = client.post(path, {"reference": "t-3", "amount": "1.00", "currency": "EUR"})
    assert (other.status, other.body["error"]) == (422, "money.currency_mismatch")
    assert other.body["fields"][0]["reason"].startswith("invoice "), other.body
    precise = client.post(path, {"reference": "t-4", "amount": "1.001"})
    assert precise.status == 422 and precise.body["fields"]
    missing = client.post(f"/invoices/{card.invoice_id}/payments/pay_nowhere/refund-unapplied", {"reference": "t-5"})
    assert (missing.status, missing.body["error"]) == (404, "payment.not_found")
    bank = next(p for p in client.get(f"/invoices/{card.invoice_id}/payments").body["items"] if p["method"] != "card")
    by_transfer = client.post(
        f"/invoices/{card.invoice_id}/payments/{bank['id']}/refund-unapplied", {"reference": "t-6"}
    )
    assert (by_transfer.status, by_transfer.body["error"]) == (409, "refund.not_a_card_payment")
    assert [r.amount for r in rail.refunds_of(card.reference)] == [usd("12.50")]
