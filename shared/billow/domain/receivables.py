"""Receivables: what a contact owes and what is owed to it, per currency, in `Money`.

A credit note (an invoice item whose lines sum below zero, `InvoiceKind.CREDIT_NOTE`) is money owed
to the contact. What remains of it (`Invoice.credit_remaining`: -total - applied - refunded) can be
(a) applied to open or overdue invoices of the same contact and currency, each application a
`CreditApplication` record; (b) refunded, a `Refund` record: recorded by staff as done outside
Billow (a manual refund), or made to the card payment of an invoice whose days the credit note
credits (`credited_invoices`, `refund_to_payment`: never beyond what that payment received net of
its earlier refunds); or (c) left
as the contact's credit balance, which invoices consume automatically when the tenant's
`auto_apply_credit` setting is on (`consume_credit`). Nothing is applied or refunded beyond what
remains: every function here checks it on the versions it is given, and the store writes the
changed invoices conditioned on those versions in one transaction, so of two concurrent uses of
the same credit only one is written.

Voiding an invoice releases the credits applied to it back to their credit notes, and nothing
else (`void`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billow.domain.errors import Conflict, InvalidInput
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentMethod, check_recorded
from billow.domain.money import Money


@dataclass(frozen=True, slots=True)
class CreditApplication:
    """Part of a credit note applied to an invoice, on a business day."""

    id: str
    credit_note_id: str
    invoice_id: str
    amount: Money
    applied_on: date
    recorded_at: datetime
    reversed_on: date | None = None
    """The invoice was voided that day: the credit went back to the credit note."""

    def __post_init__(self) -> None:
        check_recorded(self.amount, self.recorded_at, "an applied amount", "credit.amount_not_positive")


class RefundStatus(StrEnum):
    PENDING = "pending"  # a card refund written, the rail's outcome not recorded yet
    SUCCEEDED = "succeeded"  # money returned (a manual refund is recorded succeeded)
    FAILED = "failed"  # the rail refused it: its amount went back to the credit note and the payment


RAIL_CALL_AT_MOST = timedelta(minutes=2)
"""How long a card refund's call to the rail may still be running after it was leased
(`refund_leased`): longer than an API request can run (29 s) and than the rail client's timeout. A
lease older than this was left by a request that died, and the next retry takes it over."""


@dataclass(frozen=True, slots=True)
class Refund:
    """Part of a credit note paid back to the contact: recorded by staff (a manual refund), or made
    to a card payment (`payment_id`) through the payment rail, pending until the rail answers."""

    id: str
    credit_note_id: str
    amount: Money
    method: PaymentMethod
    reference: str
    refunded_on: date
    recorded_at: datetime
    invoice_id: str | None = None
    """A card refund: the invoice the refunded payment paid."""
    payment_id: str | None = None
    """A card refund: the payment refunded (None: a manual refund)."""
    status: RefundStatus = RefundStatus.SUCCEEDED
    rail_ref: str | None = None
    """The rail's refund id, once it answered."""
    failure: str | None = None
    """Why the rail refused it (status failed)."""
    leased_until: datetime | None = None
    """A pending card refund being sent to the rail by a request, until then (`RAIL_CALL_AT_MOST`)."""
    version: int = 0
    """The stored item's version (0: not stored yet)."""
    unapplied: bool = False
    """A refund of a card payment's unapplied money (`refund_unapplied`), no credit note's:
    `credit_note_id` then names the invoice that holds that money (`Invoice.amount_unapplied`),
    under which the refund is recorded, as a credit note's are under it."""

    def __post_init__(self) -> None:
        check_recorded(self.amount, self.recorded_at, "a refund amount", "credit.amount_not_positive")


def _check_credit_note(note: Invoice) -> None:
    if note.kind is not InvoiceKind.CREDIT_NOTE:
        raise Conflict(f"{note.label} is an invoice, not a credit note", code="credit.not_a_credit_note")


