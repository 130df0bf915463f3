"""A credit note to refund to a card: a contact's first invoice paid by card on the fake rail, then
its service regretted (its credit note credits the invoice's days), or two invoices and two credit
notes. Shared by the unit (moto) and integration (DynamoDB Local) tests of card refunds.

The card payment is collected as the collector collects an issued invoice (`collect_invoice` on the
fake rail: payment id derived from the charge ref, method card, reference = the charge ref).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billow.domain.actions.regret import REGRET
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.collection import AttemptStatus
from billow.domain.invoices import Invoice, Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.tenants import TenantSettings
from billow.services import actions, catalog, contacts, invoices, ordering
from billow.services.actions import ActionRequest
from billow.services.billing import InvoiceNumbers
from billow.services.collection import collect_invoice
from billow.services.context import TenantContext, keyed_ids
from billow.services.gateway import PaymentGateway
from billow.services.receivables import Refunded, RefundInput, refund_credit_note
from billow.storage.repository import DynamoStore

from tests.fake_rail import FakeRail

START = datetime(2025, 1, 1, 10, tzinfo=UTC)


class Clock:
    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant


@dataclass
class Seeded:
    ctx: TenantContext
    contact_id: str
    invoice: Invoice
    payment: Payment
    note: Invoice
    notes: tuple[Invoice, ...] = ()
    """Every credit note, one per service regretted (`note` is the first)."""


def pay_by_card(
    store: DynamoStore,
    rail: PaymentGateway,
    ctx: TenantContext,
    invoice_id: str,
    clock: Clock,
    card: tuple[str, str] | None = None,
) -> Payment:
    """Collect what is due on the invoice by card, as the collector does when it is issued: the
    contact gets a (fake) rail customer and default card, then `collect_invoice` charges it and
    records the payment (method card, reference = the charge ref). `card`: the rail's (customer,
    saved method) to charge (default: made-up ones, which the fake rail takes)."""
    invoice = store.get_invoice(ctx.scope, invoice_id)
    contact = store.get_contact(ctx.scope, invoice.contact_id) if invoice else None
    assert invoice is not None and contact is not None
    if contact.default_method_ref is None:
        customer, method = card or (f"cus_{contact.id}", "pm_card_visa")
        store.save_contact(ctx.scope, replace(contact, gateway_customer_ref=customer, default_method_ref=method))
    for _ in range(40):  # a collector (the local stack's) may hold the attempt meanwhile: wait for it
        attempt = collect_invoice(store, rail, ctx.scope, invoice_id, clock=clock)
        if attempt is not None and attempt.status is AttemptStatus.SUCCEEDED:
            break
        time.sleep(0.25)
    assert attempt is not None and attempt.status is AttemptStatus.SUCCEEDED, attempt
    (payment,) = [
        p for p in store.payments_of(ctx.scope, invoice.contact_id, invoice_id) if p.reference == attempt.charge_ref
    ]
    return payment


def seed(
    store: DynamoStore,
    rail: PaymentGateway,
    tenant_id: str = "t1",
    price: str = "31.00",
    by_card: str | None = None,
    services: int = 1,
    test_clock: bool = True,
    card: tuple[str, str] | None = None,
    currency: str = "USD",
    wired: tuple[PaymentMethod, str] = (PaymentMethod.BANK_TRANSFER, "wire-1"),
    key: str = "seed",
) -> Seeded:
    """A contact on a test clock whose first monthly invoice (`services` services of `price`, billed
    in advance on 1 January 2025) was paid by card (`by_card` of it; the rest by bank transfer),
    and each service regretted the same day: a credit note of `price` each, crediting that invoice.
    Without `test_clock`, the contact is on the tests' fixed clock (no clock item whose check would
    serialise its writes). `wired`: the method and reference staff record the rest with; `key`: the
    seed's idempotency keys (another key seeds another contact of the same tenant)."""
    settings = store.get_settings(tenant_id) or store.put_settings(TenantSettings(tenant_id, "Tenant One"))
    ctx = TenantContext(tenant_id, "test", settings)
    clock = Clock(START)
    new_id = keyed_ids(tenant_id, key)
    contact = contacts.create_contact(
        store, ctx, name="Ann", email="ann@example.com", billing_address=None, classification=None,
        credit_limit=None, preferred_payment_method=None, clock=clock, new_id=new_id,
    )  # fmt: skip
    if test_clock:
        contacts.create_test_clock(store, ctx, contact.id, START)
    terms = [catalog.PriceTermsInput(price, currency, Cycle.MONTH, BillingModel.ADVANCE)]
    product = catalog.create_product(store, ctx, name="Pro", description="", terms=terms, new_id=new_id)
    items = [ordering.OrderItemInput(product.id, product.terms[0].id)] * services
    numbers = InvoiceNumbers(store)
    ordering.place_order(store, ctx, contact.id, items, None, f"order-{key}", clock, new_id, numbers)
    (invoice,) = store.invoices_of(ctx.scope, contact.id)
    if by_card is not None:  # the rest first, by bank transfer: collection charges what is due
        rest_amount = (invoice.amount_due - Money.parse(by_card, currency)).amount_str()
        rest = invoices.ManualPaymentInput(rest_amount, currency, *wired, START.date())
        invoices.record_manual_payment(store, ctx, invoice.id, rest, clock)
    payment = pay_by_card(store, rail, ctx, invoice.id, clock, card)
    (subscription,) = store.subscriptions_of(ctx.scope, contact.id)
    for n, service in enumerate(subscription.services):
        regret = ActionRequest(REGRET, service_id=service.id, reason="changed my mind")
        ids = keyed_ids(tenant_id, f"regret-{key}-{n}")
        actions.request_action(store, ctx, subscription.id, regret, clock=clock, numbers=numbers, new_id=ids)
    notes = sorted((i for i in store.invoices_of(ctx.scope, contact.id) if i.total.is_negative), key=lambda i: i.number)
    assert len(notes) == services
    paid = store.get_invoice(ctx.scope, invoice.id)
    assert paid is not None
    return Seeded(ctx, contact.id, paid, payment, notes[0], tuple(notes))


def refund(
    store: DynamoStore,
    rail: PaymentGateway | None,
    seeded: Seeded,
    reference: str,
    amount: str | None = None,
    *,
    note_id: str | None = None,
    payment_id: str | None = None,
    at: datetime = START + timedelta(days=5),
) -> Refunded:
    """A card refund as the API makes it: its id derived from its reference alone."""
    note_id = note_id or seeded.note.id
    spec = RefundInput(amount, None, PaymentMethod.CARD, reference, payment_id)
    new_id = keyed_ids(f"{seeded.ctx.tenant_id}:{seeded.ctx.mode}:refund:{note_id}", reference)
    return refund_credit_note(store, seeded.ctx, note_id, spec, Clock(at), new_id, rail)


FAKE_RAIL_ENV = "BILLOW_FAKE_RAIL"
"""The fake rail's SQLite file, for the local stack's workers (`fake_rail_gateway`)."""


def fake_rail_gateway(scope: object) -> FakeRail:
    """`runtime.payment_gateway` for the local stack in e2e tests (`BILLOW_PAYMENT_GATEWAYS` names
    it): every tenant's rail is the fake one in `BILLOW_FAKE_RAIL`, shared by all worker processes."""
    return FakeRail(Path(os.environ[FAKE_RAIL_ENV]))
