"""The usage rater over stored records: the `UsageRater` the billing engine calls.

For a metered service and a stretch of one of its billing periods it reads the period's records
(`usage_records`, every shard), keeps those of the stretch's days, applies the allowance (the
contact's override for the meter first, else the price's: only usage beyond it is billable),
aggregates them as the price says and rates them with `billow.domain.pricing.rate`, the one
rating function the dry run, the view bill and `billow rate` call too. What the period's
invoices billed before (`Service.usage_billed`) is the engine's business: the rater rates the
period as it stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from billow.domain.allowances import billable
from billow.domain.calendar import Period
from billow.domain.contacts import Contact
from billow.domain.money import Money
from billow.domain.pricing import Allowance, UsageModel, UsagePrice, rate
from billow.domain.subscriptions import Service, Subscription
from billow.domain.usage import LateUsage, RatedUsage, UsageRecord, aggregate
from billow.services.context import TenantContext
from billow.services.ports import RatingPorts
from billow.services.usage.allowances import effective

EVENT_MODELS = frozenset({UsageModel.PERCENTAGE, UsageModel.GRADUATED_PERCENTAGE})
"""Models rated on each event's value rather than on an aggregated quantity."""


def rate_records(
    price: UsagePrice, currency: str, records: Sequence[UsageRecord], allowance: Allowance | None
) -> RatedUsage:
    """`records` (one billing period's, or part of it) rated as the price says. Records are taken
    in the order they happened (`at`, then id), whatever order storage gives them in: free events
    and a free amount are the first ones."""
    in_time = sorted(records, key=lambda r: (r.at, r.id))
    charged = billable(allowance, in_time) if allowance is not None else in_time
    if price.model in EVENT_MODELS:
        rated = rate(price, currency, events=[r.quantity for r in charged])
    else:
        rated = rate(price, currency, units=aggregate(price.aggregation, charged, price.property))
    return RatedUsage(rated.total, rated.quantity, len(records))


def service_period(subscription: Subscription, service: Service, period_start: date) -> Period:
    """The service's days of the billing period starting `period_start` (from its first charged day)."""
    period = subscription.schedule.period_containing(period_start)
    return Period(max(period.start, min(service.billing_start, period.end)), period.end)


class StoredUsage:
    """Rates a service's stored usage; one per billing call (it caches the contact it reads)."""

    def __init__(self, store: RatingPorts, ctx: TenantContext) -> None:
        self._store = store
        self._ctx = ctx
        self._contacts: dict[str, Contact | None] = {}

    def _contact(self, contact_id: str) -> Contact | None:
        if contact_id not in self._contacts:
            self._contacts[contact_id] = self._store.get_contact(self._ctx.scope, contact_id)
        return self._contacts[contact_id]

    def records(self, subscription: Subscription, service: Service, period: Period) -> list[UsageRecord]:
        """The service's records of the days `period` (inside one billing period)."""
        start = subscription.schedule.period_containing(period.start).start
        stored = self._store.usage_records(self._ctx.scope, subscription.contact_id, service.id, start)
        return [r for r in stored if period.start <= r.day < period.end]

    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        """The usage of `period` (days of one billing period) rated on the terms in force during
        that billing period (`Service.usage_terms`: the old ones for a period a change ended)."""
        in_force = service.usage_terms(subscription.schedule.period_containing(period.start))
        price = None if in_force is None else in_force[1].usage
        if price is None:
            return None
        records = self.records(subscription, service, period)
        if not records:
            return None
        allowance = effective(self._contact(subscription.contact_id), price.meter, price.allowance)
        return rate_records(price, subscription.currency, records, allowance)

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        if not service.meters_usage:
            return ()
        late: list[LateUsage] = []
        for marker in self._store.late_markers(self._ctx.scope, subscription.contact_id, service.id):
            period = service_period(subscription, service, marker.period_start)
            rated = self.rate(subscription, service, period)
            late.append(
                LateUsage(marker, period, rated or RatedUsage(Money.zero(subscription.currency), Decimal(0), 0))
            )
        return late


__all__ = ["RatingPorts", "StoredUsage", "rate_records", "service_period"]