def _check_remaining(note: Invoice, amount: Money, field: str = "amount") -> None:
    if amount.currency != note.currency:
        raise InvalidInput(
            f"credit note {note.label} is in {note.currency}, the amount in {amount.currency}",
            field="currency",
            code="money.currency_mismatch",
        )
    if amount > note.credit_remaining:
        raise Conflict(
            f"{amount} is more than the {note.credit_remaining} that remains of credit note {note.label}",
            field=field,
            code="credit.exceeds_remaining",
        )


def _amount_of(note: Invoice, amount: Money | None, limit: Money, verb: str) -> Money:
    """`amount` if positive; None: as much as remains of credit note `note` within `limit` (refused
    when nothing remains). The caller checks its own `limit`."""
    if amount is None:
        if note.credit_remaining.is_zero:
            raise Conflict(f"nothing remains of credit note {note.label}", code="credit.exceeds_remaining")
        return min(note.credit_remaining, limit)
    if amount.minor <= 0:
        raise InvalidInput(f"the amount to {verb} must be positive", field="amount", code="credit.amount_not_positive")
    return amount


def apply_credit(
    note: Invoice, invoice: Invoice, amount: Money | None, *, application_id: str, on: date, now: datetime
) -> tuple[Invoice, Invoice, CreditApplication]:
    """Apply `amount` of credit note `note` to `invoice` (None: as much as both allow). Returns the
    credit note, the invoice (paid when covered) and the application record."""
    _check_credit_note(note)
    if invoice.kind is not InvoiceKind.INVOICE:
        raise Conflict(f"{invoice.label} is a credit note; credit applies to invoices", code="credit.not_an_invoice")
    if invoice.contact_id != note.contact_id:
        raise InvalidInput(
            f"invoice {invoice.label} is another contact's than credit note {note.label}",
            field="invoice_id",
            code="credit.other_contact",
        )
    if invoice.currency != note.currency:
        raise InvalidInput(
            f"invoice {invoice.label} is in {invoice.currency}, credit note {note.label} in {note.currency}",
            field="invoice_id",
            code="credit.currency_mismatch",
        )
    if not invoice.owed:
        raise Conflict(
            f"invoice {invoice.label} is {invoice.status.value}; credit applies to open or overdue invoices",
            field="invoice_id",
            code="credit.invoice_not_open",
        )
    amount = _amount_of(note, amount, invoice.amount_due, "apply")
    _check_remaining(note, amount)
    if amount > invoice.amount_due:
        raise Conflict(
            f"{amount} is more than the {invoice.amount_due} due on invoice {invoice.label}",
            field="amount",
            code="credit.exceeds_amount_due",
        )
    application = CreditApplication(application_id, note.id, invoice.id, amount, on, now)
    credited = replace(invoice, amount_credited=invoice.credited + amount).settled_if_covered(on)
    return replace(note, amount_applied=note.applied + amount), credited, application


MANUAL_REFUND_METHODS = (PaymentMethod.BANK_TRANSFER, PaymentMethod.CASH, PaymentMethod.CHECK)
"""How staff may say they returned a credit note's money outside Billow. Not `card`: a card refund
is one Billow makes through the card processor (`refund_to_payment`,
`billow.services.receivables.refund_to_card`), never one recorded as done by hand."""


def check_manual_refund_method(method: PaymentMethod) -> None:
    if method not in MANUAL_REFUND_METHODS:
        allowed = ", ".join(m.value for m in MANUAL_REFUND_METHODS)
        raise InvalidInput(
            f"a refund recorded here is money returned outside Billow: method is one of {allowed}, not {method.value}",
            field="method",
            code="refund.method_not_manual",
        )


