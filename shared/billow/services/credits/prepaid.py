"""Payment-driven services (docs/credits.md, "Payment-driven services"): price terms with
`prepaid_credits` are paid each billing period with that many credits from the contact's wallet,
instead of an invoice; a period the wallet cannot pay makes the service not effective; a top-up
that can pay the current period re-activates it.

**Paying a period.** Billing (`billow.services.billing.bill_loaded`) moves a subscription on one
step at a time; before it writes a step that bills days of such a service, `pay_periods` takes the
credits of every billing period those days fall in (`credits` is never prorated: a period started
part-way costs its whole price, as included credits are granted whole), each a consumption with
the request id `prepaid_<service>_<period start>` (action `service_period`): booked once whatever
reruns, retries and races (`change_wallet`), and before the step, so a crash in between leaves a
paid period that the rerun finds paid. No overdraft: a period is paid in full or not at all.

**Not paid.** When the wallet cannot pay a period, the step is not written: the service is
deactivated (a system `deactivate` action, `act_<service>_unfunded_<day>`, logged like any other,
with its `service.state_changed` and `entitlements.changed` events) as of that period's first day
(its first unpaid day), and billing goes on without it.

**Re-activated on a top-up** (`reactivate_paid`, run once a top-up's credits are granted): each
service this rule deactivated (and not staff or dunning) whose current period the wallet can now
pay has that period paid, then a system `activate` action on the contact's today — the action
dunning's re-activation executes — and billing goes on from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Protocol

from billow.domain.actions import Action, ActionStatus
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.calendar import tenant_zone
from billow.domain.credits import ActionCost, Change, EntryKind, Grant, InsufficientCredits, Wallet, consume, entry_id
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service, Subscription
from billow.domain.timeline import execute
from billow.services.contacts import ContactTime, contact_time
from billow.services.context import Clock, SystemClock, TenantContext
from billow.services.credits import included
from billow.services.credits.wallet import WalletPorts, change_wallet
from billow.services.ports import BillingPorts

ACTION = "service_period"
"""The action a period's payment is booked as (the breakdown's row)."""
SYSTEM_CLOCK = SystemClock()


class PrepaidPorts(BillingPorts, Protocol):
    """The wallet, the subscription written with the deactivation and its log, and billing (a
    re-activated service is billed up to the day before first)."""


PREFIX = "prepaid_"
"""Request ids of periods' payments: refused from callers' consumptions (`credits.request_id`)."""


def request_id(service: Service, period_start: date) -> str:
    """A period's payment: one per service, price terms (a change of terms mid-period pays the new
    terms' period) and period."""
    return f"{PREFIX}{service.id}_{service.terms.id}_{period_start.isoformat()}"


def unfunded_action_id(service_id: str, on: date, version: int) -> str:
    """The deactivation's id: its day and the subscription version it is written over (a service
    stopped, activated by staff and stopped again the same day is two deactivations)."""
    return f"act_{service_id.removeprefix('svc_')}_unfunded_{on.isoformat()}_v{version}"


def _periods(subscription: Subscription, first: date, end: date) -> Iterator[date]:
    """The start of each billing period with days in [first, end)."""
    period = subscription.schedule.period_containing(first)
    while period.start < end:
        yield period.start
        period = subscription.schedule.period_containing(period.end)


def _pay(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, service: Service, start: date, on: date
) -> bool:
    """Take the credits of `service`'s period starting `start`, once, as of its day `on` (the first
    day paid: its last instant in the tenant's zone, or the contact's now if earlier): a clock
    jumping over periods pays each with the credits live that day, as days passing one by one
    would. False when the wallet cannot."""
    own = request_id(service, start)
    if store.get_credit_entry(ctx.scope, contact_id, entry_id(EntryKind.CONSUMPTION, own)) is not None:
        return True  # paid (the common case for a rerun, a resume within a paid period)
    cost = ActionCost(ACTION, service.terms.prepaid_credits, start)

    def operation(wallet: Wallet, now: datetime) -> Change:
        return consume(wallet, cost, service.quantity, now, request_id=own)  # per unit: times the quantity

    def moment() -> tuple[datetime, list[Grant]]:
        time = contact_time(store, ctx, contact_id, clock)
        day_end = datetime.combine(on + timedelta(days=1), datetime.min.time(), tenant_zone(ctx.settings.timezone))
        last = day_end - timedelta(microseconds=1)
        then = time if time.now <= last else ContactTime(last, on, time.test_clock)
        return then.now, included.due(store, ctx, contact_id, then)

    try:
        change_wallet(store, ctx, contact_id, moment, entry_id(EntryKind.CONSUMPTION, own), operation)
    except InsufficientCredits:
        return False
    return True


