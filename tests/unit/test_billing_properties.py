"""Properties of the billing engine for any cycle, anchor, start, end and as-of date."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction

from billow.domain.billing import billable_end, recurring_pieces
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel
from billow.domain.money import Money
from billow.domain.preview import PreviewTerms, dry_run, preview_subscription
from billow.domain.rules import Alignment, CalendarMode, ServiceState
from billow.domain.subscriptions import Subscription
from billow.domain.timeline import steps as billing_steps
from hypothesis import given, settings
from hypothesis import strategies as st

DAYS = st.dates(min_value=date(1999, 1, 1), max_value=date(2031, 12, 31))
CYCLES = st.sampled_from(list(Cycle))
MODELS = st.sampled_from([BillingModel.ADVANCE, BillingModel.ARREARS])
PRICES = st.integers(min_value=0, max_value=10**9)  # minor units
CURRENCIES = st.sampled_from(["USD", "JPY", "KWD"])


@st.composite
def schedules(draw: st.DrawFn) -> BillingSchedule:
    cycle = draw(CYCLES)
    day = draw(st.integers(0, 6)) if cycle is Cycle.WEEK else draw(st.integers(1, 31))
    return BillingSchedule(cycle, day, draw(DAYS))


@st.composite
def preview_terms(draw: st.DrawFn) -> PreviewTerms:
    cycle = draw(CYCLES)
    day_of = st.integers(0, 6) if cycle is Cycle.WEEK else st.integers(1, 31)
    return PreviewTerms(
        cycle=cycle,
        billing_model=draw(MODELS),
        price=Money(draw(PRICES), draw(CURRENCIES)),
        calendar=draw(st.sampled_from(list(CalendarMode))),
        billing_day=draw(st.none() | day_of),
        threshold_day=draw(st.none() | day_of),
        trial_days=draw(st.sampled_from([0, 0, 7, 30])),
    )


@st.composite
def subscriptions(draw: st.DrawFn) -> tuple[Subscription, date, date | None]:
    """A one-service subscription under random rules: the dry run's, plus cut-off, billing ahead
    and delayed alignment, which the dry run does not take."""
    terms = draw(preview_terms())
    start = draw(DAYS)
    end = draw(st.none() | st.integers(1, 800).map(lambda n: start + timedelta(days=n)))
    sub = preview_subscription(terms, start, end)
    rules = replace(
        sub.rules,
        post_bill_cutoff_day=draw(st.none() | st.integers(1, 31)),
        bill_days_before=draw(st.sampled_from([0, 0, 3, 10])),
    )
    service = replace(sub.services[0], alignment=draw(st.sampled_from(list(Alignment))))
    return replace(sub, rules=rules, services=(service,)), start, end


@given(schedules(), DAYS, st.lists(st.integers(1, 400), max_size=6), PRICES)
def test_prorated_pieces_of_a_period_sum_to_exactly_its_price(
    schedule: BillingSchedule, day: date, cuts: list[int], price: int
) -> None:
    period = schedule.period_containing(day)
    bounds = sorted({period.start, period.end, *(period.start + timedelta(days=c % period.days) for c in cuts)})
    sub = preview_subscription(
        PreviewTerms(schedule.cycle, BillingModel.ADVANCE, Money(price, "USD")), period.start, None
    )
    sub = replace(sub, schedule=schedule)
    total = Fraction(0)
    for start, end in itertools.pairwise(bounds):
        # each part as a service billed up to `start` whose billable days end at `end`
        service = replace(sub.services[0], state=ServiceState.EFFECTIVE, billed_through=start, end_date=end)
        (piece,) = recurring_pieces(service, sub, end=billable_end(service, sub)[0])
        assert piece.billing_period == period and piece.covered == Period(start, end)
        total += price * piece.fraction
    assert total == price


# As-of dates up to five years after the start: a weekly subscription is then 260 periods in.
LATER = st.integers(-40, 5 * 366).map(lambda n: timedelta(days=n))


@settings(max_examples=300, deadline=None)
@given(subscriptions(), LATER)
def test_billed_periods_tile_time_with_no_gap_or_overlap(
    case: tuple[Subscription, date, date | None], later: timedelta
) -> None:
    sub, start, end = case
    as_of = start + later
    charged_from = sub.services[0].billing_start
    covered = [
        line.period
        for step in billing_steps(sub, as_of)
        if step.invoice is not None
        for line in step.invoice.lines
        if line.period is not None
    ]
    assert all(p.start < p.end for p in covered)
    if covered:
        assert covered[0].start == charged_from
    for before, after in itertools.pairwise(covered):
        assert before.end == after.start  # consecutive: no gap, no overlap
    if end is not None and covered:
        assert covered[-1].end <= end
    # everything billed is due by as_of: advance on its first day (less the days before), arrears after
    lead = timedelta(days=sub.rules.bill_days_before)
    for step in billing_steps(sub, as_of):
        if step.invoice is not None:
            assert step.invoice.billing_date - lead <= as_of


@settings(max_examples=200, deadline=None)
@given(subscriptions(), LATER, LATER)
def test_billing_in_two_runs_equals_billing_in_one(
    case: tuple[Subscription, date, date | None], first: timedelta, second: timedelta
) -> None:
    sub, start, _ = case
    early, late = sorted((start + first, start + second))
    once = [s.invoice for s in billing_steps(sub, late)]
    steps = list(billing_steps(sub, early))
    resumed = steps[-1].subscription if steps else sub
    twice = [s.invoice for s in steps] + [s.invoice for s in billing_steps(resumed, late)]
    assert [i for i in once if i] == [i for i in twice if i]


@settings(max_examples=200, deadline=None)
@given(preview_terms(), DAYS, st.integers(1, 700), st.integers(0, 400))
def test_billing_then_crediting_a_cancellation_equals_billing_up_to_it(
    terms: PreviewTerms, start: date, cancel_after: int, late: int
) -> None:
    """Charges minus credits for a service cancelled after it was billed equal the charges for
    the same service had its end been known: unused days are credited to the minor unit."""
    cancel = start + timedelta(days=cancel_after)
    as_of = cancel + timedelta(days=late)
    sub = preview_subscription(terms, start, None)
    billed = list(billing_steps(sub, as_of))
    current = billed[-1].subscription if billed else sub
    cancelled = current.with_services((replace(current.services[0], state=ServiceState.CANCELLED, state_since=cancel),))
    after = list(billing_steps(cancelled, date(2040, 1, 1)))
    net = sum(s.invoice.total.minor for s in billed + after if s.invoice)
    known = sum(i.total.minor for i in dry_run(terms, start, cancel, date(2040, 1, 1)))
    assert net == known
