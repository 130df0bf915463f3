"""Invoices and the payments recorded against them."""

from __future__ import annotations

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
    OPEN = "open"  # issued, awaiting payment
    PAID = "paid"
    VOID = "void"
    ISSUED = "issued"  # a credit note: the credit is the customer's


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"  # its lines sum below zero: money owed to the customer


class PaymentMethod(StrEnum):
    BANK_TRANSFER = "bank_transfer"
    CASH = "cash"
    CHECK = "check"
    CARD = "card"


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    invoice_id: str
    amount: Money
    method: PaymentMethod
    reference: str
    received_on: date
    recorded_at: datetime

    def __post_init__(self) -> None:
        if self.amount.minor <= 0:
            raise InvalidInput("a payment amount must be positive", field="amount")
        if self.recorded_at.tzinfo is None:
            raise ValueError("recorded_at must be timezone-aware")


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

    @classmethod
    def issue(cls, draft: InvoiceDraft, *, invoice_id: str, number: str, payment_terms_days: int) -> Invoice:
        total = draft.total
        # A credit note is the customer's once issued; nothing to collect on a free plan's invoice.
        status = (
            InvoiceStatus.ISSUED if total.is_negative else InvoiceStatus.PAID if total.is_zero else InvoiceStatus.OPEN
        )
        return cls(
            id=invoice_id,
            number=number,
            contact_id=draft.contact_id,
            subscription_id=draft.subscription_id,
            currency=draft.currency,
            billing_date=draft.billing_date,
            issue_date=draft.issue_date,
            due_date=draft.due_date(payment_terms_days),
            period=draft.period,
            lines=draft.lines,
            amount_paid=Money.zero(draft.currency),
            status=status,
        )

    @property
    def total(self) -> Money:
        return sum_money([line.amount for line in self.lines], self.currency)

    @property
    def kind(self) -> InvoiceKind:
        return InvoiceKind.CREDIT_NOTE if self.total.is_negative else InvoiceKind.INVOICE

    @property
    def amount_due(self) -> Money:
        return self.total - self.amount_paid

    def is_overdue(self, today: date) -> bool:
        return self.status is InvoiceStatus.OPEN and today > self.due_date

    def display_status(self, today: date) -> str:
        return "overdue" if self.is_overdue(today) else self.status.value

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
                f"received_on {received_on} is more than {EARLY_PAYMENT_DAYS} days before invoice {self.number} "
                f"was issued ({self.issue_date}); the earliest is {earliest}",
                field="received_on",
                code="payment.received_too_early",
            )

    def apply_payment(self, payment: Payment) -> Invoice:
        if self.kind is InvoiceKind.CREDIT_NOTE:
            raise Conflict(f"{self.number} is a credit note; it takes no payments", code="payment.credit_note")
        if self.status is not InvoiceStatus.OPEN:
            raise Conflict(
                f"invoice {self.number} is {self.status.value}; only open invoices take payments",
                code="payment.invoice_not_open",
            )
        if payment.amount.currency != self.currency:
            raise InvalidInput(
                f"invoice {self.number} is in {self.currency}, the payment in {payment.amount.currency}",
                field="currency",
                code="money.currency_mismatch",
            )
        if payment.amount > self.amount_due:
            raise InvalidInput(
                f"payment {payment.amount} exceeds the {self.amount_due} due on invoice {self.number}",
                field="amount",
                code="payment.exceeds_amount_due",
            )
        paid = self.amount_paid + payment.amount
        status = InvoiceStatus.PAID if paid == self.total else InvoiceStatus.OPEN
        return replace(self, amount_paid=paid, status=status)