def pay_periods(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, billed: Subscription, clock: Clock = SYSTEM_CLOCK
) -> list[tuple[Service, date]]:
    """Before a billing step from `current` to `billed` is written: pay each period of the
    payment-driven services whose billed days the step extends. Answers the services whose period
    the wallet could not pay, each with its first unpaid day (the step must not be written)."""
    before = {s.id: s for s in current.services}
    unpaid: list[tuple[Service, date]] = []
    for service in billed.services:
        old = before.get(service.id)
        if not service.terms.prepaid_credits or old is None or service.billed_through is None:
            continue
        first = old.unbilled_from
        if service.billed_through <= first:
            continue
        for start in _periods(current, first, service.billed_through):
            if not _pay(store, ctx, clock, current.contact_id, old, start, max(start, first)):
                unpaid.append((old, max(start, first)))
                break
    return unpaid


def pay_running(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, as_of: date, clock: Clock = SYSTEM_CLOCK
) -> list[tuple[Service, date]]:
    """Once billing is done up to `as_of`: pay the periods of payment-driven services that run
    ahead of their billing (a resume, a re-activation, a change of terms part-way through a period:
    the engine bills such a restarted stretch with the next period), from the first unbilled day up
    to `as_of`. Answers those the wallet could not pay, as `pay_periods` does."""
    unpaid: list[tuple[Service, date]] = []
    for service in current.services:
        if not service.terms.prepaid_credits or service.state is not ServiceState.EFFECTIVE:
            continue
        first = service.unbilled_from
        if first > as_of:
            continue
        for start in _periods(current, first, as_of + timedelta(days=1)):
            if not _pay(store, ctx, clock, current.contact_id, service, start, max(start, first)):
                unpaid.append((service, max(start, first)))
                break
    return unpaid


def deactivate_unpaid(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, unpaid: list[tuple[Service, date]]
) -> Subscription | None:
    """Deactivate each unpaid service as of its first unpaid day, in one write of the subscription
    (at its version) with the log records. The subscription as written; None when every
    deactivation was refused (the step is then written as computed: nothing would change)."""
    subscription, records = current, list[Action]()
    for service, on in unpaid:
        credits = service.terms.prepaid_credits
        action = DEACTIVATE.by_system(
            unfunded_action_id(service.id, on, current.version),
            on,
            requested_on=on,
            reason=f"the credit wallet cannot pay {credits} credits for the period from {on.isoformat()}",
            service_id=service.id,
            params=None,
        )
        step = execute(subscription, action)
        subscription, records = step.subscription, records + list(step.actions)
    if subscription is current:
        return None
    work = store.unit_of_work(f"unpaid payment-driven services of {current.id}")
    work.save_subscription(ctx.scope, subscription, current.version)
    for record in records:
        work.log_action(ctx.scope, subscription, record)
    work.commit()
    return replace(subscription, version=current.version + 1)


def _deactivated_here(service: Service, log: list[Action]) -> bool:
    """Not effective because this rule deactivated it (its latest executed action is ours)."""
    mine = [a for a in log if a.service_id == service.id and a.status is ActionStatus.EXECUTED]
    return bool(mine) and "_unfunded_" in max(mine, key=lambda a: (a.executed_on or a.on, a.on)).id


def reactivate_paid(store: PrepaidPorts, ctx: TenantContext, clock: Clock, contact_id: str, numbers: object) -> int:
    """After a top-up's credits are granted: re-activate each service this rule deactivated whose
    current period the wallet can pay (paid first, then a system `activate` on the contact's
    today). Returns how many were re-activated."""
    from billow.services.billing import InvoiceNumbers, bill_loaded  # billing imports this module

    assert isinstance(numbers, InvoiceNumbers)
    scope, done = ctx.scope, 0
    for subscription in store.subscriptions_of(scope, contact_id):
        stopped = [
            s for s in subscription.services if s.terms.prepaid_credits and s.state is ServiceState.NOT_EFFECTIVE
        ]
        if not stopped:
            continue
        log = store.actions_of(scope, contact_id, subscription.id)
        today = contact_time(store, ctx, contact_id, clock).today
        _, billed = bill_loaded(store, ctx, subscription, today - timedelta(days=1), numbers)
        current, records = billed, list[Action]()
        for service in (s for s in stopped if _deactivated_here(s, log)):
            start = current.schedule.period_containing(today).start
            if not _pay(store, ctx, clock, contact_id, service, start, today):
                continue
            action = ACTIVATE.by_system(
                f"act_{service.id.removeprefix('svc_')}_paid_{today.isoformat()}",
                today,
                requested_on=today,
                reason=f"a top-up paid the period from {start.isoformat()} ({service.terms.prepaid_credits} credits)",
                service_id=service.id,
                params=None,
            )
            step = execute(current, action)
            current, records = step.subscription, records + list(step.actions)
            done += 1
        if records:
            work = store.unit_of_work(f"payment-driven services of {subscription.id} paid")
            work.save_subscription(scope, current, billed.version)
            for record in records:
                work.log_action(scope, current, record)
            work.commit()
    return done
