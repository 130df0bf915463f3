"""The dry-run use case behind `billow bill preview` and `POST /billing/preview`.

Input and output are the documented public shape (docs/billing.md, "Dry run"): more output fields
may be added, the documented ones stay.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from pydantic import Field

from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.preview import PreviewTerms, dry_run
from billow.domain.rules import CalendarMode, weekday_number
from billow.services.inputs import Amount, BillingDay, Body, Currency

FRACTION_PLACES = 12
_TERMS_FIELDS = {"price", "setup_fee", "quantity", "trial_days", "billing_day", "threshold_day"}


class PreviewTermsInput(Body):
    cycle: Cycle
    billing_model: BillingModel
    calendar: CalendarMode = CalendarMode.ANNIVERSARY
    billing_day: int | str | None = Field(
        default=None, description="1-31, or a weekday name for weekly cycles; default: from the start date"
    )
    threshold_day: int | str | None = Field(default=None, description="same form as billing_day")
    price: Amount
    currency: Currency
    setup_fee: Amount | None = None
    trial_days: int = Field(default=0, ge=0, le=366)
    quantity: int = Field(default=1, ge=1, le=1_000_000)


class PreviewInput(Body):
    terms: PreviewTermsInput
    start: BillingDay
    end: BillingDay | None = Field(default=None, description="exclusive; null for an open-ended service")
    as_of: BillingDay


def _day(value: int | str | None, cycle: Cycle, field: str) -> int | None:
    if value is None:
        return None
    if cycle is Cycle.WEEK:
        if not isinstance(value, str):
            raise InvalidInput('a weekly cycle takes a weekday name, e.g. "friday"', field=field)
        return weekday_number(value, field)
    if not isinstance(value, int) or not 1 <= value <= 31:
        raise InvalidInput("a day of month is a number from 1 to 31", field=field)
    return value


def decimal_fraction(value: Fraction, places: int = FRACTION_PLACES) -> str:
    """An exact fraction as a decimal string with `places` places (rounded half-even past them)."""
    with localcontext() as context:
        context.prec = 60
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return str(quotient.quantize(Decimal(1).scaleb(-places)))


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
    )
    try:
        invoices = dry_run(terms, request.start, request.end, request.as_of)
    except InvalidInput as error:
        raise (error.under("terms") if error.field in _TERMS_FIELDS else error) from None
    lines = []
    for invoice in invoices:
        for line in invoice.lines:
            covered = line.period or invoice.period
            lines.append(
                {
                    "period_start": covered.start.isoformat(),
                    "period_end": covered.end.isoformat(),
                    "fraction": decimal_fraction(line.fraction),
                    "fraction_exact": f"{line.fraction.numerator}/{line.fraction.denominator}",
                    "amount": line.amount.amount_str(),
                    "currency": line.amount.currency,
                    "kind": line.kind,
                    "description": line.description,
                    "billing_date": invoice.billing_date.isoformat(),
                    "issue_date": invoice.issue_date.isoformat(),
                }
            )
    total = sum((i.total.minor for i in invoices), 0)
    return {"lines": lines, "total": Money(total, t.currency).amount_str(), "currency": t.currency}
