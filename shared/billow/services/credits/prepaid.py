"""Payment-driven services (docs/credits.md, "Payment-driven services"): price terms with
`prepaid_credits` are paid each billing period with that many credits (times the quantity) from
the contact's wallet, instead of an invoice; a period the wallet cannot pay makes the service not
effective; a top-up that can pay the current period re-activates it.

**Paying a period.** Billing (`billow.services.billing.bill_loaded`) moves a subscription on one
step at a time; before it writes a step that bills days of such a service, `pay_periods` pays every
billing period those days fall in (never prorated: a period started part-way costs its whole
price, as included credits are granted whole), each a consumption with the request id
`prepaid_<service>_<terms>_<period start>` (action `service_period`), as of the period's own day:
booked once whatever reruns, retries and races (`change_wallet`), and before the step, so a crash
in between leaves a paid period that the rerun finds paid. The wallet keeps, per service and terms,
the day their paid periods end (`Wallet.paid_through`): a period overlapping one paid already (a
billing day changed) is not paid again. No overdraft. With no step left to write, `pay_running`
pays the periods of services running ahead of their billing (resumed, re-activated, changed to
other terms part-way through a period).

**Not paid.** When the wallet cannot pay a period, the step is not written: the service is
deactivated (a system `deactivate` action, `act_<service>_unfunded_<day>_v<version>`, logged like
any other, with its `service.state_changed` and `entitlements.changed` events) as of its first
unpaid day, in a write conditioned on the wallet still being at the version that could not pay (a
top-up landing meanwhile makes billing try again, and pay), and billing goes on without it.

**Re-activated on a top-up** (`reactivate_paid`, run when a top-up's credits are newly granted):
each service this rule deactivated (not staff, not dunning: never while the contact has an open
dunning case), still within its term, whose current period the wallet can now pay has that period
paid, then a system `activate` action on the contact's today — the action dunning's re-activation
executes — and billing goes on from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Protocol

from billow.domain.actions import Action, ActionStatus
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.calendar import Period, tenant_zone
from billow.domain.credits import (
    ActionCost,
    Change,
    EntryKind,
    Grant,
    InsufficientCredits,
    Wallet,
    entry_id,
    pay_period,
)
from billow.domain.errors import ConcurrentModification
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
PREFIX = "prepaid_"
"""Request ids of periods' payments: refused from callers' consumptions (`credits.request_id`)."""
SYSTEM_CLOCK = SystemClock()
MAX_CONFLICTS = 5


class PrepaidPorts(BillingPorts, Protocol):
    """The wallet, the subscription written with the deactivation and its log, billing (a
    re-activated service is billed up to the day before first), and the contact's dunning cases."""


@dataclass(frozen=True, slots=True)
class Unpaid:
    """A service whose period the wallet could not pay: from `on`, with the wallet at `wallet_version`."""

    service: Service
    on: date
    wallet_version: int


def request_id(service: Service, period_start: date) -> str:
    """A period's payment: one per service, price terms (a change of terms mid-period pays the new
    terms' period) and period."""
    return f"{PREFIX}{service.id}_{service.terms.id}_{period_start.isoformat()}"


def unfunded_action_id(service_id: str, on: date, version: int) -> str:
    """The deactivation's id: its day and the subscription version it is written over (a service
    stopped, activated by staff and stopped again the same day is two deactivations)."""
    return f"act_{service_id.removeprefix('svc_')}_unfunded_{on.isoformat()}_v{version}"


def _periods(subscription: Subscription, first: date, end: date) -> Iterator[Period]:
    """Each billing period with days in [first, end)."""
    period = subscription.schedule.period_containing(first)
    while period.start < end:
        yield period
        period = subscription.schedule.period_containing(period.end)


