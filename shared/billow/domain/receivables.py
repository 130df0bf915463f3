"""Receivables: what a contact owes and what is owed to it, per currency, in `Money`.

A credit note (an invoice item whose lines sum below zero, `InvoiceKind.CREDIT_NOTE`) is money owed
to the contact. What remains of it (`Invoice.credit_remaining`: -total - applied - refunded) can be
(a) applied to open or overdue invoices of the same contact and currency, each application a
`CreditApplication` record; (b) refunded, a `Refund` record (a manual refund for now); or (c) left
as the contact's credit balance, which invoices consume automatically when the tenant's
`auto_apply_credit` setting is on (`consume_credit`). Nothing is applied or refunded beyond what
remains: every function here checks it on the versions it is given, and the store writes the
changed invoices conditioned on those versions in one transaction, so of two concurrent uses of
the same credit only one is written.

Voiding an invoice releases the credits applied to it back to their credit notes, and nothing
else (`void`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from billow.domain.errors import Conflict, InvalidInput
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, PaymentMethod, check_recorded
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


@dataclass(frozen=True, slots=True)
class Refund:
    """Part of a credit note paid back to the contact (recorded by staff: a manual refund)."""

    id: str
    credit_note_id: str
    amount: Money
    method: PaymentMethod
    reference: str
    refunded_on: date
    recorded_at: datetime

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
    if amount is None:
        amount = min(note.credit_remaining, invoice.amount_due)
        if amount.is_zero:
            raise Conflict(f"nothing remains of credit note {note.label}", code="credit.exceeds_remaining")
    elif amount.minor <= 0:
        raise InvalidInput("the amount to apply must be positive", field="amount", code="credit.amount_not_positive")
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
is one Billow makes through the card processor (the payments issue routes it there), never one
recorded as done by hand."""


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
    if amount is None:
        amount = note.credit_remaining
        if amount.is_zero:
            raise Conflict(f"nothing remains of credit note {note.label}", code="credit.exceeds_remaining")
    elif amount.minor <= 0:
        raise InvalidInput("the amount to refund must be positive", field="amount", code="credit.amount_not_positive")
    _check_remaining(note, amount)
    refund = Refund(refund_id, note.id, amount, method, reference, on, now)
    return replace(note, amount_refunded=note.refunded + amount), refund


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
    """What remains of its credit notes: its credit balance."""
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
        parts["credit"] += invoice.credit_remaining
    return {currency: Balance(currency, **parts) for currency, parts in sorted(sums.items())}


def net_owed(invoices: Iterable[Invoice]) -> dict[str, Money]:
    """What a contact owes per currency, its credit counted (the debt threshold and credit limit
    are checked against this)."""
    return {currency: balance.net for currency, balance in balances(invoices).items()}
