"""A use case stages its writes in a unit of work and commits them as one transaction: all of them
or none, nothing written before the commit, each with its condition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from fractions import Fraction

import pytest
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.contacts import Contact
from billow.domain.errors import ConcurrentModification
from billow.domain.invoices import Invoice, Payment, PaymentMethod
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.services.context import Scope
from billow.services.ports import MAX_TRANSACTION_WRITES
from billow.storage.repository import DynamoStore

LIVE = Scope("t-uow", "live")


def an_invoice(contact_id: str, invoice_id: str = "inv_1") -> Invoice:
    price = Money.parse("10.00", "USD")
    period = Period(date(2024, 1, 1), date(2024, 2, 1))
    line = LineDraft("recurring", "Basic", "svc_1", "prod_1", 1, price, Fraction(1), price, period)
    draft = InvoiceDraft("sub_1", contact_id, "USD", date(2024, 1, 1), date(2024, 1, 1), period, (line,))
    return Invoice.issue(draft, invoice_id=invoice_id, number="INV-1", payment_terms_days=14)


def a_contact(contact_id: str = "con_1") -> Contact:
    return Contact(contact_id, "C", "c@example.com", None, None, {}, None, False, datetime(2024, 1, 1, tzinfo=UTC))


def stored_contact() -> tuple[DynamoStore, Contact]:
    store = DynamoStore()
    store.add_contact(LIVE, a_contact())
    contact = store.get_contact(LIVE, "con_1")
    assert contact is not None
    return store, contact


def test_nothing_is_written_before_the_commit_and_everything_at_it(moto_table: str) -> None:
    store, contact = stored_contact()
    invoice = an_invoice("con_1")
    payment = Payment(
        "pay_1", invoice.id, invoice.total, PaymentMethod.BANK_TRANSFER, "r1", date(2024, 1, 2), datetime.now(UTC)
    )

    # A use case no port method was written for: an invoice, its payment and the contact, together.
    work = store.unit_of_work("a composed use case")
    work.add_invoice(LIVE, invoice)
    work.add_payment(LIVE, invoice, payment)
    work.touch_contact(LIVE, "con_1", contact.version)
    assert store.get_invoice(LIVE, invoice.id) is None and store.payments_of(LIVE, "con_1", invoice.id) == []
    work.commit()

    assert store.invoices_of(LIVE, "con_1") == [replace(invoice, version=1)]
    assert store.payments_of(LIVE, "con_1", invoice.id) == [replace(payment, version=1)]
    assert store.get_contact(LIVE, "con_1") == replace(contact, version=contact.version + 1)


def test_one_failed_condition_writes_none_of_them(moto_table: str) -> None:
    store, contact = stored_contact()
    invoice = an_invoice("con_1")

    work = store.unit_of_work("a stale write")
    work.add_invoice(LIVE, invoice)
    work.save_contact(LIVE, replace(contact, name="Renamed", version=contact.version - 1))  # read before a change
    with pytest.raises(ConcurrentModification):
        work.commit()
    assert store.get_invoice(LIVE, invoice.id) is None
    assert store.get_contact(LIVE, "con_1") == contact

    again = store.unit_of_work("a retry")
    again.add_invoice(LIVE, invoice)
    again.add_invoice(LIVE, replace(invoice, id="inv_other"))
    again.commit()
    retried = store.unit_of_work("the same creates once more")
    retried.add_invoice(LIVE, invoice)
    with pytest.raises(ConcurrentModification):  # a create is conditioned on the id being new
        retried.commit()


def test_a_transaction_holds_at_most_dynamodbs_limit_of_distinct_items(moto_table: str) -> None:
    store = DynamoStore()
    work = store.unit_of_work("too many")
    for n in range(MAX_TRANSACTION_WRITES):
        work.add_invoice(LIVE, replace(an_invoice("con_1"), id=f"inv_{n}"))
    with pytest.raises(ValueError, match="over 100 writes"):
        work.add_invoice(LIVE, replace(an_invoice("con_1"), id="inv_one_more"))
    twice = store.unit_of_work("twice")
    twice.add_invoice(LIVE, an_invoice("con_1"))
    with pytest.raises(ValueError, match="staged twice"):
        twice.save_invoice(LIVE, an_invoice("con_1"), 1)
    assert store.invoices_of(LIVE, "con_1") == []