def _pay(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, service: Service, period: Period, on: date
) -> int | None:
    """Pay `service`'s `period`, once, as of its day `on` (the first day paid: its last instant in
    the tenant's zone, or the contact's now if earlier): a clock jumping over periods pays each with
    the credits live that day, as days passing one by one would. None: paid (or covered by a paid
    period); else the wallet version that could not pay it."""
    own = request_id(service, period.start)
    if store.get_credit_entry(ctx.scope, contact_id, entry_id(EntryKind.CONSUMPTION, own)) is not None:
        return None  # paid (the common case for a rerun, a resume within a paid period)
    cost = ActionCost(ACTION, service.terms.prepaid_credits, period.start)
    paid_for = f"{service.id}/{service.terms.id}"

    def operation(wallet: Wallet, now: datetime) -> Change:
        return pay_period(wallet, cost, service.quantity, now, request_id=own, paid_for=paid_for, period=period)

    def moment() -> tuple[datetime, list[Grant]]:
        time = contact_time(store, ctx, contact_id, clock)
        day_end = datetime.combine(on + timedelta(days=1), datetime.min.time(), tenant_zone(ctx.settings.timezone))
        last = day_end - timedelta(microseconds=1)
        then = time if time.now <= last else ContactTime(last, on, time.test_clock)
        return then.now, included.due(store, ctx, contact_id, then)

    try:
        change_wallet(store, ctx, contact_id, moment, entry_id(EntryKind.CONSUMPTION, own), operation)
    except InsufficientCredits as short:
        return short.wallet_version
    return None


def _unpaid_from(
    store: WalletPorts,
    ctx: TenantContext,
    clock: Clock,
    subscription: Subscription,
    service: Service,
    first: date,
    end: date,
) -> Unpaid | None:
    """Pay the service's periods with days in [first, end): the first the wallet cannot pay, if any."""
    for period in _periods(subscription, first, end):
        on = max(period.start, first)
        version = _pay(store, ctx, clock, subscription.contact_id, service, period, on)
        if version is not None:
            return Unpaid(service, on, version)
    return None


def pay_periods(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, billed: Subscription, clock: Clock = SYSTEM_CLOCK
) -> list[Unpaid]:
    """Before a billing step from `current` to `billed` is written: pay each period of the effective
    payment-driven services whose billed days the step extends (a draft one waits for its
    activation). Answers those the wallet could not pay (the step must not be written)."""
    before = {s.id: s for s in current.services}
    unpaid: list[Unpaid] = []
    for service in billed.services:
        old = before.get(service.id)
        if (
            not service.terms.prepaid_credits
            or old is None
            or old.state is not ServiceState.EFFECTIVE
            or service.billed_through is None
            or service.billed_through <= old.unbilled_from
        ):
            continue
        found = _unpaid_from(store, ctx, clock, current, old, old.unbilled_from, service.billed_through)
        if found is not None:
            unpaid.append(found)
    return unpaid


def pay_running(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, as_of: date, clock: Clock = SYSTEM_CLOCK
) -> list[Unpaid]:
    """Once billing is done up to `as_of`: pay the periods of payment-driven services that run
    ahead of their billing (a resume, a re-activation, a change of terms part-way through a period:
    the engine bills such a restarted stretch with the next period), from the first unbilled day up
    to `as_of`. Answers those the wallet could not pay, as `pay_periods` does."""
    unpaid: list[Unpaid] = []
    for service in current.services:
        if not service.terms.prepaid_credits or service.state is not ServiceState.EFFECTIVE:
            continue
        if service.unbilled_from > as_of:
            continue
        found = _unpaid_from(store, ctx, clock, current, service, service.unbilled_from, as_of + timedelta(days=1))
        if found is not None:
            unpaid.append(found)
    return unpaid


def deactivate_unpaid(
    store: PrepaidPorts, ctx: TenantContext, current: Subscription, unpaid: list[Unpaid]
) -> Subscription | None:
    """Deactivate each unpaid service as of its first unpaid day, in one write of the subscription
    (at its version) with the log records, conditioned on the wallet still being at the version
    that could not pay (a top-up landing meanwhile fails it: billing reads again and pays). The
    subscription as written; None when every deactivation was refused (nothing is written: the
    step goes on as computed)."""
    subscription, records, executed = current, list[Action](), False
    for gap in unpaid:
        credits = gap.service.terms.prepaid_credits
        action = DEACTIVATE.by_system(
            unfunded_action_id(gap.service.id, gap.on, current.version),
            gap.on,
            requested_on=gap.on,
            reason=f"the credit wallet cannot pay {credits} credits for the period from {gap.on.isoformat()}",
            service_id=gap.service.id,
            params=None,
        )
        step = execute(subscription, action)
        done = [a for a in step.actions if a.status is ActionStatus.EXECUTED]
        if done:
            subscription, records, executed = step.subscription, records + list(step.actions), True
    if not executed:
        return None
    work = store.unit_of_work(f"unpaid payment-driven services of {current.id}")
    work.save_subscription(ctx.scope, subscription, current.version)
    for record in records:
        work.log_action(ctx.scope, subscription, record)
    work.check_wallet(ctx.scope, current.contact_id, min(gap.wallet_version for gap in unpaid))
    work.commit()
    return replace(subscription, version=current.version + 1)


