"""The `dunning.*` events, derived from a case item's stream records (billow.services.events,
docs/events.md): one per step a write adds, none for a write that adds none, the same ids however
often a record is delivered."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from billow.domain.contacts import Contact
from billow.domain.dunning import (
    Cancel,
    Deactivate,
    DunningCase,
    DunningPolicy,
    End,
    Remind,
    Retry,
    end_outcome,
    reminder_outcome,
)
from billow.domain.money import Money
from billow.gateways.events import DUNNING_WAKES
from billow.services.events import Event, events_of
from billow.storage import codec
from billow.storage.stream import change_of

from tests.unit.test_events import record

PK = "T#acme#TEST#C#con_1"
DAY0 = date(2027, 3, 1)
POLICY = DunningPolicy(deactivation_threshold={"USD": Money(5_000, "USD")}, cancel_after_days=30)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def opened() -> DunningCase:
    return DunningCase.open("con_1", "USD", 1, POLICY, DAY0)


def image(case: DunningCase, version: int, **flow: Any) -> dict[str, Any]:
    """The case item as the repository writes it: the case under `case`, the flow's fields beside."""
    body = {"case": codec.case_out(case), "due": None, "decided_on": None, "run": 0, "clocked": False, **flow}
    return {
        "PK": {"S": PK}, "SK": {"S": "DUNNING#USD#0001"}, "type": {"S": "dunning_case"},
        "version": {"N": str(version)}, "data": {"S": json.dumps(body)},
    }  # fmt: skip


def events(new: DunningCase, new_version: int, old: DunningCase | None = None, **flow: Any) -> list[Event]:
    old_image = None if old is None else image(old, new_version - 1)
    change = change_of(record(image(new, new_version, **flow), old_image))
    assert change is not None
    return events_of(change)


def test_an_opened_case_is_one_event_with_the_case_and_a_stable_id() -> None:
    [event] = events(opened(), 1)
    assert event.type == "dunning.case_opened" and event.detail_type == "billow.dunning.case_opened"
    data = event.detail()["data"]
    assert data["case_id"] == "dun_con_1_USD_1" and data["currency"] == "USD"
    assert data["step"] == {"on": "2027-03-01", "kind": "open", "targets": [], "outcome": "policy version 0"}
    assert data["case"]["status"] == "open" and data["case"]["policy"] == POLICY.for_currency("USD").as_json()
    assert [e.id for e in events(opened(), 1)] == [event.id], "a record delivered again: the same id"
    assert (data["cause"], data["invoice_id"]) == (None, None), "opened without saying why (before it was kept)"


def test_an_opened_case_says_what_opened_it() -> None:
    case = DunningCase.open("con_1", "USD", 1, POLICY, DAY0, cause="invoice.overdue", invoice_id="inv_7")
    [event] = events(case, 1)
    data = event.detail()["data"]
    assert (data["cause"], data["invoice_id"]) == ("invoice.overdue", "inv_7")
    assert data["step"]["targets"] == ["inv_7"] and data["step"]["outcome"] == "invoice.overdue; policy version 0"


def test_a_reminder_is_the_reminder_event_with_its_number_and_the_debt() -> None:
    case = opened()
    outcome = reminder_outcome(Money(8_050, "USD"), Money(10_050, "USD"), Money(2_000, "USD"))
    reminded = case.record(Remind(2), day(7), outcome)
    [event] = events(reminded, 2, case)
    assert event.type == "dunning.reminder_due"
    data = event.data
    assert data["number"] == 2 and data["owed"] == {"amount": "80.50", "currency": "USD"}
    assert data["amount_due"] == {"amount": "100.50", "currency": "USD"}, "what the invoices owe, gross"
    assert data["credit"] == {"amount": "20.00", "currency": "USD"}
    assert data["case"]["last_reminder"] == 2 and data["case"]["reminders_sent"] == 1
    unknown = case.record(Remind(1), day(0))
    assert [events(unknown, 2, case)[0].data[k] for k in ("owed", "amount_due", "credit")] == [None] * 3
    only_owed = events(case.record(Remind(1), day(0), reminder_outcome(Money(100, "USD"))), 2, case)[0].data
    assert (only_owed["owed"], only_owed["amount_due"]) == ({"amount": "1.00", "currency": "USD"}, None)


def test_a_write_adding_no_step_emits_nothing() -> None:
    case = opened().record(Remind(1), day(0))
    assert events(case, 5, case, due="2027-03-08", decided_on="2027-03-01") == []  # a wake, a park, a wait
    assert events(case.record(Remind(1), day(0)), 6, case) == [], "a step recorded again adds none"


