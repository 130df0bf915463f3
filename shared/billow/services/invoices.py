"""Invoice use cases: read, list, and record a manual payment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from billow.domain.errors import ConcurrentModification, Conflict, NotFound
from billow.domain.invoices import Invoice, Payment, PaymentMethod
from billow.domain.money import Money
from billow.services.contacts import get_contact
from billow.services.context import Clock, TenantContext
from billow.services.ports import Store

MAX_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ManualPaymentInput:
    amount: Decimal
    currency: str
    method: PaymentMethod
    reference: str
    received_on: date


@dataclass(frozen=True, slots=True)
class PaymentResult:
    invoice: Invoice
    payment: Payment
    replayed: bool


def get_invoice(store: Store, ctx: TenantContext, invoice_id: str) -> Invoice:
    invoice = store.get_invoice(ctx.tenant_id, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}", field="invoice_id")
    return invoice


def invoices_of_contact(store: Store, ctx: TenantContext, contact_id: str) -> list[Invoice]:
    get_contact(store, ctx, contact_id)
    return sorted(store.invoices_of(ctx.tenant_id, contact_id), key=lambda i: (i.billing_date, i.id))


def payment_id_for(invoice_id: str, reference: str) -> str:
    """Deterministic: the same bank reference on the same invoice is the same payment."""
    return "pay_" + hashlib.sha256(f"{invoice_id}\x00{reference}".encode()).hexdigest()[:26]


def record_manual_payment(
    store: Store, ctx: TenantContext, invoice_id: str, spec: ManualPaymentInput, clock: Clock
) -> PaymentResult:
    """Staff confirm money received outside the card rail (a bank transfer, say).

    Idempotent on (invoice, reference): repeating the same confirmation changes nothing and
    returns the payment recorded the first time; the same reference with another amount is refused.
    """
    amount = Money.parse(spec.amount, spec.currency, field="amount")
    payment_id = payment_id_for(invoice_id, spec.reference)
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        invoice = get_invoice(store, ctx, invoice_id)
        earlier = store.get_payment(ctx.tenant_id, invoice.contact_id, invoice.id, payment_id)
        if earlier is not None:
            if earlier.amount != amount or earlier.method is not spec.method:
                raise Conflict(
                    f"reference '{spec.reference}' was already recorded on invoice {invoice.number} "
                    f"as {earlier.amount} by {earlier.method.value}"
                )
            return PaymentResult(invoice, earlier, replayed=True)
        payment = Payment(payment_id, invoice.id, amount, spec.method, spec.reference, spec.received_on, clock.now())
        paid = invoice.apply_payment(payment)
        try:
            store.record_payment(ctx.tenant_id, paid, invoice.version, payment)
        except ConcurrentModification:
            continue
        return PaymentResult(paid, payment, replayed=False)
    raise ConcurrentModification(f"invoice {invoice_id} kept changing; try again")


def payments_of_invoice(store: Store, ctx: TenantContext, invoice: Invoice) -> list[Payment]:
    return store.payments_of(ctx.tenant_id, invoice.contact_id, invoice.id)
