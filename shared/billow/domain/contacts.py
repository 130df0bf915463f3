"""Contacts (subscribers) and their per-contact test clocks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from billow.domain.calendar import Cycle, add_months
from billow.domain.collection import CollectionMode
from billow.domain.errors import Conflict, InvalidInput
from billow.domain.money import Money
from billow.domain.pricing import Allowance

ADVANCE_INTERVALS = 2
"""One advance of a test clock reaches at most this many billing intervals of the contact's
shortest subscription cycle (as Stripe bounds it), so one advance bills a bounded amount."""
UNBOUNDED_CYCLE = Cycle.YEAR
"""The cycle that bounds an advance of a contact with no subscription yet."""


class ClockStatus(StrEnum):
    READY = "ready"
    ADVANCING = "advancing"  # moved; what became due is still being billed, off the request path


@dataclass(frozen=True, slots=True)
class Address:
    line1: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    postal_code: str = ""
    line2: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str
    email: str
    billing_address: Address | None
    classification: str | None
    credit_limit: Mapping[str, Money]
    """Per currency, the most the contact may owe in it and still have services activated (a
    currency not listed has no limit)."""
    preferred_payment_method: str | None
    test_mode: bool
    created_at: datetime
    archived: bool = False
    """An archived contact takes no new orders; its invoices stay readable and payable."""
    version: int = 0
    collection: CollectionMode | None = None
    """How its invoices are collected (docs/payments.md); None: its tenant's default."""
    gateway_customer_ref: str | None = None
    """The contact's customer on the payment rail (a Stripe customer id), made when first needed."""
    default_method_ref: str | None = None
    """Its default saved payment method (`SavedPaymentMethod.id`): what pays an invoice whose
    subscription names none. Cleared when that method is removed."""
    dunning_excluded: bool = False
    """Excluded from dunning by an operator (docs/dunning.md): no case opens for it, and its open
    case behaves as paused (nothing is retried, reminded, deactivated or cancelled; it still ends
    when nothing is owed) until the flag is cleared."""
    allowances: Mapping[str, Allowance] = field(default_factory=dict)
    """Per meter, the allowance agreed with this contact (a B2B deal): it replaces the one of the
    price terms for every service of the contact on that meter, for records submitted after it is
    set (docs/billing.md, "Usage allowances")."""
    allowances_revision: int = 0
    """Bumped by every change of `allowances`: a `refuse` allowance's counter opened under another
    revision counts the cycle's records again before it counts more (`DynamoStore.add_counted_usage`)."""


@dataclass(frozen=True, slots=True)
class TestClock:
    """A contact's own notion of now, for test-mode contacts only.

    While a contact has a clock, only advancing that clock bills the contact's subscriptions; the
    daily run leaves them alone, and advancing it touches no other contact.
    """

    __test__ = False  # not a pytest test class, despite the name

    contact_id: str
    frozen_time: datetime
    version: int = 0
    status: ClockStatus = ClockStatus.READY

    def __post_init__(self) -> None:
        if self.frozen_time.tzinfo is None:
            raise InvalidInput("frozen_time must carry a time zone offset", field="frozen_time")

    def advance_limit(self, cycles: Iterable[Cycle]) -> datetime:
        """The furthest instant one advance may reach: `ADVANCE_INTERVALS` intervals of the
        shortest of `cycles` (the contact's subscriptions') after the clock's time."""
        shortest = min(cycles, key=lambda c: (c.months, c is not Cycle.WEEK), default=UNBOUNDED_CYCLE)
        start = self.frozen_time.date()
        day = (
            start + timedelta(weeks=ADVANCE_INTERVALS)
            if shortest is Cycle.WEEK
            else add_months(start, shortest.months * ADVANCE_INTERVALS)  # 31 Jan -> 31 Mar
        )
        return datetime.combine(day, self.frozen_time.timetz())

    def advanced_to(self, instant: datetime, limit: datetime) -> TestClock:
        """The clock moved to `instant`, advancing (a repeat of the advance under way is itself)."""
        if instant.tzinfo is None:
            raise InvalidInput("frozen_time must carry a time zone offset", field="frozen_time")
        if self.status is ClockStatus.ADVANCING:
            if instant == self.frozen_time:
                return self  # a retry: resume the advance under way
            raise Conflict(
                f"the test clock is still advancing to {self.frozen_time.isoformat()}; wait until it is ready",
                code="test_clock.advancing",
            )
        if instant < self.frozen_time:
            raise Conflict(
                f"a test clock only moves forward: it is at {self.frozen_time.isoformat()}, "
                f"asked for {instant.isoformat()}",
                code="test_clock.backwards",
            )
        if instant > limit:
            raise InvalidInput(
                f"one advance reaches at most {ADVANCE_INTERVALS} billing intervals of the contact's shortest "
                f"subscription cycle: at most {limit.isoformat()} from {self.frozen_time.isoformat()}",
                field="to",
                code="test_clock.advance_too_far",
            )
        return replace(self, frozen_time=instant, status=ClockStatus.ADVANCING)

    def done(self) -> TestClock:
        return replace(self, status=ClockStatus.READY)
