"""Actions through the timeline: what each does to states, the pending list and the invoices.

Prices are chosen so a day costs a round amount: 31.00 a month in January is 1.00 a day."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import pytest
from billow.domain.actions import Action, ActionKind, ActionStatus, Days, Requester, ServiceChange
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE
from billow.domain.actions.change_billing_day import CHANGE_BILLING_DAY, NewBillingDay
from billow.domain.actions.expire import EXPIRE
from billow.domain.actions.pause import PAUSE
from billow.domain.actions.regret import REGRET
from billow.domain.actions.renew import RENEW
from billow.domain.actions.resume import RESUME
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.rules import DEFAULT_RULES, BillingRules, ServiceState
from billow.domain.subscriptions import Subscription
from billow.domain.timeline import execute, steps, upcoming_invoices
from hypothesis import given, settings
from hypothesis import strategies as st

D = date
_ids = itertools.count(1)


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def terms(price: str = "31.00", **extra: object) -> PriceTerms:
    return PriceTerms(
        id=f"t{next(_ids)}",
        product_id="p1",
        price=usd(price),
        cycle=Cycle.MONTH,
        billing_model=BillingModel.ADVANCE,
        **extra,  # type: ignore[arg-type]
    )


def subscribe(
    start: date, price_terms: PriceTerms | None = None, quantity: int = 1, rules: BillingRules = DEFAULT_RULES
) -> Subscription:
    price_terms = price_terms or terms()
    product = Product("p1", "Pro", terms=(price_terms,))
    plan = plan_order(
        order_id="o1",
        contact_id="c1",
        reference=None,
        items=[OrderItem(product, price_terms, quantity)],
        start_date=start,
        today=start,
        existing=[],
        new_id=lambda prefix: f"{prefix}_{next(_ids)}",
        test_clock=False,
        rules=rules,
    )
    return plan.subscriptions[0]


class Run:
    """A subscription moved through time, keeping every invoice and action record."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.invoices: list[InvoiceDraft] = []
        self.log: list[Action] = []

    def to(self, day: date) -> Run:
        for step in steps(self.subscription, day):
            self.subscription = step.subscription
            self.log += step.actions
            if step.invoice is not None:
                self.invoices.append(step.invoice)
        return self

    def request(self, kind: ActionKind[Any, Any], on: date, **params: object) -> Run:
        service = self.subscription.services[0].id
        action = Action(f"a{next(_ids)}", kind, on, requested_on=on, service_id=service, params=kind.holds(**params))
        self.subscription = replace(self.subscription, actions=(*self.subscription.actions, action))
        return self

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.subscription.services[0]

    def lines(self, invoice: int) -> list[tuple[str, str]]:
        return [(line.kind, line.amount.amount_str()) for line in self.invoices[invoice].lines]


def test_pause_on_the_10th_for_10_days_credits_those_days_on_the_next_invoice() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    run.request(PAUSE, D(2025, 1, 10), days=10).to(D(2025, 1, 15))
    assert run.service.state is ServiceState.PAUSED
    assert [(a.kind, a.status) for a in run.log] == [
        (PAUSE, ActionStatus.EXECUTED),
        (RESUME, ActionStatus.SCHEDULED),
    ]
    run.to(D(2025, 2, 1))
    assert run.service.state is ServiceState.EFFECTIVE
    assert len(run.invoices) == 2  # the January charge, then the next invoice on 1 February
    feb = run.invoices[1]
    assert feb.billing_date == D(2025, 2, 1)
    # the 10 paused days credited, one line with their period (the days after the resume stay
    # invoiced, not credited and charged again), and February at full price
    assert run.lines(1) == [("credit", "-10.00"), ("recurring", "31.00")]
    assert feb.lines[0].period == Period(D(2025, 1, 10), D(2025, 1, 20))
    assert feb.total == usd("21.00")


