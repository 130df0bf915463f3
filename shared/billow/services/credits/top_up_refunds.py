"""Refunding a top-up (docs/credits.md, "Refunding a top-up"): what is left of its credits is
removed, and that share of what it cost goes back to the card that paid it.

`POST /contacts/{id}/credits/top-ups/{top_up_id}/refund`, exactly once whatever the retries and
crashes, in three steps each keyed by the top-up:

1. **The credits**: the wallet books the refund of the top-up's grant (`crd_ref_<grant id>`): what
   is left of it is removed, never more (spent credits stay spent), at most once.
2. **The money**: that share of the price, `price x left / credits`, rounded down to the currency's
   minor unit (the one rounding: never more than the credits removed were worth), as a credit note
   of the top-up's invoice (`cn_<invoice id without inv_>`: its one credit line credits the
   invoice's line, which is how the refund finds the payment it goes to).
3. **The card**: the credit note refunded to the top-up's card payment through the card refund path
   every credit note takes (`billow.services.receivables.refund_to_card`: reserved, leased, looked
   for on the rail, sent once), with a reference derived from the top-up.

A retry carries on from the step reached; the answer names what was removed and the refund."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from billow.domain.billing import InvoiceDraft
from billow.domain.credits import Change, EntryKind, LedgerEntry, Wallet, entry_id, refund, top_up_grant_id
from billow.domain.errors import ConcurrentModification, Conflict, NotFound
from billow.domain.invoices import Invoice, InvoiceStatus, PaymentMethod
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.services.billing import InvoiceNumbers
from billow.services.contacts import contact_time
from billow.services.context import Clock, TenantContext
from billow.services.credits.top_ups import TopUpPorts, credit_note_id_of, grant_paid_top_up
from billow.services.credits.wallet import change_wallet_now
from billow.services.gateway import PaymentGateway
from billow.services.receivables import Refunded, RefundInput, refund_to_card


@dataclass(frozen=True, slots=True)
class TopUpRefund:
    invoice: Invoice
    entry: LedgerEntry | None
    """The refund booked on the wallet (its `credits`: what was left and is removed); None when
    nothing was left of the grant (spent, and gone from the wallet)."""
    refunded: Refunded | None
    """The card refund; None when nothing was left to refund."""


def _top_up(store: TopUpPorts, ctx: TenantContext, contact_id: str, top_up_id: str) -> Invoice:
    invoice = store.get_invoice(ctx.scope, top_up_id)
    if invoice is None or invoice.top_up is None or invoice.contact_id != contact_id:
        raise NotFound(f"contact {contact_id} has no top-up {top_up_id}", field="top_up_id")
    return invoice


def refund_top_up(
    store: TopUpPorts,
    gateway: PaymentGateway | None,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    contact_id: str,
    top_up_id: str,
) -> TopUpRefund:
    """Remove what is left of a paid top-up's credits and refund that share of its price to its
    card, once (see the module)."""
    invoice = _top_up(store, ctx, contact_id, top_up_id)
    top_up = invoice.top_up
    assert top_up is not None
    if invoice.status is not InvoiceStatus.PAID:
        raise Conflict(
            f"top-up {invoice.id} is {invoice.status.value}: only a paid top-up is refunded",
            field="top_up_id",
            code="credits.top_up_not_paid",
        )
    grant_id = top_up_grant_id(invoice.id)
    own = entry_id(EntryKind.REFUND, grant_id)
    entry = store.get_credit_entry(ctx.scope, contact_id, own)
    if entry is None:
        # Granted first if its grant was lost; never spent on a stopped service: it is being refunded.
        grant_paid_top_up(store, ctx, clock, numbers, invoice, reactivate=False)
        entry = _removed(store, ctx, clock, contact_id, grant_id, invoice.id, own)
    if entry is None or not entry.credits:
        return TopUpRefund(invoice, entry, None)
    amount = Money(invoice.total.minor * entry.credits // top_up.credits, invoice.currency)
    if amount.is_zero:
        return TopUpRefund(invoice, entry, None)
    note = _credit_note(store, ctx, clock, numbers, invoice, entry, amount)
    spec = RefundInput(amount.amount_str(), amount.currency, PaymentMethod.CARD, reference=f"top-up {invoice.id}")
    refunded = refund_to_card(store, ctx, note.id, spec, clock, f"ref_{note.id}", gateway)
    return TopUpRefund(invoice, entry, refunded)


def _removed(
    store: TopUpPorts, ctx: TenantContext, clock: Clock, contact_id: str, grant_id: str, invoice_id: str, own: str
) -> LedgerEntry | None:
    """Step 1: the grant's refund booked (None: nothing left of it, and gone from the wallet)."""

    def operation(wallet: Wallet, now: datetime) -> Change:
        return refund(wallet, grant_id, now, reference=invoice_id)

    try:
        applied = change_wallet_now(store, ctx, contact_id, clock, own, operation)
    except NotFound:
        # Dropped from the wallet: spent to the last credit, or refunded by a racing copy of this
        # request (whose entry then answers).
        return store.get_credit_entry(ctx.scope, contact_id, own)
    return applied.entry


def _credit_note(
    store: TopUpPorts,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    invoice: Invoice,
    entry: LedgerEntry,
    amount: Money,
) -> Invoice:
    """Step 2: the credit note of `amount` crediting the top-up's line (once: its id is the top-up's)."""
    note_id = credit_note_id_of(invoice.id)
    found = store.get_invoice(ctx.scope, note_id)
    if found is not None:
        return found
    (bought,) = invoice.lines
    assert bought.period is not None
    today = contact_time(store, ctx, invoice.contact_id, clock).today
    line = LineDraft(
        "credit",
        f"refund of the {entry.credits:,} credits left of top-up {invoice.number}",
        bought.service_id,
        "",
        1,
        -amount,
        Fraction(-1),
        -amount,
        bought.period,
    )
    draft = InvoiceDraft("", invoice.contact_id, invoice.currency, today, today, bought.period, (line,))
    note = Invoice.issue(
        draft, invoice_id=note_id, number=numbers.next(ctx), payment_terms_days=0, test_clock=invoice.test_clock
    )
    work = store.unit_of_work(f"credit note of top-up {invoice.id}")
    work.add_invoice(ctx.scope, note)
    with contextlib.suppress(ConcurrentModification):  # a racing retry wrote it first
        work.commit()
    stored = store.get_invoice(ctx.scope, note_id)
    assert stored is not None
    return stored
