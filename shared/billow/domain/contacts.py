"""Contacts (subscribers) and their per-contact test clocks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from billow.domain.errors import Conflict, InvalidInput
from billow.domain.money import Money


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
    credit_limit: Money | None
    preferred_payment_method: str | None
    test_mode: bool
    created_at: datetime
    archived: bool = False
    """An archived contact takes no new orders; its invoices stay readable and payable."""
    version: int = 0


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

    def __post_init__(self) -> None:
        if self.frozen_time.tzinfo is None:
            raise InvalidInput("frozen_time must carry a time zone offset", field="frozen_time")

    def advanced_to(self, instant: datetime) -> TestClock:
        if instant.tzinfo is None:
            raise InvalidInput("frozen_time must carry a time zone offset", field="frozen_time")
        if instant < self.frozen_time:
            raise Conflict(
                f"a test clock only moves forward: it is at {self.frozen_time.isoformat()}, "
                f"asked for {instant.isoformat()}",
                code="test_clock.backwards",
            )
        return replace(self, frozen_time=instant)
