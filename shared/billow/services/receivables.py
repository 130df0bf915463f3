"""Receivables use cases: apply and refund credit notes, void, write off and finalise invoices,
move invoices' statuses on their days (daily run, test-clock advance), the credit new invoices
consume, and a contact's balance.

Every write is one `Store.settle` (or rides in the billing step's transaction), each invoice and
credit note in it conditioned on the version it was read at: two requests spending the same credit
at once cannot both be written; the loser reads again and finds less remaining (409
`credit.exceeds_remaining`) or the invoice already paid. Records created by a request (an
application, a refund) take ids derived from its Idempotency-Key (a refund's: from its bank
reference's claim, per credit note), so a retry finds the first attempt's record and answers it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Protocol

from billow.domain.collection import AttemptStatus
from billow.domain.errors import ConcurrentModification, Conflict, DomainError, InvalidInput, NotFound
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.receivables import (
    Balance,
    CreditApplication,
    Refund,
    RefundStatus,
    apply_credit,
    balances,
    consume_credit,
    credited_invoices,
    refund_credit,
    refund_leased,
    refund_settled,
    refund_to_payment,
    refund_unapplied,
    void,
)
from billow.services.contacts import ContactTime, contact_time, get_contact
from billow.services.context import Clock, Scope, TenantContext
from billow.services.gateway import ChargeNotPossible, GatewayUnavailable, PaymentGateway, RailRefused, RefundState
from billow.services.invoices import get_invoice
from billow.services.ports import (
    CollectionStore,
    CreditStore,
    DunningStore,
    InvoicePorts,
    InvoiceStore,
    RatingPorts,
    SubscriptionStore,
    Transactions,
    UnitOfWork,
)

if TYPE_CHECKING:
    from billow.services.billing import InvoiceNumbers

MAX_CONFLICT_RETRIES = 5


class ReceivablePorts(InvoiceStore, Transactions, Protocol):
    """What moving receivables needs: invoices, credit notes and their records, and units of work."""


class RefundPorts(InvoicePorts, CollectionStore, Protocol):
    """Refunding a credit note: to a card, only a payment collection recorded (its attempts)."""


class DueInvoicePorts(ReceivablePorts, SubscriptionStore, RatingPorts, CreditStore, DunningStore, Protocol):
    """Moving an invoice on in time: also the subscription whose services wait for its payment."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """Receivable changes committed together: each changed invoice or credit note only if still at
    the version it was read at (so nothing is applied, refunded or released twice), the new or
    reversed applications and the new refunds of those credit notes."""

    invoices: tuple[tuple[Invoice, int], ...] = ()
    """(the invoice or credit note as changed, the version it was read at)."""
    applications: tuple[CreditApplication, ...] = ()
    refunds: tuple[Refund, ...] = ()
    payments: tuple[Payment, ...] = ()
    """Payments refunded to the card, each only if still at its version (of the notes' contact)."""

    def stage(self, work: UnitOfWork, scope: Scope) -> None:
        notes = {invoice.id: invoice for invoice, _ in self.invoices}
        for invoice, version in self.invoices:
            work.save_invoice(scope, invoice, version)
        for application in self.applications:
            work.record_credit_application(scope, notes[application.credit_note_id], application)
        for refund in self.refunds:
            work.add_refund(scope, notes[refund.credit_note_id], refund)
        for payment in self.payments:
            work.save_payment(scope, next(iter(notes.values())).contact_id, payment)

    def commit(self, store: Transactions, scope: Scope, what: str, time: ContactTime | None = None) -> None:
        """Commit the settlement; given the contact's `time` it was decided on, only if the
        contact's test clock has not moved since (`ContactTime.guard`)."""
        work = store.unit_of_work(what)
        self.stage(work, scope)
        if time is not None:
            time.guard(work, scope)
        work.commit()


def _amount(amount: str | None, currency: str | None, note: Invoice) -> Money | None:
    """The amount asked for, in the credit note's currency (another is refused, naming `currency`,
    before it meets the note's or a payment's amounts)."""
    if amount is None:
        return None
    if currency is not None and currency != note.currency:
        raise InvalidInput(
            f"{note.kind.value.replace('_', ' ')} {note.label} is in {note.currency}, the amount in {currency}",
            field="currency",
            code="money.currency_mismatch",
        )
    return Money.parse(amount, currency or note.currency, field="amount")


def get_credit_note(store: InvoiceStore, ctx: TenantContext, credit_note_id: str) -> Invoice:
    note = store.get_invoice(ctx.scope, credit_note_id)
    if note is None:
        raise NotFound(f"no credit note {credit_note_id}", field="credit_note_id")
    if note.kind is not InvoiceKind.CREDIT_NOTE:
        raise Conflict(f"{note.label} is an invoice, not a credit note", code="credit.not_a_credit_note")
    return note


def _retrying(what: str, attempt: Callable[[], object]) -> None:
    """Run `attempt` (read, decide, one conditional write) until it is not outrun by another writer."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        try:
            attempt()
            return
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"{what} kept changing; try again")


# -- credit notes ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Applied:
    credit_note: Invoice
    invoice: Invoice
    application: CreditApplication
    replayed: bool


def apply_credit_note(
    store: InvoicePorts,
    ctx: TenantContext,
    credit_note_id: str,
    invoice_id: str,
    amount: str | None,
    currency: str | None,
    clock: Clock,
    new_id: Callable[[str], str],
) -> Applied:
    """Apply credit note `credit_note_id` to invoice `invoice_id` of the same contact and currency:
    `amount`, or as much as both allow (the credit remaining, the amount due)."""
    application_id = new_id("cap")
    done: list[Applied] = []

    def attempt() -> None:
        # Both read before looking for the record: a twin request (same key) that wrote after these
        # reads is found below, or makes this write fail on their versions and be tried again.
        note = get_credit_note(store, ctx, credit_note_id)
        invoice = get_invoice(store, ctx, invoice_id)
        earlier = store.get_application(ctx.scope, note.contact_id, note.id, application_id)
        if earlier is not None:  # a retry of a request that was written
            done.append(Applied(note, invoice, earlier, replayed=True))  # the key binds the invoice id
            return
        when = contact_time(store, ctx, note.contact_id, clock)
        note2, invoice2, application = apply_credit(
            note,
            invoice,
            _amount(amount, currency, note),
            application_id=application_id,
            on=when.today,
            now=clock.now(),
        )
        settlement = Settlement(((note2, note.version), (invoice2, invoice.version)), (application,))
        settlement.commit(store, ctx.scope, f"applying credit note {note.id}", when)
        done.append(Applied(note2, invoice2, application, replayed=False))

    _retrying(f"credit note {credit_note_id}", attempt)
    return done[-1]


@dataclass(frozen=True, slots=True)
class RefundInput:
    amount: str | None
    currency: str | None
    method: PaymentMethod | None
    """None: recorded as a bank transfer, unless the credit note credits a card payment collection
    recorded (`refund.method_required`: say whether the money goes back to the card)."""
    reference: str
    payment_id: str | None = None
    """A card refund: the payment to refund (None: the newest card payment of the invoices the
    credit note credits that can take the whole amount)."""


@dataclass(frozen=True, slots=True)
class Refunded:
    credit_note: Invoice
    refund: Refund
    replayed: bool


def refund_credit_note(
    store: RefundPorts,
    ctx: TenantContext,
    credit_note_id: str,
    spec: RefundInput,
    clock: Clock,
    new_id: Callable[[str], str],
    gateway: PaymentGateway | None = None,
) -> Refunded:
    """Refund `spec.amount` (or all that can be) of a credit note: to a card payment through
    `gateway` (`method` card: `refund_to_card`), or recorded as done outside Billow (a manual
    refund). `new_id` derives from the claim of the refund's reference (the API's), so a retry
    finds the first refund."""
    if spec.method is PaymentMethod.CARD:
        return refund_to_card(store, ctx, credit_note_id, spec, clock, new_id("ref"), gateway)
    if spec.payment_id is not None:
        raise InvalidInput(
            f"a {(spec.method or PaymentMethod.BANK_TRANSFER).value} refund is money returned outside Billow: "
            "payment_id names the card payment a card refund goes to",
            field="payment_id",
            code="refund.payment_not_card",
        )

    method = spec.method or _manual_by_default(store, ctx, credit_note_id)

    def record(note: Invoice, when: ContactTime) -> Refunded:
        note2, refund = refund_credit(
            note,
            _amount(spec.amount, spec.currency, note),
            refund_id=refund_id,
            method=method,
            reference=spec.reference,
            on=when.today,
            now=clock.now(),
        )
        Settlement(((note2, note.version),), refunds=(refund,)).commit(
            store, ctx.scope, f"refunding credit note {note.id}", when
        )
        return Refunded(note2, refund, replayed=False)

    refund_id = new_id("ref")
    return _refunded_once(store, ctx, credit_note_id, refund_id, clock, record)


def _manual_by_default(store: RefundPorts, ctx: TenantContext, credit_note_id: str) -> PaymentMethod:
    """A refund that names no method is recorded as a bank transfer, unless money of the credited
    invoices was collected on a card that could take it back: then the caller must choose (refunding
    to the card, or recording money returned otherwise), or a transfer would be recorded while the
    customer expects the card refund no one sent."""
    note = get_credit_note(store, ctx, credit_note_id)
    on_rail = _refundable_on_rail(store, ctx, note.contact_id)
    for invoice in credited_invoices(note, store.invoices_of(ctx.scope, note.contact_id)):
        for payment in store.payments_of(ctx.scope, note.contact_id, invoice.id):
            if on_rail(payment) and not payment.refundable_for_credit.is_zero:
                raise InvalidInput(
                    f"credit note {note.label} credits {invoice.label}, paid by card: say `method` card to refund "
                    "the card, or the method the money was returned by",
                    field="method",
                    code="refund.method_required",
                )
    return PaymentMethod.BANK_TRANSFER


def _refunded_once(
    store: InvoicePorts,
    ctx: TenantContext,
    credit_note_id: str,
    refund_id: str,
    clock: Clock,
    record: Callable[[Invoice, ContactTime], Refunded],
    holder: Callable[[InvoiceStore, TenantContext, str], Invoice] = get_credit_note,
) -> Refunded:
    """The refund `refund_id` of the credit note: found (a retry), or `record`ed on the credit note
    as read and its contact's time, again after every lost race. A refusal is looked at again: a
    twin request (same reference) may have written this very refund after the lookup, and what it
    spent, read by `record` after the credit note (a card refund's payment), refused this one.
    `holder`: what the refund is recorded under (the credit note; an unapplied refund's invoice)."""
    done: list[Refunded] = []

    def attempt() -> None:
        note = holder(store, ctx, credit_note_id)  # before looking for the record (as above)
        earlier = store.get_refund(ctx.scope, note.contact_id, note.id, refund_id)
        if earlier is None:
            try:
                done.append(record(note, contact_time(store, ctx, note.contact_id, clock)))
                return
            except DomainError:
                earlier = store.get_refund(ctx.scope, note.contact_id, note.id, refund_id)
                if earlier is None:
                    raise
                note = holder(store, ctx, credit_note_id)
        done.append(Refunded(note, earlier, replayed=True))

    _retrying(f"credit note {credit_note_id}", attempt)
    return done[-1]


# -- card refunds ------------------------------------------------------------------------------------
RAIL_REFUSED = frozenset({"failed", "canceled"})
"""A rail refund's statuses that mean no money goes back. Any other (`succeeded`; `pending`, which
Stripe reports for some methods and settles later) is recorded succeeded: the rail took the refund."""


def refund_to_card(
    store: RefundPorts,
    ctx: TenantContext,
    credit_note_id: str,
    spec: RefundInput,
    clock: Clock,
    refund_id: str,
    gateway: PaymentGateway | None,
) -> Refunded:
    """Refund part of a credit note to a card payment of an invoice it credits, exactly once.

    1. Reserve: one transaction writes the refund `pending` and counts its amount on the credit
       note and the payment, each conditioned on the version read, so no two refunds (racing
       processes) spend the same credit or the same payment. An over-refund writes nothing and
       sends nothing (409 `refund.exceeds_payment`, `credit.exceeds_remaining`).
    2. Lease: the pending refund is leased to this request (`RAIL_CALL_AT_MOST`): no two requests
       send it to the rail at once (409 `refund.in_progress`).
    3. Rail: the charge's refunds are listed first; one carrying this `refund_id` in its metadata
       is this refund, made by an earlier attempt that crashed before recording it. Only when none
       is found is the refund sent (idempotency key `refund_<id>`, which real Stripe honours but
       localstripe ignores: the listing is what makes a retry safe).
    4. Record: the outcome, on the refund (conditioned on its leased version); a refusal gives the
       amount back to the credit note and the payment.
    A retry (same reference) finds the refund at whatever step it reached and carries it on."""

    def reserve(note: Invoice, when: ContactTime) -> Refunded:
        amount = _amount(spec.amount, spec.currency, note)
        invoices = credited_invoices(note, store.invoices_of(ctx.scope, note.contact_id))
        payment = _payment_to_refund(store, ctx, note, invoices, spec.payment_id, amount)
        note2, payment2, refund = refund_to_payment(
            note,
            payment,
            amount,
            credited={i.id for i in invoices},
            refund_id=refund_id,
            reference=spec.reference,
            on=when.today,
            now=clock.now(),
        )
        what = f"refunding credit note {note.id} to payment {payment.id}"
        return _reserved(store, ctx, gateway, (note2, note.version), payment2, refund, what, when)

    found = _refunded_once(store, ctx, credit_note_id, refund_id, clock, reserve)
    return _carried_on(store, ctx, found, spec, clock, gateway)


def _reserved(
    store: RefundPorts,
    ctx: TenantContext,
    gateway: PaymentGateway | None,
    holder: tuple[Invoice, int],
    payment: Payment,
    refund: Refund,
    what: str,
    when: ContactTime,
) -> Refunded:
    """Step 1 of a card refund: the pending `refund` written with its `holder` (the credit note or
    invoice as changed, the version it was read at) and `payment`, if the rail can take its amount."""
    _card_rail(gateway).refundable(refund.amount)  # an amount the rail cannot take: refused, nothing reserved
    Settlement((holder,), refunds=(refund,), payments=(payment,)).commit(store, ctx.scope, what, when)
    return Refunded(holder[0], replace(refund, version=1), replayed=False)


def _carried_on(
    store: RefundPorts,
    ctx: TenantContext,
    found: Refunded,
    spec: RefundInput,
    clock: Clock,
    gateway: PaymentGateway | None,
) -> Refunded:
    """Steps 2 to 4 of a card refund reserved (or found, by a retry: checked to be the same)."""
    if found.replayed:
        _check_same_refund(found, spec)
    if found.refund.status is not RefundStatus.PENDING:
        return found
    return _sent(store, ctx, found.credit_note.contact_id, found.refund, clock, _card_rail(gateway), found.replayed)


def _card_rail(gateway: PaymentGateway | None) -> PaymentGateway:
    if gateway is None:
        raise Conflict("this tenant has no card processor in this mode", code="refund.no_rail")
    return gateway


def resume_refund(
    store: RefundPorts,
    ctx: TenantContext,
    contact_id: str,
    credit_note_id: str,
    refund_id: str,
    clock: Clock,
    gateway: PaymentGateway,
) -> Refund | None:
    """Carry a card refund left pending on (the sweep, docs/payments.md#sweep) as a retry of its
    request would: leased, found on the rail or sent, recorded. None when there is no such refund;
    a refund no longer pending is returned as it is. 409 `refund.in_progress` while a request holds
    its lease."""
    refund = store.get_refund(ctx.scope, contact_id, credit_note_id, refund_id)
    if refund is None or refund.status is not RefundStatus.PENDING:
        return refund
    return _sent(store, ctx, contact_id, refund, clock, gateway, replayed=True).refund


def _sent(
    store: RefundPorts,
    ctx: TenantContext,
    contact_id: str,
    refund: Refund,
    clock: Clock,
    gateway: PaymentGateway,
    replayed: bool,
) -> Refunded:
    """Steps 2 to 4 of `refund_to_card` for a pending refund: leased, on the rail, recorded."""
    leased = _leased(store, ctx, contact_id, refund, clock)
    try:
        state = _on_rail(store, ctx, contact_id, leased, gateway)
    except GatewayUnavailable:
        _release(store, ctx, contact_id, leased)
        raise
    except (ChargeNotPossible, RailRefused) as refused:  # whatever is retried: failed, its amount back
        _record_outcome(store, ctx, leased, None, replayed, failure=f"{refused.code}: {refused}")
        raise
    return _record_outcome(store, ctx, leased, state, replayed)


def _release(store: InvoicePorts, ctx: TenantContext, contact_id: str, leased: Refund) -> None:
    """The rail did not answer: the lease is given up so the client's retry carries the refund on at
    once, listing the charge's refunds first (a refund the rail made anyway is found there, and real
    Stripe also answers a resent request with the first one's result, by its idempotency key)."""
    if leased.status is not RefundStatus.PENDING:
        return
    work = store.unit_of_work(f"releasing refund {leased.id}")
    work.save_refund(ctx.scope, contact_id, replace(leased, leased_until=None))
    with contextlib.suppress(ConcurrentModification):  # taken over meanwhile: the taker goes on
        work.commit()


def _check_same_refund(found: Refunded, spec: RefundInput) -> None:
    """A retry names what the refund it finds was made with (or leaves it to the default): its
    reference bound to another amount or payment is refused, even if its claim was released."""
    amount = _amount(spec.amount, spec.currency, found.credit_note)
    if (amount is not None and amount != found.refund.amount) or spec.payment_id not in (
        None,
        found.refund.payment_id,
    ):
        raise InvalidInput(
            f"reference '{spec.reference}' was first used for refund {found.refund.id} of {found.refund.amount} "
            f"to payment {found.refund.payment_id}; repeat that request exactly, or use a new reference",
            field="reference",
            code="idempotency.key_reused",
        )


def _refundable_on_rail(store: CollectionStore, ctx: TenantContext, contact_id: str) -> Callable[[Payment], bool]:
    """Whether a payment of the contact is a charge Billow knows on the rail, so refundable to the
    card: one its collection recorded (the charge of a succeeded attempt, per invoice it covers) or a
    stray charge it found there and recorded (`Payment.stray_charge`: the rail's own object, of
    this contact's customer). A payment staff recorded with method `card` (`POST
    /invoices/{id}/payments`, a card terminal's receipt, any text as reference) names no charge of
    Billow's on the rail, perhaps another customer's: never refunded through it."""
    collected = {
        (invoice_id, attempt.charge_ref)
        for attempt in store.attempts_of(ctx.scope, contact_id)
        if attempt.status is AttemptStatus.SUCCEEDED and attempt.charge_ref is not None
        for invoice_id, _ in attempt.covers
    }

    def on_rail(payment: Payment) -> bool:
        known = payment.stray_charge or (payment.invoice_id, payment.reference) in collected
        return payment.method is PaymentMethod.CARD and known

    return on_rail


def _payment_to_refund(
    store: RefundPorts,
    ctx: TenantContext,
    note: Invoice,
    invoices: list[Invoice],
    payment_id: str | None,
    amount: Money | None,
) -> Payment:
    """The payment named, or the newest card payment collection recorded of `invoices` that can
    take `amount` whole."""
    on_rail = _refundable_on_rail(store, ctx, note.contact_id)
    if payment_id is not None:
        for invoice in invoices:
            payment = store.get_payment(ctx.scope, note.contact_id, invoice.id, payment_id)
            if payment is None:
                continue
            if payment.method is PaymentMethod.CARD and not on_rail(payment):
                raise Conflict(
                    f"payment {payment.id} was recorded by staff as paid by card, not collected by Billow on the "
                    "card processor: refund it where it was taken and record that refund with its method",
                    field="payment_id",
                    code="refund.not_collected",
                )
            return payment
        raise Conflict(
            f"payment {payment_id} is not a payment of an invoice whose days credit note {note.label} credits",
            field="payment_id",
            code="refund.payment_not_credited",
        )
    cards = [
        p
        for invoice in invoices
        for p in sorted(store.payments_of(ctx.scope, note.contact_id, invoice.id), key=lambda p: p.recorded_at)[::-1]
        if on_rail(p)
    ]
    if not cards:
        raise Conflict(
            f"no invoice whose days credit note {note.label} credits was paid by card",
            code="refund.no_card_payment",
        )
    wanted = amount or Money(1, note.currency)
    return next((p for p in cards if p.refundable_for_credit >= wanted), cards[0])  # none can: refused with its amount


def _leased(store: InvoicePorts, ctx: TenantContext, contact_id: str, refund: Refund, clock: Clock) -> Refund:
    """The pending refund leased to this request (read again: an earlier reader may be stale)."""
    current = store.get_refund(ctx.scope, contact_id, refund.credit_note_id, refund.id) or refund
    if current.status is not RefundStatus.PENDING:
        return current
    leased = refund_leased(current, clock.now())
    work = store.unit_of_work(f"sending refund {refund.id}")
    work.save_refund(ctx.scope, contact_id, leased)
    try:
        work.commit()
    except ConcurrentModification:
        raise Conflict(
            f"refund {refund.id} is being sent to the card processor by another request; retry shortly",
            code="refund.in_progress",
        ) from None
    return replace(leased, version=current.version + 1)


def _on_rail(
    store: InvoiceStore, ctx: TenantContext, contact_id: str, refund: Refund, gateway: PaymentGateway
) -> RefundState | None:
    """This refund on the rail: found among the charge's refunds by its id, else made now. None
    when the refund is no longer pending (another request recorded it)."""
    if refund.status is not RefundStatus.PENDING:
        return None
    assert refund.invoice_id is not None and refund.payment_id is not None
    payment = store.get_payment(ctx.scope, contact_id, refund.invoice_id, refund.payment_id)
    if payment is None:  # written with the refund, never deleted
        raise NotFound(f"no payment {refund.payment_id}", field="payment_id")
    for made in gateway.refunds_of(payment.reference):
        if made.metadata.get("refund_id") == refund.id:
            return made
    metadata = {"tenant_id": ctx.scope.tenant_id, "mode": ctx.scope.mode, "refund_id": refund.id}
    metadata["invoice_id" if refund.unapplied else "credit_note_id"] = refund.credit_note_id
    return gateway.refund(payment.reference, refund.amount, idempotency_key=f"refund_{refund.id}", metadata=metadata)


def _record_outcome(
    store: InvoicePorts,
    ctx: TenantContext,
    leased: Refund,
    state: RefundState | None,
    replayed: bool,
    *,
    failure: str | None = None,
) -> Refunded:
    """The rail's answer `state` recorded on the pending refund; or, with `failure` (the rail
    refused the request itself), the refund failed without a rail refund. Either failure gives the
    amount back to the credit note and the payment. None and no `failure`: nothing to record."""
    done: list[Refunded] = []

    def attempt() -> None:
        note = _holder(leased)(store, ctx, leased.credit_note_id)
        refund = store.get_refund(ctx.scope, note.contact_id, note.id, leased.id)
        assert refund is not None and refund.invoice_id is not None and refund.payment_id is not None
        if refund.status is not RefundStatus.PENDING or (state is None and failure is None):
            done.append(Refunded(note, refund, replayed=True))
            return
        payment = store.get_payment(ctx.scope, note.contact_id, refund.invoice_id, refund.payment_id)
        assert payment is not None
        why, rail_ref = failure, None
        if state is not None:
            rail_ref = state.ref
            if state.status in RAIL_REFUSED:
                why = state.failure or f"the card processor answered {state.status}"
        note2, payment2, settled = refund_settled(note, payment, refund, rail_ref=rail_ref, failure=why)
        work = store.unit_of_work(f"refund {refund.id}")
        work.save_refund(ctx.scope, note.contact_id, settled)
        if why is not None:  # its amount back to the credit note and the payment
            Settlement(((note2, note.version),), payments=(payment2,)).stage(work, ctx.scope)
        work.commit()
        done.append(Refunded(note2, replace(settled, version=refund.version + 1), replayed=replayed))

    _retrying(f"refund {leased.id}", attempt)
    return done[-1]


def _holder(refund: Refund) -> Callable[[InvoiceStore, TenantContext, str], Invoice]:
    """What a refund is recorded under: its credit note, or (unapplied money) its payment's invoice."""
    return get_invoice if refund.unapplied else get_credit_note


def refund_unapplied_to_card(
    store: RefundPorts,
    ctx: TenantContext,
    invoice_id: str,
    spec: RefundInput,
    clock: Clock,
    refund_id: str,
    gateway: PaymentGateway | None,
) -> Refunded:
    """Refund (part of) the unapplied money of card payment `spec.payment_id` of the invoice (what
    the charge took that the invoice could not: `Payment.unapplied`) to its card, exactly once, as
    `refund_to_card` does a credit note's: reserved pending in one transaction of the invoice (less
    `amount_unapplied`), the payment (less `unapplied`, more `amount_refunded`) and the refund, each
    conditioned on its version, so racing refunds never exceed what is unapplied (409
    `refund.exceeds_unapplied`); then leased, looked for on the rail by its id, sent, recorded. The
    refund is recorded under the invoice (`Refund.unapplied`); `Refunded.credit_note` is the invoice."""
    assert spec.payment_id is not None

    def reserve(invoice: Invoice, when: ContactTime) -> Refunded:
        payment = store.get_payment(ctx.scope, invoice.contact_id, invoice.id, spec.payment_id or "")
        if payment is None:
            raise NotFound(
                f"invoice {invoice.label} has no payment {spec.payment_id}",
                field="payment_id",
                code="payment.not_found",
            )
        if payment.method is PaymentMethod.CARD and not _refundable_on_rail(store, ctx, invoice.contact_id)(payment):
            raise Conflict(
                f"payment {payment.id} was recorded by staff as paid by card, not collected by Billow on the card "
                "processor: refund it where it was taken",
                field="payment_id",
                code="refund.not_collected",
            )
        amount = _amount(spec.amount, spec.currency, invoice)
        invoice2, payment2, refund = refund_unapplied(
            invoice, payment, amount, refund_id=refund_id, reference=spec.reference, on=when.today, now=clock.now()
        )
        what = f"refunding payment {payment.id}'s unapplied money"
        return _reserved(store, ctx, gateway, (invoice2, invoice.version), payment2, refund, what, when)

    found = _refunded_once(store, ctx, invoice_id, refund_id, clock, reserve, holder=get_invoice)
    return _carried_on(store, ctx, found, spec, clock, gateway)


def credit_note_records(
    store: InvoiceStore, ctx: TenantContext, note: Invoice
) -> tuple[list[CreditApplication], list[Refund]]:
    """A credit note's applications (reversed ones too) and refunds."""
    applications = store.applications_of(ctx.scope, note.contact_id, note.id)
    return applications, store.refunds_of(ctx.scope, note.contact_id, note.id)


# -- invoice statuses --------------------------------------------------------------------------------
def _change_status(
    store: InvoicePorts,
    ctx: TenantContext,
    invoice_id: str,
    done: frozenset[InvoiceStatus],
    *,
    clock: Clock,
    replay: bool,
    change: Callable[[Invoice, date], Settlement],
) -> Invoice:
    """Read the invoice, `change` it on its contact's today, write that. A replayed request (same
    Idempotency-Key and body) that finds the invoice in one of the `done` statuses answers it as it is."""
    written: list[Invoice] = []

    def attempt() -> None:
        invoice = get_invoice(store, ctx, invoice_id)
        if replay and invoice.status in done:
            written.append(invoice)
            return
        when = contact_time(store, ctx, invoice.contact_id, clock)
        settlement = change(invoice, when.today)
        settlement.commit(store, ctx.scope, f"invoice {invoice.id}", when)
        written.append(next(i for i, _ in settlement.invoices if i.id == invoice.id))

    _retrying(f"invoice {invoice_id}", attempt)
    return written[-1]


def voiding(store: ReceivablePorts, ctx: TenantContext, invoice: Invoice, reason: str, today: date) -> Settlement:
    """What voiding `invoice` on `today` writes: the invoice (only if still at its version), and the
    credit applied to it given back to its credit notes."""
    applications = [
        a
        for a in store.applications_of(ctx.scope, invoice.contact_id)
        if a.invoice_id == invoice.id and a.reversed_on is None
    ]
    notes = [get_invoice(store, ctx, note_id) for note_id in sorted({a.credit_note_id for a in applications})]
    voided, released, reversed_ = void(invoice, reason, today, applications, notes)
    written = ((voided, invoice.version), *((n, n.version) for n in released))  # replace() keeps the version read
    return Settlement(written, tuple(reversed_))


def void_invoice(
    store: InvoicePorts, ctx: TenantContext, invoice_id: str, reason: str, *, clock: Clock, replay: bool = False
) -> Invoice:
    """Cancel an open, overdue or draft invoice nothing was paid on, with its reason; the credit
    applied to it goes back to its credit notes."""

    def change(invoice: Invoice, today: date) -> Settlement:
        return voiding(store, ctx, invoice, reason, today)

    done = frozenset({InvoiceStatus.VOID})
    return _change_status(store, ctx, invoice_id, done, clock=clock, replay=replay, change=change)


def mark_uncollectible(
    store: InvoicePorts, ctx: TenantContext, invoice_id: str, reason: str | None, *, clock: Clock, replay: bool = False
) -> Invoice:
    """Write off an open or overdue invoice: its amount due no longer counts as owed."""

    def change(invoice: Invoice, today: date) -> Settlement:
        return Settlement(((invoice.written_off(reason, today), invoice.version),))

    done = frozenset({InvoiceStatus.UNCOLLECTIBLE})
    return _change_status(store, ctx, invoice_id, done, clock=clock, replay=replay, change=change)


def finalize_invoice(
    store: InvoicePorts,
    ctx: TenantContext,
    invoice_id: str,
    numbers: InvoiceNumbers,
    *,
    clock: Clock,
    replay: bool = False,
) -> Invoice:
    """Finalise a draft before its review window ends: numbered, open (or paid by credit)."""

    def change(invoice: Invoice, today: date) -> Settlement:
        return _finalized(store, ctx, invoice, numbers, today)

    done = frozenset({InvoiceStatus.OPEN, InvoiceStatus.OVERDUE, InvoiceStatus.PAID})  # finalised, maybe paid by credit
    return _change_status(store, ctx, invoice_id, done, clock=clock, replay=replay, change=change)


def _finalized(
    store: ReceivablePorts, ctx: TenantContext, invoice: Invoice, numbers: InvoiceNumbers, today: date
) -> Settlement:
    if invoice.status is not InvoiceStatus.DRAFT:
        invoice.finalized("", today)  # raises invoice.not_draft
    final, consumed = consumed_credit(store, ctx, invoice.finalized(numbers.next(ctx), today), today)
    return Settlement(((final, invoice.version), *consumed.invoices), consumed.applications)


def consumed_credit(
    store: ReceivablePorts, ctx: TenantContext, invoice: Invoice, on: date
) -> tuple[Invoice, Settlement]:
    """Under the tenant's `auto_apply_credit`, `invoice` (just issued or finalised) consuming the
    contact's credit in its currency, and the credit notes it drew on (with the versions read) and
    the applications, to write with it. Off, or for a draft or a paid invoice, nothing is read."""
    if not ctx.settings.auto_apply_credit or not invoice.owed:
        return invoice, Settlement()
    notes = store.credit_notes_with_credit(ctx.scope, invoice.contact_id, invoice.currency)
    if not notes:
        return invoice, Settlement()
    # Derived ids: a retried step makes the same applications, written only once.
    consumer, used, applications = consume_credit(
        invoice, notes, on=on, now=datetime.now(UTC), application_id=f"cap_{invoice.id}"
    )
    return consumer, Settlement(tuple((n, n.version) for n in used), tuple(applications))  # versions as read


def _moved_on(
    store: DueInvoicePorts, ctx: TenantContext, invoice: Invoice, today: date, numbers: InvoiceNumbers
) -> bool:
    """Write what `today` does to the invoice: activate or lapse the services waiting for its
    payment (access on payment), finalise a draft whose review ended, mark an open invoice overdue
    the day after its due date. False when there was nothing to do."""
    waiting = invoice.activation_due()
    if waiting is not None and waiting <= today:
        from billow.services.activation import settle_waiting  # it bills: billing imports this module

        settle_waiting(store, ctx, invoice, today, numbers)
        return True
    if invoice.status is InvoiceStatus.DRAFT and invoice.review_until is not None and invoice.review_until <= today:
        _finalized(store, ctx, invoice, numbers, invoice.review_until).commit(store, ctx.scope, f"invoice {invoice.id}")
        return True
    overdue = invoice.went_overdue(today)
    if overdue is invoice:
        return False
    Settlement(((overdue, invoice.version),)).commit(store, ctx.scope, f"invoice {invoice.id}")
    return True


def move_due_invoice(
    store: DueInvoicePorts, ctx: TenantContext, contact_id: str, invoice_id: str, today: date, numbers: InvoiceNumbers
) -> list[Invoice]:
    """The daily run's part for an invoice in the due index: its transitions due by `today`
    (a draft finalised may go overdue the same run). Returns the invoice as written, if it moved."""
    moved: list[Invoice] = []

    def attempt() -> None:
        for _ in range(2):  # a draft finalised, then overdue
            invoice = store.get_invoice(ctx.scope, invoice_id)
            if (
                invoice is None
                or invoice.contact_id != contact_id
                or not _moved_on(store, ctx, invoice, today, numbers)
            ):
                return
            moved.append(invoice)

    _retrying(f"invoice {invoice_id}", attempt)
    return moved


def move_contact_invoices(
    store: DueInvoicePorts, ctx: TenantContext, contact_id: str, today: date, numbers: InvoiceNumbers
) -> int:
    """A test-clock advance's part: every invoice of the contact moved on to `today` (drafts whose
    review ended finalised, unpaid invoices past due overdue). Returns how many moved."""
    count = 0
    for invoice in store.invoices_of(ctx.scope, contact_id):
        due = invoice.next_transition()
        if due is not None and due <= today:
            count += len(move_due_invoice(store, ctx, contact_id, invoice.id, today, numbers))
    return count


# -- balance -----------------------------------------------------------------------------------------
def contact_balance(store: InvoicePorts, ctx: TenantContext, contact_id: str) -> dict[str, Balance]:
    """Per currency: the contact's outstanding, overdue, credit and written-off amounts."""
    get_contact(store, ctx, contact_id)
    return balances(store.invoices_of(ctx.scope, contact_id))
