"""Reading usage back: a service's records and total for one billing period, and a contact's totals
per meter for the periods containing a day."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from billow.domain.calendar import Period
from billow.domain.errors import InvalidInput, NotFound
from billow.domain.pricing import Aggregation
from billow.domain.subscriptions import Service, Subscription
from billow.domain.usage import UsageRecord, aggregate
from billow.services.contacts import contact_today, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.ports import ContactStore, SubscriptionStore, UsageStore

MAX_PAGE = 1000


class RecordsPorts(UsageStore, SubscriptionStore, ContactStore, Protocol):
    """Reading usage: the contact's clock, its subscriptions and the records."""


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    subscription_id: str
    service_id: str
    meter: str
    aggregation: Aggregation
    period: Period
    total: Decimal
    """The meter's aggregation over every record of the period."""
    count: int
    records: list[UsageRecord]
    """One page of them (empty when only totals were asked for)."""
    next_cursor: str | None = None


def aggregation_of(service: Service) -> tuple[Aggregation, str | None]:
    """How a service's meter aggregates its records (and the property `unique_count` counts), as
    its usage price says."""
    price = service.terms.usage
    if price is None:
        return Aggregation.SUM, None
    return price.aggregation, price.property


def _metered(subscription: Subscription, service_id: str) -> Service:
    service = next((s for s in subscription.services if s.id == service_id), None)
    if service is None:
        raise NotFound(f"no service {service_id} in subscription {subscription.id}", field="service_id")
    if service.terms.meter is None:
        raise InvalidInput(
            f"service {service_id} has no meter: it has no usage", field="service_id", code="usage.not_metered"
        )
    return service


def _totals(service: Service, records: Iterable[UsageRecord]) -> tuple[Aggregation, Decimal, int]:
    aggregation, prop = aggregation_of(service)
    listed = list(records)
    return aggregation, aggregate(aggregation, listed, prop), len(listed)


def _day(on: date, name: str) -> date:
    """A day asked for, within the years a usage record can be of (a period around it is a date)."""
    if not 1970 <= on.year <= 9998:
        raise InvalidInput(f"{name} is a day of the years 1970 to 9998", field=name, code="usage.invalid_day")
    return on


def service_usage(
    store: RecordsPorts,
    ctx: TenantContext,
    clock: Clock,
    subscription_id: str,
    service_id: str,
    on: date | None,
    limit: int,
    cursor: str | None,
) -> ServiceUsage:
    """A service's usage in its billing period containing `on` (default: the contact's today):
    the total and count over the whole period, and a page of its records."""
    subscription = store.get_subscription(ctx.scope, subscription_id)
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}", field="subscription_id")
    service = _metered(subscription, service_id)
    day = _day(on, "period") if on is not None else contact_today(store, ctx, subscription.contact_id, clock)
    period = subscription.schedule.period_containing(day)
    every = store.usage_records(ctx.scope, subscription.contact_id, service.id, period.start)
    aggregation, total, count = _totals(service, every)
    page = store.usage_page(ctx.scope, subscription.contact_id, service.id, period.start, limit, cursor)
    meter = service.terms.meter or ""
    return ServiceUsage(subscription.id, service.id, meter, aggregation, period, total, count, page.items, page.cursor)


@dataclass(frozen=True, slots=True)
class MeterUsage:
    meter: str
    aggregation: Aggregation
    total: Decimal
    """The aggregation over the records of every service on the meter (each in its own period)."""
    count: int
    services: list[ServiceUsage]


def contact_usage(
    store: RecordsPorts, ctx: TenantContext, clock: Clock, contact_id: str, on: date | None
) -> list[MeterUsage]:
    """The contact's usage per meter, each metered service in its billing period containing `on`
    (default: the contact's today), by meter."""
    get_contact(store, ctx, contact_id)  # another tenant's or mode's contact is not found
    day = _day(on, "on") if on is not None else contact_today(store, ctx, contact_id, clock)
    by_meter: dict[str, list[tuple[ServiceUsage, Service, list[UsageRecord]]]] = {}
    for subscription in store.subscriptions_of(ctx.scope, contact_id):
        for service in subscription.services:
            meter = service.terms.meter
            if meter is None or day < service.start_date:
                continue
            period = subscription.schedule.period_containing(day)
            every = list(store.usage_records(ctx.scope, contact_id, service.id, period.start))
            aggregation, total, count = _totals(service, every)
            usage = ServiceUsage(subscription.id, service.id, meter, aggregation, period, total, count, [])
            by_meter.setdefault(meter, []).append((usage, service, every))
    found: list[MeterUsage] = []
    for meter, services in sorted(by_meter.items()):
        aggregation, prop = aggregation_of(services[0][1])
        every = [r for _, _, records in services for r in records]
        total = aggregate(aggregation, every, prop)
        found.append(MeterUsage(meter, aggregation, total, len(every), [u for u, _, _ in services]))
    return found
