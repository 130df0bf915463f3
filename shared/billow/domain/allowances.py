"""Allowances: included usage per record, per day and per billing cycle (docs/billing.md, "Allowances").

An allowance (`billow.domain.pricing.Allowance`, on a usage price or a contact's override for a
meter) sets up to three windows over a service's usage records:

- `per_record`: the quantity one record may carry;
- `per_day`: the quantity of one day (the record's `day`, in the contact's time);
- `per_cycle`: the quantity of one billing period of the service (the record's `period_start`).

Windows measure quantities (each record's `quantity`), whatever the meter's aggregation. What happens
beyond them is the allowance's `beyond`:

- `refuse`: a record that would take a window past its limit is refused at submission
  (`refusal`), and nothing of it is counted; the counters (`billow.services.usage.allowances`)
  hold what was accepted.
- `overage`: every record is accepted; billing prices only the part beyond the windows
  (`billable`).

Pure: no I/O, exact Decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Context, Decimal, localcontext
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from billow.domain.calendar import Period
from billow.domain.errors import RuleViolation

if TYPE_CHECKING:
    from billow.domain.pricing import Allowance
    from billow.domain.usage import UsageRecord

ZERO = Decimal(0)


class Window(StrEnum):
    PER_RECORD = "per_record"
    PER_DAY = "per_day"
    PER_CYCLE = "per_cycle"


@dataclass(frozen=True, slots=True)
class Used:
    """What a service's records accepted so far in one billing cycle: the cycle's total and each
    day's (what the counter item holds)."""

    cycle: Decimal = ZERO
    days: Mapping[date, Decimal] = field(default_factory=dict)

    def on(self, day: date) -> Decimal:
        return self.days.get(day, ZERO)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The window that refuses a record, its limit and what remains of it."""

    window: Window
    limit: Decimal
    remaining: Decimal
    quantity: Decimal
    day: date
    cycle: Period

    @property
    def where(self) -> str:
        match self.window:
            case Window.PER_RECORD:
                return "per_record allowance"
            case Window.PER_DAY:
                return f"per_day allowance for {self.day.isoformat()}"
            case Window.PER_CYCLE:
                return f"per_cycle allowance for {self.cycle.start.isoformat()}..{self.cycle.end.isoformat()}"

    @property
    def message(self) -> str:
        # plain digits, never an exponent ("1E-12"): as every quantity the API shows
        limit, quantity = format(self.limit, "f"), format(self.quantity, "f")
        if self.window is Window.PER_RECORD:
            return f"per_record allowance: a record may carry at most {limit}; this one carries {quantity}"
        return f"{self.where}: {format(self.remaining, 'f')} of {limit} remain; this record carries {quantity}"

    def error(self) -> AllowanceExceeded:
        return AllowanceExceeded(self)


@dataclass(frozen=True, slots=True)
class Counted:
    """What writing a record against a `refuse` allowance came to: accepted (stored and counted),
    duplicate (its id was stored before: nothing counted again) or refused (`refusal` says why)."""

    status: Literal["accepted", "duplicate", "refused"]
    refusal: Refusal | None = None


class AllowanceExceeded(RuleViolation):
    """A record refused by an allowance whose `beyond` is `refuse` (409 `usage.allowance_exceeded`)."""

    code = "usage.allowance_exceeded"

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message, rule=AllowanceExceeded.code, field="quantity")
        self.refusal = refusal


def windows(allowance: Allowance) -> list[tuple[Window, Decimal]]:
    """The windows the allowance sets, narrowest first."""
    found = [
        (Window.PER_RECORD, allowance.per_record),
        (Window.PER_DAY, allowance.per_day),
        (Window.PER_CYCLE, allowance.per_cycle),
    ]
    return [(w, limit) for w, limit in found if limit is not None]


def remaining(allowance: Allowance, used: Used, day: date) -> dict[Window, Decimal]:
    """What remains of each window the allowance sets, for a record of `day` (per_record: its limit)."""
    spent = {Window.PER_RECORD: ZERO, Window.PER_DAY: used.on(day), Window.PER_CYCLE: used.cycle}
    return {w: max(ZERO, limit - spent[w]) for w, limit in windows(allowance)}


def refusal(allowance: Allowance, quantity: Decimal, day: date, cycle: Period, used: Used) -> Refusal | None:
    """The window that refuses a record of `quantity` on `day` given what was `used`, or None when
    it fits every window. When several refuse, the one with the least remaining is named (the
    narrowest on a tie): it is the one that binds."""
    limits = dict(windows(allowance))
    refusing = [
        Refusal(w, limits[w], left, quantity, day, cycle)
        for w, left in remaining(allowance, used, day).items()
        if quantity > left
    ]
    return min(refusing, key=lambda r: r.remaining, default=None)


def billable(allowance: Allowance, records: Iterable[UsageRecord]) -> list[UsageRecord]:
    """The records' quantities beyond the allowance (an `overage` allowance: what billing prices).

    Records are taken in time order (`at`, then id). Each window counts every record's whole
    quantity (as the counters of a `refuse` allowance do); a record's billable part is the most
    any window says is beyond it: for per_record `q - per_record`, for per_day and per_cycle the
    part of `q` past what remained of that window before it. Records with nothing billable are
    left out; the others keep everything but their quantity. Exact: the windows' sums are those of
    the records, with no rounding.
    """
    with localcontext(Context(prec=100)):  # window sums of 30-digit quantities stay exact
        return _beyond(allowance, records)


def _beyond(allowance: Allowance, records: Iterable[UsageRecord]) -> list[UsageRecord]:
    limits = dict(windows(allowance))
    used_cycle: dict[date, Decimal] = {}
    used_days: dict[date, Decimal] = {}
    out: list[UsageRecord] = []
    for record in sorted(records, key=lambda r: (r.at, r.id)):
        q = record.quantity
        before = {
            Window.PER_RECORD: ZERO,
            Window.PER_DAY: used_days.get(record.day, ZERO),
            Window.PER_CYCLE: used_cycle.get(record.period_start, ZERO),
        }
        beyond = max((q - max(ZERO, limit - before[w]) for w, limit in limits.items()), default=q)
        used_days[record.day] = before[Window.PER_DAY] + q
        used_cycle[record.period_start] = before[Window.PER_CYCLE] + q
        if beyond > ZERO:
            out.append(replace(record, quantity=beyond))
    return out