def _deactivated_here(service: Service, log: list[Action]) -> bool:
    """Not effective because this rule deactivated it (its latest executed action is ours)."""
    mine = [a for a in log if a.service_id == service.id and a.status is ActionStatus.EXECUTED]
    return bool(mine) and "_unfunded_" in max(mine, key=lambda a: (a.executed_on or a.on, a.on)).id


def _within_term(service: Service, today: date) -> bool:
    ended = service.end_date is not None and service.end_date <= today
    expired = service.term_end is not None and not service.auto_renew and service.term_end <= today
    return not ended and not expired and not service.expired


def reactivate_paid(store: PrepaidPorts, ctx: TenantContext, clock: Clock, contact_id: str, numbers: object) -> int:
    """After a top-up's credits are granted: re-activate each service this rule deactivated whose
    current period the wallet can pay (paid first, then a system `activate` on the contact's
    today), unless the contact has an open dunning case (its debt decides) or the service's term
    has ended. Returns how many were re-activated."""
    from billow.services.billing import InvoiceNumbers  # billing imports this module

    assert isinstance(numbers, InvoiceNumbers)
    scope, done = ctx.scope, 0
    if any(not c.case.ended for c in store.cases_of(scope, contact_id)):
        return 0
    for subscription in store.subscriptions_of(scope, contact_id):
        if any(s.terms.prepaid_credits and s.state is ServiceState.NOT_EFFECTIVE for s in subscription.services):
            for _ in range(MAX_CONFLICTS + 1):
                try:
                    done += _reactivate(store, ctx, clock, subscription.id, contact_id, numbers)
                    break
                except ConcurrentModification:
                    continue  # the subscription moved meanwhile: read it again (the payments are kept, once)
            else:
                raise ConcurrentModification(f"subscription {subscription.id} kept changing; try again")
    return done


def _reactivate(
    store: PrepaidPorts, ctx: TenantContext, clock: Clock, subscription_id: str, contact_id: str, numbers: object
) -> int:
    from billow.services.billing import InvoiceNumbers, bill_loaded

    assert isinstance(numbers, InvoiceNumbers)
    scope = ctx.scope
    loaded = store.load_subscription(scope, contact_id, subscription_id)
    if loaded is None:
        return 0
    log = store.actions_of(scope, contact_id, subscription_id)
    today = contact_time(store, ctx, contact_id, clock).today
    _, billed = bill_loaded(store, ctx, loaded, today - timedelta(days=1), numbers)
    current, records = billed, list[Action]()
    for service in billed.services:
        if not (
            service.terms.prepaid_credits
            and service.state is ServiceState.NOT_EFFECTIVE
            and _deactivated_here(service, log)
            and _within_term(service, today)
        ):
            continue
        period = current.schedule.period_containing(today)
        if _pay(store, ctx, clock, contact_id, service, period, today) is not None:
            continue
        action = ACTIVATE.by_system(
            f"act_{service.id.removeprefix('svc_')}_paid_{today.isoformat()}_v{billed.version}",
            today,
            requested_on=today,
            reason=f"a top-up paid the period from {period.start.isoformat()}",
            service_id=service.id,
            params=None,
        )
        step = execute(current, action)
        current, records = step.subscription, records + list(step.actions)
    if not records:
        return 0
    work = store.unit_of_work(f"payment-driven services of {subscription_id} paid")
    work.save_subscription(scope, current, billed.version)
    for record in records:
        work.log_action(scope, current, record)
    work.commit()
    return sum(1 for r in records if r.status is ActionStatus.EXECUTED)
