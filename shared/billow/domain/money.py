"""Money as integer minor units with an ISO 4217 currency.

Every amount Billow stores or computes is an `int` count of the currency's minor unit (cents for
USD, yen for JPY, fils for KWD). Amounts enter and leave the system as decimal strings ("19.99")
and are parsed exactly, digit by digit, never through a rounding decimal context: only plain
decimal strings (`DECIMAL_STRING`: no exponent, underscores, spaces or plus sign), and an input with
more decimal places than the currency has is refused, never silently rounded.

Rounding happens in exactly one place, `Money.scaled`, when an exact fraction (a prorated share, a
unit price times a fractional quantity) becomes minor units. The rule is half away from zero
("commercial rounding"), applied once per invoice line: line amounts are rounded, totals are the sum
of rounded lines, so an invoice always equals the sum of what it shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction
from functools import total_ordering

from billow.domain.errors import CurrencyMismatch, InvalidInput, UnknownCurrency

# ISO 4217 active codes and their minor-unit exponents (every code not listed with 0, 3 or 4 has 2).
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
    "GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC "
    "SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _EXPONENT_2.split()},
    **{code: 0 for code in _EXPONENT_0.split()},
    **{code: 3 for code in _EXPONENT_3.split()},
    **{code: 4 for code in _EXPONENT_4.split()},
}


MAX_WHOLE_DIGITS = 15
"""Digits before the decimal point an amount may have (a quadrillion in major units)."""
AMOUNT_PATTERN = rf"^[0-9]{{1,{MAX_WHOLE_DIGITS}}}(\.[0-9]+)?$"
"""A non-negative amount as the API takes it: ASCII digits, then optionally a point and decimals.
How many decimals depends on the currency, which the pattern cannot know (`Money.parse` checks)."""
_DECIMAL_STRING = re.compile(rf"(-?)([0-9]{{1,{MAX_WHOLE_DIGITS}}})(?:\.([0-9]+))?")


def currency_exponent(currency: str, *, field: str = "currency") -> int:
    """Number of decimal places of `currency`'s minor unit; refuses codes ISO 4217 does not list."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(f"'{currency}' is not an ISO 4217 currency code", field=field) from None


def round_half_away_from_zero(value: Fraction) -> int:
    """The single rounding rule of Billow (see module docstring)."""
    magnitude = abs(value)
    rounded = int(magnitude + Fraction(1, 2))  # int() floors non-negative fractions
    return rounded if value >= 0 else -rounded


@total_ordering
@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        currency_exponent(self.currency)
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError(f"Money.minor must be an int, not {type(self.minor).__name__}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, amount: str, currency: str, *, field: str = "amount", currency_field: str = "currency") -> Money:
        """Exact parse of a decimal string in major units ("19.99" USD -> 1999 cents). Errors name
        `field` (the amount) or `currency_field`, as the caller's input calls them. A leading minus
        is parsed; whether an amount may be negative is the rule of what it is the amount of."""
        exponent = currency_exponent(currency, field=currency_field)
        if not isinstance(amount, str):
            raise TypeError(f"Money is parsed from a decimal string, not {type(amount).__name__}")
        match = _DECIMAL_STRING.fullmatch(amount)
        shown = amount if len(amount) <= 40 else amount[:37] + "..."
        if match is None:
            raise InvalidInput(
                f"'{shown}' is not a decimal amount: digits, optionally a point and decimals, e.g. \"19.99\" "
                f"(no exponent, spaces, underscores or plus sign; at most {MAX_WHOLE_DIGITS} digits before the point)",
                field=field,
                code="money.not_a_decimal",
            )
        sign, whole, decimals = match.group(1), match.group(2), match.group(3) or ""
        if len(decimals) > exponent:
            raise InvalidInput(
                f"{currency} amounts have at most {exponent} decimal places; got '{shown}'",
                field=field,
                code="money.too_many_decimals",
            )
        minor = int(whole + decimals.ljust(exponent, "0"))
        return cls(-minor if sign else minor, currency)

    # -- arithmetic ---------------------------------------------------------------------------
    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.minor < other.minor

    def times(self, quantity: int) -> Money:
        return Money(self.minor * quantity, self.currency)

    def scaled(self, fraction: Fraction) -> Money:
        """This amount times an exact fraction, rounded once to the minor unit."""
        if fraction == 1:
            return self
        return Money(round_half_away_from_zero(self.minor * fraction), self.currency)

    @property
    def is_zero(self) -> bool:
        return self.minor == 0

    @property
    def is_negative(self) -> bool:
        return self.minor < 0

    # -- presentation -------------------------------------------------------------------------
    def to_decimal(self) -> Decimal:
        """Exact whatever the size: `scaleb` under the default context (28 digits) would round."""
        return Decimal(self.minor).scaleb(-currency_exponent(self.currency), context=_EXACT)

    def amount_str(self) -> str:
        """Major units with exactly the currency's decimal places: "19.90", "1200", "1.500"."""
        exponent = currency_exponent(self.currency)
        return f"{self.to_decimal():.{exponent}f}"

    def __str__(self) -> str:
        return f"{self.amount_str()} {self.currency}"


_EXACT = Context(prec=1000)
"""Enough digits for any amount a line can reach (12-decimal prices times 18-digit quantities)."""


def amounts_per_currency(value: Mapping[str, str], field: str) -> dict[str, Money]:
    """Per-currency amounts from their JSON form ({"EUR": "100.00", "JPY": "10000"}), each parsed
    exactly in its own currency and not negative; errors name `<field>.<currency>`."""
    amounts = {}
    for currency, amount in value.items():
        name = f"{field}.{currency}"
        money = Money.parse(amount, currency, field=name, currency_field=name)
        if money.is_negative:
            raise InvalidInput(f"{name} must not be negative", field=name)
        amounts[currency] = money
    return amounts


def sum_money(amounts: list[Money], currency: str) -> Money:
    total = Money.zero(currency)
    for amount in amounts:
        total = total + amount
    return total
