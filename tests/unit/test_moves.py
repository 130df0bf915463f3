"""A change to price terms of another cycle or billing model moves the service to the contact's
subscription of that cycle and model: settled in the one it leaves, billed in the one it joins.

31.00 a month in January is 1.00 a day; 90.00 a quarter from 16 January (90 days) too."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from billow.domain.actions import Action, ActionStatus, ServiceChange
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE, Changed
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms
from billow.domain.money import Money
from billow.domain.ordering import Order, OrderPlan
from billow.domain.rules import DEFAULT_RULES, ServiceState
from billow.domain.subscriptions import MAX_SERVICES_PER_SUBSCRIPTION, Subscription, SubscriptionKey, Transfer
from billow.domain.tenants import TenantSettings
from billow.domain.timeline import receive, receiving_subscription, steps
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.context import TenantContext
from billow.services.ordering import commit_order
from billow.storage.repository import DynamoStore

from tests.unit.test_actions import D, Run, subscribe, terms, usd


def quarterly(price: str = "90.00", **extra: object) -> PriceTerms:
    return replace(terms(price, **extra), cycle=Cycle.QUARTER)


def change_to(run: Run, on: date, new_terms: PriceTerms, *, action_id: str = "act_move") -> Run:
    change = ServiceChange("p1", "Pro", new_terms, 1)
    action = Action(action_id, CHANGE, on, requested_on=on, service_id=run.service.id, params=Changed(change))
    run.subscription = run.subscription.with_actions((*run.subscription.actions, action))
    return run


def moved(run: Run, day: date) -> Transfer:
    """Run to `day`, stopping at the step that moves the service out."""
    for step in steps(run.subscription, day):
        run.subscription = step.subscription
        run.log += step.actions
        if step.invoice is not None:
            run.invoices.append(step.invoice)
        if step.transfer is not None:
            return step.transfer
    raise AssertionError("nothing moved")


def bill(subscription: Subscription, day: date) -> list[object]:
    return [step.invoice for step in steps(subscription, day) if step.invoice is not None]


def test_monthly_to_quarterly_settles_the_month_and_starts_a_quarterly_subscription() -> None:
    run = change_to(Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1)), D(2025, 1, 16), quarterly())
    transfer = moved(run, D(2025, 1, 16))
    assert run.subscription.services == ()  # it left
    assert run.subscription.state.value == "churned"
    run.to(D(2025, 1, 16))
    assert run.lines(1) == [("credit", "-16.00")]  # 16-31 January credited the same day
    assert run.invoices[1].billing_date == D(2025, 1, 16)

    target = receive(receiving_subscription(run.subscription, transfer, DEFAULT_RULES), transfer, new=True)
    assert target.id == "sub_move" and target.key == SubscriptionKey(Cycle.QUARTER, BillingModel.ADVANCE, "USD")
    assert target.schedule.billing_day == 16
    (first,) = bill(target, D(2025, 1, 16))
    assert [(line.kind, line.amount) for line in first.lines] == [("recurring", usd("90.00"))]
    assert first.period.start == D(2025, 1, 16) and first.period.end == D(2025, 4, 16)
    # Charged in all: 15 January days at the monthly price, then quarters from the 16th.
    assert run.invoices[0].total + run.invoices[1].total == usd("15.00")


def test_joining_an_existing_subscription_bills_the_rest_of_its_period_on_its_next_invoice() -> None:
    run = change_to(Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1)), D(2025, 1, 16), quarterly())
    existing = Run(subscribe(D(2025, 1, 1), quarterly("93.00"))).to(D(2025, 1, 16))  # Jan 1 - Apr 1
    transfer = moved(run, D(2025, 1, 16))
    joined = receive(existing.subscription, transfer, new=False)
    assert [s.id for s in joined.services] == [existing.service.id, transfer.service.id]
    invoices = bill(joined, D(2025, 4, 1))
    assert len(invoices) == 1 and invoices[0].billing_date == D(2025, 4, 1)  # nothing more till then
    lines = [(line.service_id, line.kind, line.amount.amount_str()) for line in invoices[0].lines]
    mover = transfer.service.id
    # 16 January - 1 April is 75 of the quarter's 90 days: 90.00 x 75/90.
    assert (mover, "prorated", "75.00") in lines and (mover, "recurring", "90.00") in lines


def test_pending_actions_of_the_service_move_with_it() -> None:
    run = Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1))
    run.request(CANCEL, D(2025, 6, 1))
    change_to(run, D(2025, 1, 16), quarterly())
    transfer = moved(run, D(2025, 1, 16))
    assert [(a.kind, a.on) for a in transfer.actions] == [(CANCEL, D(2025, 6, 1))]
    assert run.subscription.actions == ()
    assert (run.log[-1].kind, run.log[-1].status) == (CANCEL, ActionStatus.CANCELLED)
    target = receive(receiving_subscription(run.subscription, transfer, DEFAULT_RULES), transfer, new=True)
    assert [a.kind for a in target.actions] == [CANCEL]
    invoices = bill(target, D(2025, 7, 1))
    # The quarter from 16 January, the next from 16 April, whose 45 days from 1 June (of 91) are
    # credited on that day: 90.00 x 45/91 = 44.505 -> 44.51.
    assert [i.total for i in invoices] == [usd("90.00"), usd("90.00"), usd("-44.51")]


def test_a_service_in_trial_moves_with_its_trial() -> None:
    run = change_to(Run(subscribe(D(2025, 1, 1), terms(trial_days=14))), D(2025, 1, 5), quarterly())
    transfer = moved(run, D(2025, 1, 5))
    assert transfer.service.billing_start == D(2025, 1, 15)
    assert run.to(D(2025, 1, 5)).invoices == []  # nothing to settle: nothing was charged
    target = receive(receiving_subscription(run.subscription, transfer, DEFAULT_RULES), transfer, new=True)
    (first,) = bill(target, D(2025, 1, 15))
    assert first.billing_date == D(2025, 1, 15) and first.period.end == D(2025, 4, 15)


def test_to_arrears_the_unbilled_days_are_charged_where_they_were_used() -> None:
    arrears = replace(terms(), billing_model=BillingModel.ARREARS)  # the same price, billed after
    run = change_to(Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1)), D(2025, 1, 16), arrears)
    transfer = moved(run, D(2025, 1, 16))
    assert transfer.key.billing_model is BillingModel.ARREARS
    target = receive(receiving_subscription(run.subscription, transfer, DEFAULT_RULES), transfer, new=True)
    (first,) = bill(target, D(2025, 2, 16))
    assert first.billing_date == D(2025, 2, 16) and first.total == usd("31.00")


def test_a_change_of_currency_is_refused() -> None:
    euros = replace(terms(), price=Money.parse("31.00", "EUR"))
    run = change_to(Run(subscribe(D(2025, 1, 1))).to(D(2025, 1, 1)), D(2025, 1, 16), euros).to(D(2025, 1, 16))
    assert (run.log[-1].status, run.log[-1].rule) == (ActionStatus.REJECTED, "change.currency")
    assert run.service.state is ServiceState.EFFECTIVE and run.service.terms.currency == "USD"


def test_a_change_to_terms_without_a_term_ends_the_term() -> None:
    run = Run(subscribe(D(2025, 1, 1), terms(term_cycles=2))).to(D(2025, 1, 1))
    change_to(run, D(2025, 1, 16), terms("62.00")).to(D(2025, 6, 1))
    assert run.service.term_end is None and run.service.state is ServiceState.EFFECTIVE
    assert [a.kind for a in run.log] == [CHANGE]  # no renewal or expiry follows
    assert len(run.invoices) == 6


def test_yearly_rates_tell_upgrades_from_downgrades_across_cycles() -> None:
    monthly, yearly = terms("10.00"), replace(terms("100.00"), cycle=Cycle.YEAR)
    assert yearly.yearly_rate(1) < monthly.yearly_rate(1)  # 100 a year is less than 120
    weekly = replace(terms("2.50"), cycle=Cycle.WEEK)
    assert weekly.yearly_rate(1) > monthly.yearly_rate(1)  # 130.44 a year


def test_a_scheduled_move_into_a_subscription_that_filled_up_is_rejected(moto_table: str) -> None:
    """Checked when requested, the room is gone when the move runs: the change is rejected with
    its rule and the service stays where it is, billed as before."""
    store = DynamoStore()
    ctx = TenantContext("t1", "live", TenantSettings("t1", "t1"))
    monthly = change_to(Run(subscribe(D(2025, 1, 1))), D(2025, 1, 16), quarterly()).subscription
    full = subscribe(D(2025, 1, 1), quarterly("93.00"))
    one = full.services[0]
    full = replace(full, services=tuple(replace(one, id=f"svc_q{n}") for n in range(MAX_SERVICES_PER_SUBSCRIPTION)))
    for subscription in (monthly, full):
        order = Order(f"ord_{subscription.id}", "c1", None, D(2025, 1, 1), ())
        commit_order(store, ctx.scope, OrderPlan(order, (subscription,), frozenset({subscription.id})))

    invoices = bill_subscription(store, ctx, "c1", monthly.id, D(2025, 2, 1), InvoiceNumbers(store))
    own = [i.total for i in invoices if i.subscription_id == monthly.id]
    assert own == [usd("31.00"), usd("31.00")]  # January, then February: not moved, nothing credited
    (record,) = store.actions_of(ctx.scope, "c1", monthly.id)
    assert (record.status, record.rule, record.executed_on) == (ActionStatus.REJECTED, "change.subscription_full", None)
    assert store.load_subscription(ctx.scope, "c1", monthly.id).services[0].terms.cycle is Cycle.MONTH  # type: ignore[union-attr]
    assert store.actions_of(ctx.scope, "c1", full.id) == []