def test_regret_inside_the_regret_period_is_a_full_credit_note() -> None:
    run = Run(subscribe(D(2025, 1, 1), terms(setup_fee=usd("5.00")))).to(D(2025, 1, 1))
    assert run.invoices[0].total == usd("36.00")
    run.request(REGRET, D(2025, 1, 6)).to(D(2025, 1, 6))
    assert run.service.state is ServiceState.REGRETTED
    note = run.invoices[1]
    assert note.is_credit_note and note.total == usd("-36.00")
    assert run.to(D(2025, 6, 1)).invoices[2:] == []


def test_cancel_inside_the_contract_period_adds_the_fee() -> None:
    contract = terms(contract_cycles=12, cancellation_fee=usd("50.00"))
    run = Run(subscribe(D(2025, 1, 1), contract)).to(D(2025, 1, 1))
    run.request(CANCEL, D(2025, 1, 21)).to(D(2025, 1, 21))
    assert run.lines(1) == [("credit", "-11.00"), ("cancellation_fee", "50.00")]
    assert run.subscription.state.value == "churned"


def test_cancel_after_the_contract_period_has_no_fee() -> None:
    contract = terms(contract_cycles=1, cancellation_fee=usd("50.00"))
    run = Run(subscribe(D(2025, 1, 1), contract)).to(D(2025, 2, 1))
    run.request(CANCEL, D(2025, 2, 15)).to(D(2025, 2, 15))
    assert [kind for kind, _ in run.lines(2)] == ["credit"]


def test_upgrade_mid_cycle_credits_the_old_price_and_charges_the_new_on_the_next_invoice() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    change = ServiceChange("p2", "Enterprise", terms("62.00"), 1)
    run.request(CHANGE, D(2025, 1, 11), change=change).to(D(2025, 2, 1))
    assert run.service.product_name == "Enterprise"
    assert run.lines(1) == [("credit", "-21.00"), ("prorated", "42.00"), ("recurring", "62.00")]


def test_an_upgrade_to_terms_with_a_trial_gives_a_paying_service_no_free_days() -> None:
    """The new terms' trial is for new services: a service already charged keeps charging."""
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    change = ServiceChange("p2", "Enterprise", terms("62.00", trial_days=14), 1)
    run.request(CHANGE, D(2025, 1, 5), change=change).to(D(2025, 2, 1))
    assert run.lines(1) == [("credit", "-27.00"), ("prorated", "54.00"), ("recurring", "62.00")]


def test_downgrade_at_the_end_of_the_cycle_bills_the_new_price_after() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    change = ServiceChange("p3", "Basic", terms("10.00"), 1)
    run.request(CHANGE, D(2025, 2, 1), change=change).to(D(2025, 1, 20))
    assert [a.kind for a in run.subscription.actions] == [CHANGE]
    assert [i.total for i in upcoming_invoices(run.subscription, 2)] == [usd("10.00"), usd("10.00")]
    run.to(D(2025, 3, 1))
    assert [i.total for i in run.invoices] == [usd("31.00"), usd("10.00"), usd("10.00")]


def test_trial_end_brings_the_first_paid_invoice() -> None:
    run = Run(subscribe(D(2025, 1, 1), terms(trial_days=14))).to(D(2025, 1, 14))
    assert run.invoices == []
    run.to(D(2025, 1, 15))
    assert run.invoices[0].billing_date == D(2025, 1, 15) and run.invoices[0].total == usd("31.00")


def test_a_termed_service_without_auto_renew_expires_and_stops_billing() -> None:
    run = Run(subscribe(D(2025, 1, 1), terms(term_cycles=2, auto_renew=False))).to(D(2025, 6, 1))
    assert [i.billing_date for i in run.invoices] == [D(2025, 1, 1), D(2025, 2, 1)]
    assert run.service.state is ServiceState.NOT_EFFECTIVE and run.service.expired
    assert (run.log[-1].kind, run.log[-1].by) == (EXPIRE, Requester.SYSTEM)
    run.request(ACTIVATE, D(2025, 6, 2)).to(D(2025, 6, 2))
    assert run.log[-1].status is ActionStatus.REJECTED and run.log[-1].rule == "activation.not_expired"
    run.request(RENEW, D(2025, 6, 10)).to(D(2025, 7, 1))
    assert run.service.term_end == D(2025, 8, 10)
    first = run.invoices[-1].lines[0].period
    assert first is not None and first.start == D(2025, 6, 10)


