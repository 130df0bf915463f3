"""Hypothesis drives one service through random actions (immediate and scheduled), billing
upcoming cycles ahead and clock advances. Changes go to price terms of any cycle and billing model,
so the service moves between the contact's subscriptions as the service layer moves it; the
subscription's billing day changes too. After every step: no service moved along a transition the
table does not have, no day of a service is billed twice, no period is invoiced again while its
charge stands (a day is charged again only after an earlier document credited it, and no document
credits and charges one day at one price), and every credit line lies inside one charged period.
At the end
(the service cancelled and everything settled): the charges minus the credits, over every
subscription, equal the price of the time the service was billable, computed here from the
executed actions alone, stretch by stretch, period by period of the subscription it was in."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from billow.domain.actions import Action, ActionKind, ActionStatus, Days, NoParams, ServiceChange
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.bill_ahead import BILL_AHEAD, Ahead
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE, Changed
from billow.domain.actions.change_billing_day import CHANGE_BILLING_DAY, NewBillingDay
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.actions.expire import EXPIRE
from billow.domain.actions.pause import PAUSE
from billow.domain.actions.regret import REGRET
from billow.domain.actions.renew import RENEW
from billow.domain.actions.resume import RESUME
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel, Product
from billow.domain.lifecycle import TRANSITIONS
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.rules import DEFAULT_RULES, ServiceState
from billow.domain.subscriptions import Subscription, SubscriptionKey
from billow.domain.timeline import receive, receiving_subscription, steps
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

PRICES = ["5.00", "31.00", "99.99", "12.34"]
# Final actions (cancel, regret) are rarer, so that most lives have a few pauses and changes first.
KINDS = [
    *[PAUSE, RESUME, DEACTIVATE, ACTIVATE, CHANGE] * 3,
    *[CHANGE] * 3,
    *[CHANGE_BILLING_DAY] * 4,
    CANCEL,
    REGRET,
]
BILLING_DAY = CHANGE_BILLING_DAY
STOPS = {PAUSE, DEACTIVATE, CANCEL, EXPIRE}
STARTS = {RESUME, ACTIVATE, RENEW}
# Moves the engine makes by itself, outside the action table.
AUTOMATIC = {(ServiceState.DRAFT, ServiceState.EFFECTIVE), (ServiceState.EFFECTIVE, ServiceState.NOT_EFFECTIVE)}
LEGAL = {(before, after) for (before, _), after in TRANSITIONS.items()} | AUTOMATIC


CYCLES = [Cycle.MONTH, Cycle.MONTH, Cycle.QUARTER, Cycle.WEEK]


def _terms(price: str, model: BillingModel, cycle: Cycle = Cycle.MONTH) -> PriceTerms:
    return PriceTerms(
        id=f"t{price}{cycle.value}{model.value}", product_id="p1", price=Money.parse(price, "EUR"), cycle=cycle,
        billing_model=model, pricing_model=PricingModel.PER_UNIT,
    )  # fmt: skip


def _line(line: LineDraft) -> tuple[str, str, str]:
    return line.kind, str(line.period), str(line.amount)


def _documents(invoices: list[InvoiceDraft]) -> list[tuple[object, ...]]:
    """Invoices as a reader compares them: whose, dated when, which lines (in any order of issue)."""
    return sorted(
        ((i.subscription_id, i.issue_date, i.billing_date, sorted(map(_line, i.lines))) for i in invoices),
        key=repr,
    )


class LifecycleMachine(RuleBasedStateMachine):
    @initialize(
        start=st.dates(date(2024, 1, 1), date(2025, 12, 31)),
        price=st.sampled_from(PRICES),
        model=st.sampled_from([BillingModel.ADVANCE, BillingModel.ARREARS]),
    )
    def subscribe(self, start: date, price: str, model: BillingModel) -> None:
        self.started = (start, price, model)
        self.inserted: list[tuple[date, Action]] = []  # every action given, with the day it was given
        self.ran_ahead_of_a_move = False
        self.acted: dict[SubscriptionKey, date] = {}  # per subscription, the latest day of an action it ran
        self.model = model
        terms = _terms(price, model)
        ids = itertools.count()
        plan = plan_order(
            order_id="o", contact_id="c", reference=None,
            items=[OrderItem(Product("p1", "Pro", terms=(terms,)), terms, 1)],
            start_date=start, today=start, existing=[], new_id=lambda p: f"{p}_{next(ids)}",
            test_clock=False, rules=DEFAULT_RULES,
        )  # fmt: skip
        first: Subscription = plan.subscriptions[0]
        self.subscriptions: dict[SubscriptionKey, Subscription] = {first.key: first}
        self.home = first.key
        self.first_schedule = first.schedule
        self.first_price = terms.price
        self.today = start
        self.lines: list[LineDraft] = []
        self.documents: list[tuple[LineDraft, ...]] = []
        self.invoices: list[InvoiceDraft] = []
        self.issued_after: list[int] = []  # per document, how many actions had executed when it was issued
        self.executed: list[tuple[Action, BillingSchedule]] = []  # with the schedule it ran on
        self.states = [self.service.state]
        self.ids = itertools.count()
        self.move(start)

    @property
    def subscription(self) -> Subscription:
        """The subscription the service is in."""
        return self.subscriptions[self.home]

    @subscription.setter
    def subscription(self, subscription: Subscription) -> None:
        self.subscriptions[self.home] = subscription

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.subscription.services[0]

    def move(self, day: date) -> None:
        """Every subscription up to `day`, a moving service joining its new one as
        `billow.services.billing` joins it (that one billed up to the day before first)."""
        while any([self.run(key, day) for key in list(self.subscriptions)]):
            pass
        self.today = day

    def run(self, key: SubscriptionKey, day: date) -> bool:
        ran = False
        for step in steps(self.subscriptions[key], day):
            ran = True
            ran_on = [a.on for a in step.actions if a.status is not ActionStatus.SCHEDULED]
            self.acted[key] = max([self.acted.get(key, date.min), *ran_on])
            self.subscriptions[key] = step.subscription
            schedule = step.subscription.schedule
            self.executed += [
                (a, schedule)
                for a in step.actions
                if a.status is ActionStatus.EXECUTED and (a.service_id or (a.kind is BILLING_DAY and key == self.home))
            ]
            if step.invoice is not None:
                self.lines += step.invoice.lines
                self.documents.append(step.invoice.lines)
                self.invoices.append(step.invoice)
                self.issued_after.append(len(self.executed))
            if (transfer := step.transfer) is not None:
                target = self.subscriptions.get(transfer.key)
                if target is None:
                    new = receiving_subscription(step.subscription, transfer, DEFAULT_RULES)
                    self.subscriptions[transfer.key] = receive(new, transfer, new=True)
                else:
                    self.run(transfer.key, transfer.record.on - timedelta(days=1))
                    # The subscriptions are billed one after the other: this one already ran an
                    # action of a later day than the move reaching it (docs/lifecycle.md).
                    self.ran_ahead_of_a_move |= self.acted.get(transfer.key, date.min) > transfer.record.on
                    self.subscriptions[transfer.key] = receive(self.subscriptions[transfer.key], transfer, new=False)
                self.home = transfer.key
                self.executed[-1] = (transfer.record, self.subscription.schedule)  # it bills there from now
            # While a moving service's new subscription catches up (the inner run above), the
            # service is in neither: its state is looked at once it has joined.
            if self.subscription.services and self.service.state != self.states[-1]:
                self.states.append(self.service.state)
        return ran

    @rule(days=st.integers(1, 45))
    def advance(self, days: int) -> None:
        self.move(self.today + timedelta(days=days))

    @rule(until=st.integers(1, 100), later=st.integers(0, 40))
    def bill_ahead(self, until: int, later: int) -> None:
        """Bill upcoming cycles up to `until` days after the day it runs (`{"until"}` in the API)."""
        on = self.today + timedelta(days=later)
        action = Action(
            id=f"a{next(self.ids):03d}", kind=BILL_AHEAD, on=on, requested_on=self.today,
            params=Ahead(on + timedelta(days=until)),
        )  # fmt: skip
        self.give(action)
        if later == 0:
            self.move(self.today)

    def give(self, action: Action) -> None:
        self.inserted.append((self.today, action))
        self.subscription = replace(self.subscription, actions=(*self.subscription.actions, action))

    @rule(
        kind=st.sampled_from(KINDS),
        later=st.integers(0, 40),
        days=st.none() | st.integers(1, 30),
        price=st.sampled_from(PRICES),
        quantity=st.integers(1, 3),
        cycle=st.sampled_from(CYCLES),
        model=st.sampled_from([BillingModel.ADVANCE, BillingModel.ARREARS]),
        billing_day=st.integers(1, 31),
    )
    def request(
        self,
        kind: ActionKind[Any, Any],
        later: int,
        days: int | None,
        price: str,
        quantity: int,
        cycle: Cycle,
        model: BillingModel,
        billing_day: int,
    ) -> None:
        terms = _terms(price, model if cycle is not Cycle.MONTH else self.model, cycle)
        if kind is CHANGE and terms == self.service.terms and quantity == self.service.quantity:
            return  # the service layer refuses a change that changes nothing
        day = billing_day % 7 if self.subscription.cycle is Cycle.WEEK else billing_day
        params: object = (
            Days(days)
            if kind is PAUSE
            else Changed(ServiceChange("p1", "Pro", terms, quantity))
            if kind is CHANGE
            else NewBillingDay(day)
            if kind is BILLING_DAY
            else NoParams()
        )
        action = Action(
            id=f"a{next(self.ids):03d}",
            kind=kind,
            on=self.today + timedelta(days=later),
            requested_on=self.today,
            service_id=None if kind is BILLING_DAY else self.service.id,
            params=params,
        )
        self.give(action)
        if later == 0:
            self.move(self.today)

    @invariant()
    def only_legal_moves(self) -> None:
        for before, after in itertools.pairwise(self.states):
            assert (before, after) in LEGAL, f"{before} -> {after}"

    @invariant()
    def no_day_billed_twice(self) -> None:
        pending = [a.line for sub in self.subscriptions.values() for a in sub.adjustments]
        net: Counter[date] = Counter()
        for line in (*self.lines, *pending):
            if line.period is None or line.kind not in ("recurring", "prorated", "credit"):
                continue
            sign = -1 if line.kind == "credit" else 1
            for offset in range(line.period.days):
                net[line.period.start + timedelta(days=offset)] += sign
        assert set(net.values()) <= {0, 1}, sorted(d for d, n in net.items() if n not in (0, 1))[:5]

    @invariant()
    def no_period_invoiced_twice(self) -> None:
        """Document by document: a day of a service is charged only while no charge of it stands,
        credited only while one does; and no document credits a day and charges it again at the
        same price unless a change re-priced it there (a pause's credit is the paused days, not the
        periods billed ahead). A billing-day change re-cuts the periods: the credit of a period
        charged before a billing-day change, of days from that day on, beside the charge of those
        days on the new schedule, on one invoice, re-prices them too."""
        net: Counter[tuple[str, date]] = Counter()
        for at, lines in enumerate(self.documents):
            prices: dict[tuple[str, date, int], set[tuple[Money, object]]] = {}
            for line in lines:
                if line.period is None or line.kind not in ("recurring", "prorated", "credit"):
                    continue
                sign = -1 if line.kind == "credit" else 1
                recut = sign < 0 and self.recut(at, line)
                for offset in range(line.period.days):
                    day = line.period.start + timedelta(days=offset)
                    net[line.service_id, day] += sign
                    if not recut:
                        prices.setdefault((line.service_id, day, sign), set()).add((line.unit_price, line.quantity))
            for (service_id, day, sign), charged in prices.items():
                assert net[service_id, day] in (0, 1), (service_id, day)
                credited = prices.get((service_id, day, -1), set()) if sign > 0 else set()
                repriced = len(charged | credited) > 1
                assert repriced or not charged & credited, f"{day} credited and charged again on one document"

    def recut(self, at: int, credit: LineDraft) -> bool:
        """Whether `credit` (on document `at`) credits a period charged on a schedule a billing-day
        change replaced since: the change executed after that charge was issued, on a day before
        the period's end."""
        days = credit.period
        assert days is not None
        charged_by = next(
            (
                i
                for i in reversed(range(at))
                for line in self.documents[i]
                if line.kind in ("recurring", "prorated")
                and line.service_id == credit.service_id
                and line.period is not None
                and line.period.start <= days.start
                and days.end <= line.period.end
            ),
            None,
        )
        if charged_by is None:
            return False
        return any(
            action.kind is BILLING_DAY and action.on < days.end
            for action, _ in self.executed[self.issued_after[charged_by] :]
        )

    @invariant()
    def credits_lie_in_one_charged_period(self) -> None:
        charged: list[LineDraft] = []
        for lines in self.documents:
            charged += [line for line in lines if line.kind in ("recurring", "prorated")]
            for line in lines:
                if line.kind != "credit" or line.period is None:
                    continue
                period = line.period
                assert any(
                    c.service_id == line.service_id
                    and c.period is not None
                    and c.period.start <= period.start
                    and period.end <= c.period.end
                    for c in charged
                ), f"credit {period} spans charged periods"

    def teardown(self) -> None:
        if not hasattr(self, "subscription"):
            return
        if self.service.state not in (ServiceState.CANCELLED, ServiceState.REGRETTED):
            self.subscription = replace(self.subscription, actions=())
            cancel = Action("zz", CANCEL, self.today, self.today, service_id=self.service.id, params=NoParams())
            self.give(cancel)
        self.move(self.today + timedelta(days=400))
        charged = sum((line.amount for line in self.lines), Money.zero("EUR"))
        assert charged == self.billable_price(), (charged, self.billable_price(), self.executed)
        if not self.ran_ahead_of_a_move:
            self.same_documents_day_by_day()

    def same_documents_day_by_day(self) -> None:
        """The same actions, given on the same days, with the clock moved one day at a time: the
        same documents, lines and dates (how far a clock jumps changes nothing)."""
        replay = LifecycleMachine()
        replay.subscribe(*self.started)
        day = self.started[0]
        given = list(self.inserted)
        while day <= self.today:
            replay.move(day)
            while given and given[0][0] == day:
                action = given.pop(0)[1]
                if action.id == "zz":  # the teardown's cancel replaces what is still pending
                    replay.subscription = replace(replay.subscription, actions=())
                replay.give(action)
                replay.move(day)
            day += timedelta(days=1)
        assert _documents(replay.invoices) == _documents(self.invoices)

    def billable_price(self) -> Money:
        """Stretches of billable days, each at its price and on the schedule of the subscription
        it was in, from the executed actions alone."""
        stretches: list[tuple[date, date, Money, BillingSchedule]] = []
        price = self.first_price
        open_at: date | None = self.service.start_date
        schedule = self.first_schedule
        settled = 0  # stretches before a billing-day change, which a regret does not credit
        for action, ran_on in self.executed:
            day = action.on
            if action.kind in STOPS and open_at is not None:
                stretches.append((open_at, day, price, schedule))
                open_at = None
            elif action.kind in STARTS and open_at is None:
                open_at = day
                if stretches and stretches[-1][1] == day:  # started again the day it stopped: no stop
                    open_at = stretches.pop()[0]
            elif action.kind is REGRET:
                # a full credit of the stretch it was in (or the last one, if stopped since)
                if open_at is None and len(stretches) > settled:
                    stretches.pop()
                open_at = None
            elif action.kind is BILLING_DAY:
                # the days before it on the old schedule, settled for good; the days from it on the new one
                if open_at is not None:
                    stretches.append((open_at, day, price, schedule))
                    open_at = day
                settled = len(stretches)
            elif action.kind is CHANGE:
                if open_at is not None:
                    stretches.append((open_at, day, price, schedule))
                    open_at = day
                change = CHANGE.params(action).change
                price = change.terms.price.times(change.quantity)
            schedule = ran_on
        total = Money.zero("EUR")
        for begin, end, amount, schedule in stretches:
            day = begin
            while day < end:
                period = schedule.period_containing(day)
                part = Period(day, min(period.end, end))
                total = total + amount.scaled(Fraction(part.days, period.days))
                day = part.end
        return total


LifecycleMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_lifecycle_state_machine = LifecycleMachine.TestCase
