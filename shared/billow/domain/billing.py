"""The billing engine: which days of which services an invoice covers, and for how much.

Every service remembers `billed_through`, the exclusive end of the days already invoiced. Its
unbilled days are cut along the subscription's billing periods into pieces; each piece becomes one
line, priced as (days covered / days in that period) x the period price, computed exactly as a
Fraction and rounded once, half away from zero, to the currency's minor unit (`Money.scaled`).

When a piece is billed (its billing date):
- advance (pre-bill): its period's start, or the first charged day of a service that joined
  mid-period;
- arrears (post-bill): its period's end. With a post-bill cut-off day the periods run from cut-off
  to cut-off and each is billed on the first billing day on or after its end.
The billing run invoices a recurring piece `rules.bill_days_before` days before its billing date.

Rules applied to a service's first piece (see `BillingRules`):
- threshold day: a service starting on or after its period's threshold date is billed, on its
  first invoice, up to the next billing day *and* one full cycle more;
- delayed alignment: a service added to an existing subscription is billed one full cycle of its
  own first; its next piece runs up to the subscription's billing day and is billed with the other
  services at the next run (immediate alignment prorates straight up to the billing day).

When a service leaves the billable states (`rules.billable_states`, overridable per service) or
reaches its end date, billing stops there; days already billed past that point are credited
unless the new state is non-creditable. The credit of a piece is what was charged for it minus
what the kept days cost, so charges minus credits always equal the price of the days kept, to the
minor unit. Each credit line lies in one billed period. A step whose lines sum below zero is a
credit note; billing ahead (`ahead`) pulls only recurring charges forward, so a credit note is
dated the day it is issued.

`next_billing_step` takes the earliest date on which a subscription has something due and returns
the one invoice for it plus the subscription with every covered service advanced. Applying steps
until none is due bills every day exactly once, whatever the as-of date: a run missed for three
cycles catches up with three invoices, and a rerun finds nothing to do. The dry run, the quotation,
the view bill and the real run all call this one function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal, TypeVar

from billow.domain.actions import Action
from billow.domain.calendar import Period, add_cycle, day_on_or_after
from billow.domain.catalog import BillingModel
from billow.domain.lines import Adjustment, LineDraft
from billow.domain.money import Money, sum_money
from billow.domain.rules import Alignment, ServiceState
from billow.domain.subscriptions import Service, Subscription, Transfer
from billow.domain.usage import (
    NO_USAGE,
    BilledUsage,
    LateMarker,
    LateUsage,
    RatedUsage,
    UsageRater,
    billed_for,
    with_billed,
)

_ONE = Fraction(1)
_ENDED = frozenset({ServiceState.CANCELLED, ServiceState.REGRETTED})
"""States a service never leaves: no usage period will come (a paused service's will, on resume)."""
_DAY = timedelta(days=1)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Piece:
    """Days of one service inside one billing period, and the date they are billed."""

    billing_date: date
    billing_period: Period
    covered: Period

    @property
    def fraction(self) -> Fraction:
        if self.covered.start == self.billing_period.start and self.covered.end == self.billing_period.end:
            return _ONE
        return Fraction(self.covered.days, self.billing_period.days)


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    subscription_id: str
    contact_id: str
    currency: str
    billing_date: date
    issue_date: date
    period: Period
    """From the first to the last day any line covers."""
    lines: tuple[LineDraft, ...]

    @property
    def total(self) -> Money:
        return sum_money([line.amount for line in self.lines], self.currency)

    @property
    def is_credit_note(self) -> bool:
        return self.total.is_negative

    def due_date(self, payment_terms_days: int) -> date:
        """When it is due once issued, under the business's payment terms."""
        return self.issue_date + timedelta(days=payment_terms_days)


@dataclass(frozen=True, slots=True)
class BillingStep:
    """One atomic move of a subscription: drafts activated, at most one invoice, services advanced."""

    subscription: Subscription
    invoice: InvoiceDraft | None
    actions: tuple[Action, ...] = ()
    """Actions this step executed, rejected, scheduled or cancelled (for the action log)."""
    transfer: Transfer | None = None
    """A service this step moves to another of the contact's subscriptions (written with it)."""
    cleared: tuple[LateMarker, ...] = ()
    """Late-usage markers whose difference this step's invoice bills (cleared with it)."""


# -- where a service's billable days end --------------------------------------------------------
def billable_end(service: Service, subscription: Subscription) -> tuple[date | None, ServiceState]:
    """The exclusive end of the service's billable days (None: open-ended) and its state after it."""
    end, after = service.end_date, ServiceState.CANCELLED
    if service.term_end is not None and not service.auto_renew and (end is None or service.term_end < end):
        end, after = service.term_end, ServiceState.NOT_EFFECTIVE
    if not subscription.rules.is_billable(service.state, service.billable_states):
        since = service.stopped_on or service.since
        if end is None or since < end:
            end, after = since, service.state
    return end, after


# -- pieces -------------------------------------------------------------------------------------
def recurring_pieces(
    service: Service, subscription: Subscription, *, start: date | None = None, end: date | None = None
) -> Iterator[Piece]:
    """The service's recurring pieces from `start` (default: its first unbilled day) up to `end`
    (exclusive; None for no end), in billing-date order. The first-piece rules (threshold,
    delayed alignment) apply when `start` is the service's first charged day."""
    if service.terms.billing_model is BillingModel.NONE:
        return  # "no billing": never invoiced
    schedule = subscription.schedule
    rules = subscription.rules
    cycle = schedule.cycle
    advance = subscription.billing_model is BillingModel.ADVANCE
    billing_start = service.billing_start
    charged_from = service.charged_from
    begin = service.unbilled_from if start is None else start
    # The first piece of a stretch restarted mid-period (a resume, a change, a new billing day)
    # goes on the next invoice with the credit of the stretch before it, as prorations do: also
    # when it restarts on the service's first charged day (a change the day it was ordered).
    restarting = begin == charged_from and begin == service.restarted_on
    first = begin == billing_start and charged_from == billing_start and not restarting
    cutoff = None if advance else rules.cutoff_for(cycle)
    periods = schedule if cutoff is None else schedule.cutoff_schedule(cutoff)

    if first and service.alignment is Alignment.DELAYED and not schedule.is_billing_date(begin):
        own = Period(begin, add_cycle(begin, cycle))
        if end is not None and end <= begin:
            return
        yield Piece(begin if advance else own.end, own, Period(begin, own.end if end is None else min(own.end, end)))
        begin, first = own.end, False

    joined: date | None = None  # the billing date the threshold rule gives the next piece
    while end is None or begin < end:
        period = periods.period_containing(begin)
        covered = Period(begin, period.end if end is None or period.end <= end else end)
        if joined is not None:
            billing_date, joined = joined, None
        elif advance:
            billing_date = period.start if period.start > billing_start else billing_start
            if restarting:
                restarting = False
                if begin > period.start:
                    billing_date = period.end
        else:
            billing_date = period.end if cutoff is None else schedule.next_on_or_after(period.end)
        if first:
            first = False
            threshold = rules.threshold_for(cycle)
            if (
                threshold is not None
                and begin != period.start
                and (end is None or period.end < end)
                and begin >= day_on_or_after(period.start, cycle, threshold)
            ):
                # Past the threshold: the next full period goes on the same first invoice.
                if advance:
                    joined = billing_date
                else:
                    after = periods.period_containing(period.end).end
                    billing_date = joined = after if cutoff is None else schedule.next_on_or_after(after)
        yield Piece(billing_date, period, covered)
        begin = period.end


def usage_pieces(service: Service, subscription: Subscription, end: date | None) -> Iterator[Piece]:
    """A metered service's periods whose usage is not yet billed; always billed in arrears."""
    if service.terms.billing_model is BillingModel.NONE:
        return
    begin = service.usage_billed_through or service.billing_start
    while end is None or begin < end:
        period = subscription.schedule.period_containing(begin)
        yield Piece(period.end, period, Period(begin, period.end if end is None or period.end <= end else end))
        begin = period.end


def credit_pieces(service: Service, subscription: Subscription, end: date) -> list[tuple[Piece, Period | None]]:
    """Billed days from `end` on: each billed piece as charged, with the part of it that is kept."""
    billed_through = service.billed_through
    if billed_through is None or billed_through <= end:
        return []
    credits: list[tuple[Piece, Period | None]] = []
    for piece in recurring_pieces(service, subscription, start=service.charged_from):
        if piece.covered.start >= billed_through:
            break
        if piece.covered.end <= end:
            continue
        charged = Period(piece.covered.start, min(piece.covered.end, billed_through))
        kept = Period(charged.start, end) if charged.start < end else None
        credits.append((Piece(piece.billing_date, piece.billing_period, charged), kept))
    return credits


# -- what each service has due ------------------------------------------------------------------
class _Due:
    """The next thing each kind of work has due for one service."""

    __slots__ = ("credit_on", "end", "head", "late", "late_on", "recurring", "service", "usage", "usage_head")

    def __init__(self, service: Service, subscription: Subscription, rater: UsageRater = NO_USAGE) -> None:
        self.service = service
        end, after = billable_end(service, subscription)
        self.end = end
        self.credit_on: date | None = None
        self.head: Piece | None = None
        self.usage_head: Piece | None = None
        self.recurring: Iterator[Piece] | None = None
        self.usage: Iterator[Piece] | None = None
        self.late: list[LateUsage] = []
        self.late_on: date | None = None
        billed = service.billed_through
        if billed is not None and service.awaiting_payment:
            return  # its first invoice is out: nothing more until it is paid (then activated)
        if end is not None and billed is not None and billed > end:
            if subscription.rules.is_creditable(after, service.non_creditable_states):
                self.credit_on = end
        else:
            self.recurring = recurring_pieces(service, subscription, end=end)
            self.head = next(self.recurring, None)
        if service.meters_usage:
            usage_end = service.usage_end(end)
            self.usage = usage_pieces(service, subscription, usage_end)
            self.usage_head = next(self.usage, None)
            settled = service.usage_billed_through
            if (
                self.usage_head is None
                and (service.state in _ENDED or service.expired or service.terms.meter is None)
                and usage_end is not None
                and settled is not None
                and settled >= usage_end
            ):
                # An ended (or no longer metered) service whose every usage period is billed: no
                # next usage invoice will take its late usage, so its markers are billed on their own.
                self.late = list(rater.late(subscription, service))
                self.late_on = settled if self.late else None

    def run_date(self, lead: timedelta, as_of: date = date.max, ahead: date = date.max) -> date | None:
        """The earliest date something is due: credits and usage up to `as_of`, recurring
        charges (billed `lead` early) up to `ahead`; None when nothing is."""
        dates = []
        if self.credit_on is not None and self.credit_on <= as_of:
            dates.append(self.credit_on)
        if self.head is not None and self.head.billing_date - lead <= ahead:
            dates.append(self.head.billing_date - lead)
        if self.usage_head is not None and self.usage_head.billing_date <= as_of:
            dates.append(self.usage_head.billing_date)
        if self.late_on is not None:
            dates.append(min(self.late_on, as_of))
        return min(dates, default=None)


def _evolve(obj: _T, changes: dict[str, Any]) -> _T:
    """`dataclasses.replace` for the engine's hot path: a copy with `changes`, without running
    `__init__` and `__post_init__` again (they only check what the engine does not change)."""
    kind = type(obj)
    copier = _COPIERS.get(kind)
    if copier is None:
        copier = _COPIERS[kind] = _copier(kind.__slots__)  # type: ignore[attr-defined]
    return copier(obj, changes)


_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def _copier(slots: tuple[str, ...]) -> Callable[[Any, dict[str, Any]], Any]:
    """A copy function with one plain attribute read per slot, as dataclasses generates its
    methods: about twice as fast as a loop of getattr/setattr over two dozen slots."""
    body = "".join(f"    put(new, {n!r}, changes[{n!r}] if {n!r} in changes else obj.{n})\n" for n in slots)
    source = f"def copy(obj, changes):\n    new = new_object(type(obj))\n{body}    return new\n"
    namespace: dict[str, Any] = {"put": object.__setattr__, "new_object": object.__new__}
    exec(source, namespace)  # noqa: S102 - the source is built from the class's own slot names
    return namespace["copy"]


def _starts(service: Service, as_of: date) -> bool:
    """A draft starting by `as_of` turns effective, unless it waits for its first invoice's payment."""
    return service.state is ServiceState.DRAFT and service.start_date <= as_of and service.lapses_on is None


def _activated(services: tuple[Service, ...], as_of: date) -> tuple[Service, ...]:
    if not any(_starts(s, as_of) for s in services):
        return services
    return tuple(
        replace(s, state=ServiceState.EFFECTIVE, state_since=s.start_date) if _starts(s, as_of) else s for s in services
    )


def next_due_date(subscription: Subscription) -> date | None:
    """The next date on which the billing run has something to do for the subscription, or None.

    This is the date the due-for-billing index holds: a pending action's day, a draft's start date
    (it turns effective), the end of a termed period, a settled adjustment's run date, a credit's
    date, or the earliest day any unbilled piece or usage period is to be invoiced."""
    lead = timedelta(days=subscription.rules.bill_days_before)
    dates: list[date] = [a.on for a in subscription.actions]
    dates += [a.run_on for a in subscription.adjustments]
    for service in subscription.services:
        if service.state is ServiceState.DRAFT and service.lapses_on is None:
            dates.append(service.start_date)
        if (term_end := service.open_term_end) is not None:
            dates.append(term_end)
        run_date = _Due(service, subscription).run_date(lead)
        if run_date is not None:
            dates.append(run_date)
    return min(dates, default=None)


# -- lines --------------------------------------------------------------------------------------
def _charge_line(service: Service, piece: Piece) -> LineDraft:
    fraction = piece.fraction
    return LineDraft(
        kind="recurring" if fraction == 1 else "prorated",
        description=f"{service.product_name} ({service.terms.cycle.adjective})",
        service_id=service.id,
        product_id=service.product_id,
        quantity=service.quantity,
        unit_price=service.terms.price,
        fraction=fraction,
        amount=service.terms.period_price(service.quantity).scaled(fraction),
        period=piece.covered,
    )


def _setup_fee_line(service: Service) -> LineDraft | None:
    fee = service.terms.setup_fee
    if fee is None or fee.is_zero or service.terms.billing_model is BillingModel.NONE:
        return None
    return one_time_line(service, "setup_fee", f"{service.product_name} setup fee", fee)


def one_time_line(service: Service, kind: str, description: str, amount: Money) -> LineDraft:
    """A charge (or, negative, a credit) that covers no days: a setup or cancellation fee."""
    return LineDraft(
        kind=kind,
        description=description,
        service_id=service.id,
        product_id=service.product_id,
        quantity=1,
        unit_price=amount,
        fraction=_ONE if not amount.is_negative else -_ONE,
        amount=amount,
        period=None,
    )


def _credit_line(service: Service, piece: Piece, kept: Period | None) -> LineDraft:
    """The credit of the days of a charged piece after `kept` (all of it when None)."""
    price = service.terms.period_price(service.quantity)
    kept_price = price.scaled(Fraction(kept.days, piece.billing_period.days)) if kept else Money.zero(price.currency)
    credited = Period(kept.end if kept else piece.covered.start, piece.covered.end)
    return _credit(service, piece, credited, kept_price)


def _credit(service: Service, piece: Piece, credited: Period, kept_price: Money) -> LineDraft:
    """A credit line for the `credited` days of a charged piece: what the piece was charged minus
    `kept_price`, the price of its other days as they are (or will be) counted when credited."""
    price = service.terms.period_price(service.quantity)
    period_days = piece.billing_period.days
    return LineDraft(
        kind="credit",
        description=f"{service.product_name}: unused time credited",
        service_id=service.id,
        product_id=service.product_id,
        quantity=service.quantity,
        unit_price=service.terms.price,
        fraction=-Fraction(credited.days, period_days),
        amount=kept_price - price.scaled(Fraction(piece.covered.days, period_days)),
        period=credited,
    )


def settle(
    service: Service,
    subscription: Subscription,
    on: date,
    *,
    credit_on: date,
    credit: bool = True,
    charge: bool = True,
) -> tuple[Service, tuple[Adjustment, ...]]:
    """Stop the service's billing at `on` (an action's day) and settle what billing would have
    done, so that billing can restart later from any day without looking back:

    - its unbilled days before `on` (arrears) are charged, each piece on its own run date, with
      the setup fee if nothing was invoiced yet, unless `charge` is False (those days were not
      billable: the service was paused or not effective already);
    - its days from `on` already invoiced are credited on `credit_on`, unless `credit` is False
      (the new state is not creditable), as the engine credits them (charged minus kept), or on
      the invoice of a pending charge of those days if that is later;
    - days from `on` whose charge is still pending (an earlier action settled them, their invoice
      has not gone out) are not credited: that charge is cut down to the days kept (or dropped),
      so no document charges and credits the same days at one price. The amount is the same as
      charge plus credit: the price of the days kept, rounded once.

    Returns the service billed through `on` and the subscription's adjustments."""
    lead = timedelta(days=subscription.rules.bill_days_before)
    pending = list(subscription.adjustments)
    added: list[Adjustment] = []
    if charge and service.unbilled_from < on:
        pieces = list(recurring_pieces(service, subscription, end=on))
        if pieces and service.billed_through is None and (fee := _setup_fee_line(service)) is not None:
            added.append(Adjustment(fee, max(pieces[0].billing_date - lead, on)))
        added += [Adjustment(_charge_line(service, p), max(p.billing_date - lead, on)) for p in pieces]
    for piece, kept in credit_pieces(service, subscription, on) if credit else []:
        at = _position(pending, _charge_line(service, piece))
        if at is None:
            line = _credit_line(service, piece, kept)
            added.append(Adjustment(line, max([credit_on, *_charged_on(pending, line)])))
            continue
        netted = pending.pop(at)
        if kept is not None:
            kept_piece = Piece(piece.billing_date, piece.billing_period, kept)
            pending.insert(at, Adjustment(_charge_line(service, kept_piece), netted.run_on))
    billed = service.billed_through
    adjustments = (*pending, *added)
    if added or (billed is not None and billed > on):
        return replace(service, billed_through=on), adjustments
    # Nothing charged or credited: days it never billed stay unbilled (and a setup fee still due).
    return service, adjustments


def _charged_on(adjustments: list[Adjustment], credit: LineDraft) -> list[date]:
    """Run dates of pending charges of some of the days `credit` credits: the credit goes on
    their invoice, never before it."""
    days = credit.period
    assert days is not None
    return [
        a.run_on
        for a in adjustments
        if a.line.service_id == credit.service_id
        and a.line.kind in ("recurring", "prorated")
        and a.line.period is not None
        and a.line.period.start < days.end
        and days.start < a.line.period.end
    ]


def bring_forward(adjustments: tuple[Adjustment, ...], service_id: str, due: date) -> tuple[Adjustment, ...]:
    """The service's pending credits moved up to `due` (a stop's credit date) when they wait for a
    later invoice: a cancellation right after a change credits everything the same day. Never
    before a pending charge of the days a credit credits (`settle` put it on that charge's
    invoice): a document never credits days no earlier document charged."""
    pending = list(adjustments)
    return tuple(
        replace(a, run_on=max([due, *_charged_on(pending, a.line)]))
        if a.run_on > due and a.line.kind == "credit" and a.line.service_id == service_id
        else a
        for a in adjustments
    )


def _position(adjustments: list[Adjustment], line: LineDraft) -> int | None:
    """Where `line` waits among the pending `adjustments`, or None."""
    return next((i for i, a in enumerate(adjustments) if a.line == line), None)


def restart(service: Service, subscription: Subscription, on: date) -> tuple[Service, tuple[Adjustment, ...]]:
    """Billing starts again on `on` (a resume, an activation, a renewal) after an action stopped it.

    On the day of the stop, while the lines the stop settled are all still pending, the stop is
    undone: those lines are dropped and the service is billed as if it had never stopped (one
    stretch, rounded once). Later, if the stop credited days already invoiced past its day
    (billed ahead) and its credit is still pending, the days from `on` are neither credited nor
    charged again: the credit is trimmed to the days the service was stopped, one line per
    invoiced period, and the service stays invoiced through where it was. Each trimmed line is
    what its piece was charged minus the price of its days kept before the stop and after `on`,
    counted as a later credit will count them, so charges minus credits still equal the price of
    the days kept, to the minor unit. A period with no credit pending (its pending charge was cut
    to the days before the stop, or its credit was issued) gets a pending charge of its days from
    `on`, on the cut charge's invoice if it still waits. Otherwise (no credit pending at all, or
    one cannot be split exactly) billing restarts on `on` like a service joining mid-period. Returns the service
    restarted and the subscription's adjustments."""
    stopped, before = service.stopped_on, service.billed_at_stop
    restarted = replace(service, restarted_on=on, stopped_on=None, billed_at_stop=None)
    adjustments = subscription.adjustments
    if stopped is None:
        return restarted, adjustments
    if on == stopped and (undone := _undo_stop(service, subscription, stopped)) is not None:
        return undone
    through = before
    if through is None or not stopped <= on < through:
        return restarted, adjustments
    charged = credit_pieces(replace(service, billed_through=through), subscription, stopped)
    found = [_position(list(adjustments), _credit_line(service, piece, kept)) for piece, kept in charged]
    if all(at is None for at in found):
        return restarted, adjustments  # the credit is invoiced already (or the schedule changed)
    resumed = replace(restarted, billed_through=through)
    after = list(recurring_pieces(resumed, subscription, start=on, end=through))
    price = service.terms.period_price(service.quantity)
    lead = timedelta(days=subscription.rules.bill_days_before)
    trimmed: dict[int, Adjustment | None] = {}
    charged_again: list[Adjustment] = []
    placed = 0
    for (piece, kept), at in zip(charged, found, strict=True):
        covered = piece.covered
        inside = [p for p in after if covered.start <= p.covered.start and p.covered.end <= covered.end]
        placed += len(inside)
        if at is None:
            # No credit of this period is pending: its charge was cut to the days before the stop
            # (it was still pending) or its credit was issued. The days from `on` are charged
            # again, on the invoice of the cut charge if it still waits, else as a restart is.
            cut = Piece(piece.billing_date, piece.billing_period, kept) if kept is not None else None
            waits = None if cut is None else _position(list(adjustments), _charge_line(service, cut))
            charged_again += [
                Adjustment(
                    _charge_line(resumed, p),
                    adjustments[waits].run_on if waits is not None else max(p.billing_date - lead, on),
                )
                for p in inside
            ]
            continue
        kept_price = sum_money([price.scaled(p.fraction) for p in inside], price.currency)
        if kept is not None:
            kept_price = kept_price + price.scaled(Fraction(kept.days, piece.billing_period.days))
        hole_start, hole_end = max(covered.start, stopped), min(covered.end, on)
        if hole_start < hole_end:
            line = _credit(service, piece, Period(hole_start, hole_end), kept_price)
            trimmed[at] = Adjustment(line, adjustments[at].run_on)
        elif kept_price == price.scaled(piece.fraction):
            trimmed[at] = None  # kept whole: nothing to credit
        else:
            return restarted, adjustments  # cannot be split exactly
    if placed != len(after):
        return restarted, adjustments  # the pieces after `on` do not fall inside the charged ones
    remaining = [trimmed.get(i, a) for i, a in enumerate(adjustments)]
    return resumed, (*(a for a in remaining if a is not None), *charged_again)


def _undo_stop(
    service: Service, subscription: Subscription, stopped: date
) -> tuple[Service, tuple[Adjustment, ...]] | None:
    """The service as it was before the stop of `stopped` settled it, with the lines that stop
    settled dropped from the pending adjustments; None if one of them is not pending any more."""
    before = replace(service, billed_through=service.billed_at_stop, stopped_on=None, billed_at_stop=None)
    lines: list[LineDraft] = []
    if before.unbilled_from < stopped:
        pieces = list(recurring_pieces(before, subscription, end=stopped))
        if pieces and before.billed_through is None and (fee := _setup_fee_line(before)) is not None:
            lines.append(fee)
        lines += [_charge_line(before, p) for p in pieces]
    lines += [_credit_line(before, p, kept) for p, kept in credit_pieces(before, subscription, stopped)]
    positions = _positions(subscription.adjustments, lines)
    if positions is None:
        return None
    return before, tuple(a for i, a in enumerate(subscription.adjustments) if i not in positions)


def _positions(adjustments: tuple[Adjustment, ...], lines: list[LineDraft]) -> list[int] | None:
    """Where each of `lines` waits among the pending `adjustments`, or None if one does not."""
    positions: list[int] = []
    for line in lines:
        at = next((i for i, a in enumerate(adjustments) if a.line == line and i not in positions), None)
        if at is None:
            return None
        positions.append(at)
    return positions


def charge_again(service: Service, subscription: Subscription, until: date, run_on: date) -> tuple[Adjustment, ...]:
    """The service's days from its restart up to `until`, already invoiced (billed ahead) before a
    change credited them, charged at its new terms on the invoice of `run_on`, one line per
    period, beside the credit: the period is adjusted, never invoiced a second time. A pending
    credit of exactly those days at exactly that amount (an earlier change away from these terms,
    not invoiced yet) is dropped instead: no document credits and charges them at one price.
    Returns the subscription's adjustments."""
    pending = list(subscription.adjustments)
    added: list[Adjustment] = []
    for piece in recurring_pieces(service, subscription, end=until):
        line = _charge_line(service, piece)
        for at, adjustment in enumerate(pending):
            netted = _netted(adjustment.line, line)
            if netted is not False:
                if netted is None:
                    del pending[at]
                else:
                    pending[at] = Adjustment(netted, adjustment.run_on)
                break
        else:
            added.append(Adjustment(line, run_on))
    return (*pending, *added)


def _netted(credit: LineDraft, charge: LineDraft) -> LineDraft | Literal[False] | None:
    """A pending `credit` of the last days of a period cut down by a `charge` of its last days at
    the same terms: the credit of the days before them (None when nothing is left), or False
    when they do not net exactly. Credit plus charge keep their sum to the minor unit."""
    same = (credit.service_id, credit.product_id, credit.quantity, credit.unit_price)
    if credit.kind != "credit" or same != (charge.service_id, charge.product_id, charge.quantity, charge.unit_price):
        return False
    days, cut = credit.period, charge.period
    if days is None or cut is None or not (days.start <= cut.start and cut.end == days.end):
        return False
    amount = credit.amount + charge.amount
    if cut.start == days.start:
        return None if amount.is_zero else False
    if not amount.is_negative:
        return False
    period_days = Fraction(days.days) / -credit.fraction
    left = Period(days.start, cut.start)
    return replace(credit, fraction=-Fraction(left.days) / period_days, amount=amount, period=left)


def _usage_line(
    service: Service, period: Period, rated: RatedUsage, before: BilledUsage | None, late: bool
) -> LineDraft:
    """The usage of `period` not billed yet: rated as it stands minus what was billed before."""
    amount = rated.total if before is None else rated.total - before.amount
    quantity = rated.quantity if before is None else max(rated.quantity - before.quantity, Decimal(0))
    in_force = service.usage_terms(period)
    name, meter = (service.product_name, None) if in_force is None else (in_force[0], in_force[1].meter)
    if late:
        description = f"{name}: late usage for {period.start} – {period.end} ({meter})"  # noqa: RUF001 - the en dash of a date range
    elif before is not None and before.progressive:
        description = f"{name} usage ({meter}), less {before.amount.amount_str()} invoiced before"
    else:
        description = f"{name} usage ({meter})"
    return LineDraft(
        kind="usage",
        description=description,
        service_id=service.id,
        product_id=service.product_id,
        quantity=quantity,
        unit_price=rated.unit_price if rated.unit_price is not None else amount,
        fraction=_ONE,
        amount=amount,
        period=period,
    )


def _billed_now(rated: RatedUsage, period_start: date, before: BilledUsage | None, progressive: int = 0) -> BilledUsage:
    """What the period's invoices have billed once `rated` is: never less than they billed before
    (a usage line never credits, `_unbilled`), so later usage is billed only beyond it."""
    if before is None:
        return BilledUsage(period_start, rated.total, rated.quantity, rated.records, progressive)
    return BilledUsage(
        period_start,
        max(rated.total, before.amount),
        max(rated.quantity, before.quantity),
        rated.records,
        before.progressive + progressive,
    )


def _unbilled(rated: RatedUsage | None, before: BilledUsage | None) -> bool:
    """Whether `rated` has anything the invoices so far did not bill. A usage line never credits:
    usage that rates lower than what its period's invoices billed (an allowance raised for the
    contact after an immediate invoice, a `latest` value that fell) bills nothing, and the
    invoiced amount stands (docs/billing.md, "Usage billed before")."""
    if rated is None:
        return False
    if before is None:
        return rated.records > 0 or not rated.total.is_zero
    if rated.total < before.amount:
        return False
    return rated.total != before.amount or rated.quantity > before.quantity or rated.records != before.records


def _late_lines(
    service: Service, lates: Sequence[LateUsage], before_start: date | None
) -> tuple[list[LineDraft], tuple[BilledUsage, ...], list[LateMarker]]:
    """The late lines of the marked periods billed before `before_start` (None: every one): each
    period rated again minus what was billed for it. Returns the lines, the service's billed usage
    after them and the markers they settle (every one read: a marker with nothing new bills nothing)."""
    lines: list[LineDraft] = []
    billed = service.usage_billed
    cleared: list[LateMarker] = []
    for late in lates:
        cleared.append(late.marker)
        start = late.marker.period_start
        before = billed_for(billed, start)
        if (before_start is not None and start >= before_start) or before is None:
            continue  # billed with its own period, or older than the history kept (not billed)
        if _unbilled(late.rated, before):
            lines.append(_usage_line(service, late.period, late.rated, before, late=True))
            billed = with_billed(billed, _billed_now(late.rated, start, before))
    return lines, billed, cleared


def _usage_lines(
    rater: UsageRater, subscription: Subscription, service: Service, piece: Piece
) -> tuple[list[LineDraft], tuple[BilledUsage, ...], list[LateMarker]]:
    """The usage lines of a period billed at its end: late differences of periods billed before
    (each its own line naming its period), then the period's usage minus what its immediate
    invoices billed. Returns the lines, the service's billed usage after them and the late
    markers they settle."""
    lines, billed, cleared = _late_lines(service, rater.late(subscription, service), piece.billing_period.start)
    # The period's usage so far, from its first day: a stretch after a restart (a resumed pause)
    # is billed as the period's rating minus what its earlier stretch billed, never re-rated alone.
    rated = rater.rate(subscription, service, Period(piece.billing_period.start, piece.covered.end))
    before = billed_for(billed, piece.billing_period.start)
    if rated is not None and _unbilled(rated, before):
        lines.append(_usage_line(service, piece.covered, rated, before, late=False))
    # Recorded even with no usage: a late record of the period is then billed as its difference.
    final = rated or RatedUsage(Money.zero(subscription.currency), Decimal(0), 0)
    billed = with_billed(billed, _billed_now(final, piece.billing_period.start, before))
    return lines, billed, cleared


def usage_so_far_step(
    subscription: Subscription, service_id: str, period: Period, rated: RatedUsage, today: date
) -> BillingStep | None:
    """An immediate invoice of a service's usage so far in its open billing period (a charge limit
    was crossed): rated minus what was billed of that period before, recorded on the service as
    billed (a progressive invoice) so the period's final invoice bills only the rest. None when
    nothing is unbilled, or nothing to charge (an immediate invoice never credits: a total that fell
    since is left to the period's final invoice)."""
    service = next(s for s in subscription.services if s.id == service_id)
    if service.terms.billing_model is BillingModel.NONE:
        return None
    before = billed_for(service.usage_billed, period.start)
    invoiced = before.amount if before is not None else Money.zero(rated.total.currency)
    if not rated.total - invoiced > Money.zero(rated.total.currency):
        return None
    covered = Period(max(period.start, service.billing_start), min(period.end, today + _DAY))
    line = _usage_line(service, covered, rated, before, late=False)
    line = replace(
        line, description=f"{service.product_name} usage so far ({service.terms.meter}): charge limit reached"
    )
    advanced = _evolve(
        service, {"usage_billed": with_billed(service.usage_billed, _billed_now(rated, period.start, before, 1))}
    )
    invoice = InvoiceDraft(
        subscription_id=subscription.id,
        contact_id=subscription.contact_id,
        currency=subscription.currency,
        billing_date=today,
        issue_date=today,
        period=covered,
        lines=(line,),
    )
    services = tuple(advanced if s.id == service_id else s for s in subscription.services)
    return BillingStep(_evolve(subscription, {"services": services}), invoice)


def _overlaps(a: Period, b: Period) -> bool:
    return a.start < b.end and b.start < a.end


def _with_waiting_credits(
    lines: list[LineDraft], pending: tuple[Adjustment, ...]
) -> tuple[list[LineDraft], tuple[Adjustment, ...]]:
    """A document that charges days of a service also takes the service's pending credits of any
    of those days, though they wait for a later invoice (a billing-day change's credit of the old
    period, then the new periods billed ahead): no invoice charges a day again while the credit of
    its earlier charge is still to come."""
    charged = [
        (line.service_id, line.period)
        for line in lines
        if line.kind in ("recurring", "prorated") and line.period is not None
    ]
    taken = [
        a
        for a in pending
        if a.line.kind == "credit"
        and (days := a.line.period) is not None
        and any(sid == a.line.service_id and _overlaps(period, days) for sid, period in charged)
    ]
    if not taken:
        return lines, pending
    return [*(a.line for a in taken), *lines], tuple(a for a in pending if a not in taken)


def _same_date(head: Piece, rest: Iterator[Piece]) -> list[Piece]:
    """The head and the pieces right after it billed on the same date (the threshold rule)."""
    taken = [head]
    for piece in rest:
        if piece.billing_date != head.billing_date:
            break
        taken.append(piece)
    return taken


# -- the step -----------------------------------------------------------------------------------
def next_billing_step(
    subscription: Subscription,
    as_of: date,
    *,
    today: date | None = None,
    rater: UsageRater = NO_USAGE,
    ahead: date | None = None,
) -> BillingStep | None:
    """The earliest due invoice of `subscription` at `as_of`, or None when nothing is due.

    `ahead`, later than `as_of`, bills upcoming cycles: recurring charges the run would invoice up
    to that day are invoiced now, issued `today`. Credits, adjustments and usage are never billed
    ahead: they go on the invoice of their own date, so a credit note is dated the day it is issued;
    except a pending credit of days the invoice charges again (`_with_waiting_credits`)."""
    horizon = as_of if ahead is None or ahead < as_of else ahead
    services = _activated(subscription.services, horizon)
    current = subscription if services is subscription.services else replace(subscription, services=services)
    lead = timedelta(days=subscription.rules.bill_days_before)
    dues = [_Due(s, current, rater) for s in services]
    run_date: date | None = None
    candidates = [due.run_date(lead, as_of, horizon) for due in dues]
    candidates += [a.run_on for a in current.adjustments if a.run_on <= as_of]
    for candidate in candidates:
        if candidate is not None and candidate <= horizon and (run_date is None or candidate < run_date):
            run_date = candidate
    if run_date is None:
        return None if current is subscription else BillingStep(current, None)

    settling = run_date <= as_of  # else only recurring charges billed ahead
    lines: list[LineDraft] = [a.line for a in current.adjustments if a.run_on <= run_date] if settling else []
    pending = tuple(a for a in current.adjustments if a.run_on > run_date) if settling else current.adjustments
    advanced: list[Service] = []
    cleared: list[LateMarker] = []
    billing_dates: list[date] = [run_date] if lines else []
    issue_floor = run_date
    invoicing = bool(lines)  # anything but an ended service's late usage: the invoice is made
    for due in dues:
        service = due.service
        changes: dict[str, Any] = {}
        if due.credit_on == run_date and settling:
            for piece, kept in credit_pieces(service, current, run_date):
                lines.append(_credit_line(service, piece, kept))
            changes["billed_through"] = run_date
            billing_dates.append(run_date)
            invoicing = True
        elif due.head is not None and due.recurring is not None and due.head.billing_date - lead == run_date:
            # Only the first piece of a stretch shares its billing date with the next one (the
            # threshold rule; a restart mid-period).
            starting = service.billed_through is None or service.billed_through <= service.charged_from
            taken = _same_date(due.head, due.recurring) if starting else [due.head]
            if service.billed_through is None and (fee := _setup_fee_line(service)) is not None:
                lines.append(fee)
            lines.extend(_charge_line(service, piece) for piece in taken)
            changes["billed_through"] = taken[-1].covered.end
            billing_dates.append(due.head.billing_date)
            invoicing = True
        if settling and due.usage_head is not None and due.usage_head.billing_date == run_date:
            usage, changes["usage_billed"], markers = _usage_lines(rater, current, service, due.usage_head)
            lines.extend(usage)
            cleared.extend(markers)
            changes["usage_billed_through"] = due.usage_head.covered.end
            billing_dates.append(run_date)
            invoicing = True
        elif settling and due.late_on is not None and min(due.late_on, as_of) == run_date:
            usage, changes["usage_billed"], markers = _late_lines(service, due.late, None)
            lines.extend(usage)
            cleared.extend(markers)
            # Billed the day it is found, not the service's end: an invoice dated then would be
            # born overdue (its due date counts from its issue date).
            billing_dates.append(as_of)
            issue_floor = max(issue_floor, as_of)
        if changes:
            if service.ordered_on is not None and service.ordered_on > issue_floor:
                issue_floor = service.ordered_on
            service = _evolve(service, changes)
        advanced.append(service)

    lines, pending = _with_waiting_credits(lines, pending)
    if not lines and not invoicing:
        # Only late markers of ended services, with nothing new to bill: cleared, no invoice.
        return BillingStep(_evolve(current, {"services": tuple(advanced)}), None, cleared=tuple(cleared))
    # Fees alone (a cancellation fee) cover no days: such an invoice's period is its billing day.
    covered = [line.period for line in lines if line.period is not None] or [Period(run_date, run_date + _DAY)]
    invoice = InvoiceDraft(
        subscription_id=subscription.id,
        contact_id=subscription.contact_id,
        currency=subscription.currency,
        billing_date=max(billing_dates),
        issue_date=issue_floor if today is None or today >= issue_floor else today,
        period=Period(min(p.start for p in covered), max(p.end for p in covered)),
        lines=tuple(lines),
    )
    updated = _evolve(
        current, {"services": tuple(advanced), "invoice_count": subscription.invoice_count + 1, "adjustments": pending}
    )
    return BillingStep(updated, invoice, cleared=tuple(cleared))
