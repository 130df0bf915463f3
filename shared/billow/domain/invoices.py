"""Invoices and the payments recorded against them, and each invoice's status transitions.

An invoice's amount due is its total less the payments and the credits applied to it. Its status
moves draft -> open -> (overdue) -> paid, or from open or overdue to void (cancelled, with a reason)
or uncollectible (written off). Each transition records its business day (`status_on`, on the
contact's clock) on the invoice item, so what reacts to it (events, dunning) reads when it happened.
A credit note (a negative total) is `issued`; how much of it remains is in `billow.domain.receivables`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.errors import Conflict, InvalidInput
from billow.domain.lines import LineDraft
from billow.domain.money import Money, sum_money

EARLY_PAYMENT_DAYS = 90
"""A payment of an invoice may have been received up to this many days before the invoice was
issued (a customer paying ahead), not earlier: an older date is a typing error, not a payment."""


class InvoiceStatus(StrEnum):
    DRAFT = "draft"  # in the tenant's review window: not numbered, not owed yet
    OPEN = "open"  # finalised, awaiting payment
    OVERDUE = "overdue"  # open past its due date: the transition the day after it
    PAID = "paid"
    VOID = "void"  # cancelled, with its reason
    UNCOLLECTIBLE = "uncollectible"  # written off
    ISSUED = "issued"  # a credit note: the credit is the customer's


OWED = frozenset({InvoiceStatus.OPEN, InvoiceStatus.OVERDUE})
"""Statuses of an invoice the contact owes its amount due on (payments and credits apply)."""


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"  # its lines sum below zero: money owed to the customer


@dataclass(frozen=True, slots=True)
class TopUp:
    """What a credit top-up's invoice sells: once it is paid, `credits` purchased credits are granted
    to the contact's wallet (once: the grant's id is derived from the invoice's)."""

    pack_id: str
    credits: int
    request_id: str
    """The caller's id of the purchase (an auto top-up's: derived from its low-balance entry)."""
    auto: bool = False
    """Bought by the contact's auto top-up, not asked for."""
    on_session: bool = False
    """Paid on-session: the customer confirms the charge with Stripe.js (the client secret), Billow
    never confirms it off-session."""


class PaymentMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    CASH = "cash"
    CHECK = "check"
    CARD = "card"


