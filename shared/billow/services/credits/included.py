"""Included credits (docs/credits.md, "Included credits"): the credits a plan's price terms include
each billing cycle, granted to the contact's wallet for the cycle it is in.

They are granted when the wallet is next used in that cycle (a consumption, a staff grant) and
shown by the balance before that: `due` names the grants the contact's services make for the
period containing its today, and `change_wallet` books those not booked yet, in the same
transaction as the operation. A grant's id is derived from the service, its price terms and the
period (`inc_<service>_<terms>_<period start>`), so each is booked once whatever the races; it
expires at the period's end (midnight in the tenant's zone, on the contact's clock), so what is
left is gone and the next period's grant starts afresh: 1,000 included, 800 used, 1,000 next
cycle, never 1,200. The subscription's schedule says which period the contact's today is in,
whatever the billing run has done yet.

Which services grant: effective ones whose start is on or before today and whose end (if any) is
after it, a service in its trial included, and those paused, deactivated or cancelled during the
period (they were effective in it: the period's credits were due, and stay); draft ones, and
those stopped before the period began, grant nothing. A change of price terms mid-cycle grants
the new terms' credits for that cycle beside what is left of the old ones (at most one grant per
terms and period); credits are never prorated."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Protocol

from billow.domain.calendar import Period, tenant_zone
from billow.domain.credits import Grant, GrantKind, Wallet, included_grant
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service
from billow.services.contacts import ContactTime, contact_time
from billow.services.context import Clock, TenantContext
from billow.services.ports import ContactStore, SubscriptionStore


def covered(wallet: Wallet, given: Grant, now: datetime) -> bool:
    """Whether the wallet holds an included grant of the same service and terms, live at `now`,
    for days of `given`'s period: a billing day changed mid-cycle shifts the periods, and the cycle
    it is in was granted already (the shifted period is granted once that grant has expired)."""
    if given.kind is not GrantKind.INCLUDED or given.period is None:
        return False
    series = given.id.rsplit("_", 1)[0]  # inc_<service>_<terms>
    return any(
        h.grant.id != given.id
        and h.grant.live(now)
        and h.grant.id.rsplit("_", 1)[0] == series
        and h.grant.period is not None
        and h.grant.period.start < given.period.end
        and given.period.start < h.grant.period.end
        for h in wallet.holdings
    )


STOPPED = frozenset({ServiceState.PAUSED, ServiceState.NOT_EFFECTIVE, ServiceState.CANCELLED})


def _effective_in(service: Service, period: Period, today: date) -> bool:
    """Whether the service was effective on some day of `period` up to today: effective now (and
    started), or paused, deactivated or cancelled since a day after the period's start having
    started before that (its credits for the period were due, booked or not: what the balance
    showed never vanishes with a pause)."""
    if service.start_date > today:
        return False
    if service.state is ServiceState.EFFECTIVE:
        ended = service.end_date is not None and service.end_date <= today
        expired = service.term_end is not None and not service.auto_renew and service.term_end <= today
        return not ended and not expired
    since = service.state_since
    return service.state in STOPPED and since is not None and since > period.start and service.start_date < since


class IncludedPorts(ContactStore, SubscriptionStore, Protocol):
    """The contact's clock and its subscriptions."""


def moments(
    store: IncludedPorts, ctx: TenantContext, contact_id: str, clock: Clock, first: ContactTime
) -> Callable[[], tuple[datetime, list[Grant]]]:
    """The contact's now and the grants due then, for each attempt of a wallet change: `first` (read
    already) for the first, the clock read again for each retry."""
    times = [first]

    def moment() -> tuple[datetime, list[Grant]]:
        now = times.pop() if times else contact_time(store, ctx, contact_id, clock)
        return now.now, due(store, ctx, contact_id, now)

    return moment


def due(store: SubscriptionStore, ctx: TenantContext, contact_id: str, now: ContactTime) -> list[Grant]:
    """The included grants of the period containing the contact's today, one per service and terms."""
    zone = tenant_zone(ctx.settings.timezone)
    today = now.today
    grants: list[Grant] = []
    for subscription in store.subscriptions_of(ctx.scope, contact_id):
        for service in subscription.services:
            credits = service.terms.included_credits
            period = subscription.schedule.period_containing(today)
            if not credits or not _effective_in(service, period, today):
                continue
            first = max(period.start, service.start_date)
            grants.append(
                included_grant(
                    id=f"inc_{service.id}_{service.terms.id}_{period.start.isoformat()}",
                    credits=credits,
                    period=period,
                    zone=zone,
                    granted_at=min(datetime.combine(first, time(0), zone), now.now),
                    source=f"{subscription.id}/{service.id}",
                )
            )
    return grants
