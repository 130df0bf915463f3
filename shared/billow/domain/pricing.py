"""Usage pricing: how a period's usage becomes an amount (pure).

A usage price (`UsagePrice`, on price terms as `PriceTerms.usage`) names the meter, how its records
aggregate, and one pricing model:

- `per_unit`: every billable unit costs `unit_price`.
- `graduated`: the units fill the tiers in order; each tier charges its own units at its
  `unit_price`, plus its `flat_price` once if any unit falls in it (Stripe's "graduated").
- `volume`: the tier the whole quantity falls in prices every unit, plus that tier's `flat_price`
  (Stripe's "volume").
- `package`: units are sold in packages of `size` at `price` each; a started package is charged
  whole (`round: "up"`, the default) or only complete packages are (`round: "down"`).
- `percentage`: each event pays `rate` percent of its value plus `fixed_price`, clamped to
  `min_per_event` / `max_per_event`.
- `graduated_percentage`: the events' values add up; each tier charges `rate` percent of the value
  in it, plus its `flat_price` once if any value falls in it.

Tiers: `up_to` is inclusive (a tier holds the quantities above the previous tier's `up_to` up to
and including its own), ascending, and only the last tier is open (`up_to: null`, or Stripe's
`"inf"`, answered as null). Quantities may be
fractional: 1000.5 units with a first tier up to 1000 put 0.5 units in the second tier.

Free usage comes off before pricing: `free_units` for the unit-valued models (per_unit, graduated,
volume, package: the tiers then apply to the units beyond them); `free_events` and `free_amount` for
the event-valued models (percentage, graduated_percentage). `free_events`: the first N events (in the
order given, which is the order they happened) are free. `free_amount`: the first events' values, up
to that amount in total, are free; the event that straddles it pays on the part of its value beyond
it (its `fixed_price` too, and the minimum and maximum apply to that charge). With both, usage stops
being free at whichever limit is reached first. An event that is wholly free pays nothing at all.

Zero billable usage costs nothing: no tier's flat price is charged when no unit falls in it.

Arithmetic is exact (decimal, never a float): prices carry up to 12 decimal places, the breakdown
is exact, and the total is rounded ONCE to the currency's minor unit by Billow's one rounding rule
(half away from zero, `billow.domain.money.round_half_away_from_zero`).

`rate` is the one place usage is priced: the billing run, the dry run, the view bill and the
`billow rate` command call it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded, localcontext
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal, TypeVar

from billow.domain.errors import InvalidInput
from billow.domain.money import MAX_WHOLE_DIGITS, Money, currency_exponent, round_half_away_from_zero

MAX_PRICE_DECIMALS = 12
"""Decimal places a unit price, a flat price, a rate or a quantity in a usage price may have."""
METER_PATTERN = r"^[a-z0-9_]+$"
METER_MAX_LENGTH = 64
MAX_TIERS = 20
PROPERTY_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

_DECIMAL = re.compile(rf"-?[0-9]{{1,{MAX_WHOLE_DIGITS}}}(?:\.([0-9]+))?")
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_EXACT = Context(prec=200, traps=[Inexact, Rounded, InvalidOperation, Overflow])
"""Every computation here is exact: a result that would need rounding raises instead."""
_E = TypeVar("_E", bound=StrEnum)


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


class UsageModel(StrEnum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"

    @property
    def event_valued(self) -> bool:
        """Priced on each event's value (`events`), not on a quantity of units."""
        return self in (UsageModel.PERCENTAGE, UsageModel.GRADUATED_PERCENTAGE)

    @property
    def tiered(self) -> bool:
        return self in (UsageModel.GRADUATED, UsageModel.VOLUME, UsageModel.GRADUATED_PERCENTAGE)


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: the quantities above the previous tier's `up_to` up to and including its own
    (None: no upper bound, the last tier only)."""

    up_to: Decimal | None
    unit_price: Decimal = _ZERO
    flat_price: Decimal = _ZERO
    rate: Decimal = _ZERO
    """Percent of the value in the tier ("2.5" = 2.5 %), graduated_percentage only."""


@dataclass(frozen=True, slots=True)
class Package:
    size: Decimal
    price: Decimal
    round: Literal["up", "down"] = "up"


@dataclass(frozen=True, slots=True)
class Percentage:
    rate: Decimal
    """Percent of each event's value ("2.5" = 2.5 %)."""
    fixed_price: Decimal = _ZERO
    """Added to each charged event."""
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None


