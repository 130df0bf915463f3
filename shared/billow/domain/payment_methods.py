"""A contact's saved payment methods (cards saved on a rail for off-session charges)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class SavedPaymentMethod:
    """A method the contact saved through a completed setup on a rail (a Stripe SetupIntent).

    Billow's record of it: what is listed, what a subscription or the contact's default may name,
    what is charged. Removing it detaches it on the rail and keeps the record, marked removed (its
    `payment_method.removed` event, and a later charge naming it, find why it is gone)."""

    id: str  # the rail's id (a Stripe PaymentMethod id, pm_...)
    contact_id: str
    rail: str  # "stripe"
    customer_ref: str  # the rail's customer it is attached to
    setup_ref: str  # the setup that saved it (a Stripe SetupIntent id)
    kind: str  # "card"
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    saved_at: datetime
    removed_at: datetime | None = None
    expiring_announced_on: date | None = None
    """The day `payment_method.expiring` was announced (once per method: docs/events.md)."""
    version: int = 0

    @property
    def removed(self) -> bool:
        return self.removed_at is not None

    @property
    def expires_in(self) -> str | None:
        """The month it expires at the end of, "YYYY-MM"; None when it has no expiry."""
        if self.exp_month is None or self.exp_year is None:
            return None
        return f"{self.exp_year:04d}-{self.exp_month:02d}"

    @property
    def to_announce(self) -> bool:
        """Whether `payment_method.expiring` may still be announced for it (not removed, expires,
        not announced yet)."""
        return not self.removed and self.expires_in is not None and self.expiring_announced_on is None


def next_month(today: date) -> str:
    """The month after `today`'s, "YYYY-MM": a card expiring at its end is announced today."""
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return f"{year:04d}-{month:02d}"
