"""Usage pricing (`billow.domain.pricing`): every model, tier boundaries, rounding once, free usage,
strict parsing with `usage.*` codes, and the JSON round trips (domain, storage, API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.pricing import (
    Aggregation,
    Allowance,
    Beyond,
    ChargeLimit,
    Rated,
    UsageModel,
    UsagePrice,
    parse_usage_price,
    rate,
    usage_price_json,
)
from billow.local.stack import add_tenant
from billow.storage import codec
from hypothesis import given
from hypothesis import strategies as st

from tests.support import InProcessClient

D = Decimal

# Stripe's tiers (docs.stripe.com, tiered pricing with flat fees): units 1..1000 at 0.10 each plus a
# 5.00 flat fee for the tier, every unit beyond at 0.05 plus a 10.00 flat fee. 1,500 units:
# graduated = 1000 x 0.10 + 5.00 (tier 1) + 500 x 0.05 + 10.00 (tier 2) = 105.00 + 35.00 = 140.00;
# volume = 1500 x 0.05 + 10.00 (all units in tier 2) = 85.00.
STRIPE_TIERS = [
    {"up_to": "1000", "unit_price": "0.10", "flat_price": "5.00"},
    {"up_to": None, "unit_price": "0.05", "flat_price": "10.00"},
]


def price(model: str, **fields: Any) -> UsagePrice:
    raw = {"meter": "api_calls", "aggregation": "sum", "model": model, **fields}
    return parse_usage_price(raw, "USD")


def units(p: UsagePrice, quantity: str, currency: str = "USD") -> Rated:
    return rate(p, currency, units=D(quantity))


def events(p: UsagePrice, *values: str) -> Rated:
    return rate(p, "USD", events=[D(v) for v in values])


def total(r: Rated) -> str:
    assert r.total.currency == "USD"
    return r.total.amount_str()


def refusal(raw: dict[str, Any], currency: str = "USD") -> tuple[str, str | None]:
    with pytest.raises(InvalidInput) as caught:
        parse_usage_price({"meter": "api_calls", "aggregation": "sum", **raw}, currency)
    return caught.value.code, caught.value.field


# -- Stripe's example ----------------------------------------------------------------------------------


def test_stripes_documented_example_1500_units_is_140_graduated_and_85_volume() -> None:
    graduated = units(price("graduated", tiers=STRIPE_TIERS), "1500")
    assert total(graduated) == "140.00"
    assert [(r.tier, r.units, r.amount) for r in graduated.breakdown] == [(1, 1000, D("105.00")), (2, 500, D("35.00"))]
    volume = units(price("volume", tiers=STRIPE_TIERS), "1500")
    assert total(volume) == "85.00"
    assert [(r.tier, r.units, r.amount) for r in volume.breakdown] == [(2, 1500, D("85.00"))]


def test_stripes_typographic_volume_table() -> None:
    """docs.stripe.com "Set up tiered pricing": fonts 1-5 at 7 USD, 6-10 at 6.5 USD, 11+ at 6 USD;
    volume-based: 1 -> 7, 5 -> 35, 6 -> 39, 20 -> 120, 25 -> 150."""
    tiers = [
        {"up_to": "5", "unit_price": "7"},
        {"up_to": "10", "unit_price": "6.5"},
        {"up_to": None, "unit_price": "6"},
    ]
    volume = price("volume", tiers=tiers)
    assert [total(units(volume, n)) for n in ("1", "5", "6", "20", "25")] == [
        "7.00",
        "35.00",
        "39.00",
        "120.00",
        "150.00",
    ]
    graduated = price("graduated", tiers=tiers)
    assert total(units(graduated, "5")) == "35.00"
    assert total(units(graduated, "6")) == "41.50"  # 5 x 7 + 1 x 6.5


# -- tier boundaries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "graduated", "volume"),
    [
        ("0", "0.00", "0.00"),  # no usage, no flat fee
        ("1", "5.10", "5.10"),
        ("1000", "105.00", "105.00"),  # exactly on up_to: still tier 1 (inclusive)
        ("1001", "115.05", "60.05"),  # one past it: tier 2 starts, its flat fee with it
        ("1000.5", "115.03", "60.03"),  # 0.5 units in tier 2: 105 + 0.025 + 10 = 115.025 -> 115.03
        ("999.5", "104.95", "104.95"),
    ],
)
def test_tier_boundaries(quantity: str, graduated: str, volume: str) -> None:
    assert total(units(price("graduated", tiers=STRIPE_TIERS), quantity)) == graduated
    assert total(units(price("volume", tiers=STRIPE_TIERS), quantity)) == volume


def test_a_tier_holds_the_quantities_up_to_and_including_its_up_to() -> None:
    three = price(
        "graduated",
        tiers=[
            {"up_to": "10", "unit_price": "1"},
            {"up_to": "20", "unit_price": "2"},
            {"up_to": None, "unit_price": "3"},
        ],
    )
    rated = units(three, "20")
    assert [(r.tier, r.units) for r in rated.breakdown] == [(1, 10), (2, 10)]
    assert rated.exact == D(30)
    assert [(r.tier, r.units) for r in units(three, "21").breakdown] == [(1, 10), (2, 10), (3, 1)]
    assert units(three, "0").breakdown == ()


# -- per unit, free units, rounding --------------------------------------------------------------------


def test_per_unit_after_free_units() -> None:
    p = price("per_unit", unit_price="0.002", free_units="1000")
    assert units(p, "999").exact == 0 and units(p, "999").quantity == 0
    rated = units(p, "3500")
    assert rated.quantity == 2500 and total(rated) == "5.00"
    assert [(r.units, r.unit_price, r.amount) for r in rated.breakdown] == [(2500, D("0.002"), D("5.000"))]


def test_free_units_come_off_before_the_tiers() -> None:
    p = price("graduated", tiers=STRIPE_TIERS, free_units="500")
    rated = units(p, "1500")  # 1000 billable units: all of tier 1
    assert rated.quantity == 1000 and total(rated) == "105.00"


def test_the_total_is_rounded_once_not_per_unit() -> None:
    """10,001 units at 0.0004: 4.0004 in total, 4.00 once rounded (rounding each unit would give
    0.00 per unit), and the breakdown keeps the exact amount."""
    rated = units(price("per_unit", unit_price="0.0004"), "10001")
    assert rated.exact == D("4.0004") and total(rated) == "4.00"
    assert rated.breakdown[0].amount == D("4.0004")
    # graduated lines are added exactly, then rounded once: 3 x 0.005 per tier = 0.015 + 0.015 = 0.03
    split = price("graduated", tiers=[{"up_to": "3", "unit_price": "0.005"}, {"up_to": None, "unit_price": "0.005"}])
    assert total(units(split, "6")) == "0.03"  # each tier rounded alone would be 0.02 + 0.02 = 0.04


def test_half_a_minor_unit_rounds_away_from_zero() -> None:
    assert total(units(price("per_unit", unit_price="0.005"), "1")) == "0.01"
    assert total(units(price("per_unit", unit_price="0.004999999999"), "1")) == "0.00"


def test_unit_prices_carry_twelve_decimal_places_exactly() -> None:
    p = price("per_unit", unit_price="0.000000000001")
    rated = units(p, "999999999999999")
    assert rated.exact == D("999.999999999999") and total(rated) == "1000.00"
    big = units(price("per_unit", unit_price="123456789012345.123456789012"), "999999999999999.999999999999")
    # exact where Decimal's default 28 significant digits would have rounded
    assert Fraction(big.exact) == Fraction("123456789012345.123456789012") * Fraction("999999999999999.999999999999")


def test_the_currency_gives_the_minor_unit() -> None:
    p = price("per_unit", unit_price="0.5")
    assert rate(p, "JPY", units=D(3)).total == Money(2, "JPY")  # 1.5 -> 2 yen
    assert rate(p, "KWD", units=D("0.0011")).total == Money(1, "KWD")  # 0.00055 -> 0.001


# -- package -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "up", "down"),
    [
        ("0", "0.00", "0.00"),
        ("1", "5.00", "0.00"),
        ("100", "5.00", "5.00"),
        ("101", "10.00", "5.00"),
        ("250", "15.00", "10.00"),
    ],
)
def test_package_rounds_up_unless_told_down(quantity: str, up: str, down: str) -> None:
    assert total(units(price("package", package={"size": "100", "price": "5.00"}), quantity)) == up
    assert total(units(price("package", package={"size": "100", "price": "5.00", "round": "down"}), quantity)) == down


def test_package_after_free_units() -> None:
    p = price("package", package={"size": "100", "price": "5.00"}, free_units="50")
    rated = units(p, "150.5")  # 100.5 billable: 2 packages
    assert rated.quantity == D("100.5") and total(rated) == "10.00"
    assert [(r.units, r.unit_price) for r in rated.breakdown] == [(2, D("5.00"))]


# -- percentage ----------------------------------------------------------------------------------------


def test_percentage_of_each_event_plus_a_fixed_price() -> None:
    p = price("percentage", percentage={"rate": "2.9", "fixed_price": "0.30"})
    rated = events(p, "100.00", "10.00")
    assert rated.exact == D("2.900") + D("0.30") + D("0.290") + D("0.30") and total(rated) == "3.79"
    assert rated.quantity == 2


def test_percentage_min_and_max_apply_per_event() -> None:
    p = price("percentage", percentage={"rate": "1", "min_per_event": "0.50", "max_per_event": "5.00"})
    # 10.00 -> 0.10 raised to 0.50; 200.00 -> 2.00; 1000.00 -> 10.00 capped at 5.00
    assert events(p, "10.00", "200.00", "1000.00").exact == D("7.50")


def test_free_events_are_the_first_events() -> None:
    p = price("percentage", percentage={"rate": "10", "fixed_price": "1"}, free_events=2)
    rated = events(p, "100", "100", "50", "20")  # the first two free: 5 + 1, 2 + 1
    assert rated.exact == D(9) and rated.quantity == 2


def test_free_amount_covers_the_first_values_and_the_straddling_event_pays_on_the_rest() -> None:
    p = price("percentage", percentage={"rate": "10", "fixed_price": "1"}, free_amount="150")
    # 100 free; the second event straddles 150: pays 10 % of 50 + 1; the third pays 10 % of 20 + 1
    rated = events(p, "100", "100", "20")
    assert rated.exact == D(5) + 1 + D(2) + 1 and rated.quantity == 2
    # an event exactly filling the free amount is wholly free (no fixed price)
    assert events(p, "150", "10").exact == D(2)


def test_with_free_events_and_a_free_amount_the_first_limit_reached_ends_the_free_usage() -> None:
    p = price("percentage", percentage={"rate": "10"}, free_events=2, free_amount="1000")
    assert events(p, "100", "100", "100").exact == D(10)  # two events free, then the count is spent
    q = price("percentage", percentage={"rate": "10"}, free_events=5, free_amount="150")
    assert events(q, "100", "100", "100").exact == D(5) + D(10)  # the amount is spent on the second


def test_a_minimum_applies_to_the_part_of_a_straddling_event_that_is_charged() -> None:
    p = price("percentage", percentage={"rate": "1", "min_per_event": "0.50"}, free_amount="99")
    assert events(p, "100").exact == D("0.50")  # 1 % of 1.00 = 0.01, raised to the minimum


# -- graduated percentage ------------------------------------------------------------------------------


def test_graduated_percentage_lagos_example() -> None:
    """getlago.com "Graduated percentage": 0-1,000 at 1 % + 200 flat, 1,001-10,000 at 2 % + 300,
    beyond at 3 % + 400; transactions of 500, 550 and 4,000 cost 205 + 306 + 80 = 591."""
    p = price(
        "graduated_percentage",
        tiers=[
            {"up_to": "1000", "rate": "1", "flat_price": "200"},
            {"up_to": "10000", "rate": "2", "flat_price": "300"},
            {"up_to": None, "rate": "3", "flat_price": "400"},
        ],
    )
    rated = events(p, "500", "550", "4000")
    assert total(rated) == "591.00"
    assert [(r.tier, r.units, r.rate, r.amount) for r in rated.breakdown] == [
        (1, 1000, D(1), D(210)),
        (2, 4050, D(2), D(381)),
    ]


def test_graduated_percentage_after_a_free_amount() -> None:
    p = price(
        "graduated_percentage",
        tiers=[{"up_to": "100", "rate": "10"}, {"up_to": None, "rate": "1"}],
        free_amount="50",
    )
    assert events(p, "30", "120").exact == D(10)  # 100 charged (the first 50 free): all of tier 1
    assert events(p, "30", "121").exact == D(10) + D("0.01")


# -- properties ----------------------------------------------------------------------------------------

quantities = st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    bounds = sorted(draw(st.sets(st.integers(1, 10**5), max_size=4)))
    prices = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
    return [
        {
            "up_to": None if bound is None else str(bound),
            "unit_price": str(draw(prices)),
            "flat_price": str(draw(prices)),
        }
        for bound in [*bounds, None]
    ]


@given(tier_lists(), quantities, quantities)
def test_graduated_totals_never_fall_as_usage_grows(tiers: list[dict[str, Any]], a: Decimal, b: Decimal) -> None:
    p = price("graduated", tiers=tiers)
    low, high = sorted((a, b))
    assert units(p, str(low)).exact <= units(p, str(high)).exact


@given(tier_lists(), quantities)
def test_one_tier_prices_the_same_graduated_or_volume(tiers: list[dict[str, Any]], quantity: Decimal) -> None:
    single = [tiers[-1]]
    assert units(price("graduated", tiers=single), str(quantity)) == units(price("volume", tiers=single), str(quantity))


@given(tier_lists(), quantities)
def test_the_breakdown_adds_up_to_the_exact_total(tiers: list[dict[str, Any]], quantity: Decimal) -> None:
    rated = units(price("graduated", tiers=tiers), str(quantity))
    assert sum(r.amount for r in rated.breakdown) == rated.exact
    assert sum(r.units for r in rated.breakdown) == quantity


event_values = st.decimals(min_value=0, max_value=10**4, places=2, allow_nan=False, allow_infinity=False)
values = st.lists(event_values, max_size=8)


@given(values, quantities)
def test_a_free_amount_takes_exactly_that_much_value_off(events_: list[Decimal], free: Decimal) -> None:
    """At 100 % of each value the charge is the value charged: the events' total less the free
    amount (never below 0), whichever events it falls on."""
    p = price("percentage", percentage={"rate": "100"}, free_amount=str(free))
    rated = rate(p, "USD", events=events_)
    assert rated.exact == max(sum(events_, D(0)) - free, D(0))
    assert rated.breakdown == () or rated.breakdown[0].units == rated.exact


# -- parsing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ({"model": "per_unit", "unit_price": 0.1}, "usage.not_a_decimal", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": 1}, "usage.not_a_decimal", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": "1e-3"}, "usage.not_a_decimal", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": " 1"}, "usage.not_a_decimal", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": "-0.10"}, "usage.negative", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": "0.0000000000001"}, "usage.too_many_decimals", "usage.unit_price"),
        ({"model": "per_unit"}, "usage.field_required", "usage.unit_price"),
        ({"model": "per_unit", "unit_price": "1", "colour": "red"}, "usage.unknown_field", "usage.colour"),
        ({"model": "per_unit", "unit_price": "1", "tiers": STRIPE_TIERS}, "usage.field_not_allowed", "usage.tiers"),
        ({"model": "per_unit", "unit_price": "1", "free_events": 2}, "usage.field_not_allowed", "usage.free_events"),
        (
            {"model": "graduated", "tiers": STRIPE_TIERS, "unit_price": "1"},
            "usage.field_not_allowed",
            "usage.unit_price",
        ),
        (
            {"model": "percentage", "percentage": {"rate": "1"}, "free_units": "5"},
            "usage.field_not_allowed",
            "usage.free_units",
        ),
        ({"model": "volume"}, "usage.field_required", "usage.tiers"),
        ({"model": "volume", "tiers": []}, "usage.tiers_required", "usage.tiers"),
        ({"model": "banded", "tiers": []}, "usage.invalid_choice", "usage.model"),
        (
            {
                "model": "graduated",
                "tiers": [
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": None, "unit_price": "1"},
                ],
            },
            "usage.tiers_not_ascending",
            "usage.tiers[1].up_to",
        ),
        (
            {
                "model": "graduated",
                "tiers": [
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": "5", "unit_price": "1"},
                    {"up_to": None, "unit_price": "1"},
                ],
            },
            "usage.tiers_not_ascending",
            "usage.tiers[1].up_to",
        ),
        (
            {"model": "graduated", "tiers": [{"up_to": None, "unit_price": "1"}, {"up_to": None, "unit_price": "1"}]},
            "usage.tier_open_not_last",
            "usage.tiers[0].up_to",
        ),
        (
            {"model": "graduated", "tiers": [{"up_to": "10", "unit_price": "1"}]},
            "usage.last_tier_bounded",
            "usage.tiers[0].up_to",
        ),
        ({"model": "graduated", "tiers": [{"unit_price": "1"}]}, "usage.field_required", "usage.tiers[0].up_to"),
        (
            {"model": "graduated", "tiers": [{"up_to": "0", "unit_price": "1"}, {"up_to": None, "unit_price": "1"}]},
            "usage.not_positive",
            "usage.tiers[0].up_to",
        ),
        ({"model": "graduated", "tiers": [{"up_to": None, "rate": "1"}]}, "usage.unknown_field", "usage.tiers[0].rate"),
        (
            {"model": "graduated", "tiers": [{"up_to": None, "flat_price": "1"}]},
            "usage.field_required",
            "usage.tiers[0].unit_price",
        ),
        (
            {"model": "graduated", "tiers": [{"up_to": None, "unit_price": "-1"}]},
            "usage.negative",
            "usage.tiers[0].unit_price",
        ),
        (
            {"model": "graduated_percentage", "tiers": [{"up_to": None, "unit_price": "1"}]},
            "usage.unknown_field",
            "usage.tiers[0].unit_price",
        ),
        (
            {"model": "graduated_percentage", "tiers": [{"up_to": None, "rate": "101"}]},
            "usage.rate_out_of_range",
            "usage.tiers[0].rate",
        ),
        ({"model": "package", "package": {"size": "0", "price": "1"}}, "usage.not_positive", "usage.package.size"),
        (
            {"model": "package", "package": {"size": "10", "price": "1", "round": "nearest"}},
            "usage.invalid_choice",
            "usage.package.round",
        ),
        ({"model": "package", "package": {"size": "10"}}, "usage.field_required", "usage.package.price"),
        ({"model": "percentage", "percentage": {"fixed_price": "1"}}, "usage.field_required", "usage.percentage.rate"),
        (
            {"model": "percentage", "percentage": {"rate": "1", "min_per_event": "5", "max_per_event": "1"}},
            "usage.min_above_max",
            "usage.percentage.min_per_event",
        ),
        (
            {"model": "percentage", "percentage": {"rate": "1"}, "free_events": "2"},
            "usage.not_an_integer",
            "usage.free_events",
        ),
        (
            {"model": "percentage", "percentage": {"rate": "1"}, "free_events": True},
            "usage.not_an_integer",
            "usage.free_events",
        ),
        (
            {"model": "percentage", "percentage": {"rate": "1"}, "aggregation": "max"},
            "usage.aggregation_not_allowed",
            "usage.aggregation",
        ),
        (
            {"model": "per_unit", "unit_price": "1", "aggregation": "unique_count"},
            "usage.field_required",
            "usage.property",
        ),
        ({"model": "per_unit", "unit_price": "1", "property": "user"}, "usage.field_not_allowed", "usage.property"),
        ({"model": "per_unit", "unit_price": "1", "meter": "API Calls"}, "usage.invalid_meter", "usage.meter"),
        (
            {"model": "per_unit", "unit_price": "1", "allowance": {"beyond": "refuse"}},
            "usage.allowance_empty",
            "usage.allowance",
        ),
        (
            {"model": "per_unit", "unit_price": "1", "allowance": {"per_day": "5", "beyond": "block"}},
            "usage.invalid_choice",
            "usage.allowance.beyond",
        ),
        (
            {"model": "per_unit", "unit_price": "1", "charge_limit": {}},
            "usage.charge_limit_empty",
            "usage.charge_limit",
        ),
        (
            {"model": "per_unit", "unit_price": "1", "charge_limit": {"amount": "10.001"}},
            "usage.too_many_decimals",
            "usage.charge_limit.amount",
        ),
        (
            {"model": "per_unit", "unit_price": "1", "charge_limit": {"records": 0}},
            "usage.out_of_range",
            "usage.charge_limit.records",
        ),
    ],
)
def test_parse_refusals_name_the_field_and_code(raw: dict[str, Any], code: str, field: str) -> None:
    assert refusal(raw) == (code, field)


def test_the_field_prefix_is_the_callers() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_usage_price({"meter": "m", "aggregation": "sum", "model": "per_unit"}, "USD", field="terms[2].usage")
    assert caught.value.field == "terms[2].usage.unit_price"


def test_allowance_and_charge_limit_are_parsed() -> None:
    p = price(
        "per_unit",
        unit_price="0.01",
        aggregation="unique_count",
        property="user_id",
        allowance={"per_day": "100", "per_cycle": "1000.5", "beyond": "refuse"},
        charge_limit={"amount": "50.00", "records": 10000},
    )
    assert p.allowance == Allowance(per_day=D(100), per_cycle=D("1000.5"), beyond=Beyond.REFUSE)
    assert p.charge_limit == ChargeLimit(D("50.00"), 10000)
    assert p.aggregation is Aggregation.UNIQUE_COUNT and p.property == "user_id"
    assert price("per_unit", unit_price="1", allowance={"per_record": "5"}).allowance == Allowance(per_record=D(5))


def test_rate_takes_units_or_events_as_its_model_prices() -> None:
    with pytest.raises(InvalidInput) as caught:
        rate(price("percentage", percentage={"rate": "1"}), "USD", units=D(5))
    assert caught.value.code == "usage.events_required"
    with pytest.raises(InvalidInput) as caught:
        rate(price("per_unit", unit_price="1"), "USD", events=[D(5)])
    assert caught.value.code == "usage.units_required"
    with pytest.raises(InvalidInput) as caught:
        rate(price("per_unit", unit_price="1"), "USD", units=D(-1))
    assert caught.value.code == "usage.negative"


# -- round trips ---------------------------------------------------------------------------------------

EVERY_MODEL = [
    {
        "model": "graduated",
        "tiers": [
            {"up_to": "0.0000001", "unit_price": "0.000000000001", "flat_price": "0.0000001"},
            {"up_to": None, "unit_price": "0", "flat_price": "0"},
        ],
        "free_units": "0.00000001",
    },
    {"model": "per_unit", "unit_price": "0.000125", "free_units": "100"},
    {"model": "graduated", "tiers": STRIPE_TIERS, "free_units": "0"},
    {"model": "volume", "tiers": STRIPE_TIERS, "allowance": {"per_cycle": "5000", "beyond": "overage"}},
    {
        "model": "package",
        "package": {"size": "1000", "price": "2.50", "round": "down"},
        "charge_limit": {"amount": "100.00"},
    },
    {
        "model": "percentage",
        "percentage": {"rate": "2.9", "fixed_price": "0.30", "min_per_event": "0.50", "max_per_event": "20.00"},
        "free_events": 3,
        "free_amount": "1000.00",
    },
    {
        "model": "graduated_percentage",
        "tiers": [
            {"up_to": "1000", "rate": "1", "flat_price": "200"},
            {"up_to": None, "rate": "0.5", "flat_price": "0"},
        ],
    },
    {
        "model": "per_unit",
        "aggregation": "unique_count",
        "property": "user_id",
        "unit_price": "4",
        "charge_limit": {"records": 500},
    },
]


@pytest.mark.parametrize("raw", EVERY_MODEL, ids=lambda raw: raw["model"])
def test_every_model_round_trips_through_its_json_and_the_storage_codec(raw: dict[str, Any]) -> None:
    p = parse_usage_price({"meter": "api_calls", "aggregation": "sum", **raw}, "USD")
    assert parse_usage_price(usage_price_json(p), "USD") == p
    assert "E" not in json.dumps(usage_price_json(p))  # decimals written plainly, never as 1E-7
    terms = PriceTerms("t1", "p1", Money.parse("10.00", "USD"), Cycle.MONTH, BillingModel.ARREARS, usage=p)
    assert codec.terms_in(codec.terms_out(terms)) == terms
    assert terms.meter == "api_calls"


def test_terms_stored_with_only_a_meter_read_as_a_free_per_unit_price_on_it() -> None:
    terms = PriceTerms("t1", "p1", Money.parse("10.00", "USD"), Cycle.MONTH, BillingModel.ARREARS)
    stored = {k: v for k, v in codec.terms_out(terms).items() if k != "usage"} | {"meter": "api_calls"}
    read = codec.terms_in(stored)
    assert read.meter == "api_calls" and read.usage is not None
    assert (read.usage.model, read.usage.aggregation, read.usage.unit_price) == (
        UsageModel.PER_UNIT,
        Aggregation.SUM,
        0,
    )
    assert rate(read.usage, "USD", units=D(1000)).total == Money(0, "USD")
    assert codec.terms_in(codec.terms_out(terms)).meter is None


# -- the catalog API -----------------------------------------------------------------------------------

KEY = "bk_test_pricing"
HYBRID = {
    "price": "49.00",
    "currency": "USD",
    "cycle": "month",
    "billing_model": "arrears",
    "usage": {"meter": "api_calls", "aggregation": "sum", "model": "graduated", "tiers": STRIPE_TIERS},
}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-p", "Tenant P", KEY)
    yield InProcessClient(KEY)


def test_terms_with_a_usage_price_round_trip_through_the_catalog_api(api: InProcessClient) -> None:
    created = api.post("/products", {"name": "API", "terms": [HYBRID]})
    assert created.status == 201, created.body
    terms = created.body["terms"][0]
    expected = {**HYBRID["usage"], "free_units": "0"}  # decimals as they were sent
    assert terms["usage"] == expected and terms["meter"] == "api_calls"
    assert terms["price"] == {"amount": "49.00", "currency": "USD"}  # a hybrid: the fixed fee too
    read = api.get(f"/products/{created.body['id']}")
    assert read.status == 200 and read.body["terms"][0]["usage"] == expected
    # the answer is accepted back as it is (a client can copy it into new terms)
    added = api.post(f"/products/{created.body['id']}/terms", {**HYBRID, "usage": read.body["terms"][0]["usage"]})
    assert added.status == 201, added.body
    assert added.body["usage"] == expected


def test_editing_terms_replaces_or_removes_the_usage_price(api: InProcessClient) -> None:
    product = api.post("/products", {"name": "API", "terms": [HYBRID]}).body
    path = f"/products/{product['id']}/terms/{product['terms'][0]['id']}"
    per_unit = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.01"}
    edited = api.patch(path, {"usage": per_unit})
    assert edited.status == 201, edited.body
    assert edited.body["usage"] == {**per_unit, "free_units": "0"}
    path = f"/products/{product['id']}/terms/{edited.body['id']}"
    cleared = api.patch(path, {"usage": None})
    assert cleared.status == 201 and cleared.body["usage"] is None and cleared.body["meter"] is None


def test_a_bad_usage_price_is_a_422_naming_the_field(api: InProcessClient) -> None:
    bad = {**HYBRID, "usage": {**HYBRID["usage"], "tiers": [STRIPE_TIERS[1], STRIPE_TIERS[0]]}}
    reply = api.post("/products", {"name": "API", "terms": [bad]})
    assert reply.status == 422, reply.body
    assert reply.body["error"] == "usage.tier_open_not_last"
    assert reply.body["fields"][0]["field"] == "terms[0].usage.tiers[0].up_to"
    floats = {**HYBRID, "usage": {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": 0.1}}
    reply = api.post("/products", {"name": "API", "terms": [floats]})
    assert reply.status == 422 and reply.body["error"] == "usage.not_a_decimal"
    assert api.get("/products").body["items"] == []  # nothing half-written


def test_terms_added_or_edited_with_a_bad_usage_price_name_the_field_as_the_body_does(api: InProcessClient) -> None:
    product = api.post("/products", {"name": "API", "terms": [HYBRID]}).body
    no_price = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit"}
    added = api.post(f"/products/{product['id']}/terms", {**HYBRID, "usage": no_price})
    assert added.status == 422 and added.body["error"] == "usage.field_required"
    assert added.body["fields"][0]["field"] == "usage.unit_price"
    path = f"/products/{product['id']}/terms/{product['terms'][0]['id']}"
    edited = api.patch(path, {"usage": {**no_price, "unit_price": "1", "per": "call"}})
    assert edited.status == 422 and edited.body["error"] == "usage.unknown_field"
    assert edited.body["fields"][0]["field"] == "usage.per"
    assert len(api.get(f"/products/{product['id']}").body["terms"]) == 1


@pytest.mark.parametrize(
    ("raw", "aggregation"),
    [
        (
            {
                "model": "volume",
                "tiers": [{"up_to": "100", "unit_price": "1.00"}, {"up_to": None, "unit_price": "0.10"}],
            },
            "sum",
        ),
        ({"model": "per_unit", "unit_price": "0.10"}, "latest"),
    ],
)
def test_a_charge_limit_needs_a_total_that_never_falls(raw: dict[str, Any], aggregation: str) -> None:
    """Volume tiers (100 units at 1.00 = 100.00; 101 at 0.10 = 10.10) and `latest` can fall as usage
    grows: an immediate invoice of the usage so far would be credited back by the final line."""
    assert refusal({**raw, "aggregation": aggregation, "charge_limit": {"records": 2}}) == (
        "usage.charge_limit_not_monotone",
        "usage.charge_limit",
    )
    parse_usage_price({"meter": "api_calls", **raw, "aggregation": aggregation}, "USD")  # fine without a limit


@pytest.mark.parametrize("where", ["free_events", "charge_limit"])
def test_counts_are_bounded(where: str) -> None:
    raw: dict[str, Any] = {"model": "percentage", "percentage": {"rate": "1"}}
    raw[where] = 10**40 if where == "free_events" else {"records": 10**40}
    assert refusal(raw)[0] == "usage.out_of_range"


def test_stripes_inf_is_taken_for_the_open_last_tier() -> None:
    tiers = [{"up_to": "1000", "unit_price": "0.10", "flat_price": "5.00"}, {"up_to": "inf", "unit_price": "0.05"}]
    price = parse_usage_price({"meter": "api_calls", "aggregation": "sum", "model": "graduated", "tiers": tiers}, "USD")
    assert price.tiers[-1].up_to is None
    assert usage_price_json(price)["tiers"][-1]["up_to"] is None
    inf_first = [{"up_to": "inf", "unit_price": "1"}, {"up_to": None, "unit_price": "1"}]
    assert refusal({"model": "graduated", "tiers": inf_first}) == refusal(
        {"model": "graduated", "tiers": [{"up_to": None, "unit_price": "1"}, {"up_to": None, "unit_price": "1"}]}
    )
