"""Invoice use cases: read, list, and record a manual payment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, NotFound
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentMethod
from billow.domain.money import Money
from billow.services.contacts import contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.ports import InvoicePorts, InvoiceQuery, InvoiceStore, Page

MAX_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ManualPaymentInput:
    amount: str
    currency: str
    method: PaymentMethod
    reference: str
    received_on: date


@dataclass(frozen=True, slots=True)
class PaymentResult:
    invoice: Invoice
    payment: Payment
    replayed: bool


def get_invoice(store: InvoiceStore, ctx: TenantContext, invoice_id: str) -> Invoice:
    invoice = store.get_invoice(ctx.scope, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}", field="invoice_id")
    return invoice


@dataclass(frozen=True, slots=True)
class InvoiceFilter:
    """What `GET /invoices` filters on; the issue-day range is half-open [issued_from, issued_before)."""

    status: InvoiceStatus | None = None
    contact_id: str | None = None
    kind: InvoiceKind | None = None
    issued_from: date | None = None
    issued_before: date | None = None


def list_invoices(
    store: InvoicePorts, ctx: TenantContext, filters: InvoiceFilter, *, limit: int, cursor: str | None
) -> Page[Invoice]:
    """Invoices oldest first (issue day, then id), one page, filtered on their stored status
    (`overdue` is a stored transition, made the day after the due date on the contact's clock)."""
    if filters.issued_from and filters.issued_before and filters.issued_from >= filters.issued_before:
        raise InvalidInput("issued_from must be before issued_before", field="issued_before")
    if filters.contact_id is not None:
        get_contact(store, ctx, filters.contact_id)
    stored = None if filters.status is None else frozenset({filters.status})
    query = InvoiceQuery(filters.contact_id, stored, filters.kind, filters.issued_from, filters.issued_before)
    return store.list_invoices(ctx.scope, query, limit, cursor)


def payment_id_for(invoice_id: str, reference: str, *, collected: bool = False) -> str:
    """Deterministic: the same bank reference on the same invoice is the same payment. A payment
    collection recorded (`collected`: its reference is the charge's) is hashed apart, so a staff
    payment quoting that charge's reference never takes its id (nor replays or overwrites it)."""
    source = "\x00collected" if collected else ""  # staff payments keep the ids they always had
    return "pay_" + hashlib.sha256(f"{invoice_id}\x00{reference}{source}".encode()).hexdigest()[:26]


def _check_reference_free(store: InvoiceStore, ctx: TenantContext, invoice: Invoice, reference: str) -> None:
    """A reference another payment of the invoice already has (one collection recorded: the card
    charge's id) is refused: that money is recorded already, recording it again would count it twice."""
    for taken in store.payments_of(ctx.scope, invoice.contact_id, invoice.id):
        if taken.reference == reference:
            raise Conflict(
                f"payment {taken.id} of invoice {invoice.label} ({taken.amount} by {taken.method.value}) already "
                f"has reference '{reference}': that money is recorded; record another payment with its own reference",
                field="reference",
                code="payment.reference_taken",
            )


def record_manual_payment(
    store: InvoicePorts, ctx: TenantContext, invoice_id: str, spec: ManualPaymentInput, clock: Clock
) -> PaymentResult:
    """Staff confirm money received outside the card rail (a bank transfer, say).

    Idempotent on (invoice, reference): repeating the same confirmation changes nothing and
    returns the payment recorded the first time; the same reference with another amount is refused.
    `received_on` is no later than the contact's today and no earlier than `EARLY_PAYMENT_DAYS`
    before the invoice was issued.
    """
    amount = Money.parse(spec.amount, spec.currency, field="amount")
    payment_id = payment_id_for(invoice_id, spec.reference)
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        invoice = get_invoice(store, ctx, invoice_id)
        earlier = store.get_payment(ctx.scope, invoice.contact_id, invoice.id, payment_id)
        if earlier is not None:
            if earlier.amount != amount or earlier.method is not spec.method:
                raise InvalidInput(
                    f"reference '{spec.reference}' was already recorded on invoice {invoice.label} "
                    f"as {earlier.amount} by {earlier.method.value}",
                    field="reference",
                    code="idempotency.key_reused",
                )
            return PaymentResult(invoice, earlier, replayed=True)
        _check_reference_free(store, ctx, invoice, spec.reference)
        when = contact_time(store, ctx, invoice.contact_id, clock)
        invoice.check_received_on(spec.received_on, when.today)
        payment = Payment(payment_id, invoice.id, amount, spec.method, spec.reference, spec.received_on, clock.now())
        paid = invoice.apply_payment(payment)
        try:
            # One transaction: the invoice (only if still at its version) and the new payment.
            work = store.unit_of_work(f"payment on invoice {invoice.id}")
            work.save_invoice(ctx.scope, paid, invoice.version)
            work.add_payment(ctx.scope, paid, payment)
            when.guard(work, ctx.scope)  # stamped with the clock's time: not if the clock moved since
            work.commit()
        except ConcurrentModification:
            continue
        return PaymentResult(paid, payment, replayed=False)
    raise ConcurrentModification(f"invoice {invoice_id} kept changing; try again")


def payments_of_invoice(store: InvoiceStore, ctx: TenantContext, invoice: Invoice) -> list[Payment]:
    return store.payments_of(ctx.scope, invoice.contact_id, invoice.id)
