import itertools
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from billow.domain.calendar import BillingSchedule, Cycle, Period, local_date, tenant_zone
from hypothesis import given
from hypothesis import strategies as st


def billing_dates(schedule: BillingSchedule, start: date, count: int) -> list[date]:
    return [p.start for p in schedule.periods(start, count)]


@pytest.mark.parametrize(
    ("cycle", "anchor", "expected"),
    [
        # a 31st falls back in February (leap or not) and returns in longer months
        (Cycle.MONTH, date(2024, 1, 31), [date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)]),
        (Cycle.MONTH, date(2023, 1, 31), [date(2023, 2, 28), date(2023, 3, 31)]),
        # 29 February bills on the 28th in common years
        (Cycle.YEAR, date(2024, 2, 29), [date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28), date(2028, 2, 29)]),
        (
            Cycle.QUARTER,
            date(2023, 11, 30),
            [date(2024, 2, 29), date(2024, 5, 30), date(2024, 8, 30), date(2024, 11, 30)],
        ),
        (Cycle.SEMIANNUAL, date(2023, 8, 31), [date(2024, 2, 29), date(2024, 8, 31)]),
        (Cycle.YEAR, date(2023, 4, 30), [date(2024, 4, 30)]),
    ],
)
def test_anchors_on_month_ends(cycle: Cycle, anchor: date, expected: list[date]) -> None:
    schedule = BillingSchedule.anniversary(cycle, anchor)
    assert billing_dates(schedule, anchor, len(expected) + 1) == [anchor, *expected]


@pytest.mark.parametrize("weekday", range(7))
def test_weekly_bills_on_its_weekday(weekday: int) -> None:
    schedule = BillingSchedule(Cycle.WEEK, weekday, date(2024, 1, 1))
    periods = schedule.periods(date(2024, 3, 13), 4)
    assert all(p.start.weekday() == weekday and p.days == 7 for p in periods)
    assert periods[0].contains(date(2024, 3, 13))


def test_a_period_is_half_open() -> None:
    schedule = BillingSchedule.anniversary(Cycle.MONTH, date(2024, 1, 15))
    january = schedule.period_containing(date(2024, 1, 15))
    assert january == Period(date(2024, 1, 15), date(2024, 2, 15))
    assert not january.contains(date(2024, 2, 15))
    assert schedule.period_containing(date(2024, 2, 15)).start == date(2024, 2, 15)
    assert schedule.period_containing(date(2024, 2, 14)) == january


@given(
    anchor=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)),
    cycle=st.sampled_from(list(Cycle)),
    offset=st.integers(0, 4000),
)
def test_consecutive_periods_tile_time(anchor: date, cycle: Cycle, offset: int) -> None:
    schedule = BillingSchedule.anniversary(cycle, anchor)
    day = anchor + timedelta(days=offset)
    periods = schedule.periods(day, 6)
    assert periods[0].contains(day)
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
    assert all(schedule.is_billing_date(p.start) for p in periods)


def test_billing_day_comes_from_the_tenant_time_zone() -> None:
    instant = datetime(2024, 1, 31, 23, 30, tzinfo=UTC)
    assert local_date(instant, tenant_zone("UTC")) == date(2024, 1, 31)
    assert local_date(instant, tenant_zone("Asia/Tokyo")) == date(2024, 2, 1)
    assert local_date(instant.astimezone(timezone(timedelta(hours=-5))), tenant_zone("UTC")) == date(2024, 1, 31)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        local_date(datetime(2024, 1, 1), tenant_zone("UTC"))  # noqa: DTZ001 - the point of the test