def test_auto_renewal_keeps_billing_and_moves_the_term() -> None:
    run = Run(subscribe(D(2025, 1, 1), terms(term_cycles=2))).to(D(2025, 5, 1))
    assert len(run.invoices) == 5 and run.service.term_end == D(2025, 7, 1)
    assert [a.outcome for a in run.log] == [
        "renewed automatically until 2025-05-01",
        "renewed automatically until 2025-07-01",
    ]


def test_an_illegal_scheduled_action_is_rejected_with_the_rule() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    run.request(RESUME, D(2025, 1, 5)).to(D(2025, 1, 5))
    rejected = run.log[-1]
    assert rejected.status is ActionStatus.REJECTED and rejected.rule == "lifecycle.illegal_transition"
    assert rejected.outcome == "cannot resume a effective service: only paused services can be resumed"
    assert run.subscription.actions == ()


def test_resuming_early_cancels_the_automatic_resume() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    run.request(PAUSE, D(2025, 1, 10), days=10).to(D(2025, 1, 10))
    run.request(RESUME, D(2025, 1, 12)).to(D(2025, 2, 1))
    assert [(a.kind, a.status) for a in run.log][-2:] == [
        (RESUME, ActionStatus.EXECUTED),
        (RESUME, ActionStatus.CANCELLED),
    ]
    assert run.invoices[1].total == usd("29.00")  # Jan 10 and 11 credited: -22 + 20 + 31


@pytest.mark.parametrize("model", [BillingModel.ADVANCE, BillingModel.ARREARS])
def test_a_change_of_billing_day_settles_the_cycle_and_bills_each_day_once(model: BillingModel) -> None:
    price = replace(terms(), billing_model=model)
    run = Run(subscribe(D(2025, 1, 1), price)).to(D(2025, 1, 1))
    run.request(CHANGE_BILLING_DAY, D(2025, 1, 10), billing_day=15).to(D(2025, 3, 15))
    run.request(CANCEL, D(2025, 3, 15)).to(D(2025, 5, 1))
    # 1-9 January at the old schedule, 10-14 January prorated on the new one, then two full cycles
    assert sum((i.total for i in run.invoices), usd("0")) == usd("76.00")
    assert run.subscription.schedule.billing_day == 15


def billing_day(run: Run, on: date, day: int) -> Run:
    action = Action(f"a{next(_ids)}", CHANGE_BILLING_DAY, on, requested_on=on, params=NewBillingDay(day))
    run.subscription = replace(run.subscription, actions=(*run.subscription.actions, action))
    return run.to(on)


def issued_days(run: Run) -> dict[date, int]:
    """How many times each day is charged, net of credits, by the invoices issued so far."""
    net: dict[date, int] = {}
    for line in (line for invoice in run.invoices for line in invoice.lines):
        if line.period is not None and line.kind in ("recurring", "prorated", "credit"):
            for offset in range(line.period.days):
                day = line.period.start + timedelta(days=offset)
                net[day] = net.get(day, 0) + (-1 if line.kind == "credit" else 1)
    return net


def test_a_repeated_billing_day_change_is_refused_and_no_day_is_invoiced_twice() -> None:
    # $10 a month from 1 December; the billing day moved to the 20th three times on that day
    run = Run(subscribe(D(2026, 12, 1), terms("10.00"))).to(D(2026, 12, 1))
    for _ in range(3):
        billing_day(run, D(2026, 12, 1), 20)
    assert [(a.status, a.rule) for a in run.log] == [
        (ActionStatus.EXECUTED, None),
        (ActionStatus.REJECTED, "billing_day.unchanged"),
        (ActionStatus.REJECTED, "billing_day.unchanged"),
    ]
    assert [run.lines(i) for i in range(len(run.invoices))] == [[("recurring", "10.00")]]
    # the new cycle's first days go on the invoice that credits December's charge
    run.to(D(2027, 1, 20))
    assert run.invoices[1].billing_date == D(2026, 12, 20)
    assert run.lines(1) == [("credit", "-10.00"), ("prorated", "6.33"), ("recurring", "10.00")]
    assert set(issued_days(run).values()) == {1}


