from decimal import Decimal
from fractions import Fraction

import pytest
from billow.domain.errors import CurrencyMismatch, InvalidInput, UnknownCurrency
from billow.domain.money import Money, round_half_away_from_zero


@pytest.mark.parametrize(
    ("text", "currency", "minor", "shown"),
    [
        ("19.99", "USD", 1999, "19.99"),
        ("1200", "JPY", 1200, "1200"),
        ("1.5", "KWD", 1500, "1.500"),
        ("0", "EUR", 0, "0.00"),
    ],
)
def test_amounts_use_each_currencys_minor_unit(text: str, currency: str, minor: int, shown: str) -> None:
    money = Money.parse(text, currency)
    assert money.minor == minor
    assert money.amount_str() == shown


@pytest.mark.parametrize(("text", "currency"), [("10.5", "JPY"), ("1.001", "USD"), ("0.0001", "KWD")])
def test_more_decimals_than_the_currency_has_are_refused_not_rounded(text: str, currency: str) -> None:
    with pytest.raises(InvalidInput, match="decimal places"):
        Money.parse(text, currency)


def test_unknown_currency_is_refused_with_the_field() -> None:
    with pytest.raises(UnknownCurrency) as caught:
        Money.parse("1", "ABC")
    assert caught.value.field == "currency"


def test_floats_never_become_money() -> None:
    with pytest.raises(TypeError):
        Money.parse(19.99, "USD")  # type: ignore[arg-type]


def test_currencies_never_mix() -> None:
    with pytest.raises(CurrencyMismatch):
        Money(100, "USD") + Money(100, "EUR")
    with pytest.raises(CurrencyMismatch):
        _ = Money(100, "USD") < Money(100, "EUR")


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (Fraction(1, 2), 1),
        (Fraction(-1, 2), -1),
        (Fraction(5, 2), 3),
        (Fraction(249, 100), 2),
        (Fraction(7, 3), 2),
    ],
)
def test_rounding_is_half_away_from_zero(value: Fraction, rounded: int) -> None:
    assert round_half_away_from_zero(value) == rounded


def test_scaling_rounds_once_to_the_minor_unit() -> None:
    # 30.00 USD for 29 of 31 days = 28.0645... -> 28.06
    assert Money(3000, "USD").scaled(Fraction(29, 31)) == Money(2806, "USD")
    assert Money(1000, "JPY").scaled(Fraction(1, 3)).to_decimal() == Decimal("333")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("28.99999999999999999999999999999", "money.too_many_decimals"),  # a rounding context made it 29.00
        ("6.999999999999999999999999999999", "money.too_many_decimals"),
        ("1e-999999999", "money.not_a_decimal"),
        ("1_000", "money.not_a_decimal"),
        (" 5", "money.not_a_decimal"),
        ("+5", "money.not_a_decimal"),
        ("١٢", "money.not_a_decimal"),
        ("1" * 16, "money.not_a_decimal"),
    ],
)
def test_amounts_are_parsed_digit_by_digit_never_rounded(text: str, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Money.parse(text, "USD", field="price")
    assert (caught.value.code, caught.value.field) == (code, "price")


def test_a_minus_sign_parses_and_only_strings_are_amounts() -> None:
    assert Money.parse("-5.25", "USD") == Money(-525, "USD")
    assert Money.parse("999999999999999.99", "USD").minor == 99999999999999999
    with pytest.raises(TypeError):
        Money.parse(Decimal("1.00"), "USD")  # type: ignore[arg-type]


def test_a_huge_amount_is_shown_exactly() -> None:
    """A usage line can reach 33 digits (a 15-digit price with 12 decimals times an 18-digit
    quantity): shown as it is, never rounded by the default 28-digit decimal context."""
    amount = Money(999_999_999_999_999_999_999_999_998_999_123, "USD")
    assert amount.amount_str() == "9999999999999999999999999989991.23"
