"""The pure allowance rules: windows, the refusal at submission, and the billable overage."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from billow.domain.allowances import AllowanceExceeded, Used, Window, billable, refusal, remaining
from billow.domain.calendar import Period
from billow.domain.contacts import Contact
from billow.domain.pricing import Allowance, Beyond
from billow.domain.usage import UsageRecord
from billow.domain.usage import billable as usage_billable
from billow.services.events import Event, events_of
from billow.storage import codec
from billow.storage.stream import change_of

from tests.unit.test_events import record

MARCH = Period(date(2026, 3, 1), date(2026, 4, 1))
APRIL = Period(date(2026, 4, 1), date(2026, 5, 1))
D = Decimal


def rec(record_id: str, quantity: str, day: date, minute: int = 0, cycle: Period = MARCH) -> UsageRecord:
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=minute)
    return UsageRecord(record_id, "sub", "svc", "c", "calls", at, day, D(quantity), {}, cycle.start, at)


def quantities(records: list[UsageRecord]) -> dict[str, Decimal]:
    return {r.id: r.quantity for r in records}


# -- refusal at submission -------------------------------------------------------------------------
def test_a_record_fitting_every_window_is_not_refused() -> None:
    allowance = Allowance(per_record=D(10), per_day=D(20), per_cycle=D(100), beyond=Beyond.REFUSE)
    used = Used(D(90), {date(2026, 3, 4): D(10)})
    assert refusal(allowance, D(10), date(2026, 3, 4), MARCH, used) is None  # exactly on every limit


def test_one_more_than_remains_is_refused_naming_the_window_and_what_remains() -> None:
    allowance = Allowance(per_day=D(1000), beyond=Beyond.REFUSE)
    found = refusal(allowance, D(41), date(2026, 3, 4), MARCH, Used(D(960), {date(2026, 3, 4): D(960)}))
    assert found is not None
    assert (found.window, found.limit, found.remaining) == (Window.PER_DAY, D(1000), D(40))
    assert found.message == "per_day allowance for 2026-03-04: 40 of 1000 remain; this record carries 41"


def test_the_binding_window_is_named_when_several_refuse() -> None:
    allowance = Allowance(per_day=D(50), per_cycle=D(100), beyond=Beyond.REFUSE)
    used = Used(D(95), {date(2026, 3, 4): D(10)})
    found = refusal(allowance, D(45), date(2026, 3, 4), MARCH, used)
    assert found is not None and found.window is Window.PER_CYCLE and found.remaining == D(5)
    assert found.message.startswith("per_cycle allowance for 2026-03-01..2026-04-01: 5 of 100 remain")


def test_per_record_is_refused_whatever_was_used() -> None:
    allowance = Allowance(per_record=D("2.5"), beyond=Beyond.REFUSE)
    found = refusal(allowance, D("2.6"), date(2026, 3, 4), MARCH, Used())
    assert found is not None and found.window is Window.PER_RECORD
    error = found.error()
    assert isinstance(error, AllowanceExceeded) and error.code == "usage.allowance_exceeded"
    assert error.message == "per_record allowance: a record may carry at most 2.5; this one carries 2.6"


def test_remaining_of_each_window_never_goes_below_zero() -> None:
    allowance = Allowance(per_record=D(5), per_day=D(10), per_cycle=D(12))
    used = Used(D(15), {date(2026, 3, 4): D(3)})  # an override lowered the limit below what was used
    assert remaining(allowance, used, date(2026, 3, 4)) == {
        Window.PER_RECORD: D(5),
        Window.PER_DAY: D(7),
        Window.PER_CYCLE: D(0),
    }


# -- billable (overage) ---------------------------------------------------------------------------
def test_per_record_bills_what_each_record_carries_beyond_it() -> None:
    allowance = Allowance(per_record=D(10))
    records = [rec("a", "4", date(2026, 3, 1)), rec("b", "10", date(2026, 3, 1), 1), rec("c", "12.5", date(2026, 3, 2))]
    assert quantities(billable(allowance, records)) == {"c": D("2.5")}


def test_per_day_bills_each_day_beyond_it_from_the_record_that_crosses_it() -> None:
    allowance = Allowance(per_day=D(100))
    day1, day2 = date(2026, 3, 4), date(2026, 3, 5)
    records = [
        rec("a", "60", day1, 1),
        rec("b", "50", day1, 2),  # crosses: 10 beyond
        rec("c", "7", day1, 3),  # all beyond
        rec("d", "100", day2),  # the next day starts afresh: exactly on the limit
    ]
    assert quantities(billable(allowance, records)) == {"b": D(10), "c": D(7)}


def test_per_cycle_counts_each_cycle_on_its_own() -> None:
    allowance = Allowance(per_cycle=D("1000"))
    records = [
        rec("a", "999.5", date(2026, 3, 3)),
        rec("b", "1", date(2026, 3, 30)),
        rec("c", "1000", date(2026, 4, 2), cycle=APRIL),
    ]
    assert quantities(billable(allowance, records)) == {"b": D("0.5")}


def test_records_are_taken_in_time_order_whatever_order_they_come_in() -> None:
    allowance = Allowance(per_cycle=D(5))
    late, early = rec("late", "5", date(2026, 3, 9)), rec("early", "5", date(2026, 3, 2))
    assert quantities(billable(allowance, [late, early])) == {"late": D(5)}


def test_several_windows_bill_the_most_any_window_says_is_beyond() -> None:
    allowance = Allowance(per_record=D(30), per_day=D(50), per_cycle=D(60))
    day1, day2 = date(2026, 3, 4), date(2026, 3, 5)
    records = [
        rec("a", "40", day1, 1),  # per_record: 10 beyond; day 40/50, cycle 40/60
        rec("b", "15", day1, 2),  # day: 55 -> 5 beyond; cycle 55/60
        rec("c", "20", day2),  # day2 20/50, cycle 75 -> 15 beyond
    ]
    assert quantities(billable(allowance, records)) == {"a": D(10), "b": D(5), "c": D(15)}


def test_billable_keeps_everything_but_the_quantity_and_is_the_usage_modules() -> None:
    allowance = Allowance(per_record=D(1))
    original = rec("a", "3", date(2026, 3, 4))
    (billed,) = usage_billable(allowance, [original])
    assert billed.quantity == D(2)
    assert (billed.id, billed.at, billed.day) == ("a", original.at, original.day)
    assert billed.period_start == original.period_start


@pytest.mark.parametrize("quantity", ["0", "0.000000000001"])
def test_nothing_billable_within_the_allowance(quantity: str) -> None:
    assert billable(Allowance(per_cycle=D(1)), [rec("a", quantity, date(2026, 3, 4))]) == []


# -- the contact's own allowance: stored, and an event --------------------------------------------
def test_a_contacts_own_allowance_changing_is_an_event_per_meter() -> None:
    contact = Contact("con_1", "Ann", "ann@example.com", None, None, {}, None, True, datetime(2027, 3, 1, tzinfo=UTC))

    def image(c: Contact, version: int) -> dict[str, Any]:
        return {
            "PK": {"S": "T#t1#TEST#C#con_1"}, "SK": {"S": "CONTACT"}, "type": {"S": "contact"},
            "version": {"N": str(version)}, "data": {"S": json.dumps(codec.contact_out(c))},
        }  # fmt: skip

    def derived(old: Contact, new: Contact) -> list[Event]:
        change = change_of(record(image(new, 2), image(old, 1)))
        assert change is not None
        return events_of(change)

    deal = Allowance(per_cycle=D("5000"), beyond=Beyond.REFUSE)
    with_deal = replace(contact, allowances={"api_calls": deal})
    assert codec.contact_in(codec.contact_out(with_deal)) == with_deal  # stored and read back
    [event] = derived(contact, with_deal)
    assert event.type == "contact.allowance_changed"
    assert event.data == {
        "meter": "api_calls",
        "allowance": {"per_record": None, "per_day": None, "per_cycle": "5000", "beyond": "refuse"},
        "previous": None,
    }
    [removed] = derived(with_deal, contact)
    assert removed.data["allowance"] is None and removed.data["previous"] == event.data["allowance"]
    assert derived(with_deal, replace(with_deal, name="Ann B")) == []  # another change: none