def test_each_new_step_is_its_event_in_order_and_a_redelivery_gives_the_same_ids() -> None:
    case = opened()
    retried = case.record(Retry((("inv_1", 2),)), day(1))
    [retry] = events(retried, 2, case)
    assert retry.type == "dunning.retry_requested" and retry.data["attempt_ids"] == ["att_inv_1_2"]

    stopped = retried.record(Deactivate(("s1", "s2")), day(14))
    cancelled = stopped.record(Cancel(("s2",), True), day(44))
    both = events(cancelled, 4, retried)  # two steps in one write: two events, in order
    assert [(e.type, e.position, e.data["service_ids"]) for e in both] == [
        ("dunning.services_deactivated", 0, ["s1", "s2"]),
        ("dunning.services_cancelled", 1, ["s2"]),
    ]
    assert [e.id for e in events(cancelled, 4, retried)] == [e.id for e in both]
    assert len({e.id for e in (retry, *both)}) == 3

    paid = cancelled.record(End(("s1",)), day(50), f"{end_outcome(['paid'])}; s1: executed")
    reactivated, ended = events(paid, 5, cancelled)
    assert (reactivated.type, reactivated.data["service_ids"]) == ("dunning.services_reactivated", ["s1"])
    assert ended.type == "dunning.case_ended" and ended.data["why"] == "paid" and "reason" not in ended.data
    assert reactivated.id != ended.id and ended.data["case"]["status"] == "ended"


def test_an_end_without_payment_does_not_say_paid() -> None:
    case = opened()
    for reasons, why in (
        (["written_off"], "written_off"),
        (["voided"], "voided"),
        (["credited"], "credited"),
        (["paid", "voided"], "nothing_owed"),
        ([], "nothing_owed"),
    ):
        [ended] = events(case.record(End(), day(9), end_outcome(reasons)), 2, case)
        assert ended.data["why"] == why, reasons
    [legacy] = events(case.record(End(), day(9)), 2, case)  # recorded before ends said why
    assert legacy.data["why"] == "nothing_owed"


def test_an_operator_pauses_resumes_and_ends_with_a_reason() -> None:
    case = opened()
    paused = case.paused(day(2), "disputed")
    [pause] = events(paused, 2, case)
    assert pause.type == "dunning.case_paused" and pause.data["reason"] == "disputed"
    resumed = paused.resumed(day(3))
    [resume] = events(resumed, 3, paused)
    assert resume.type == "dunning.case_resumed" and resume.data["reason"] == ""
    again = resumed.paused(day(3)).resumed(day(3)).paused(day(3))  # a pause may come and go on one day
    steps = events(again, 4, resumed)
    assert [e.type for e in steps] == ["dunning.case_paused", "dunning.case_resumed", "dunning.case_paused"]
    assert len({e.id for e in (pause, *steps)}) == 4, "each step its own id, two pauses in one write too"

    ended = resumed.record(Deactivate(("s1",)), day(14)).ended_by_operator(day(20), "settled by phone")
    deactivation, end = events(ended, 5, resumed)
    assert deactivation.type == "dunning.services_deactivated"
    assert end.type == "dunning.case_ended" and end.data["why"] == "operator"
    assert end.data["service_ids"] == [], "an operator's end reactivates nothing"
    assert end.data["reason"] == "ended by an operator: settled by phone; nothing reactivated"


def test_a_default_payment_method_changing_is_an_event_dunning_wakes_on() -> None:
    contact = Contact(
        "con_1", "Ann", "ann@example.com", None, None, {}, None, True, datetime(2027, 3, 1, tzinfo=UTC),
        default_method_ref="pm_old",
    )  # fmt: skip

    def contact_image(c: Contact, version: int) -> dict[str, Any]:
        return {
            "PK": {"S": PK}, "SK": {"S": "CONTACT"}, "type": {"S": "contact"},
            "version": {"N": str(version)}, "data": {"S": json.dumps(codec.contact_out(c))},
        }  # fmt: skip

    def derived(old: Contact, new: Contact) -> list[Event]:
        change = change_of(record(contact_image(new, 2), contact_image(old, 1)))
        assert change is not None
        return events_of(change)

    [event] = derived(contact, replace(contact, default_method_ref="pm_new"))
    assert event.type == "payment_method.default_changed" and event.contact_id == "con_1"
    assert event.data == {"payment_method_id": "pm_new", "previous_payment_method_id": "pm_old"}
    assert derived(contact, replace(contact, name="Ann B")) == []  # another change of the contact: none
    assert event.type in DUNNING_WAKES and "subscription.payment_method_changed" in DUNNING_WAKES