def refund_credit(
    note: Invoice,
    amount: Money | None,
    *,
    refund_id: str,
    method: PaymentMethod,
    reference: str,
    on: date,
    now: datetime,
) -> tuple[Invoice, Refund]:
    """Record a manual refund (`MANUAL_REFUND_METHODS`) of `amount` of what remains of credit note
    `note` (None: all of it)."""
    check_manual_refund_method(method)
    _check_credit_note(note)
    amount = _amount_of(note, amount, note.credit_remaining, "refund")
    _check_remaining(note, amount)
    refund = Refund(refund_id, note.id, amount, method, reference, on, now)
    return replace(note, amount_refunded=note.refunded + amount), refund


def credited_invoices(note: Invoice, invoices: Iterable[Invoice]) -> list[Invoice]:
    """The invoices whose days credit note `note` credits: of its subscription and currency, each
    with a charge (a line of a positive amount over days) of a service the note credits, over some
    of the days that credit line credits. The engine never credits days no earlier document charged
    (`billow.domain.billing`), so the link needs no stored field: the lines are it. Newest first."""
    credits = [(line.service_id, line.period) for line in note.lines if line.kind == "credit" and line.period]
    found = [
        invoice
        for invoice in invoices
        if invoice.kind is InvoiceKind.INVOICE
        and invoice.id != note.id
        and invoice.subscription_id == note.subscription_id
        and invoice.currency == note.currency
        and any(
            line.period is not None
            and line.amount.minor > 0
            and line.service_id == service_id
            and line.period.start < credited.end
            and credited.start < line.period.end
            for line in invoice.lines
            for service_id, credited in credits
        )
    ]
    return sorted(found, key=lambda i: (i.issue_date, i.number, i.id), reverse=True)


def _check_card(payment: Payment) -> None:
    if payment.method is not PaymentMethod.CARD:
        raise Conflict(
            f"payment {payment.id} was made by {payment.method.value}; only a card payment is refunded "
            "through the card processor (record a refund made outside Billow with its method)",
            field="payment_id",
            code="refund.not_a_card_payment",
        )


def refund_to_payment(
    note: Invoice,
    payment: Payment,
    amount: Money | None,
    *,
    credited: Collection[str],
    refund_id: str,
    reference: str,
    on: date,
    now: datetime,
) -> tuple[Invoice, Payment, Refund]:
    """A refund of `amount` (None: as much as both allow) of credit note `note` to card `payment`
    of one of the invoices it credits (`credited`: their ids), pending until the rail answers:
    the credit note and the payment already count it, so no other refund can spend it too."""
    _check_credit_note(note)
    _check_card(payment)
    if payment.invoice_id not in credited:
        raise Conflict(
            f"payment {payment.id} paid invoice {payment.invoice_id}, whose days credit note {note.label} "
            "does not credit; refund it to a payment of an invoice it credits",
            field="payment_id",
            code="refund.payment_not_credited",
        )
    amount = _amount_of(note, amount, payment.refundable_for_credit, "refund")
    _check_remaining(note, amount)
    if amount.is_zero or amount > payment.refundable_for_credit:
        kept = f", {payment.unapplied} its invoice never took (refunded by itself)" if payment.unapplied else ""
        raise Conflict(
            f"payment {payment.id} received {payment.amount}, {payment.refunded} of it refunded already{kept}: "
            f"at most {payment.refundable_for_credit} more of a credit note can be refunded to it",
            field="amount",
            code="refund.exceeds_payment",
        )
    refund = _pending_to_card(note.id, payment, amount, refund_id, reference, on, now)
    refunded = replace(payment, amount_refunded=payment.refunded + amount)
    return replace(note, amount_refunded=note.refunded + amount), refunded, refund


def _pending_to_card(
    holder_id: str,
    payment: Payment,
    amount: Money,
    refund_id: str,
    reference: str,
    on: date,
    now: datetime,
    *,
    unapplied: bool = False,
) -> Refund:
    """A card refund of `payment`, pending until the rail answers, recorded under `holder_id`."""
    return Refund(
        refund_id,
        holder_id,
        amount,
        PaymentMethod.CARD,
        reference,
        on,
        now,
        invoice_id=payment.invoice_id,
        payment_id=payment.id,
        status=RefundStatus.PENDING,
        unapplied=unapplied,
    )


