"""A business's billing rules: how billing days are chosen and what the billing run does on them.

A subscription keeps a copy of the rules it was created under (`Subscription.rules`), so the engine
is a pure function of the subscription: the dry run, the view bill, the due-date index and the real
run all read the same rules from the same place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from billow.domain.calendar import WEEKDAYS, BillingSchedule, Cycle
from billow.domain.errors import InvalidInput

MAX_DAYS_BEFORE = 28


class ServiceState(StrEnum):
    DRAFT = "draft"  # ordered, starts on a later date
    EFFECTIVE = "effective"  # active
    NOT_EFFECTIVE = "not_effective"  # deactivated (e.g. for debt)
    PAUSED = "paused"
    CANCELLED = "cancelled"
    REGRETTED = "regretted"  # cancelled inside the regret period


class CalendarMode(StrEnum):
    ANNIVERSARY = "anniversary"  # billing day from the first service's activation
    PERIOD = "period"  # every subscription billed on the business's own day


class Alignment(StrEnum):
    IMMEDIATE = "immediate"  # a service added later is prorated up to the subscription's billing day
    DELAYED = "delayed"  # it is billed one full cycle of its own first, then aligned at the next run


DEFAULT_BILLABLE = frozenset({ServiceState.EFFECTIVE})
DEFAULT_NON_CREDITABLE = frozenset({ServiceState.DRAFT, ServiceState.EFFECTIVE})


def weekday_number(value: int | str, field: str) -> int:
    """0 (Monday) to 6 from a number or an English weekday name."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name not in WEEKDAYS:
            raise InvalidInput(f"'{value}' is not a weekday name", field=field)
        return WEEKDAYS.index(name)
    if not 0 <= value <= 6:
        raise InvalidInput("a weekday is 0 (Monday) to 6 (Sunday)", field=field)
    return value


def _check_day_of_month(value: int | None, field: str) -> None:
    if value is not None and not 1 <= value <= 31:
        raise InvalidInput("a day of month is 1 to 31", field=field)


@dataclass(frozen=True, slots=True)
class BillingRules:
    calendar: CalendarMode = CalendarMode.ANNIVERSARY
    period_day: int = 1
    """Period calendar: the day of month every monthly and longer subscription bills on."""
    period_weekday: int = 0
    """Period calendar: the weekday every weekly subscription bills on (0 = Monday)."""
    threshold_day: int | None = None
    """Day of month: a service starting on or after it in its first period is billed to the next
    billing day plus one full cycle on its first invoice; before it, to the next billing day."""
    threshold_weekday: int | None = None
    """The threshold for weekly subscriptions."""
    alignment: Alignment = Alignment.IMMEDIATE
    """How services added to an existing subscription are aligned (price terms may override)."""
    bill_days_before: int = 0
    """Recurring charges are invoiced this many days before their billing date."""
    post_bill_cutoff_day: int | None = None
    """Arrears, monthly and longer cycles: bill up to the latest such day on or before the billing
    day, instead of up to the billing day itself."""
    billable_states: frozenset[ServiceState] = DEFAULT_BILLABLE
    """States whose days are billed. Draft services are billed from their start date."""
    non_creditable_states: frozenset[ServiceState] = DEFAULT_NON_CREDITABLE
    """States in which days already billed are not credited back."""

    def __post_init__(self) -> None:
        _check_day_of_month(self.period_day, "period_day")
        _check_day_of_month(self.threshold_day, "threshold_day")
        _check_day_of_month(self.post_bill_cutoff_day, "post_bill_cutoff_day")
        weekday_number(self.period_weekday, "period_weekday")
        if self.threshold_weekday is not None:
            weekday_number(self.threshold_weekday, "threshold_weekday")
        if not self.billable_states:
            raise InvalidInput(
                "billable_states names at least one state: with none, no service would ever be billed",
                field="billable_states",
                code="billing.no_billable_states",
            )
        if not 0 <= self.bill_days_before <= MAX_DAYS_BEFORE:
            raise InvalidInput(f"bill_days_before is 0 to {MAX_DAYS_BEFORE}", field="bill_days_before")

    def schedule_for(self, cycle: Cycle, first_activation: date) -> BillingSchedule:
        """The billing schedule of a new subscription whose first service starts billing then."""
        if self.calendar is CalendarMode.ANNIVERSARY:
            return BillingSchedule.anniversary(cycle, first_activation)
        if cycle is Cycle.WEEK:
            return BillingSchedule(cycle, self.period_weekday, first_activation)
        # Period billing: quarters, halves and years start in January.
        return BillingSchedule(cycle, self.period_day, date(2000, 1, 1))

    def threshold_for(self, cycle: Cycle) -> int | None:
        return self.threshold_weekday if cycle is Cycle.WEEK else self.threshold_day

    def cutoff_for(self, cycle: Cycle) -> int | None:
        return None if cycle is Cycle.WEEK else self.post_bill_cutoff_day

    def is_billable(self, state: ServiceState, override: frozenset[ServiceState] | None = None) -> bool:
        return state is ServiceState.DRAFT or state in (self.billable_states if override is None else override)

    def is_creditable(self, state: ServiceState, override: frozenset[ServiceState] | None = None) -> bool:
        return state not in (self.non_creditable_states if override is None else override)


DEFAULT_RULES = BillingRules()
