"""Usage in the billing engine: how recorded usage of a billing period becomes invoice lines.

Usage is always billed in arrears. For every metered service (price terms with a `meter`), the
billing engine asks a `UsageRater` for the usage of each billing period once that period has
ended, rated as it stands (`RatedUsage`), and bills what the period's earlier invoices have not:
rated total minus `Service.usage_billed` for that period (charge limits invoice usage before the
period ends: progressive invoices). The period is recorded on the service
(`usage_billed_through`, and what was billed in `usage_billed`) in the same atomic write as the
invoice, so each period's usage is billed exactly once. Usage recorded for a period already billed
(late usage) leaves a marker the rater reports (`late`): the next usage invoice of the service
bills the difference as its own line naming the period, and the billing step clears the marker.
`NO_USAGE` rates every period at nothing (the engine's tests and the quotation of a product).

Usage records (`UsageRecord`) are what other systems submit (`POST /usage`): each belongs to one
metered service and to the billing period of that service containing its day, and `aggregate`
turns a period's records into the quantity a meter's aggregation gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import TYPE_CHECKING, Protocol

from billow.domain.allowances import billable as billable  # the billable overage: see that module
from billow.domain.calendar import Period
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.pricing import Aggregation

if TYPE_CHECKING:
    from billow.domain.subscriptions import Service, Subscription


@dataclass(frozen=True, slots=True)
class RatedUsage:
    """A period's usage rated as it stands: what all the period's invoices must add up to."""

    total: Money
    """Rounded once to the currency's minor unit (the pricing rule)."""
    quantity: Decimal
    """The aggregated quantity rated (after the allowance)."""
    records: int
    unit_price: Money | None = None
    """The price of one unit when the model has a single one (per unit), for the line."""


@dataclass(frozen=True, slots=True)
class BilledUsage:
    """What the invoices so far billed for one billing period's usage of a service."""

    period_start: date
    amount: Money
    quantity: Decimal
    records: int
    progressive: int = 0
    """How many immediate invoices (charge limits) billed some of this period before its end."""


KEPT_BILLED_PERIODS = 13
"""`Service.usage_billed` keeps the open period and this many billed periods: usage recorded
later than that for an older period is not billed (docs/billing.md, "Late usage")."""


@dataclass(frozen=True, slots=True)
class LateMarker:
    """Usage was recorded for a billed period: the marker to clear once the difference is billed.
    `token` is what the clear is conditioned on (a newer late record changes it)."""

    service_id: str
    period_start: date
    token: int = 0


@dataclass(frozen=True, slots=True)
class LateUsage:
    marker: LateMarker
    period: Period
    """The service's days of that billing period."""
    rated: RatedUsage


class UsageRater(Protocol):
    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        """The usage of the service's days `period` (inside one billing period), None if none."""
        ...

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        """Billed periods of the service that got usage since, each rated as it stands now."""
        ...


class _NoUsage:
    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        return None

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        return ()


def billed_for(billed: Sequence[BilledUsage], period_start: date) -> BilledUsage | None:
    return next((b for b in billed if b.period_start == period_start), None)


def with_billed(billed: Sequence[BilledUsage], entry: BilledUsage) -> tuple[BilledUsage, ...]:
    """`billed` with `entry` for its period, bounded: the newest `KEPT_BILLED_PERIODS` + 1."""
    kept = sorted((*(b for b in billed if b.period_start != entry.period_start), entry), key=lambda b: b.period_start)
    return tuple(kept[-(KEPT_BILLED_PERIODS + 1) :])


NO_USAGE: UsageRater = _NoUsage()