def refund_unapplied(
    invoice: Invoice,
    payment: Payment,
    amount: Money | None,
    *,
    refund_id: str,
    reference: str,
    on: date,
    now: datetime,
) -> tuple[Invoice, Payment, Refund]:
    """A refund of `amount` (None: all of it) of card `payment`'s unapplied money, held by its
    `invoice`, pending until the rail answers: the invoice and the payment already count it (less
    unapplied, more refunded), so no other refund can spend it too. Never beyond what is unapplied
    (409 `refund.exceeds_unapplied`)."""
    _check_card(payment)
    if amount is not None and amount.currency != payment.amount.currency:
        raise InvalidInput(
            f"payment {payment.id} is in {payment.amount.currency}, the amount in {amount.currency}",
            field="currency",
            code="money.currency_mismatch",
        )
    kept = payment.unapplied
    assert kept is not None
    amount = kept if amount is None else amount
    if amount.is_zero or amount.is_negative:
        if kept.is_zero:
            raise Conflict(
                f"payment {payment.id} has no unapplied money left to refund", code="refund.exceeds_unapplied"
            )
        raise InvalidInput("a refund amount must be positive", field="amount", code="credit.amount_not_positive")
    if amount > kept:
        raise Conflict(
            f"payment {payment.id} has {kept} unapplied (money its invoice never took) left to "
            f"refund, less than {amount}",
            field="amount",
            code="refund.exceeds_unapplied",
        )
    refund = _pending_to_card(invoice.id, payment, amount, refund_id, reference, on, now, unapplied=True)
    spent = replace(payment, amount_refunded=payment.refunded + amount, unapplied=kept - amount)
    return replace(invoice, amount_unapplied=invoice.unapplied - amount), spent, refund


def refund_leased(refund: Refund, now: datetime) -> Refund:
    """A pending card refund taken by one request to be sent to the rail, until `RAIL_CALL_AT_MOST`
    from `now`; refused while another request's lease runs (409 `refund.in_progress`)."""
    if refund.status is not RefundStatus.PENDING:
        raise ValueError(f"refund {refund.id} is {refund.status.value}, not pending")
    if refund.leased_until is not None and refund.leased_until > now:
        raise Conflict(
            f"refund {refund.id} is being sent to the card processor by another request; retry shortly",
            code="refund.in_progress",
        )
    return replace(refund, leased_until=now + RAIL_CALL_AT_MOST)


def refund_settled(
    note: Invoice, payment: Payment, refund: Refund, *, rail_ref: str | None, failure: str | None
) -> tuple[Invoice, Payment, Refund]:
    """A pending card refund as the rail answered: succeeded with its `rail_ref`; or failed
    (`failure`), its amount given back to the credit note and to the payment."""
    if refund.status is not RefundStatus.PENDING:
        raise ValueError(f"refund {refund.id} is {refund.status.value}, not pending")
    if failure is None:
        return note, payment, replace(refund, status=RefundStatus.SUCCEEDED, rail_ref=rail_ref, leased_until=None)
    failed = replace(refund, status=RefundStatus.FAILED, rail_ref=rail_ref, failure=failure, leased_until=None)
    paid_back = replace(payment, amount_refunded=payment.refunded - refund.amount)
    if refund.unapplied:  # `note` is the invoice holding the unapplied money: it is unapplied again
        back = replace(note, amount_unapplied=note.unapplied + refund.amount)
        assert payment.unapplied is not None
        return back, replace(paid_back, unapplied=payment.unapplied + refund.amount), failed
    back = replace(note, amount_refunded=note.refunded - refund.amount)
    return back, paid_back, failed


