"""The billing engine: which days of which services an invoice covers, and for how much.

Every service remembers `billed_through`, the exclusive end of the days already invoiced. Its
unbilled days are cut along the subscription's billing periods into pieces; each piece becomes one
line, priced as (days covered / days in that period) x the period price, rounded once to the
currency's minor unit (`Money.scaled`). A piece is due on its billing date:
- advance (pre-bill): the first covered day — the period start, or the start date of a service
  that joined mid-period (immediate alignment: the first piece runs to the subscription's next
  billing date, full periods follow);
- arrears (post-bill): the period's end, the first day after the covered days.

`next_billing_step` takes the earliest due billing date of a subscription and returns the one
invoice for it plus the subscription with every covered service advanced. Applying the steps one by
one until none is due bills every period exactly once, whatever the as-of date — a run that was
missed for three cycles catches up with three invoices, and a rerun finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from fractions import Fraction

from billow.domain.calendar import BillingSchedule, Period
from billow.domain.catalog import BillingModel
from billow.domain.money import Money, sum_money
from billow.domain.subscriptions import BILLABLE_STATES, Service, ServiceState, Subscription

MAX_CATCH_UP_STEPS = 1000  # a subscription more than 1000 periods behind is a data error, not billing


@dataclass(frozen=True, slots=True)
class Piece:
    """Unbilled days of one service inside one billing period."""

    billing_date: date
    billing_period: Period
    covered: Period

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.covered.days, self.billing_period.days)


@dataclass(frozen=True, slots=True)
class LineDraft:
    kind: str  # "recurring" (a full period), "prorated" (part of one) or "setup_fee"
    description: str
    service_id: str
    product_id: str
    quantity: int
    unit_price: Money
    fraction: Fraction
    amount: Money
    period: Period | None  # the covered days; None for one-time charges


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    subscription_id: str
    contact_id: str
    currency: str
    billing_date: date
    period: Period
    lines: tuple[LineDraft, ...]

    @property
    def total(self) -> Money:
        return sum_money([line.amount for line in self.lines], self.currency)


@dataclass(frozen=True, slots=True)
class BillingStep:
    """One atomic move of a subscription: drafts activated, at most one invoice, services advanced."""

    subscription: Subscription
    invoice: InvoiceDraft | None


def pieces(service: Service, schedule: BillingSchedule, model: BillingModel) -> Iterator[Piece]:
    """The service's unbilled days, period by period, in billing-date order (unbounded)."""
    start = service.unbilled_from
    while True:
        period = schedule.period_containing(start)
        covered = Period(start, period.end)
        billing_date = covered.start if model is BillingModel.ADVANCE else period.end
        yield Piece(billing_date, period, covered)
        start = period.end


def _first_piece(service: Service, subscription: Subscription) -> Piece:
    return next(pieces(service, subscription.schedule, subscription.billing_model))


def _is_billable(service: Service) -> bool:
    return service.state in BILLABLE_STATES


def next_due_date(subscription: Subscription) -> date | None:
    """The next date on which the subscription has something to do, or None if never again.

    This is the date the due-for-billing index holds: a draft's start date (it turns effective) or
    the earliest billing date of any service's unbilled days.
    """
    dates = [
        min(_first_piece(s, subscription).billing_date, s.start_date)
        if s.state is ServiceState.DRAFT
        else _first_piece(s, subscription).billing_date
        for s in subscription.services
        if _is_billable(s)
    ]
    return min(dates, default=None)


def _lines_for(service: Service, piece: Piece) -> list[LineDraft]:
    terms = service.terms
    full_price = terms.period_price(service.quantity)
    fraction = piece.fraction
    lines = [
        LineDraft(
            kind="recurring" if fraction == 1 else "prorated",
            description=f"{service.product_name} ({terms.cycle.adjective})",
            service_id=service.id,
            product_id=service.product_id,
            quantity=service.quantity,
            unit_price=terms.price,
            fraction=fraction,
            amount=full_price.scaled(fraction),
            period=piece.covered,
        )
    ]
    if service.billed_through is None and terms.setup_fee is not None and not terms.setup_fee.is_zero:
        lines.insert(
            0,
            LineDraft(
                kind="setup_fee",
                description=f"{service.product_name} setup fee",
                service_id=service.id,
                product_id=service.product_id,
                quantity=1,
                unit_price=terms.setup_fee,
                fraction=Fraction(1),
                amount=terms.setup_fee,
                period=None,
            ),
        )
    return lines


def next_billing_step(subscription: Subscription, as_of: date) -> BillingStep | None:
    """The earliest due invoice of `subscription` at `as_of`, or None when nothing is due."""
    activated = tuple(
        replace(s, state=ServiceState.EFFECTIVE) if s.state is ServiceState.DRAFT and s.start_date <= as_of else s
        for s in subscription.services
    )
    firsts = {s.id: _first_piece(s, subscription) for s in activated if _is_billable(s)}
    due = [piece.billing_date for piece in firsts.values() if piece.billing_date <= as_of]
    if not due:
        if activated == subscription.services:
            return None
        return BillingStep(subscription.with_services(activated), None)

    billing_date = min(due)
    lines: list[LineDraft] = []
    advanced: list[Service] = []
    period: Period | None = None
    for service in activated:
        piece = firsts.get(service.id)
        if piece is None or piece.billing_date != billing_date:
            advanced.append(service)
            continue
        lines.extend(_lines_for(service, piece))
        advanced.append(replace(service, billed_through=piece.covered.end))
        period = piece.billing_period
    assert period is not None
    invoice = InvoiceDraft(
        subscription_id=subscription.id,
        contact_id=subscription.contact_id,
        currency=subscription.currency,
        billing_date=billing_date,
        period=period,
        lines=tuple(lines),
    )
    updated = replace(subscription, services=tuple(advanced), invoice_count=subscription.invoice_count + 1)
    return BillingStep(updated, invoice)


def billing_steps(subscription: Subscription, as_of: date) -> Iterator[BillingStep]:
    """Every step due at `as_of`, each applied to the result of the one before (a dry run)."""
    current = subscription
    for _ in range(MAX_CATCH_UP_STEPS):
        step = next_billing_step(current, as_of)
        if step is None:
            return
        yield step
        current = step.subscription
    raise RuntimeError(f"subscription {subscription.id} is over {MAX_CATCH_UP_STEPS} periods behind")
