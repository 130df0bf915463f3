"""The dry-run use case behind `billow bill preview` and `POST /billing/preview`.

Input and output are the documented public shape (docs/billing.md, "Dry run"): more output fields
may be added, the documented ones stay.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import Field

from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.preview import (
    PREVIEW_PRODUCT_ID,
    PREVIEW_SERVICE_ID,
    PREVIEW_SUBSCRIPTION_ID,
    PreviewTerms,
    PreviewUsage,
    dry_run,
)
from billow.domain.pricing import parse_usage_price
from billow.domain.rules import CalendarMode, weekday_number
from billow.domain.usage import parse_quantity
from billow.services.inputs import Amount, BillingDay, Body, Currency, FromString
from billow.services.views import draft, money

_TERMS_FIELDS = {"price", "setup_fee", "quantity", "trial_days", "billing_day", "threshold_day"}


class PreviewTermsInput(Body):
    cycle: FromString[Cycle]
    billing_model: FromString[BillingModel]
    calendar: FromString[CalendarMode] = CalendarMode.ANNIVERSARY
    billing_day: int | str | None = Field(
        default=None,
        description="1-31; for weekly cycles a weekday, 0 (Monday)-6 or its name; default: from the start date",
    )
    threshold_day: int | str | None = Field(default=None, description="same form as billing_day")
    price: Amount
    currency: Currency
    setup_fee: Amount | None = None
    trial_days: int = Field(default=0, ge=0, le=366)
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    usage: dict[str, Any] | None = Field(
        default=None, description='the usage price, as on price terms (docs/billing.md, "Usage pricing")'
    )


class PreviewEvent(Body):
    value: str = Field(description="the event's value, a decimal string")


class PreviewUsageInput(Body):
    period_start: BillingDay | None = Field(
        default=None, description="the billing period this usage is for; omitted: every period not listed"
    )
    units: str | None = Field(default=None, description="the period's billable quantity (decimal string)")
    events: list[PreviewEvent] | None = Field(
        default=None,
        max_length=10_000,
        description='each event, in the order they happened: {"value": "<decimal string>"} (percentage models), '
        "as `billow rate` takes them",
    )


class PreviewInput(Body):
    terms: PreviewTermsInput
    start: BillingDay
    end: BillingDay | None = Field(default=None, description="exclusive; null for an open-ended service")
    as_of: BillingDay
    usage: list[PreviewUsageInput] = Field(
        default_factory=list, max_length=120, description="usage per billing period (metered terms)"
    )


def _day(value: int | str | None, cycle: Cycle, field: str) -> int | None:
    if value is None:
        return None
    if cycle is Cycle.WEEK:
        return weekday_number(value, field)
    if not isinstance(value, int) or not 1 <= value <= 31:
        raise InvalidInput("a day of month is a number from 1 to 31", field=field)
    return value


def _usage(given: list[PreviewUsageInput]) -> dict[date | None, PreviewUsage]:
    usage: dict[date | None, PreviewUsage] = {}
    for n, u in enumerate(given):
        field = f"usage[{n}]"
        if (u.units is None) == (u.events is None):
            raise InvalidInput("give a period's usage as units or as events", field=field, code="usage.invalid_preview")
        if u.period_start in usage:
            raise InvalidInput("one entry per period", field=f"{field}.period_start", code="usage.invalid_preview")
        units = None if u.units is None else parse_quantity(u.units, field=f"{field}.units")
        events = None
        if u.events is not None:
            events = tuple(parse_quantity(e.value, field=f"{field}.events[{i}].value") for i, e in enumerate(u.events))
        usage[u.period_start] = PreviewUsage(units, events)
    return usage


def preview(request: PreviewInput) -> dict[str, Any]:
    t = request.terms
    terms = PreviewTerms(
        cycle=t.cycle,
        billing_model=t.billing_model,
        price=Money.parse(t.price, t.currency, field="terms.price", currency_field="terms.currency"),
        calendar=t.calendar,
        billing_day=_day(t.billing_day, t.cycle, "terms.billing_day"),
        threshold_day=_day(t.threshold_day, t.cycle, "terms.threshold_day"),
        setup_fee=None
        if t.setup_fee is None
        else Money.parse(t.setup_fee, t.currency, field="terms.setup_fee", currency_field="terms.currency"),
        trial_days=t.trial_days,
        quantity=t.quantity,
        usage=None if t.usage is None else parse_usage_price(t.usage, t.currency, field="terms.usage"),
    )
    try:
        invoices = dry_run(terms, request.start, request.end, request.as_of, _usage(request.usage))
    except InvalidInput as error:
        raise (error.under("terms") if error.field in _TERMS_FIELDS else error) from None
    # Ids the dry run makes up (its subscription, service and product) are not shown.
    made_up = (PREVIEW_SUBSCRIPTION_ID, PREVIEW_SERVICE_ID, PREVIEW_PRODUCT_ID)
    total = Money(sum((i.total.minor for i in invoices), 0), t.currency)
    return {"invoices": [draft(i, None, made_up) for i in invoices], "total": money(total)}
