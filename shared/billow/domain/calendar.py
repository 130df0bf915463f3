"""The billing calendar: cycles, billing days and half-open billing periods.

Billing works in calendar days of the tenant's time zone. An instant (an aware datetime) becomes a
billing date through `local_date`; from then on everything is a `date`, and every period is
half-open: [start, end), so consecutive periods share a boundary and never a day.

A `BillingSchedule` is the infinite sequence of billing dates of one subscription:
- monthly and longer cycles bill on a day of the month (1-31). A day past the end of a shorter month
  falls back to that month's last day, and the next longer month returns to the day itself
  (31 Jan -> 29 Feb -> 31 Mar -> 30 Apr). Which months bill is fixed by the schedule's reference
  date (a quarterly schedule referenced on 15 Feb bills in Feb, May, Aug, Nov).
- weekly cycles bill on a day of the week.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billow.domain.errors import InvalidInput

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class Cycle(StrEnum):
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    SEMIANNUAL = "semiannual"
    YEAR = "year"

    @property
    def months(self) -> int:
        """Length in months; 0 for the weekly cycle, which is counted in days."""
        return _CYCLE_MONTHS[self.value]

    @property
    def adjective(self) -> str:
        return {
            "week": "weekly",
            "month": "monthly",
            "quarter": "quarterly",
            "semiannual": "semiannual",
            "year": "yearly",
        }[self.value]


_CYCLE_MONTHS = {"week": 0, "month": 1, "quarter": 3, "semiannual": 6, "year": 12}
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_DAYS[month - 1]


def _month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def _date_in_month(month_index: int, day_of_month: int) -> date:
    year, month0 = divmod(month_index, 12)
    return date(year, month0 + 1, min(day_of_month, days_in_month(year, month0 + 1)))


def add_months(start: date, months: int, day_of_month: int | None = None) -> date:
    """`start` moved by whole months, keeping `day_of_month` (default start's day) where it exists."""
    return _date_in_month(_month_index(start) + months, day_of_month or start.day)


def add_cycle(start: date, cycle: Cycle) -> date:
    """The day one full cycle after `start` (a month after 31 Jan is 29 Feb in a leap year)."""
    if cycle is Cycle.WEEK:
        return start + timedelta(days=7)
    return add_months(start, cycle.months)


def add_cycles(start: date, cycle: Cycle, count: int) -> date:
    """The day `count` full cycles after `start`."""
    for _ in range(count):
        start = add_cycle(start, cycle)
    return start


def day_on_or_after(start: date, cycle: Cycle, day: int) -> date:
    """The first date on or after `start` that falls on `day`: a weekday (0 = Monday) for weekly
    cycles, else a day of month (a day past a month's end meaning that month's last day)."""
    if cycle is Cycle.WEEK:
        return start + timedelta(days=(day - start.weekday()) % 7)
    candidate = _date_in_month(_month_index(start), day)
    return candidate if candidate >= start else _date_in_month(_month_index(start) + 1, day)


def tenant_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"'{name}' is not an IANA time zone", field="timezone") from None


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The calendar day an instant falls on in `zone`. Naive datetimes are refused."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("billing instants must be timezone-aware")
    return instant.astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open run of calendar days: `start` is billed, `end` is not."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"empty or inverted period [{self.start}, {self.end})")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


@dataclass(frozen=True, slots=True)
class BillingSchedule:
    """The billing dates of one subscription.

    `billing_day` is a day of month (1-31) for monthly and longer cycles, and a weekday (0 = Monday)
    for weekly ones. `reference` is any date of the sequence's phase: for monthly and longer cycles
    its month is a billing month; for weekly cycles only `billing_day` matters.
    """

    cycle: Cycle
    billing_day: int
    reference: date

    def __post_init__(self) -> None:
        if self.cycle is Cycle.WEEK:
            if not 0 <= self.billing_day <= 6:
                raise InvalidInput("a weekly billing day is a weekday, 0 (Monday) to 6", field="billing_day")
        elif not 1 <= self.billing_day <= 31:
            raise InvalidInput("a billing day of month is 1 to 31", field="billing_day")

    @classmethod
    def anniversary(cls, cycle: Cycle, first_activation: date) -> BillingSchedule:
        """Billing day taken from the first service's activation date."""
        day = first_activation.weekday() if cycle is Cycle.WEEK else first_activation.day
        return cls(cycle, day, first_activation)

    # -- the sequence -------------------------------------------------------------------------
    def index_of(self, day: date) -> int:
        """Index k of the last billing date on or before `day` (k may be negative)."""
        if self.cycle is Cycle.WEEK:
            first = self.reference + timedelta(days=(self.billing_day - self.reference.weekday()) % 7)
            return (day - first).days // 7
        step = self.cycle.months
        k = (_month_index(day) - _month_index(self.reference)) // step
        if self.billing_date(k) > day:
            k -= 1
        return k

    def billing_date(self, k: int) -> date:
        """The k-th billing date counted from the reference's billing month or week."""
        if self.cycle is Cycle.WEEK:
            first = self.reference + timedelta(days=(self.billing_day - self.reference.weekday()) % 7)
            return first + timedelta(weeks=k)
        return _date_in_month(_month_index(self.reference) + k * self.cycle.months, self.billing_day)

    def is_billing_date(self, day: date) -> bool:
        return self.billing_date(self.index_of(day)) == day

    def period_containing(self, day: date) -> Period:
        return _period_containing(self, day)

    def periods(self, start: date, count: int) -> list[Period]:
        """`count` consecutive full periods, the first being the one that contains `start`."""
        k = self.index_of(start)
        return [Period(self.billing_date(k + i), self.billing_date(k + i + 1)) for i in range(count)]

    def next_on_or_after(self, day: date) -> date:
        k = self.index_of(day)
        found = self.billing_date(k)
        return found if found == day else self.billing_date(k + 1)

    def cutoff_schedule(self, cutoff_day: int) -> BillingSchedule:
        """The schedule of cut-off days: each billing date's latest `cutoff_day` on or before it."""
        first = self.billing_date(0)
        cutoff = _date_in_month(_month_index(first), cutoff_day)
        if cutoff > first:
            cutoff = _date_in_month(_month_index(first) - 1, cutoff_day)
        return BillingSchedule(self.cycle, cutoff_day, cutoff)


@lru_cache(maxsize=1 << 16)
def _period_containing(schedule: BillingSchedule, day: date) -> Period:
    """Cached: a billing run asks for the same few periods of the same few schedules again and again."""
    k = schedule.index_of(day)
    return Period(schedule.billing_date(k), schedule.billing_date(k + 1))
