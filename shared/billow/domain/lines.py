"""Invoice lines as the engine drafts them, and adjustments: lines an action settled that wait in
the subscription for the invoice of their run date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction

from billow.domain.calendar import Period
from billow.domain.money import Money


@dataclass(frozen=True, slots=True)
class LineDraft:
    kind: str  # "recurring" (a full period), "prorated", "setup_fee", "credit" or "usage"
    description: str
    service_id: str
    product_id: str
    quantity: int | Decimal
    unit_price: Money
    fraction: Fraction
    """Share of the period price this line charges (negative for a credit)."""
    amount: Money
    period: Period | None  # the covered days; None for one-time charges


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A line an action produced (a credit for unused days, days charged up to a change, a
    cancellation fee) that goes on the subscription's invoice of `run_on`."""

    line: LineDraft
    run_on: date
