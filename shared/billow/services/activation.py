"""Access on payment (docs/payments.md, "Access on payment"): the services of an order kept draft
until its first invoice is paid are activated once it is, and lapse (cancelled, the invoice voided)
when it is still unpaid on the invoice's `lapses_on`.

Two callers, one write. The consumer of `invoice.paid` (functions/activation) activates as soon as
the invoice is paid, however it was paid (a manual payment, a card charge, credit); the daily run
and test-clock advances reach the invoice through the due index (`Invoice.activation_due`): on its
lapse day if unpaid, and at once if it is paid and still marked (a backstop if the consumer's
message was dead-lettered). Either way it is one transaction, each item conditioned on the version
read: the invoice with its mark cleared (and voided, for a lapse), the subscription with the
services activated or cancelled, and their action log records (only if new). So a duplicate
delivery, a retry after a crash, or the consumer racing the run finds the mark gone and does
nothing; a payment racing the lapse either lands first (the lapse then sees a paid invoice and
activates) or is refused (the invoice is void: `payment.invoice_not_open`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Protocol

from billow.domain.actions import Action
from billow.domain.actions.activate_on_payment import ACTIVATE_ON_PAYMENT, FirstInvoice
from billow.domain.actions.lapse import LAPSE
from billow.domain.errors import ConcurrentModification
from billow.domain.invoices import OWED, Invoice, InvoiceStatus
from billow.domain.timeline import execute
from billow.services.billing import InvoiceNumbers, bill_loaded
from billow.services.contacts import contact_today
from billow.services.context import Clock, SystemClock, TenantContext
from billow.services.credits.top_ups import grant_paid_top_up
from billow.services.ports import BillingPorts, ContactStore
from billow.services.receivables import Settlement, voiding

MAX_CONFLICT_RETRIES = 5
SYSTEM_CLOCK = SystemClock()
NOTHING_OWED = frozenset({InvoiceStatus.PAID, InvoiceStatus.ISSUED})


class ActivationPorts(BillingPorts, ContactStore, Protocol):
    """The invoice, its subscription, the contact's clock, and its wallet (a top-up's credits)."""


def activate_paid(
    store: ActivationPorts, ctx: TenantContext, invoice_id: str, *, clock: Clock, numbers: InvoiceNumbers
) -> list[Action]:
    """The `invoice.paid` consumer's use case: activate the services waiting for `invoice_id`, on
    the contact's today, if it is paid and they still wait. Returns the log records written (none
    when there was nothing to do: not paid, not a first invoice, or done already)."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        invoice = store.get_invoice(ctx.scope, invoice_id)
        if invoice is not None and invoice.top_up is not None and invoice.lapses_on is None:
            grant_paid_top_up(store, ctx, clock, numbers, invoice)  # paid after its mark went: granted all the same
            return []
        if invoice is None or invoice.lapses_on is None or invoice.status not in NOTHING_OWED:
            return []
        try:
            today = contact_today(store, ctx, invoice.contact_id, clock)
            return settle_waiting(store, ctx, invoice, today, numbers, clock)
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"invoice {invoice_id} kept changing; try again")


def settle_waiting(
    store: ActivationPorts,
    ctx: TenantContext,
    invoice: Invoice,
    today: date,
    numbers: InvoiceNumbers,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Action]:
    """One write for the services waiting for `invoice` (read at its version): activated on `today`
    if nothing is owed on it, else lapsed on its `lapses_on` (the invoice voided with the reason);
    the invoice's mark cleared either way. A credit top-up's invoice waits the same way: paid, its
    credits are granted first (once, `grant_paid_top_up`), then its mark cleared; unpaid on its
    lapse day, it is voided. Raises ConcurrentModification when something changed since it was
    read (the caller reads again)."""
    assert invoice.lapses_on is not None
    paid = invoice.status in NOTHING_OWED
    if paid and invoice.top_up is not None:
        grant_paid_top_up(
            store, ctx, clock, numbers, invoice, recover=True
        )  # before the mark goes: redone after a crash
    on = today if paid else invoice.lapses_on
    subscription = store.load_subscription(ctx.scope, invoice.contact_id, invoice.subscription_id)
    waiting = (
        [] if subscription is None else subscription.waiting_for_payment(line.service_id for line in invoice.lines)
    )
    cleared = replace(invoice, lapses_on=None)
    reason = (
        f"unpaid: its order lapsed on {invoice.lapses_on}"
        if invoice.top_up is None
        else f"top-up unpaid on {invoice.lapses_on}"
    )
    voidable = invoice.status in (*OWED, InvoiceStatus.DRAFT)  # not if staff voided or wrote it off
    lapses = bool(waiting) or invoice.top_up is not None  # an unpaid top-up is voided as an order lapses
    settlement = Settlement(((cleared, invoice.version),)) if paid or not lapses or not voidable else None
    work = store.unit_of_work(f"access on payment: invoice {invoice.id}")
    records: list[Action] = []
    if subscription is not None and waiting:
        # Actions and billing of the days before it first, as for any action on its day.
        _, subscription = bill_loaded(store, ctx, subscription, on - timedelta(days=1), numbers)
        kind = ACTIVATE_ON_PAYMENT if paid else LAPSE
        why = f"invoice {invoice.label} paid" if paid else f"invoice {invoice.label} unpaid on {on}"
        current = subscription
        for service in current.waiting_for_payment(s.id for s in waiting):
            action = kind.by_system(
                f"act_{service.id.removeprefix('svc_')}_{kind.name}",
                on,
                requested_on=on,
                reason=why,
                service_id=service.id,
                params=FirstInvoice(invoice.id),
            )
            step = execute(current, action)
            current = step.subscription
            records += step.actions
        work.save_subscription(ctx.scope, current, subscription.version)
        for record in records:
            work.log_action(ctx.scope, current, record)
    if settlement is None:
        settlement = voiding(store, ctx, cleared, reason, on)
    settlement.stage(work, ctx.scope)
    work.commit()
    return records