def test_a_cancel_right_after_a_billing_day_change_credits_everything_the_same_day() -> None:
    run = Run(subscribe(D(2026, 12, 1), terms("10.00"))).to(D(2026, 12, 1))
    billing_day(run, D(2026, 12, 1), 20)
    run.request(CANCEL, D(2026, 12, 1)).to(D(2026, 12, 1))
    assert run.lines(1) == [("credit", "-10.00")]
    assert sum((i.total for i in run.invoices), usd("0")) == usd("0.00")
    assert run.subscription.adjustments == ()  # nothing left waiting for a billing day that never comes
    assert run.to(D(2027, 6, 1)).invoices[2:] == []


def test_a_change_to_todays_day_credits_the_old_cycle_on_todays_invoice() -> None:
    run = Run(subscribe(D(2026, 12, 1), terms("10.00"))).to(D(2026, 12, 1))
    billing_day(run, D(2026, 12, 20), 20)
    # 20-31 December credited on the invoice that charges them again, not a month later
    assert run.lines(1) == [("credit", "-3.87"), ("recurring", "10.00")]
    assert set(issued_days(run).values()) == {1}


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from([BillingModel.ADVANCE, BillingModel.ARREARS]),
    changes=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 31)), min_size=1, max_size=6),
    stop=st.integers(0, 40),
)
def test_no_sequence_of_billing_day_changes_invoices_a_day_twice_or_loses_a_credit(
    model: BillingModel, changes: list[tuple[int, int]], stop: int
) -> None:
    """Billing-day changes on any days (several on one day, back and forth), then a cancel: no
    issued invoice ever charges a day already charged and not credited, and in the end what was
    charged is the price of the days used, each stretch on its own schedule."""
    start = D(2026, 12, 1)
    run = Run(subscribe(start, replace(terms("10.00"), billing_model=model))).to(start)
    stretches: list[tuple[date, date, BillingSchedule]] = []
    day = begin = start
    for later, new_day in changes:
        day += timedelta(days=later)
        before = run.subscription.schedule
        billing_day(run, day, new_day)
        assert max(issued_days(run).values(), default=0) <= 1
        if run.subscription.schedule != before and day > begin:
            stretches.append((begin, day, before))
            begin = day
    end = day + timedelta(days=stop)
    run.to(end).request(CANCEL, end).to(end)
    assert max(issued_days(run).values(), default=0) <= 1
    run.to(end + timedelta(days=200))
    stretches.append((begin, end, run.subscription.schedule))
    price = usd("10.00")
    expected = usd("0")
    for first, last, schedule in stretches:
        while first < last:
            period = schedule.period_containing(first)
            part = Period(first, min(period.end, last))
            expected += price.scaled(Fraction(part.days, period.days))
            first = part.end
    assert sum((i.total for i in run.invoices), usd("0")) == expected


def test_execute_names_a_missing_service() -> None:
    sub = subscribe(D(2025, 1, 1))
    action = Action("a1", PAUSE, D(2025, 1, 2), requested_on=D(2025, 1, 2), service_id="svc_nope", params=Days())
    (record,) = execute(sub, action).actions
    assert record.status is ActionStatus.REJECTED and "no service svc_nope" in (record.outcome or "")


def test_a_pause_the_business_bills_does_not_stop_billing() -> None:
    rules = BillingRules(billable_states=frozenset({ServiceState.EFFECTIVE, ServiceState.PAUSED}))
    run = Run(subscribe(D(2025, 1, 1), rules=rules)).to(D(2025, 1, 1))
    run.request(PAUSE, D(2025, 1, 10), days=10).to(D(2025, 3, 1))
    assert run.service.state is ServiceState.EFFECTIVE
    assert [i.total for i in run.invoices] == [usd("31.00")] * 3