def check_recorded(amount: Money, recorded_at: datetime, what: str, code: str | None = None) -> None:
    """A money movement's record (a payment, a credit applied, a refund): a positive amount,
    recorded at a timezone-aware instant."""
    if amount.minor <= 0:
        raise InvalidInput(f"{what} must be positive", field="amount", code=code)
    if recorded_at.tzinfo is None:
        raise ValueError("recorded_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    invoice_id: str
    amount: Money
    method: PaymentMethod
    reference: str
    received_on: date
    recorded_at: datetime
    amount_refunded: Money | None = None
    """Refunded of it to the card so far, pending refunds included (None reads as zero):
    `billow.domain.receivables.refund_to_payment`. Only a card payment is refunded through Billow."""
    version: int = 0
    """The stored item's version (0: not stored yet); a refund writes the payment conditioned on it."""
    unapplied: Money | None = None
    """Of `amount`, what its invoice could not take (a card charge that succeeded after the invoice
    was paid by other means, voided or credited): kept as the contact's credit
    (`Invoice.amount_unapplied`), refundable to the card like the rest (None reads as zero)."""
    stray_charge: bool = False
    """A charge on the rail that no payment attempt recorded (made outside Billow's collection,
    naming the invoice in its metadata), found by a webhook or a sweep and recorded so that money
    is never lost (`billow.services.collection.reconcile_charge`): its `payment.succeeded` event
    comes from this payment, not from an attempt."""

    def __post_init__(self) -> None:
        check_recorded(self.amount, self.recorded_at, "a payment amount")
        if self.amount_refunded is None:
            object.__setattr__(self, "amount_refunded", Money.zero(self.amount.currency))
        if self.unapplied is None:
            object.__setattr__(self, "unapplied", Money.zero(self.amount.currency))

    @property
    def refunded(self) -> Money:
        assert self.amount_refunded is not None
        return self.amount_refunded

    @property
    def refundable(self) -> Money:
        """What the payment received net of its refunds (pending ones included)."""
        return self.amount - self.refunded

    @property
    def refundable_for_credit(self) -> Money:
        """What a credit note's refund can take of it: what its invoice took, net of those refunds.
        Its `unapplied` part (money the invoice never took) is refunded by itself
        (`billow.domain.receivables.refund_unapplied`), which lowers `unapplied` as it raises
        `amount_refunded`: so the two kinds of refund never spend the same money."""
        assert self.unapplied is not None
        return self.refundable - self.unapplied


@dataclass(frozen=True, slots=True)
class Invoice:
    id: str
    number: str
    contact_id: str
    subscription_id: str
    currency: str
    billing_date: date
    issue_date: date
    due_date: date
    period: Period
    lines: tuple[LineDraft, ...]
    amount_paid: Money
    status: InvoiceStatus
    version: int = 0
    amount_credited: Money | None = None
    """An invoice: credit from credit notes applied to it (None reads as zero)."""
    amount_applied: Money | None = None
    """A credit note: how much of it was applied to invoices (None reads as zero)."""
    amount_refunded: Money | None = None
    """A credit note: how much of it was refunded (None reads as zero)."""
    status_on: date | None = None
    """The business day of the last status change (the issue day when it never changed)."""
    status_reason: str | None = None
    """Why it was voided or written off."""
    review_until: date | None = None
    """A draft: the day it is finalised unless staff finalise it before."""
    test_clock: bool = False
    """Its contact is on a test clock: only advancing that clock moves its status, not the daily run."""
    lapses_on: date | None = None
    """Access on payment: the first invoice of services kept draft until it is paid. Once paid they
    are activated (then this is cleared); still unpaid on this day, their order lapses
    (`billow.services.activation`, docs/payments.md)."""
    amount_unapplied: Money | None = None
    """Money a card charge took for it beyond what it owed (`take_charge`): the contact's credit
    (`billow.domain.receivables.balances`), refundable to that card. None reads as zero."""
    top_up: TopUp | None = None
    """A credit top-up's invoice: what it sells (docs/credits.md, "Top-ups"); None for the others."""

    def __post_init__(self) -> None:
        zero = Money.zero(self.currency)
        for name in ("amount_credited", "amount_applied", "amount_refunded", "amount_unapplied"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, zero)

    @classmethod
    def issue(
        cls,
        draft: InvoiceDraft,
        *,
        invoice_id: str,
        number: str,
        payment_terms_days: int,
        review_days: int = 0,
        test_clock: bool = False,
        lapses_on: date | None = None,
    ) -> Invoice:
        """The invoice of `draft`. With `review_days`, an invoice (not a credit note, nor a free
        invoice) is a draft, without a number, until it is finalised."""
        total = draft.total
        # A credit note is the customer's once issued; nothing to collect on a free plan's invoice.
        status = (
            InvoiceStatus.ISSUED if total.is_negative else InvoiceStatus.PAID if total.is_zero else InvoiceStatus.OPEN
        )
        review = review_days > 0 and status is InvoiceStatus.OPEN
        if review:
            status, number = InvoiceStatus.DRAFT, ""
        due_date, lapses_on = _due_before_lapse(draft.issue_date, draft.due_date(payment_terms_days), lapses_on)
        return cls(
            id=invoice_id,
            number=number,
            contact_id=draft.contact_id,
            subscription_id=draft.subscription_id,
            currency=draft.currency,
            billing_date=draft.billing_date,
            issue_date=draft.issue_date,
            due_date=due_date,
            period=draft.period,
            lines=draft.lines,
            amount_paid=Money.zero(draft.currency),
            status=status,
            status_on=draft.issue_date,
            review_until=draft.issue_date + timedelta(days=review_days) if review else None,
            test_clock=test_clock,
            lapses_on=lapses_on,
        )

    @property
    def total(self) -> Money:
        return sum_money([line.amount for line in self.lines], self.currency)

    @property
    def kind(self) -> InvoiceKind:
        return InvoiceKind.CREDIT_NOTE if self.total.is_negative else InvoiceKind.INVOICE

    @property
    def credited(self) -> Money:
        assert self.amount_credited is not None
        return self.amount_credited

    @property
    def applied(self) -> Money:
        assert self.amount_applied is not None
        return self.amount_applied

    @property
    def refunded(self) -> Money:
        assert self.amount_refunded is not None
        return self.amount_refunded

    @property
    def amount_due(self) -> Money:
        """total - payments - credits applied. Zero for a credit note (it owes nothing) and for a
        void invoice (cancelled: nothing is due on it; its total stays). An uncollectible invoice
        keeps what remains due: it may still be paid."""
        if self.kind is InvoiceKind.CREDIT_NOTE or self.status is InvoiceStatus.VOID:
            return Money.zero(self.currency)
        return self.total - self.amount_paid - self.credited

    @property
    def unapplied(self) -> Money:
        assert self.amount_unapplied is not None
        return self.amount_unapplied

    @property
    def credit_remaining(self) -> Money:
        """A credit note: what is left to apply or refund (zero for an invoice)."""
        if self.kind is not InvoiceKind.CREDIT_NOTE or self.status is not InvoiceStatus.ISSUED:
            return Money.zero(self.currency)
        return -self.total - self.applied - self.refunded

    @property
    def owed(self) -> bool:
        return self.status in OWED

    @property
    def label(self) -> str:
        """How a message names it: its number, or its id while a draft has none."""
        return self.number or self.id

    def _moved(self, status: InvoiceStatus, on: date, reason: str | None = None) -> Invoice:
        return replace(self, status=status, status_on=on, status_reason=reason)

    def settled_if_covered(self, on: date) -> Invoice:
        """Paid once payments and credits cover the total."""
        return self._moved(InvoiceStatus.PAID, on) if self.owed and self.amount_due.is_zero else self

    def finalized(self, number: str, on: date) -> Invoice:
        """A draft numbered and open on `on` (paid when credits already cover it). It is issued that
        day, as Stripe's finalisation is the invoice's effective date: `issue_date` becomes the
        finalisation day and the due date counts from it, under the payment terms it was drafted with
        (the same number of days after the issue date)."""
        if self.status is not InvoiceStatus.DRAFT:
            raise Conflict(
                f"invoice {self.label} is {self.status.value}; only a draft is finalised", code="invoice.not_draft"
            )
        issued = max(on, self.issue_date)
        terms = self.due_date - self.issue_date
        due_date, lapses_on = _due_before_lapse(issued, issued + terms, self.lapses_on)
        final = replace(
            self, number=number, review_until=None, issue_date=issued, due_date=due_date, lapses_on=lapses_on
        )
        return final._moved(InvoiceStatus.OPEN, issued).settled_if_covered(issued)

    def overdue_from(self) -> date:
        """The day an unpaid invoice becomes overdue: the day after its due date."""
        return self.due_date + timedelta(days=1)

    def went_overdue(self, today: date) -> Invoice:
        """Open past its due date on `today`: overdue, since the day after the due date. Otherwise itself."""
        if self.status is InvoiceStatus.OPEN and today >= self.overdue_from():
            return self._moved(InvoiceStatus.OVERDUE, self.overdue_from())
        return self

    def next_transition(self) -> date | None:
        """The day the daily run has something to do to this invoice: finalise a draft, mark it
        overdue, or (access on payment) lapse its order if still unpaid, or activate its services
        if nothing is owed on it any more and they are not activated yet (`activation_due`)."""
        days = [self._status_transition(), self.activation_due()]
        return min((d for d in days if d is not None), default=None)

    def _status_transition(self) -> date | None:
        if self.status is InvoiceStatus.DRAFT:
            return self.review_until
        if self.status is InvoiceStatus.OPEN:
            return self.overdue_from()
        return None

    def activation_due(self) -> date | None:
        """Access on payment: the day something is due for the services waiting for this invoice:
        paid (or owing nothing: a credit note), they are activated at once (the day it was paid, a
        backstop for the invoice.paid consumer); unpaid, their order lapses on `lapses_on`; partly
        paid, nothing (they wait for the rest); voided or written off by staff, they lapse on the day
        (docs/payments.md)."""
        if self.lapses_on is None:
            return None
        if self.status in (InvoiceStatus.PAID, InvoiceStatus.ISSUED):
            return self.status_on or self.issue_date
        if self.status in (*OWED, InvoiceStatus.DRAFT) and not self.amount_paid.is_zero:
            return None
        return self.lapses_on

    def voided(self, reason: str, on: date) -> Invoice:
        """Cancelled with its reason: an open, overdue or draft invoice nothing was paid on. The
        credits applied to it are released (`billow.domain.receivables.void`)."""
        self._check_cancellable("voided", (*OWED, InvoiceStatus.DRAFT))
        if not self.amount_paid.is_zero:
            raise Conflict(
                f"invoice {self.label} has {self.amount_paid} paid on it, so it cannot be voided (a payment is "
                "given back through a credit note). To stop collecting what remains, write it off "
                f"(POST /invoices/{self.id}/mark-uncollectible); to give the customer money back, cancel or regret "
                "the service: its credit note can be applied to what is due or refunded",
                code="invoice.has_payments",
            )
        return replace(self, amount_credited=Money.zero(self.currency))._moved(InvoiceStatus.VOID, on, reason)

    def written_off(self, reason: str | None, on: date) -> Invoice:
        """Uncollectible: the amount due is no longer counted as owed (a later payment is still taken)."""
        if self.status is InvoiceStatus.DRAFT:
            raise Conflict(f"invoice {self.label} is a draft; finalise or void it", code="invoice.not_open")
        self._check_cancellable("marked uncollectible", OWED)
        return self._moved(InvoiceStatus.UNCOLLECTIBLE, on, reason)

    def _check_cancellable(self, what: str, allowed: Collection[InvoiceStatus]) -> None:
        if self.kind is InvoiceKind.CREDIT_NOTE:
            raise Conflict(f"{self.label} is a credit note: it cannot be {what}", code="invoice.credit_note")
        if self.status not in allowed:
            listed = "a draft, open or overdue" if InvoiceStatus.DRAFT in allowed else "an open or overdue"
            raise Conflict(
                f"invoice {self.label} is {self.status.value}; only {listed} invoice can be {what}",
                code="invoice.not_open",
            )

    def check_received_on(self, received_on: date, today: date) -> None:
        """A payment of this invoice is received on the contact's `today` (its test clock's, in test
        mode) or earlier, and at most `EARLY_PAYMENT_DAYS` days before the invoice was issued."""
        if received_on > today:
            raise InvalidInput(
                f"received_on {received_on} is after today ({today} on the contact's clock): "
                "a payment is recorded once it has been received",
                field="received_on",
                code="payment.received_in_future",
            )
        earliest = self.issue_date - timedelta(days=EARLY_PAYMENT_DAYS)
        if received_on < earliest:
            raise InvalidInput(
                f"received_on {received_on} is more than {EARLY_PAYMENT_DAYS} days before invoice {self.label} "
                f"was issued ({self.issue_date}); the earliest is {earliest}",
                field="received_on",
                code="payment.received_too_early",
            )

    def take_charge(self, payment: Payment) -> tuple[Invoice, Payment]:
        """Money the rail already took for this invoice (`payment`, a card charge's share of it):
        applied up to what is still due when the invoice takes payments; the rest, all of it for an
        invoice paid by other means, voided or credited meanwhile, is recorded, never dropped: on
        the payment as `unapplied` and on the invoice as `amount_unapplied`, the contact's credit."""
        takes = self.kind is InvoiceKind.INVOICE and self.status in (*OWED, InvoiceStatus.UNCOLLECTIBLE)
        applied = min(payment.amount, self.amount_due) if takes else Money.zero(self.currency)
        invoice = self if applied.is_zero else self.apply_payment(replace(payment, amount=applied))
        rest = payment.amount - applied
        if rest.is_zero:
            return invoice, payment
        return replace(invoice, amount_unapplied=self.unapplied + rest), replace(payment, unapplied=rest)

    def apply_payment(self, payment: Payment) -> Invoice:
        if self.kind is InvoiceKind.CREDIT_NOTE:
            raise Conflict(f"{self.label} is a credit note; it takes no payments", code="payment.credit_note")
        if self.status not in (*OWED, InvoiceStatus.UNCOLLECTIBLE):
            raise Conflict(
                f"invoice {self.label} is {self.status.value}; "
                "only open, overdue or uncollectible invoices take payments",
                code="payment.invoice_not_open",
            )
        if payment.amount.currency != self.currency:
            raise InvalidInput(
                f"invoice {self.label} is in {self.currency}, the payment in {payment.amount.currency}",
                field="currency",
                code="money.currency_mismatch",
            )
        if payment.amount > self.amount_due:
            raise InvalidInput(
                f"payment {payment.amount} exceeds the {self.amount_due} due on invoice {self.label}",
                field="amount",
                code="payment.exceeds_amount_due",
            )
        paid = replace(self, amount_paid=self.amount_paid + payment.amount)
        if paid.amount_due.is_zero:
            return paid._moved(InvoiceStatus.PAID, payment.received_on)
        return paid


def _due_before_lapse(issued: date, due: date, lapses_on: date | None) -> tuple[date, date | None]:
    """The due date and lapse day of an order's first invoice waiting for payment (access on
    payment): due the day before its order lapses when the payment terms would make it due later
    (never before its issue day), so a customer who pays by the due date it shows is never refused;
    and never lapsing before it is overdue (an invoice finalised late)."""
    if lapses_on is None:
        return due, None
    due = max(issued, min(due, lapses_on - timedelta(days=1)))
    return due, max(lapses_on, due + timedelta(days=1))
