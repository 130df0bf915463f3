from datetime import date
from fractions import Fraction

from billow.domain.billing import next_billing_step, next_due_date
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel
from billow.domain.money import Money
from billow.domain.subscriptions import Service, ServiceState, Subscription, SubscriptionKey
from billow.domain.timeline import steps as billing_steps


def terms(
    model: BillingModel,
    price: str = "30.00",
    cycle: Cycle = Cycle.MONTH,
    setup: str | None = None,
    pricing: PricingModel = PricingModel.FLAT,
) -> PriceTerms:
    return PriceTerms(
        "t1",
        "p1",
        Money.parse(price, "USD"),
        cycle,
        model,
        pricing,
        None if setup is None else Money.parse(setup, "USD"),
    )


def service(t: PriceTerms, start: date, sid: str = "s1", quantity: int = 1) -> Service:
    return Service(sid, "o1", "p1", "Pro", t, quantity, ServiceState.EFFECTIVE, start)


def subscription(t: PriceTerms, *services: Service, anchor: date) -> Subscription:
    return Subscription(
        "sub_1", "c1", SubscriptionKey.of(t), BillingSchedule.anniversary(t.cycle, anchor), services, created_on=anchor
    )


def test_in_advance_bills_the_first_period_on_the_start_date() -> None:
    t = terms(BillingModel.ADVANCE, setup="49.00")
    sub = subscription(t, service(t, date(2024, 1, 31)), anchor=date(2024, 1, 31))
    step = next_billing_step(sub, date(2024, 1, 31))
    assert step is not None and step.invoice is not None
    assert step.invoice.period == Period(date(2024, 1, 31), date(2024, 2, 29))
    assert [line.kind for line in step.invoice.lines] == ["setup_fee", "recurring"]
    assert step.invoice.total == Money.parse("79.00", "USD")
    assert next_billing_step(step.subscription, date(2024, 2, 28)) is None
    assert next_due_date(step.subscription) == date(2024, 2, 29)


def test_in_arrears_bills_each_period_the_day_after_it_ends() -> None:
    t = terms(BillingModel.ARREARS)
    sub = subscription(t, service(t, date(2024, 1, 31)), anchor=date(2024, 1, 31))
    assert next_billing_step(sub, date(2024, 2, 28)) is None
    steps = list(billing_steps(sub, date(2024, 5, 1)))
    assert [s.invoice.period for s in steps if s.invoice] == [
        Period(date(2024, 1, 31), date(2024, 2, 29)),
        Period(date(2024, 2, 29), date(2024, 3, 31)),
        Period(date(2024, 3, 31), date(2024, 4, 30)),
    ]
    assert [s.invoice.billing_date for s in steps if s.invoice] == [
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]


def test_a_rerun_at_the_same_date_bills_nothing() -> None:
    t = terms(BillingModel.ADVANCE)
    sub = subscription(t, service(t, date(2024, 3, 1)), anchor=date(2024, 3, 1))
    steps = list(billing_steps(sub, date(2024, 6, 1)))
    assert len(steps) == 4  # Mar, Apr, May, Jun
    assert list(billing_steps(steps[-1].subscription, date(2024, 6, 1))) == []


def test_a_service_added_mid_period_is_prorated_up_to_the_billing_day_then_billed_in_full() -> None:
    t = terms(BillingModel.ADVANCE)
    first = service(t, date(2024, 1, 1))
    sub = subscription(t, first, anchor=date(2024, 1, 1))
    sub = list(billing_steps(sub, date(2024, 1, 1)))[-1].subscription
    sub = sub.adding([service(t, date(2024, 1, 22), sid="s2")])
    step = next_billing_step(sub, date(2024, 1, 22))
    assert step is not None and step.invoice is not None
    (line,) = step.invoice.lines
    assert line.period == Period(date(2024, 1, 22), date(2024, 2, 1))
    assert line.fraction == Fraction(10, 31)
    assert line.amount == Money.parse("9.68", "USD")  # 30.00 * 10/31 = 9.677...
    february = next_billing_step(step.subscription, date(2024, 2, 1))
    assert february is not None and february.invoice is not None
    assert [x.amount for x in february.invoice.lines] == [Money.parse("30.00", "USD")] * 2


def test_per_unit_pricing_multiplies_by_quantity() -> None:
    t = terms(BillingModel.ARREARS, price="12.00", pricing=PricingModel.PER_UNIT)
    sub = subscription(t, service(t, date(2024, 1, 1), quantity=5), anchor=date(2024, 1, 1))
    step = next_billing_step(sub, date(2024, 2, 1))
    assert step is not None and step.invoice is not None
    assert step.invoice.total == Money.parse("60.00", "USD")


def test_a_future_start_is_draft_until_its_day() -> None:
    t = terms(BillingModel.ADVANCE)
    draft = Service("s1", "o1", "p1", "Pro", t, 1, ServiceState.DRAFT, date(2024, 2, 10))
    sub = subscription(t, draft, anchor=date(2024, 2, 10))
    assert next_billing_step(sub, date(2024, 2, 9)) is None
    step = next_billing_step(sub, date(2024, 2, 10))
    assert step is not None and step.invoice is not None
    assert step.subscription.services[0].state is ServiceState.EFFECTIVE


def test_a_stop_brings_credits_forward_but_not_before_a_pending_charge_of_their_days() -> None:
    # A change on Jul 20 re-priced Jul 20-24: the old price's credit and the new price's charge wait
    # for one invoice (Aug 6). A cancellation on Jul 24 brings the service's other waiting credits
    # to its own day, but this one stays with its charge: the re-price is one document, and no
    # credit note goes out for days whose charge has not.
    from billow.domain.billing import Adjustment, bring_forward
    from billow.domain.lines import LineDraft

    days = Period(date(2024, 7, 20), date(2024, 7, 24))
    old_price, new_price = Money.parse("99.99", "USD"), Money.parse("96.75", "USD")

    def line(kind: str, price: Money, fraction: Fraction, period: Period) -> LineDraft:
        return LineDraft(kind, "Pro", "s1", "p1", 1, price, fraction, price.scaled(fraction), period)

    repriced = Adjustment(line("credit", old_price, Fraction(-2, 15), days), date(2024, 8, 6))
    charge = Adjustment(line("prorated", new_price, Fraction(2, 15), days), date(2024, 8, 6))
    later = Period(date(2024, 7, 24), date(2024, 8, 4))
    other = Adjustment(line("credit", old_price, Fraction(-11, 15), later), date(2024, 8, 6))

    moved = bring_forward((repriced, charge, other), "s1", date(2024, 7, 24))

    assert [a.run_on for a in moved] == [date(2024, 8, 6), date(2024, 8, 6), date(2024, 7, 24)]
