"""The usage record domain: `aggregate` for every aggregation, and the checks of a record's id,
quantity and properties (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from billow.domain.errors import InvalidInput
from billow.domain.pricing import Aggregation
from billow.domain.usage import UsageRecord, aggregate, parse_properties, parse_quantity, record_id

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def rec(rid: str, quantity: str, at: datetime = T0, **properties: str) -> UsageRecord:
    return UsageRecord(
        id=rid,
        subscription_id="sub",
        service_id="svc",
        contact_id="c",
        meter="api_calls",
        at=at,
        day=at.date(),
        quantity=Decimal(quantity),
        properties=properties,
        period_start=date(2026, 3, 10),
        received_at=T0,
    )


RECORDS = [
    rec("a", "1.5", T0, user="u1"),
    rec("b", "0.000000000001", T0 + timedelta(hours=1), user="u2"),
    rec("c", "7", T0 - timedelta(days=1), user="u1"),
    rec("d", "2", T0 + timedelta(minutes=30)),
]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        (Aggregation.SUM, Decimal("10.500000000001")),
        (Aggregation.COUNT, Decimal(4)),
        (Aggregation.MAX, Decimal(7)),
        (Aggregation.LATEST, Decimal("0.000000000001")),
    ],
)
def test_each_aggregation_is_exact(aggregation: Aggregation, expected: Decimal) -> None:
    assert aggregate(aggregation, RECORDS) == expected
    assert aggregate(aggregation, iter(RECORDS)) == expected  # any iterable, read once
    assert aggregate(aggregation, []) == 0


def test_unique_count_counts_distinct_values_of_the_property_only_where_present() -> None:
    assert aggregate(Aggregation.UNIQUE_COUNT, RECORDS, "user") == 2
    assert aggregate(Aggregation.UNIQUE_COUNT, RECORDS, "region") == 0
    with pytest.raises(ValueError, match="property"):
        aggregate(Aggregation.UNIQUE_COUNT, RECORDS)


def test_latest_compares_instants_across_offsets_and_breaks_ties_by_id() -> None:
    plus_two = timezone(timedelta(hours=2))
    same_instant = [rec("b", "5", T0), rec("a", "9", T0.astimezone(plus_two))]
    assert aggregate(Aggregation.LATEST, same_instant) == 5  # "b" > "a"
    later_wall_clock = [rec("x", "1", T0), rec("y", "2", (T0 - timedelta(minutes=1)).astimezone(plus_two))]
    assert aggregate(Aggregation.LATEST, later_wall_clock) == 1


@pytest.mark.parametrize("good", ["0", "12", "0.5", "1.123456789012", "999999999999999999"])
def test_quantities_are_exact_decimal_strings(good: str) -> None:
    assert parse_quantity(good) == Decimal(good)


@pytest.mark.parametrize(
    "bad", ["-1", "+1", "1e3", "1.1234567890123", "", " 1", "1.", ".5", "NaN", "1_000", "9" * 19, 1, 1.5, None]
)
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_quantity(bad, field="value")
    assert (refused.value.code, refused.value.field) == ("usage.invalid_quantity", "value")


def test_record_ids_and_properties() -> None:
    assert record_id("evt_2026-03-10:0001.a") == "evt_2026-03-10:0001.a"
    for bad in ["", "a" * 129, "a b", "é", 7, None]:
        with pytest.raises(InvalidInput, match="record id"):
            record_id(bad)
    assert parse_properties(None) == {}
    assert parse_properties({f"k{i}": "v" * 100 for i in range(20)})["k0"] == "v" * 100
    for bad_props in [{"k": 1}, {"": "v"}, {"k" * 41: "v"}, {"k": "v" * 101}, ["k"], {f"k{i}": "v" for i in range(21)}]:
        with pytest.raises(InvalidInput) as refused:
            parse_properties(bad_props)
        assert refused.value.code == "usage.invalid_properties"


def test_a_record_needs_aware_instants() -> None:
    with pytest.raises(ValueError, match="aware"):
        rec("n", "1", datetime(2026, 3, 10, 12, 0))  # noqa: DTZ001