# -- usage records ------------------------------------------------------------------------------
RECORD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""The caller's record id: its idempotency key (a record id seen before is a duplicate)."""
MAX_QUANTITY_DECIMALS = 12
"""Decimal places of a quantity or value: the same as a usage price's, so a unit price times a
quantity is exact."""
MAX_QUANTITY_DIGITS = 18
"""Digits before the point of a quantity or value (10^18 - 1 at most: far beyond any meter)."""
MAX_PROPERTIES = 20
MAX_PROPERTY_KEY = 40
MAX_PROPERTY_VALUE = 100
"""Properties are at most 20 pairs of short strings: a record stays well under 1 KB, one write
unit (docs/scale.md)."""
_QUANTITY = re.compile(rf"([0-9]{{1,{MAX_QUANTITY_DIGITS}}})(?:\.([0-9]+))?")  # ASCII digits only


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One accepted usage record, as stored."""

    id: str
    """The caller's record id (1..128 characters of [A-Za-z0-9._:-])."""
    subscription_id: str
    service_id: str
    contact_id: str
    meter: str
    at: datetime
    """When it happened (aware)."""
    day: date
    """`at` in the tenant's time zone: the contact's day, which decides the period."""
    quantity: Decimal
    """The quantity, or the event's value for percentage models (never negative)."""
    properties: Mapping[str, str]
    period_start: date
    """Start of the service's billing period containing `day`: the period it belongs to."""
    received_at: datetime
    """The contact's now when it was accepted (its test clock's time if it has one)."""

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.received_at.tzinfo is None:
            raise ValueError("usage record instants must be timezone-aware")


def record_id(value: object, *, field: str = "id") -> str:
    """A record id as given, or `usage.invalid_id`."""
    if not isinstance(value, str) or not RECORD_ID.fullmatch(value):
        raise InvalidInput(
            "a record id is 1 to 128 characters of letters, digits and . _ : -",
            field=field,
            code="usage.invalid_id",
        )
    return value


def parse_quantity(value: object, *, field: str = "quantity") -> Decimal:
    """A quantity or value from its decimal string: digits, optionally a point and at most 12
    decimals, never negative, never a float or an exponent (`usage.invalid_quantity`)."""
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group(2) or "") > MAX_QUANTITY_DECIMALS:
        raise InvalidInput(
            f"{field} is a decimal string of at most {MAX_QUANTITY_DIGITS} digits before the point and "
            f'{MAX_QUANTITY_DECIMALS} after it, never negative, e.g. "12.5"',
            field=field,
            code="usage.invalid_quantity",
        )
    return Decimal(value)  # type: ignore[arg-type]  # matched: a str


def parse_properties(value: object, *, field: str = "properties") -> dict[str, str]:
    """Free properties: at most 20 pairs of strings (`usage.invalid_properties`)."""
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_PROPERTIES
        or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and 0 < len(k) <= MAX_PROPERTY_KEY
            and len(v) <= MAX_PROPERTY_VALUE
            for k, v in value.items()
        )
    ):
        raise InvalidInput(
            f"properties are at most {MAX_PROPERTIES} pairs of strings (names 1 to {MAX_PROPERTY_KEY} "
            f"characters, values at most {MAX_PROPERTY_VALUE})",
            field=field,
            code="usage.invalid_properties",
        )
    return dict(value)


_EXACT_SUM = Context(prec=100, traps=[Inexact, InvalidOperation])
"""Sums of quantities are exact: a rounded sum would be refused (`Inexact`), never billed."""


def aggregate(aggregation: Aggregation, records: Iterable[UsageRecord], property: str | None = None) -> Decimal:
    """The quantity a meter's aggregation makes of a period's records: `sum` of the quantities,
    `count` of the records, `max` quantity, `unique_count` of distinct values of `property` (records
    without it are not counted), `latest` = the quantity of the record with the greatest `at`
    (ties: the greatest id). No records: 0."""
    if aggregation == Aggregation.SUM:
        with localcontext(_EXACT_SUM):  # 18 + 12 digits per record: beyond the default 28
            return sum((r.quantity for r in records), Decimal(0))
    if aggregation == Aggregation.COUNT:
        return Decimal(sum(1 for _ in records))
    if aggregation == Aggregation.MAX:
        return max((r.quantity for r in records), default=Decimal(0))
    if aggregation == Aggregation.UNIQUE_COUNT:
        if property is None:
            raise ValueError("unique_count counts the distinct values of a property: name it")
        return Decimal(len({r.properties[property] for r in records if property in r.properties}))
    if aggregation == Aggregation.LATEST:
        last = max(records, key=lambda r: (r.at, r.id), default=None)
        return Decimal(0) if last is None else last.quantity
    raise ValueError(f"unknown aggregation {aggregation!r}")
