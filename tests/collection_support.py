"""Seeding contacts and invoices to collect, on whatever table the models point at."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import TYPE_CHECKING
from uuid import uuid4

from billow.domain.calendar import Period
from billow.domain.collection import CollectionMode, CollectionSettings
from billow.domain.contacts import Contact
from billow.domain.invoices import Invoice, InvoiceStatus
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.tenants import TenantSettings
from billow.local.stripe import VISA, LocalStripe
from billow.services.context import Scope
from billow.storage.repository import DynamoStore

from tests.fake_rail import DECLINING
from tests.stripe_support import confirm_setup

if TYPE_CHECKING:
    from billow.gateways.stripe import StripeGateway

SCOPE = Scope("t1", "test")
NOW = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
DAY = date(2024, 5, 1)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def seed_tenant(store: DynamoStore, collection: CollectionSettings | None = None) -> None:
    store.put_settings(TenantSettings(SCOPE.tenant_id, "Tenant One", collection=collection or CollectionSettings()))


def seed_contact(
    store: DynamoStore,
    contact_id: str,
    *,
    method: str | None = "pm_card_visa",
    mode: CollectionMode | None = None,
    credit_limit: Mapping[str, Money] | None = None,
    customer_ref: str | None = None,
) -> Contact:
    contact = Contact(
        contact_id,
        f"Contact {contact_id}",
        f"{contact_id}@example.com",
        None,
        None,
        dict(credit_limit or {}),
        None,
        True,
        NOW,
        collection=mode,
        gateway_customer_ref=customer_ref or (None if method is None else f"cus_{contact_id}"),
        default_method_ref=method,
    )
    store.add_contact(SCOPE, contact)
    return contact


def declining_contact(store: DynamoStore, contact_id: str) -> Contact:
    return seed_contact(store, contact_id, method=DECLINING)


def make_invoice(
    contact_id: str, invoice_id: str, amount: str, currency: str = "USD", status: InvoiceStatus = InvoiceStatus.OPEN
) -> Invoice:
    """An invoice (a credit note for a negative amount) of one line, issued on `DAY`."""
    price = Money.parse(amount, currency)
    period = Period(DAY, date(2024, 6, 1))
    line = LineDraft("recurring", "Pro", "svc_1", "prod_1", 1, price, Fraction(1), price, period)
    return Invoice(
        invoice_id,
        f"INV-{invoice_id}",
        contact_id,
        f"sub_{contact_id}",
        currency,
        DAY,
        DAY,
        date(2024, 5, 15),
        period,
        (line,),
        Money.zero(currency),
        status,
        status_on=DAY,
    )


def seed_invoice(store: DynamoStore, contact_id: str, invoice_id: str, amount: str, currency: str = "USD") -> Invoice:
    invoice = make_invoice(contact_id, invoice_id, amount, currency)
    work = store.unit_of_work("seeding")
    work.add_invoice(SCOPE, invoice)
    work.commit()
    return replace(invoice, version=1)


def stored_invoice(store: DynamoStore, invoice_id: str) -> Invoice:
    invoice = store.get_invoice(SCOPE, invoice_id)
    assert invoice is not None
    return invoice


def card_holder(store: DynamoStore, server: LocalStripe, rail: StripeGateway, card: str = VISA) -> str:
    """A contact with a Stripe customer and a saved `card` (its SetupIntent confirmed as Stripe.js would)."""
    contact_id = f"con-{uuid4().hex[:10]}"
    customer = rail.ensure_customer(
        existing_ref=None, email="ada@example.com", name="Ada", metadata={}, idempotency_key=uuid4().hex
    )
    setup = rail.start_setup(customer, idempotency_key=uuid4().hex, metadata={})
    confirm_setup(server, setup.ref, card)
    method = rail.setup_state(setup.ref).method
    assert method is not None
    rail.attach_method(method.ref, customer)  # as recording it does (localstripe does not attach it)
    seed_contact(store, contact_id, method=method.ref, customer_ref=customer)
    return contact_id
