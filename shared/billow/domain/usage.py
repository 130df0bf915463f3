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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from billow.domain.calendar import Period
from billow.domain.money import Money

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