class Beyond(StrEnum):
    REFUSE = "refuse"  # usage beyond the allowance is refused at submission (409)
    OVERAGE = "overage"  # usage beyond the allowance is billed by the usage price


@dataclass(frozen=True, slots=True)
class Allowance:
    """Included usage, per record, per day and per billing cycle (at least one window)."""

    per_record: Decimal | None = None
    per_day: Decimal | None = None
    per_cycle: Decimal | None = None
    beyond: Beyond = Beyond.OVERAGE


@dataclass(frozen=True, slots=True)
class ChargeLimit:
    """The most unbilled usage a service may run up (an amount in the terms' currency, a count of
    records, or both) before an immediate invoice bills it."""

    amount: Decimal | None = None
    records: int | None = None


@dataclass(frozen=True, slots=True)
class UsagePrice:
    meter: str
    aggregation: Aggregation
    model: UsageModel
    property: str | None = None
    """unique_count counts the distinct values of this record property."""
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package: Package | None = None
    percentage: Percentage | None = None
    free_units: Decimal = _ZERO
    free_events: int = 0
    free_amount: Decimal = _ZERO
    allowance: Allowance | None = None
    charge_limit: ChargeLimit | None = None


@dataclass(frozen=True, slots=True)
class TierCharge:
    """One row of the breakdown, exact (unrounded). `amount` is `units` * `unit_price` (or `rate`
    percent of `units` for the percentage models) + `flat_price`, except where a percentage
    event's minimum or maximum applied (the amount is then what the events were charged)."""

    tier: int
    units: Decimal
    unit_price: Decimal
    flat_price: Decimal
    amount: Decimal
    rate: Decimal = _ZERO


@dataclass(frozen=True, slots=True)
class Rated:
    quantity: Decimal
    """The billable quantity after free units; for the event-valued models, the count of events
    charged (after free events / free amount)."""
    exact: Decimal
    """The unrounded total in major units."""
    total: Money
    """`exact` rounded once to the currency's minor unit (half away from zero)."""
    breakdown: tuple[TierCharge, ...]


# -- parsing ---------------------------------------------------------------------------------------


def _refuse(message: str, field: str, *, code: str) -> InvalidInput:
    return InvalidInput(message, field=field, code=code)