def void(
    invoice: Invoice, reason: str, on: date, applications: Iterable[CreditApplication], notes: Sequence[Invoice]
) -> tuple[Invoice, list[Invoice], list[CreditApplication]]:
    """Void `invoice`, releasing each credit applied to it back to its credit note (and only
    those). `applications`: the invoice's; `notes`: the credit notes they drew on. Returns the
    voided invoice, the credit notes with their credit back, and the applications marked reversed."""
    voided = invoice.voided(reason, on)
    by_id = {n.id: n for n in notes}
    reversed_ = []
    for application in applications:
        if application.invoice_id != invoice.id or application.reversed_on is not None:
            continue
        note = by_id[application.credit_note_id]
        by_id[note.id] = replace(note, amount_applied=note.applied - application.amount)
        reversed_.append(replace(application, reversed_on=on))
    return voided, [n for n in by_id.values() if any(a.credit_note_id == n.id for a in reversed_)], reversed_


MAX_NOTES_PER_INVOICE = 20
"""Credit notes one invoice draws on automatically: each is three writes (the note, its credit
marker, the application) in the invoice's transaction, which holds at most 100 with the
subscription, the invoice and up to 20 action records. What is left stays owed, and the next
invoice (or staff, by hand) uses the remaining credit."""


def consume_credit(
    invoice: Invoice, notes: Iterable[Invoice], *, on: date, now: datetime, application_id: str
) -> tuple[Invoice, list[Invoice], list[CreditApplication]]:
    """The contact's credit balance consumed by a new invoice: its credit notes of that currency,
    oldest first, applied up to its amount due, at most `MAX_NOTES_PER_INVOICE` of them.
    `application_id` is suffixed per credit note."""
    applied: list[Invoice] = []
    applications: list[CreditApplication] = []
    ordered = sorted(
        (n for n in notes if n.currency == invoice.currency and n.contact_id == invoice.contact_id),
        key=lambda n: (n.issue_date, n.number, n.id),
    )
    for note in ordered:
        if not invoice.owed or invoice.amount_due.is_zero or len(applied) == MAX_NOTES_PER_INVOICE:
            break
        if note.credit_remaining.is_zero:
            continue
        note, invoice, application = apply_credit(
            note, invoice, None, application_id=f"{application_id}_{note.id}", on=on, now=now
        )
        applied.append(note)
        applications.append(application)
    return invoice, applied, applications


@dataclass(frozen=True, slots=True)
class Balance:
    """A contact's receivables in one currency."""

    currency: str
    outstanding: Money
    """Unpaid amounts of its open and overdue invoices."""
    overdue: Money
    """The part of `outstanding` on overdue invoices."""
    credit: Money
    """What remains of its credit notes, and money a card charge took beyond what its invoices
    owed (`Invoice.amount_unapplied`): its credit balance."""
    uncollectible: Money
    """Unpaid amounts written off."""

    @property
    def net(self) -> Money:
        """What the contact owes once its credit is counted (negative: it is owed)."""
        return self.outstanding - self.credit


def balances(invoices: Iterable[Invoice]) -> dict[str, Balance]:
    """Per currency: outstanding, overdue, credit and written-off amounts of a contact's invoices."""
    sums: dict[str, dict[str, Money]] = {}
    for invoice in invoices:
        zero = Money.zero(invoice.currency)
        parts = sums.setdefault(
            invoice.currency, dict.fromkeys(("outstanding", "overdue", "credit", "uncollectible"), zero)
        )
        if invoice.owed:
            parts["outstanding"] += invoice.amount_due
            if invoice.status is InvoiceStatus.OVERDUE:
                parts["overdue"] += invoice.amount_due
        elif invoice.status is InvoiceStatus.UNCOLLECTIBLE:
            parts["uncollectible"] += invoice.amount_due
        parts["credit"] += invoice.credit_remaining + invoice.unapplied
    return {currency: Balance(currency, **parts) for currency, parts in sorted(sums.items())}


def net_owed(invoices: Iterable[Invoice]) -> dict[str, Money]:
    """What a contact owes per currency, its credit counted (the debt threshold and credit limit
    are checked against this)."""
    return {currency: balance.net for currency, balance in balances(invoices).items()}
