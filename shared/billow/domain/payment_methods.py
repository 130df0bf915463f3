"""A contact's saved payment methods (cards saved on a rail for off-session charges)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
    version: int = 0

    @property
    def removed(self) -> bool:
        return self.removed_at is not None
