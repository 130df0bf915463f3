"""Stripe's currency rules, as pure functions: how a Billow amount (`Money`, integer minor units of
its ISO 4217 exponent) becomes the integer `amount` Stripe's API takes, and which amounts Stripe
cannot charge at all. No SDK here: unit-tested on their own (tests/unit/test_stripe_amounts.py).

From https://docs.stripe.com/currencies:
- Every amount is an integer in the currency's smallest unit *as Stripe counts it*. That is the ISO
  exponent for most currencies, but not all: Stripe's zero-decimal currencies (JPY, KRW, ... and
  MGA, which ISO gives two decimals) take whole units; ISK, which ISO gives none, Stripe keeps as
  two-decimal with amounts a multiple of 100 (whole krónur only).
- Three-decimal currencies (BHD, JOD, KWD, OMR, TND) take three decimals, but the last digit must
  be 0: an amount a multiple of 10 minor units.
- A charge has a minimum per currency (USD 0.50, GBP 0.30, JPY 50, ...) and at most 8 digits
  (12 for IDR).

An amount Stripe cannot take exactly is never rounded here (that would charge a different sum from
the invoice's): `charge_refusal` says why, with a stable code, and the gateway raises
`ChargeNotPossible` with it before calling Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass

from billow.domain.money import Money, currency_exponent

STRIPE_ZERO_DECIMAL = frozenset(
    ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"]
)
"""Currencies Stripe takes in whole units."""
STRIPE_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
"""Three decimals, the last one 0 (a multiple of 10 minor units)."""
STRIPE_WHOLE_UNITS_ONLY = {"ISK": 100}
"""Two-decimal in Stripe's API, but only whole units may be charged: the amount's multiple."""

STRIPE_MINIMUM = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}
"""Stripe's minimum charge per currency, in Stripe's units of it (docs.stripe.com/currencies,
"Minimum and maximum charge amounts"; checked against the copy of that table MemberPress ships,
app/data/minimum_charge_amounts.php, which agrees on every currency here; it also lists HRK, gone
since Croatia took the euro in 2023). For a currency not listed Stripe's minimum is the equivalent
of USD 0.50 at the day's rate, which Billow cannot know: Stripe refuses such a charge with
`amount_too_small`, which the gateway reports as the same outcome (`rail.amount_too_small`)."""
MAX_DIGITS = 8
MAX_DIGITS_BY_CURRENCY = {"IDR": 12}


def stripe_exponent(currency: str) -> int:
    """The decimals of Stripe's `amount` in `currency`."""
    if currency in STRIPE_ZERO_DECIMAL:
        return 0
    if currency in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def _granularity(currency: str) -> int:
    """The multiple of Stripe's units every amount in `currency` must be."""
    if currency in STRIPE_THREE_DECIMAL:
        return 10
    return STRIPE_WHOLE_UNITS_ONLY.get(currency, 1)


def to_stripe_units(amount: Money) -> int | None:
    """`amount` as Stripe's integer `amount`, or None if it has no exact equal there (a fraction
    of a unit Stripe does not take: MGA cents, a KWD amount not a multiple of 0.010)."""
    shift = stripe_exponent(amount.currency) - currency_exponent(amount.currency)
    if shift >= 0:
        units = amount.minor * 10**shift
    else:
        units, rest = divmod(amount.minor, 10**-shift)
        if rest:
            return None
    return units if units % _granularity(amount.currency) == 0 else None


def from_stripe_units(units: int, currency: str) -> Money:
    """Stripe's integer `amount` in `currency` (upper or lower case) as Billow's `Money`: exact,
    since Billow's exponent is never coarser than a unit Stripe can charge."""
    code = currency.upper()
    shift = currency_exponent(code) - stripe_exponent(code)
    return Money(units * 10**shift if shift >= 0 else units // 10**-shift, code)


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


def _unit_refusal(amount: Money, what: str) -> Refusal | None:
    """Why `amount` has no exact Stripe amount (not positive, a fraction Stripe does not take)."""
    currency = amount.currency
    if amount.minor <= 0:
        return Refusal(code="rail.amount_not_positive", message=f"a {what} must be positive, not {amount}")
    if to_stripe_units(amount) is None:
        step = from_stripe_units(_granularity(currency), currency)
        below = Money(amount.minor - amount.minor % step.minor, currency)
        return Refusal(
            code="rail.amount_precision",
            message=f"Stripe takes {currency} only in multiples of {step.amount_str()}; {amount} is not one "
            f"(the nearest below is {below.amount_str()})",
        )
    return None


def refund_refusal(amount: Money) -> Refusal | None:
    """Why Stripe cannot refund `amount` exactly (a stable code, a message); None when it can. A
    refund has no minimum, but the same units as a charge (a KWD refund in multiples of 0.010)."""
    return _unit_refusal(amount, "refund")


def charge_refusal(amount: Money) -> Refusal | None:
    """Why Stripe cannot charge `amount` as it is (a stable code, a message); None when it can."""
    currency = amount.currency
    refusal = _unit_refusal(amount, "charge")
    if refusal is not None:
        return refusal
    units = to_stripe_units(amount)
    assert units is not None
    minimum = STRIPE_MINIMUM.get(currency)
    if minimum is not None and units < minimum:
        return Refusal(
            code="rail.amount_too_small",
            message=f"Stripe's minimum charge in {currency} is "
            f"{from_stripe_units(minimum, currency).amount_str()}; {amount} is below it",
        )
    digits = MAX_DIGITS_BY_CURRENCY.get(currency, MAX_DIGITS)
    if units >= 10**digits:
        return Refusal(
            code="rail.amount_too_large",
            message=f"Stripe charges at most {digits} digits of {currency} minor units in one charge; {amount} is more",
        )
    return None
