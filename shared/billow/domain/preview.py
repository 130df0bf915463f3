"""The dry run: every invoice line a billing run on an as-of date would create for a subscription
with one service and no earlier invoices, computed by the billing engine itself.

This is a public interface (see docs/billing.md): `billow bill preview` and `POST /billing/preview`
are thin wrappers around `dry_run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.pricing import UsagePrice, rate
from billow.domain.rules import BillingRules, CalendarMode, ServiceState
from billow.domain.subscriptions import Service, Subscription, SubscriptionKey
from billow.domain.timeline import steps
from billow.domain.usage import LateUsage, RatedUsage

PREVIEW_SUBSCRIPTION_ID, PREVIEW_SERVICE_ID, PREVIEW_PRODUCT_ID = "sub_preview", "svc_preview", "prod_preview"


@dataclass(frozen=True, slots=True)
class PreviewTerms:
    cycle: Cycle
    billing_model: BillingModel
    price: Money
    calendar: CalendarMode = CalendarMode.ANNIVERSARY
    billing_day: int | None = None
    """Day of month (1-31), or weekday (0 = Monday) for weekly cycles; default: from the start date."""
    threshold_day: int | None = None
    """Same form as `billing_day`."""
    setup_fee: Money | None = None
    trial_days: int = 0
    quantity: int = 1
    usage: UsagePrice | None = None


@dataclass(frozen=True, slots=True)
class PreviewUsage:
    """A period's usage in the dry run: the billable quantity (`units`) or each event's value
    (`events`, for percentage models), after aggregation and any allowance."""

    units: Decimal | None = None
    events: tuple[Decimal, ...] | None = None


class PreviewRater:
    """Rates each billing period's usage as the dry run's request gives it, with `rate`: the
    period's own entry (by its start), else the entry for every period, else none."""

    def __init__(self, usage: Mapping[date | None, PreviewUsage]) -> None:
        self._usage = usage

    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        price = service.terms.usage
        start = subscription.schedule.period_containing(period.start).start
        given = self._usage.get(start, self._usage.get(None))
        if price is None or given is None:
            return None
        rated = rate(price, subscription.currency, units=given.units, events=given.events)
        count = len(given.events) if given.events is not None else 0
        return RatedUsage(rated.total, rated.quantity, count)

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        return ()


def preview_subscription(terms: PreviewTerms, start: date, end: date | None) -> Subscription:
    if end is not None and end <= start:
        raise InvalidInput(f"end {end} must be after start {start}", field="end")
    weekly = terms.cycle is Cycle.WEEK
    default_day = start.weekday() if weekly else start.day
    day = default_day if terms.billing_day is None else terms.billing_day
    threshold = terms.threshold_day
    rules = BillingRules(
        calendar=terms.calendar,
        period_day=1 if weekly else day,
        period_weekday=day if weekly else 0,
        threshold_day=None if weekly else threshold,
        threshold_weekday=threshold if weekly else None,
    )
    price_terms = PriceTerms(
        "terms_preview",
        PREVIEW_PRODUCT_ID,
        terms.price,
        terms.cycle,
        terms.billing_model,
        setup_fee=terms.setup_fee,
        trial_days=terms.trial_days,
        usage=terms.usage,
    )
    price_terms.check_quantity(terms.quantity)
    charged_from = start + timedelta(days=terms.trial_days)
    if terms.calendar is CalendarMode.ANNIVERSARY and terms.billing_day is not None:
        schedule = BillingSchedule(terms.cycle, day, charged_from)
    else:
        schedule = rules.schedule_for(terms.cycle, charged_from)
    service = Service(
        id=PREVIEW_SERVICE_ID,
        order_id="ord_preview",
        product_id=PREVIEW_PRODUCT_ID,
        product_name="Preview",
        terms=price_terms,
        quantity=terms.quantity,
        state=ServiceState.DRAFT,
        start_date=start,
        end_date=end,
    )
    return Subscription(
        id=PREVIEW_SUBSCRIPTION_ID,
        contact_id="con_preview",
        key=SubscriptionKey.of(price_terms),
        schedule=schedule,
        services=(service,),
        created_on=start,
        rules=rules,
    )


def dry_run(
    terms: PreviewTerms,
    start: date,
    end: date | None,
    as_of: date,
    usage: Mapping[date | None, PreviewUsage] | None = None,
) -> list[InvoiceDraft]:
    """Every invoice (with its lines) a billing run on `as_of` would create, oldest first; usage
    of each billing period as `usage` gives it (by period start; the None key: every period)."""
    subscription = preview_subscription(terms, start, end)
    for n, period_start in enumerate(usage or {}):
        if period_start is not None and subscription.schedule.period_containing(period_start).start != period_start:
            first = subscription.schedule.period_containing(period_start).start
            raise InvalidInput(
                f"{period_start} is not the first day of a billing period (its period starts {first})",
                field=f"usage[{n}].period_start",
                code="usage.invalid_preview",
            )
    rater = PreviewRater(usage or {})
    return [step.invoice for step in steps(subscription, as_of, rater=rater) if step.invoice is not None]
