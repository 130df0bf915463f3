"""Table tests for the calendar edges and business rules users hit, through the dry run (the
public interface) and through the engine for rules the dry run does not take."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from billow.domain.billing import next_billing_step, next_due_date
from billow.domain.calendar import WEEKDAYS, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.errors import Conflict
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.preview import PreviewTerms, dry_run, preview_subscription
from billow.domain.pricing import Aggregation, UsageModel, UsagePrice
from billow.domain.rules import Alignment, BillingRules, CalendarMode, ServiceState
from billow.domain.subscriptions import Subscription
from billow.domain.timeline import steps as billing_steps
from billow.domain.timeline import upcoming_invoices
from billow.domain.usage import UsageCharge

D = date
ADVANCE, ARREARS = BillingModel.ADVANCE, BillingModel.ARREARS


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def periods(
    cycle: Cycle,
    start: date,
    as_of: date,
    *,
    model: BillingModel = ADVANCE,
    calendar: CalendarMode = CalendarMode.ANNIVERSARY,
    billing_day: int | None = None,
    threshold: int | None = None,
    price: str = "30.00",
    end: date | None = None,
) -> list[tuple[date, date, date, Fraction, str]]:
    """(billing date, covered start, covered end, fraction, amount) of every line a run at as_of makes."""
    terms = PreviewTerms(cycle, model, usd(price), calendar, billing_day, threshold)
    return [
        (invoice.billing_date, line.period.start, line.period.end, line.fraction, line.amount.amount_str())
        for invoice in dry_run(terms, start, end, as_of)
        for line in invoice.lines
        if line.period is not None
    ]


def covered(lines: Sequence[tuple[date, date, date, Fraction, str]]) -> list[tuple[date, date]]:
    return [(s, e) for _, s, e, _, _ in lines]


# -- billing days on month ends, leap years ------------------------------------------------------
@pytest.mark.parametrize(
    ("year", "february_end"),
    [(2024, D(2024, 2, 29)), (2023, D(2023, 2, 28)), (2100, D(2100, 2, 28)), (2000, D(2000, 2, 29))],
)
def test_a_31st_anchor_falls_back_to_february_end_and_returns_to_the_31st(year: int, february_end: date) -> None:
    lines = periods(Cycle.MONTH, D(year, 1, 31), D(year, 5, 1))
    assert covered(lines) == [
        (D(year, 1, 31), february_end),
        (february_end, D(year, 3, 31)),
        (D(year, 3, 31), D(year, 4, 30)),
        (D(year, 4, 30), D(year, 5, 31)),
    ]
    assert {amount for *_, amount in lines} == {"30.00"}  # full periods, whatever their length


def test_a_29_february_annual_anchor_bills_on_28_february_until_the_next_leap_year() -> None:
    lines = periods(Cycle.YEAR, D(2024, 2, 29), D(2028, 3, 1), model=ARREARS)
    assert [billing_date for billing_date, *_ in lines] == [
        D(2025, 2, 28),
        D(2026, 2, 28),
        D(2027, 2, 28),
        D(2028, 2, 29),
    ]


@pytest.mark.parametrize(
    ("cycle", "start", "expected"),
    [
        (Cycle.QUARTER, D(2023, 11, 30), [D(2023, 11, 30), D(2024, 2, 29), D(2024, 5, 30), D(2024, 8, 30)]),
        (Cycle.QUARTER, D(2024, 3, 31), [D(2024, 3, 31), D(2024, 6, 30), D(2024, 9, 30), D(2024, 12, 31)]),
        (Cycle.SEMIANNUAL, D(2023, 8, 31), [D(2023, 8, 31), D(2024, 2, 29), D(2024, 8, 31), D(2025, 2, 28)]),
        (Cycle.YEAR, D(2023, 12, 31), [D(2023, 12, 31), D(2024, 12, 31), D(2025, 12, 31), D(2026, 12, 31)]),
    ],
)
def test_quarterly_semiannual_and_annual_anchors_on_month_ends(cycle: Cycle, start: date, expected: list[date]) -> None:
    lines = periods(cycle, start, expected[-1])
    assert [billing_date for billing_date, *_ in lines] == expected
    assert all(fraction == 1 for *_, fraction, _ in lines)


@pytest.mark.parametrize("weekday", WEEKDAYS)
def test_weekly_billing_on_each_weekday(weekday: str) -> None:
    start = D(2024, 1, 3)  # a Wednesday
    day = WEEKDAYS.index(weekday)
    lines = periods(Cycle.WEEK, start, D(2024, 1, 31), calendar=CalendarMode.PERIOD, billing_day=day, price="7.00")
    first_billing_day = next(d for d in (D(2024, 1, 3 + i) for i in range(7)) if d.weekday() == day)
    first = lines[0]
    if first_billing_day == start:
        assert first[1:4] == (start, D(2024, 1, 10), Fraction(1))
    else:
        days = (first_billing_day - start).days
        assert first[1:4] == (start, first_billing_day, Fraction(days, 7))
        assert first[4] == f"{days}.00"
    for _, s, e, fraction, amount in lines[1:]:
        assert s.weekday() == day and (e - s).days == 7 and fraction == 1 and amount == "7.00"


# -- threshold day -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "start", "first_invoice"),
    [
        # period billing on the 1st, threshold the 15th
        (ADVANCE, D(2024, 1, 10), [(D(2024, 1, 10), D(2024, 1, 10), D(2024, 2, 1), Fraction(22, 31), "21.29")]),
        (
            ADVANCE,
            D(2024, 1, 20),
            [
                (D(2024, 1, 20), D(2024, 1, 20), D(2024, 2, 1), Fraction(12, 31), "11.61"),
                (D(2024, 1, 20), D(2024, 2, 1), D(2024, 3, 1), Fraction(1), "30.00"),
            ],
        ),
        (
            ADVANCE,
            D(2024, 1, 15),  # on the threshold day counts as after it
            [
                (D(2024, 1, 15), D(2024, 1, 15), D(2024, 2, 1), Fraction(17, 31), "16.45"),
                (D(2024, 1, 15), D(2024, 2, 1), D(2024, 3, 1), Fraction(1), "30.00"),
            ],
        ),
        (ARREARS, D(2024, 1, 10), [(D(2024, 2, 1), D(2024, 1, 10), D(2024, 2, 1), Fraction(22, 31), "21.29")]),
        (
            ARREARS,
            D(2024, 1, 20),
            [
                (D(2024, 3, 1), D(2024, 1, 20), D(2024, 2, 1), Fraction(12, 31), "11.61"),
                (D(2024, 3, 1), D(2024, 2, 1), D(2024, 3, 1), Fraction(1), "30.00"),
            ],
        ),
    ],
)
def test_threshold_day_before_and_after(model: BillingModel, start: date, first_invoice: list[tuple]) -> None:  # type: ignore[type-arg]
    lines = periods(
        Cycle.MONTH, start, D(2024, 3, 1), model=model, calendar=CalendarMode.PERIOD, billing_day=1, threshold=15
    )
    first_date = first_invoice[0][0]
    assert [line for line in lines if line[0] == first_date] == first_invoice


def test_without_a_threshold_a_late_start_is_prorated_to_the_billing_day_only() -> None:
    lines = periods(Cycle.MONTH, D(2024, 1, 20), D(2024, 1, 31), calendar=CalendarMode.PERIOD, billing_day=1)
    assert lines == [(D(2024, 1, 20), D(2024, 1, 20), D(2024, 2, 1), Fraction(12, 31), "11.61")]


# -- period billing ------------------------------------------------------------------------------
def test_period_billing_puts_every_subscription_on_the_business_day() -> None:
    for start in (D(2024, 1, 7), D(2024, 1, 23)):
        lines = periods(Cycle.MONTH, start, D(2024, 3, 1), calendar=CalendarMode.PERIOD, billing_day=1)
        assert [billing_date for billing_date, *_ in lines][1:] == [D(2024, 2, 1), D(2024, 3, 1)]


def test_period_billing_quarters_start_in_january() -> None:
    lines = periods(Cycle.QUARTER, D(2024, 2, 10), D(2024, 7, 1), calendar=CalendarMode.PERIOD, billing_day=1)
    assert covered(lines) == [
        (D(2024, 2, 10), D(2024, 4, 1)),
        (D(2024, 4, 1), D(2024, 7, 1)),
        (D(2024, 7, 1), D(2024, 10, 1)),
    ]
    assert lines[0][3] == Fraction(51, 91)  # 51 of the 91 days of Q1 2024


# -- alignment of services added later -----------------------------------------------------------
def _product(alignment: Alignment | None = None) -> Product:
    terms = PriceTerms("t1", "p1", usd("30.00"), Cycle.MONTH, ADVANCE, alignment=alignment)
    return Product("p1", "Pro").with_terms(terms)


def _order(rules: BillingRules, start: date, existing: Sequence[Subscription], product: Product) -> Subscription:
    counter = iter(range(1000))
    plan = plan_order(
        order_id=f"o{start}",
        contact_id="c1",
        reference=None,
        items=[OrderItem(product, product.terms[0], 1)],
        start_date=start,
        today=start,
        existing=existing,
        new_id=lambda prefix: f"{prefix}_{start}_{next(counter)}",
        test_clock=False,
        rules=rules,
    )
    return plan.subscriptions[0]


def _billed(subscription: Subscription, as_of: date) -> Subscription:
    return ([subscription] + [s.subscription for s in billing_steps(subscription, as_of)])[-1]


@pytest.mark.parametrize("where", ["business", "price terms"])
def test_immediate_and_delayed_alignment(where: str) -> None:
    business = Alignment.DELAYED if where == "business" else Alignment.IMMEDIATE
    override = Alignment.DELAYED if where == "price terms" else None
    for alignment, product in ((Alignment.IMMEDIATE, _product()), (Alignment.DELAYED, _product(override))):
        rules = BillingRules(alignment=business if alignment is Alignment.DELAYED else Alignment.IMMEDIATE)
        sub = _billed(_order(rules, D(2024, 1, 10), [], product), D(2024, 1, 10))
        sub = _order(rules, D(2024, 1, 20), [sub], product)
        assert sub.services[1].alignment is alignment
        added = next_billing_step(sub, D(2024, 1, 20))
        assert added is not None and added.invoice is not None
        (line,) = added.invoice.lines
        february = next_billing_step(added.subscription, D(2024, 2, 10))
        assert february is not None and february.invoice is not None
        if alignment is Alignment.IMMEDIATE:
            assert (line.period, line.fraction) == (Period(D(2024, 1, 20), D(2024, 2, 10)), Fraction(21, 31))
            assert [x.period for x in february.invoice.lines] == [Period(D(2024, 2, 10), D(2024, 3, 10))] * 2
        else:
            # a full cycle of its own first, then aligned at the next run with the others
            assert (line.period, line.fraction, line.amount) == (
                Period(D(2024, 1, 20), D(2024, 2, 20)),
                1,
                usd("30.00"),
            )
            assert [(x.period, x.fraction) for x in february.invoice.lines] == [
                (Period(D(2024, 2, 10), D(2024, 3, 10)), Fraction(1)),
                (Period(D(2024, 2, 20), D(2024, 3, 10)), Fraction(19, 29)),
            ]
        march = next_billing_step(february.subscription, D(2024, 3, 10))
        assert march is not None and march.invoice is not None
        assert [x.period for x in march.invoice.lines] == [Period(D(2024, 3, 10), D(2024, 4, 10))] * 2


def test_the_first_services_of_a_new_subscription_are_aligned_immediately() -> None:
    sub = _order(BillingRules(alignment=Alignment.DELAYED), D(2024, 1, 10), [], _product())
    assert sub.services[0].alignment is Alignment.IMMEDIATE


# -- bill N days before --------------------------------------------------------------------------
def test_bill_n_days_before_the_billing_day() -> None:
    rules = BillingRules(bill_days_before=3)
    sub = _billed(_order(rules, D(2024, 1, 1), [], _product()), D(2024, 1, 1))
    assert next_due_date(sub) == D(2024, 1, 29)
    assert next_billing_step(sub, D(2024, 1, 28)) is None
    step = next_billing_step(sub, D(2024, 1, 29))
    assert step is not None and step.invoice is not None
    assert (step.invoice.billing_date, step.invoice.issue_date) == (D(2024, 2, 1), D(2024, 1, 29))
    assert step.invoice.period == Period(D(2024, 2, 1), D(2024, 3, 1))


def test_bill_n_days_before_never_issues_before_the_order() -> None:
    rules = BillingRules(bill_days_before=5)
    (step,) = billing_steps(_order(rules, D(2024, 1, 1), [], _product()), D(2024, 1, 1))
    assert step.invoice is not None and step.invoice.issue_date == D(2024, 1, 1)


# -- post-bill cut-off day -----------------------------------------------------------------------
def test_post_bill_cut_off_bills_up_to_the_cut_off_day_on_the_billing_day() -> None:
    terms = PreviewTerms(Cycle.MONTH, ARREARS, usd("31.00"))
    sub = preview_subscription(terms, D(2024, 1, 5), None)  # billing day 5
    sub = replace(sub, rules=replace(sub.rules, post_bill_cutoff_day=1))
    steps = [s.invoice for s in billing_steps(sub, D(2024, 3, 5)) if s.invoice]
    assert [(i.billing_date, [(x.period, x.fraction, x.amount.amount_str()) for x in i.lines]) for i in steps] == [
        (D(2024, 2, 5), [(Period(D(2024, 1, 5), D(2024, 2, 1)), Fraction(27, 31), "27.00")]),
        (D(2024, 3, 5), [(Period(D(2024, 2, 1), D(2024, 3, 1)), Fraction(1), "31.00")]),
    ]
    assert [s.invoice for s in billing_steps(sub, D(2024, 2, 4)) if s.invoice] == []  # nothing before the 5th


# -- billable and non-creditable states, credit for unused time -----------------------------------
def _billed_march(**service_changes: object) -> Subscription:
    """Advance, 31.00 a month on the 1st, billed through 1 April, then changed as given."""
    terms = PreviewTerms(Cycle.MONTH, ADVANCE, usd("31.00"))
    sub = _billed(preview_subscription(terms, D(2024, 1, 1), None), D(2024, 3, 1))
    assert sub.services[0].billed_through == D(2024, 4, 1)
    return sub.with_services((replace(sub.services[0], **service_changes),))


@pytest.mark.parametrize("state", [ServiceState.CANCELLED, ServiceState.PAUSED, ServiceState.NOT_EFFECTIVE])
def test_leaving_a_billable_state_mid_period_credits_the_unused_days(state: ServiceState) -> None:
    sub = _billed_march(state=state, state_since=D(2024, 3, 11))
    assert next_due_date(sub) == D(2024, 3, 11)
    step = next_billing_step(sub, D(2024, 3, 11))
    assert step is not None and step.invoice is not None
    (credit,) = step.invoice.lines
    assert (credit.kind, credit.period, credit.fraction) == (
        "credit",
        Period(D(2024, 3, 11), D(2024, 4, 1)),
        Fraction(-21, 31),
    )
    assert credit.amount == usd("-21.00") and step.invoice.is_credit_note
    note = Invoice.issue(step.invoice, invoice_id="inv_1", number="INV-000001", payment_terms_days=14)
    assert (note.kind, note.status) == (InvoiceKind.CREDIT_NOTE, InvoiceStatus.ISSUED)
    payment = Payment("pay_1", "inv_1", usd("1.00"), PaymentMethod.CASH, "r1", D(2024, 3, 12), datetime.now(UTC))
    with pytest.raises(Conflict, match="credit note"):
        note.apply_payment(payment)
    assert list(billing_steps(step.subscription, D(2025, 1, 1))) == []  # nothing more, ever


def test_a_non_creditable_state_keeps_what_was_billed() -> None:
    sub = _billed_march(state=ServiceState.NOT_EFFECTIVE, state_since=D(2024, 3, 11))
    penal = replace(sub, rules=BillingRules(non_creditable_states=frozenset(ServiceState)))
    assert next_due_date(penal) is None and list(billing_steps(penal, D(2025, 1, 1))) == []


def test_a_billable_not_effective_state_keeps_billing_business_wide_or_per_service() -> None:
    business = replace(
        _billed_march(state=ServiceState.NOT_EFFECTIVE, state_since=D(2024, 3, 11)),
        rules=BillingRules(billable_states=frozenset({ServiceState.EFFECTIVE, ServiceState.NOT_EFFECTIVE})),
    )
    per_service = _billed_march(
        state=ServiceState.NOT_EFFECTIVE,
        state_since=D(2024, 3, 11),
        billable_states=frozenset({ServiceState.EFFECTIVE, ServiceState.NOT_EFFECTIVE}),
    )
    for sub in (business, per_service):
        step = next_billing_step(sub, D(2024, 4, 1))
        assert step is not None and step.invoice is not None
        assert [(x.kind, x.period) for x in step.invoice.lines] == [("recurring", Period(D(2024, 4, 1), D(2024, 5, 1)))]


def test_an_end_date_within_the_billed_period_is_credited_and_charges_minus_credits_match_the_days_kept() -> None:
    sub = _billed_march(end_date=D(2024, 3, 20))
    (step,) = billing_steps(sub, D(2024, 3, 20))
    assert step.invoice is not None and step.invoice.total == usd("-12.00")
    charged = sum(usd("31.00").minor for _ in range(3))
    assert charged + step.invoice.total.minor == usd("31.00").minor * 2 + usd("19.00").minor


# -- trials, view bill, usage --------------------------------------------------------------------
def test_a_trial_is_not_charged_and_the_view_bill_shows_the_first_paid_invoices() -> None:
    product = Product("p1", "Pro").with_terms(PriceTerms("t1", "p1", usd("30.00"), Cycle.MONTH, ADVANCE, trial_days=14))
    sub = _order(BillingRules(), D(2024, 1, 1), [], product)
    upcoming = upcoming_invoices(sub)
    assert [(i.billing_date, i.period, i.total.amount_str()) for i in upcoming] == [
        (D(2024, 1, 15), Period(D(2024, 1, 15), D(2024, 2, 15)), "30.00"),
        (D(2024, 2, 15), Period(D(2024, 2, 15), D(2024, 3, 15)), "30.00"),
        (D(2024, 3, 15), Period(D(2024, 3, 15), D(2024, 4, 15)), "30.00"),
    ]
    # the view bill is the run: billing on those days gives the same invoices
    assert [s.invoice for s in billing_steps(sub, D(2024, 3, 15))] == upcoming


class PerDayRater:
    def rate(self, subscription: Subscription, service: object, period: Period) -> list[UsageCharge]:
        from decimal import Decimal

        units = Decimal(period.days * 10)
        return [UsageCharge("API calls", units, usd("0.01"), Money(int(units), "USD"))]


_API_CALLS = UsagePrice("api_calls", Aggregation.SUM, UsageModel.PER_UNIT, unit_price=Decimal("0.01"))


def test_usage_is_rated_per_billed_period_in_arrears_on_the_same_invoice() -> None:
    product = Product("p1", "Pro").with_terms(
        PriceTerms("t1", "p1", usd("30.00"), Cycle.MONTH, ADVANCE, usage=_API_CALLS)
    )
    sub = _order(BillingRules(), D(2024, 1, 1), [], product)
    steps = [s.invoice for s in billing_steps(sub, D(2024, 2, 1), rater=PerDayRater()) if s.invoice]
    assert [[(x.kind, x.period) for x in i.lines] for i in steps] == [
        [("recurring", Period(D(2024, 1, 1), D(2024, 2, 1)))],
        [("recurring", Period(D(2024, 2, 1), D(2024, 3, 1))), ("usage", Period(D(2024, 1, 1), D(2024, 2, 1)))],
    ]
    assert steps[1].lines[1].amount == usd("3.10") and steps[1].lines[1].quantity == 310
    assert list(billing_steps(_billed(sub, D(2024, 2, 1)), D(2024, 2, 1), rater=PerDayRater())) == []