def _object(raw: Any, field: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _refuse(f"{field} must be an object", field, code="usage.not_an_object")
    for key in raw:
        if key not in allowed:
            name = f"{field}.{key}"
            raise _refuse(
                f"unknown field {name} (allowed here: {', '.join(allowed)})", name, code="usage.unknown_field"
            )
    return raw


def parse_decimal(raw: Any, field: str, *, places: int = MAX_PRICE_DECIMALS) -> Decimal:
    """A non-negative decimal from its exact string ("0.000125"): never from a JSON number (already
    a binary float), no exponent, sign, spaces or underscores, at most `places` decimal places."""
    if not isinstance(raw, str):
        raise _refuse(
            f'{field} must be a decimal string, e.g. "0.10" (never a JSON number)', field, code="usage.not_a_decimal"
        )
    match = _DECIMAL.fullmatch(raw)
    if match is None:
        raise _refuse(
            f"{field} is not a decimal: digits, optionally a point and decimals (no exponent, spaces, "
            f"underscores or plus sign; at most {MAX_WHOLE_DIGITS} digits before the point)",
            field,
            code="usage.not_a_decimal",
        )
    if raw.startswith("-"):
        raise _refuse(f"{field} must not be negative", field, code="usage.negative")
    if len(match.group(1) or "") > places:
        raise _refuse(f"{field} has at most {places} decimal places", field, code="usage.too_many_decimals")
    return Decimal(raw)


def _opt_decimal(raw: Mapping[str, Any], key: str, field: str) -> Decimal | None:
    value = raw.get(key)
    return None if value is None else parse_decimal(value, f"{field}.{key}")


def _positive(value: Decimal, field: str) -> Decimal:
    if value <= 0:
        raise _refuse(f"{field} must be more than 0", field, code="usage.not_positive")
    return value


MAX_COUNT = 10**12
"""The largest event or record count a usage price takes (free_events, charge_limit.records)."""


def _integer(raw: Any, field: str, *, minimum: int) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise _refuse(f"{field} must be a JSON integer", field, code="usage.not_an_integer")
    if not minimum <= raw <= MAX_COUNT:
        raise _refuse(f"{field} is {minimum} to {MAX_COUNT:,}", field, code="usage.out_of_range")
    return raw


def _choice(raw: Any, kind: type[_E], field: str) -> _E:
    choices = ", ".join(e.value for e in kind)
    if not isinstance(raw, str):
        raise _refuse(f"{field} must be one of: {choices}", field, code="usage.invalid_choice")
    try:
        return kind(raw)
    except ValueError:
        raise _refuse(
            f"{field} must be one of: {choices} (got '{raw[:40]}')", field, code="usage.invalid_choice"
        ) from None


_TIER_FIELDS = {True: ("up_to", "rate", "flat_price"), False: ("up_to", "unit_price", "flat_price")}


def _tiers(raw: Any, model: UsageModel, field: str) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw:
        raise _refuse(f"{field} must be a list of at least one tier", field, code="usage.tiers_required")
    if len(raw) > MAX_TIERS:
        raise _refuse(f"{field} has at most {MAX_TIERS} tiers", field, code="usage.too_many_tiers")
    percentage = model is UsageModel.GRADUATED_PERCENTAGE
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        name = f"{field}[{i}]"
        t = _object(item, name, _TIER_FIELDS[percentage])
        if "up_to" not in t:
            raise _refuse(
                f"{name}.up_to is required (null on the last tier)", f"{name}.up_to", code="usage.field_required"
            )
        last = i == len(raw) - 1
        open_ended = t["up_to"] is None or t["up_to"] == "inf"  # "inf": Stripe's spelling of null
        up_to = None if open_ended else _positive(parse_decimal(t["up_to"], f"{name}.up_to"), f"{name}.up_to")
        if up_to is None and not last:
            raise _refuse(
                f"{name}.up_to is null: only the last tier is open-ended",
                f"{name}.up_to",
                code="usage.tier_open_not_last",
            )
        if up_to is not None and last:
            raise _refuse(
                f"{name}.up_to must be null: the last tier takes every quantity beyond the others",
                f"{name}.up_to",
                code="usage.last_tier_bounded",
            )
        previous = tiers[-1].up_to if tiers else None
        if up_to is not None and previous is not None and up_to <= previous:
            raise _refuse(
                f"{name}.up_to must be more than the previous tier's ({previous}): tiers ascend",
                f"{name}.up_to",
                code="usage.tiers_not_ascending",
            )
        flat = _opt_decimal(t, "flat_price", name) or _ZERO
        if percentage:
            if t.get("rate") is None:
                raise _refuse(f"{name}.rate is required", f"{name}.rate", code="usage.field_required")
            tiers.append(Tier(up_to, flat_price=flat, rate=_percent(t["rate"], f"{name}.rate")))
        else:
            if t.get("unit_price") is None:
                raise _refuse(f"{name}.unit_price is required", f"{name}.unit_price", code="usage.field_required")
            tiers.append(Tier(up_to, unit_price=parse_decimal(t["unit_price"], f"{name}.unit_price"), flat_price=flat))
    return tuple(tiers)


def _percent(raw: Any, field: str) -> Decimal:
    rate = parse_decimal(raw, field)
    if rate > _HUNDRED:
        raise _refuse(f"{field} is a percentage: 0 to 100", field, code="usage.rate_out_of_range")
    return rate


def _package(raw: Any, field: str) -> Package:
    p = _object(raw, field, ("size", "price", "round"))
    for key in ("size", "price"):
        if p.get(key) is None:
            raise _refuse(f"{field}.{key} is required", f"{field}.{key}", code="usage.field_required")
    size = _positive(parse_decimal(p["size"], f"{field}.size"), f"{field}.size")
    rounding = p.get("round", "up")
    if rounding not in ("up", "down"):
        raise _refuse(f"{field}.round must be up or down", f"{field}.round", code="usage.invalid_choice")
    return Package(size, parse_decimal(p["price"], f"{field}.price"), rounding)


def _percentage(raw: Any, field: str) -> Percentage:
    p = _object(raw, field, ("rate", "fixed_price", "min_per_event", "max_per_event"))
    if p.get("rate") is None:
        raise _refuse(f"{field}.rate is required", f"{field}.rate", code="usage.field_required")
    low, high = _opt_decimal(p, "min_per_event", field), _opt_decimal(p, "max_per_event", field)
    if low is not None and high is not None and low > high:
        raise _refuse(
            f"{field}.min_per_event must not exceed max_per_event", f"{field}.min_per_event", code="usage.min_above_max"
        )
    fixed = _opt_decimal(p, "fixed_price", field) or _ZERO
    return Percentage(_percent(p["rate"], f"{field}.rate"), fixed, low, high)


def parse_allowance(raw: Any, field: str = "allowance") -> Allowance:
    """An allowance from its JSON (`{"per_record", "per_day", "per_cycle", "beyond"}`), at least
    one window; quantities are decimal strings."""
    a = _object(raw, field, ("per_record", "per_day", "per_cycle", "beyond"))
    windows = {key: _opt_decimal(a, key, field) for key in ("per_record", "per_day", "per_cycle")}
    if all(w is None for w in windows.values()):
        raise _refuse(
            f"{field} needs at least one window: per_record, per_day or per_cycle", field, code="usage.allowance_empty"
        )
    beyond = Beyond.OVERAGE if a.get("beyond") is None else _choice(a["beyond"], Beyond, f"{field}.beyond")
    return Allowance(windows["per_record"], windows["per_day"], windows["per_cycle"], beyond)


def _charge_limit(raw: Any, currency: str, field: str) -> ChargeLimit:
    c = _object(raw, field, ("amount", "records"))
    amount = None
    if c.get("amount") is not None:
        name = f"{field}.amount"
        parsed = parse_decimal(c["amount"], name, places=currency_exponent(currency))
        amount = _positive(parsed, name)
    records = None if c.get("records") is None else _integer(c["records"], f"{field}.records", minimum=1)
    if amount is None and records is None:
        raise _refuse(f"{field} needs an amount, a record count or both", field, code="usage.charge_limit_empty")
    return ChargeLimit(amount, records)


_FIELDS = (
    "meter",
    "aggregation",
    "model",
    "property",
    "unit_price",
    "tiers",
    "package",
    "percentage",
    "free_units",
    "free_events",
    "free_amount",
    "allowance",
    "charge_limit",
)
_MODEL_FIELDS: dict[UsageModel, frozenset[str]] = {
    UsageModel.PER_UNIT: frozenset({"unit_price", "free_units"}),
    UsageModel.GRADUATED: frozenset({"tiers", "free_units"}),
    UsageModel.VOLUME: frozenset({"tiers", "free_units"}),
    UsageModel.PACKAGE: frozenset({"package", "free_units"}),
    UsageModel.PERCENTAGE: frozenset({"percentage", "free_events", "free_amount"}),
    UsageModel.GRADUATED_PERCENTAGE: frozenset({"tiers", "free_events", "free_amount"}),
}
"""The model-specific fields each model takes (the others are refused)."""
_REQUIRED: dict[UsageModel, str] = {
    UsageModel.PER_UNIT: "unit_price",
    UsageModel.GRADUATED: "tiers",
    UsageModel.VOLUME: "tiers",
    UsageModel.PACKAGE: "package",
    UsageModel.PERCENTAGE: "percentage",
    UsageModel.GRADUATED_PERCENTAGE: "tiers",
}


def parse_usage_price(raw: Mapping[str, Any], currency: str, *, field: str = "usage") -> UsagePrice:
    """A usage price from its JSON, strictly: unknown fields, JSON numbers for decimals, negative
    prices, more than 12 decimal places, fields the model does not take, tiers out of order are
    refused (`InvalidInput`, `usage.*` codes, the field named as `usage.tiers[1].up_to`)."""
    currency_exponent(currency)
    u = _object(raw, field, _FIELDS)
    for key in ("meter", "aggregation", "model"):
        if u.get(key) is None:
            raise _refuse(f"{field}.{key} is required", f"{field}.{key}", code="usage.field_required")
    meter = u["meter"]
    if not isinstance(meter, str) or len(meter) > METER_MAX_LENGTH or not re.fullmatch(METER_PATTERN, meter):
        raise _refuse(
            f"{field}.meter is 1 to {METER_MAX_LENGTH} characters a-z, 0-9 and _",
            f"{field}.meter",
            code="usage.invalid_meter",
        )
    aggregation = _choice(u["aggregation"], Aggregation, f"{field}.aggregation")
    model = _choice(u["model"], UsageModel, f"{field}.model")
    specific = set().union(*_MODEL_FIELDS.values())
    for key in sorted(specific - _MODEL_FIELDS[model]):
        if u.get(key) is not None:
            raise _refuse(
                f"{field}.{key} does not apply to the {model.value} model",
                f"{field}.{key}",
                code="usage.field_not_allowed",
            )
    required = _REQUIRED[model]
    if u.get(required) is None:
        raise _refuse(
            f"{field}.{required} is required by the {model.value} model",
            f"{field}.{required}",
            code="usage.field_required",
        )
    prop = u.get("property")
    if aggregation is Aggregation.UNIQUE_COUNT:
        if prop is None:
            raise _refuse(
                f"{field}.property is required by unique_count: the record property whose distinct values count",
                f"{field}.property",
                code="usage.field_required",
            )
        if not isinstance(prop, str) or not re.fullmatch(PROPERTY_PATTERN, prop):
            raise _refuse(
                f"{field}.property is 1 to 64 characters A-Z, a-z, 0-9, _ . : -",
                f"{field}.property",
                code="usage.invalid_property",
            )
    elif prop is not None:
        raise _refuse(
            f"{field}.property applies to the unique_count aggregation only",
            f"{field}.property",
            code="usage.field_not_allowed",
        )
    if model.event_valued and aggregation is not Aggregation.SUM:
        raise _refuse(
            f"the {model.value} model prices each event's value: its aggregation is sum",
            f"{field}.aggregation",
            code="usage.aggregation_not_allowed",
        )
    free_units = _opt_decimal(u, "free_units", field) or _ZERO
    free_amount = _opt_decimal(u, "free_amount", field) or _ZERO
    free_events = 0 if u.get("free_events") is None else _integer(u["free_events"], f"{field}.free_events", minimum=0)
    if u.get("charge_limit") is not None and (model is UsageModel.VOLUME or aggregation is Aggregation.LATEST):
        # A charge limit invoices the usage so far; a total that can fall later (volume tiers: more
        # units, a lower price for all; `latest`: a smaller last value) would turn the period's
        # final line into a credit of what was invoiced too early.
        raise _refuse(
            f"a charge limit needs a total that never falls as usage grows: not the volume model or "
            f"the latest aggregation ({model.value}, {aggregation.value})",
            f"{field}.charge_limit",
            code="usage.charge_limit_not_monotone",
        )
    return UsagePrice(
        meter=meter,
        aggregation=aggregation,
        model=model,
        property=prop,
        unit_price=_opt_decimal(u, "unit_price", field),
        tiers=() if u.get("tiers") is None else _tiers(u["tiers"], model, f"{field}.tiers"),
        package=None if u.get("package") is None else _package(u["package"], f"{field}.package"),
        percentage=None if u.get("percentage") is None else _percentage(u["percentage"], f"{field}.percentage"),
        free_units=free_units,
        free_events=free_events,
        free_amount=free_amount,
        allowance=None if u.get("allowance") is None else parse_allowance(u["allowance"], f"{field}.allowance"),
        charge_limit=None
        if u.get("charge_limit") is None
        else _charge_limit(u["charge_limit"], currency, f"{field}.charge_limit"),
    )


def decimal_str(value: Decimal) -> str:
    """A decimal as the JSON shows it: plain digits ("0.000000000001", "1000"), never an exponent
    ("1E-12"), which `parse_decimal` refuses."""
    return format(value, "f")


def _str(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)


def allowance_json(allowance: Allowance) -> dict[str, Any]:
    return {
        "per_record": _str(allowance.per_record),
        "per_day": _str(allowance.per_day),
        "per_cycle": _str(allowance.per_cycle),
        "beyond": allowance.beyond.value,
    }


def usage_price_json(price: UsagePrice) -> dict[str, Any]:
    """The JSON of a usage price (the API's and the stored shape): `parse_usage_price` reads it back
    to an equal price. Only the fields the price uses are present."""
    out: dict[str, Any] = {"meter": price.meter, "aggregation": price.aggregation.value, "model": price.model.value}
    if price.property is not None:
        out["property"] = price.property
    if price.unit_price is not None:
        out["unit_price"] = decimal_str(price.unit_price)
    if price.tiers:
        percentage = price.model is UsageModel.GRADUATED_PERCENTAGE
        out["tiers"] = [
            {"up_to": _str(t.up_to)}
            | ({"rate": decimal_str(t.rate)} if percentage else {"unit_price": decimal_str(t.unit_price)})
            | {"flat_price": decimal_str(t.flat_price)}
            for t in price.tiers
        ]
    if price.package is not None:
        p = price.package
        out["package"] = {"size": decimal_str(p.size), "price": decimal_str(p.price), "round": p.round}
    if price.percentage is not None:
        c = price.percentage
        out["percentage"] = {
            "rate": decimal_str(c.rate),
            "fixed_price": decimal_str(c.fixed_price),
            "min_per_event": _str(c.min_per_event),
            "max_per_event": _str(c.max_per_event),
        }
    if price.model.event_valued:
        out["free_events"] = price.free_events
        out["free_amount"] = decimal_str(price.free_amount)
    else:
        out["free_units"] = decimal_str(price.free_units)
    if price.allowance is not None:
        out["allowance"] = allowance_json(price.allowance)
    if price.charge_limit is not None:
        out["charge_limit"] = {"amount": _str(price.charge_limit.amount), "records": price.charge_limit.records}
    return out


# -- rating ----------------------------------------------------------------------------------------


def _round_once(exact: Decimal, currency: str) -> Money:
    exponent = currency_exponent(currency)
    return Money(round_half_away_from_zero(Fraction(exact) * 10**exponent), currency)


def _graduated(tiers: Sequence[Tier], quantity: Decimal, *, percent: bool) -> list[TierCharge]:
    rows: list[TierCharge] = []
    below = _ZERO
    for i, tier in enumerate(tiers, start=1):
        if quantity <= below:
            break
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = top - below
        variable = units * tier.rate / _HUNDRED if percent else units * tier.unit_price
        rows.append(TierCharge(i, units, tier.unit_price, tier.flat_price, variable + tier.flat_price, tier.rate))
        if tier.up_to is None:
            break
        below = tier.up_to
    return rows


def _volume(tiers: Sequence[Tier], quantity: Decimal) -> list[TierCharge]:
    if quantity == 0:
        return []
    for i, tier in enumerate(tiers, start=1):
        if tier.up_to is None or quantity <= tier.up_to:
            amount = quantity * tier.unit_price + tier.flat_price
            return [TierCharge(i, quantity, tier.unit_price, tier.flat_price, amount)]
    raise AssertionError("the last tier is open-ended")


def _charged_values(price: UsagePrice, events: Sequence[Decimal]) -> list[Decimal]:
    """Each event's value beyond the free events / free amount; wholly free events are left out."""
    free_events = price.free_events or None
    free_amount = price.free_amount or None
    free = free_events is not None or free_amount is not None
    charged: list[Decimal] = []
    for value in events:
        if free and (free_events is None or free_events > 0) and (free_amount is None or free_amount > 0):
            covered = value if free_amount is None else min(value, free_amount)
            if free_events is not None:
                free_events -= 1
            if free_amount is not None:
                free_amount -= covered
            value -= covered
            if value == 0:
                continue
        charged.append(value)
    return charged


def _percentage_rows(terms: Percentage, values: Sequence[Decimal]) -> list[TierCharge]:
    if not values:
        return []
    amount = _ZERO
    for value in values:
        charge = value * terms.rate / _HUNDRED + terms.fixed_price
        if terms.min_per_event is not None:
            charge = max(charge, terms.min_per_event)
        if terms.max_per_event is not None:
            charge = min(charge, terms.max_per_event)
        amount += charge
    fixed = terms.fixed_price * len(values)
    return [TierCharge(1, sum(values, _ZERO), _ZERO, fixed, amount, terms.rate)]


def _check_quantity(value: Decimal, field: str) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise _refuse(f"{field} must be a finite decimal", field, code="usage.not_a_decimal")
    if value < 0:
        raise _refuse(f"{field} must not be negative", field, code="usage.negative")


def _single(quantity: Decimal, price: Decimal) -> list[TierCharge]:
    return [] if quantity == 0 else [TierCharge(1, quantity, price, _ZERO, quantity * price)]


def _unit_rows(price: UsagePrice, quantity: Decimal) -> list[TierCharge]:
    if price.model is UsageModel.PER_UNIT:
        assert price.unit_price is not None
        return _single(quantity, price.unit_price)
    if price.model is UsageModel.GRADUATED:
        return _graduated(price.tiers, quantity, percent=False)
    if price.model is UsageModel.VOLUME:
        return _volume(price.tiers, quantity)
    assert price.package is not None
    whole, rest = divmod(quantity, price.package.size)
    packages = whole + (1 if rest and price.package.round == "up" else 0)
    return _single(packages, price.package.price)


def rate(
    price: UsagePrice, currency: str, *, units: Decimal | None = None, events: Sequence[Decimal] | None = None
) -> Rated:
    """What `units` (unit-valued models) or `events` (each event's value, in the order they
    happened; event-valued models) cost under `price`: the exact breakdown and the total rounded
    once to `currency`'s minor unit."""
    model = price.model.value
    with localcontext(_EXACT):
        if price.model.event_valued:
            if events is None or units is not None:
                message = f"the {model} model prices events: give each event's value"
                raise _refuse(message, "events", code="usage.events_required")
            for i, value in enumerate(events):
                _check_quantity(value, f"events[{i}].value")
            values = _charged_values(price, events)
            if price.model is UsageModel.PERCENTAGE:
                assert price.percentage is not None
                rows = _percentage_rows(price.percentage, values)
            else:
                rows = _graduated(price.tiers, sum(values, _ZERO), percent=True)
            quantity = Decimal(len(values))
        else:
            if units is None or events is not None:
                raise _refuse(f"the {model} model prices units: give units", "units", code="usage.units_required")
            _check_quantity(units, "units")
            quantity = max(units - price.free_units, _ZERO)
            rows = _unit_rows(price, quantity)
        exact = sum((row.amount for row in rows), _ZERO)
    return Rated(quantity, exact, _round_once(exact, currency), tuple(rows))


EXAMPLE_USAGE_PRICE: Mapping[str, Any] = {
    "meter": "api_calls",
    "aggregation": "sum",
    "model": "graduated",
    "tiers": [
        {"up_to": "1000", "unit_price": "0.10", "flat_price": "5.00"},
        {"up_to": None, "unit_price": "0.05", "flat_price": "10.00"},
    ],
}
"""Stripe's documented graduated tiers (1,500 units: 140.00 graduated, 85.00 volume), in the usage
price JSON: the API's example, the demo's API-calls service and the tests' reference case."""
