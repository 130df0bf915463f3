"""The usage-rating hook: how post-billed usage of a billed period becomes invoice lines.

Usage is always billed in arrears. For every metered service (price terms with a `meter`), the
billing engine asks a `UsageRater` for the charges of each billing period once that period has
ended, and puts them on that billing date's invoice as "usage" lines. The period handed to the
rater is recorded on the service (`usage_billed_through`) in the same atomic write as the invoice,
so each period's usage is rated exactly once. Usage records and their rating come in a later
issue; until then `NO_USAGE` rates every period at nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from billow.domain.calendar import Period
from billow.domain.money import Money

if TYPE_CHECKING:
    from billow.domain.subscriptions import Service, Subscription


@dataclass(frozen=True, slots=True)
class UsageCharge:
    description: str
    quantity: Decimal
    unit_price: Money
    amount: Money
    """Already rounded to the currency's minor unit by the rater."""


class UsageRater(Protocol):
    def rate(self, subscription: Subscription, service: Service, period: Period) -> Sequence[UsageCharge]: ...


class _NoUsage:
    def rate(self, subscription: Subscription, service: Service, period: Period) -> Sequence[UsageCharge]:
        return ()


NO_USAGE: UsageRater = _NoUsage()
