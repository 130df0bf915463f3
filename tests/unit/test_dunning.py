"""Dunning's policy (validated, versioned, in the tenant's settings) and its rule, day by day
(`billow.domain.dunning`, docs/dunning.md). The random interleavings are
tests/unit/test_dunning_properties.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from billow.domain.collection import AttemptStatus
from billow.domain.dunning import (
    AttemptFacts,
    Cancel,
    CaseFacts,
    CaseStatus,
    Deactivate,
    DunningCase,
    DunningPolicy,
    End,
    InvoiceFacts,
    Remind,
    Retry,
    ServiceFacts,
    StepKind,
    Wait,
    decide,
)
from billow.domain.errors import Conflict, InvalidInput
from billow.domain.money import Money
from billow.domain.rules import ServiceState
from billow.domain.tenants import TenantSettings
from billow.local.stack import add_tenant
from billow.storage.codec import settings_in, settings_out

from tests.support import InProcessClient

DAY0 = date(2027, 3, 1)
POLICY = DunningPolicy(
    retry_days=(1, 3, 5, 7),
    reminder_days=(0, 7),
    grace_days=10,
    deactivation_threshold={"USD": Money(5_000, "USD")},
    cancel_after_days=30,
)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def failed(number: int, on: int, hard: bool = False) -> AttemptFacts:
    return AttemptFacts(number, AttemptStatus.FAILED, hard, day(on))


def invoice(latest: AttemptFacts | None, amount: int = 8_000, **kw: Any) -> InvoiceFacts:
    first = DAY0 if latest is not None else None
    return InvoiceFacts("inv_1", usd(amount), kw.pop("due_date", day(14)), first, latest, **kw)


CASE = "dun_con_1_USD_1"


def service(sid: str, state: ServiceState = ServiceState.EFFECTIVE, grace: date | None = None) -> ServiceFacts:
    return ServiceFacts(sid, f"sub_{sid}", state, grace, frozenset({"inv_1"}))


def stopped(sid: str, by: str | None = CASE) -> ServiceFacts:
    """Not effective: deactivated by the case (its action the last on the service), or by staff."""
    return ServiceFacts(sid, f"sub_{sid}", ServiceState.NOT_EFFECTIVE, None, frozenset({"inv_1"}), by)


def facts(*invoices: InvoiceFacts, services: tuple[ServiceFacts, ...] = (), **kw: Any) -> CaseFacts:
    return CaseFacts("USD", invoices, services or (service("s1"),), **kw)


def opened(policy: DunningPolicy = POLICY) -> DunningCase:
    return DunningCase.open("con_1", "USD", 1, policy, DAY0)


# -- the policy -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"retry_days": (0, 3)}, "dunning.retry_days", "retry_days"),
        ({"retry_days": (3, 1)}, "dunning.retry_days", "retry_days"),
        ({"retry_days": (1, 1)}, "dunning.retry_days", "retry_days"),
        ({"retry_days": tuple(range(1, 12))}, "dunning.retry_days", "retry_days"),
        ({"retry_days": (366,)}, "dunning.retry_days", "retry_days"),
        ({"reminder_days": (-1, 2)}, "dunning.reminder_days", "reminder_days"),
        ({"reminder_days": (7, 7)}, "dunning.reminder_days", "reminder_days"),
        ({"grace_days": 366}, "dunning.grace_days", "grace_days"),
        ({"grace_days": -1}, "dunning.grace_days", "grace_days"),
        ({"cancel_after_days": 0}, "dunning.cancel_after_days", "cancel_after_days"),
        ({"deactivation_threshold": {"USD": usd(-1)}}, "dunning.threshold", "deactivation_threshold.USD"),
        ({"deactivation_threshold": {"EUR": usd(1)}}, "dunning.threshold", "deactivation_threshold.EUR"),
        ({"excluded_from_deactivation": ("vip", "vip")}, "dunning.classifications", "excluded_from_deactivation"),
        ({"excluded_from_cancellation": ("",)}, "dunning.classifications", "excluded_from_cancellation"),
    ],
)
def test_a_policy_out_of_its_bounds_is_refused_with_its_code(changes: dict[str, Any], code: str, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        DunningPolicy(**changes)
    assert (refused.value.code, refused.value.field) == (code, field)


def test_a_change_is_the_next_version_and_no_change_keeps_it() -> None:
    policy = DunningPolicy()
    changed = policy.changed({"retry_days": [2, 4], "deactivation_threshold": {"JPY": "1000"}})
    assert changed.version == 1 and changed.retry_days == (2, 4)
    assert changed.deactivation_threshold == {"JPY": Money(1000, "JPY")}
    assert changed.changed({"retry_days": [2, 4]}) is changed
    assert changed.changed({"cancel_after_days": None}).version == 1  # already never
    with pytest.raises(InvalidInput) as unknown:
        policy.changed({"version": 7})
    assert unknown.value.code == "dunning.unknown_rule"
    with pytest.raises(InvalidInput) as decimals:
        policy.changed({"deactivation_threshold": {"JPY": "10.5"}})
    assert (decimals.value.code, decimals.value.field) == ("money.too_many_decimals", "deactivation_threshold.JPY")


def test_a_case_keeps_the_policy_it_opened_under_in_its_currency() -> None:
    policy = replace(POLICY, deactivation_threshold={"USD": usd(1), "EUR": Money(1, "EUR")}, version=4)
    case = DunningCase.open("con_1", "USD", 3, policy, DAY0)
    assert case.id == "dun_con_1_USD_3"
    assert case.policy.version == 4 and case.policy.deactivation_threshold == {"USD": usd(1)}
    assert case.history[0].kind is StepKind.OPEN and case.history[0].outcome == "policy version 4"


def test_the_policy_is_stored_with_the_settings_and_read_back() -> None:
    settings = TenantSettings("t", "T", dunning=replace(POLICY, excluded_from_cancellation=("gov",), version=3))
    assert settings_in(settings_out(settings), 0) == settings
    stored = settings_out(settings)
    del stored["dunning"]  # settings stored before dunning existed
    assert settings_in(stored, 0).dunning == DunningPolicy()


# -- the rule, day by day -------------------------------------------------------------------------------
def test_a_declined_card_is_retried_on_the_schedule_reminded_deactivated_after_grace_then_cancelled() -> None:
    case = opened()
    assert decide(case, facts(invoice(failed(1, 0))), day(0)) == Remind(1)
    case = case.record(Remind(1), day(0))
    assert decide(case, facts(invoice(failed(1, 0))), day(0)) == Wait(day(1))
    for n, (previous, on) in enumerate(((0, 1), (1, 3), (3, 5), (5, 7)), start=2):
        declined = facts(invoice(failed(n - 1, previous)))
        assert decide(case, declined, day(on - 1)) == Wait(day(on))
        assert decide(case, declined, day(on)) == Retry((("inv_1", n),))
        case = case.record(Retry((("inv_1", n),)), day(on))
    after_last = facts(invoice(failed(5, 7)))
    assert decide(case, after_last, day(7)) == Remind(2)
    case = case.record(Remind(2), day(7))
    assert decide(case, after_last, day(7)) == Wait(day(10)), "the grace period ends on day 10"
    assert decide(case, after_last, day(9)) == Wait(day(10))
    assert decide(case, after_last, day(10)) == Deactivate(("s1",))
    case = case.record(Deactivate(("s1",)), day(10))
    deactivated = facts(invoice(failed(5, 7)), services=(stopped("s1"),))
    assert decide(case, deactivated, day(10)) == Wait(day(40))
    assert decide(case, deactivated, day(40)) == Cancel(("s1",), with_fees=True)
    case = case.record(Cancel(("s1",), True), day(40))
    cancelled = facts(invoice(failed(5, 7)), services=(service("s1", ServiceState.CANCELLED),))
    assert decide(case, cancelled, day(40)) == Wait(None), "nothing more to do but wait for the payment"
    assert decide(case, facts(invoice(failed(5, 7), amount=0)), day(41)) == End(()), "a cancelled service stays so"
    kinds = ["open", "remind", "retry", "retry", "retry", "retry", "remind", "deactivate", "cancel"]
    assert [s.kind for s in case.history] == kinds


def test_days_jumped_over_give_one_retry_and_one_reminder_not_one_per_day_missed() -> None:
    case = opened()
    assert decide(case, facts(invoice(failed(1, 0))), day(6)) == Retry((("inv_1", 2),))
    assert decide(case, facts(invoice(failed(2, 6))), day(6)) == Remind(1)
    case = case.record(Remind(1), day(6))
    assert decide(case, facts(invoice(failed(2, 6))), day(6)) == Wait(day(7)), "the slots of days 1, 3, 5 are gone"
    case = opened(replace(POLICY, reminder_days=(0, 2, 4)))
    assert decide(case, facts(invoice(failed(2, 6))), day(6)) == Remind(3)


def test_a_hard_decline_waits_for_a_new_payment_method_then_is_retried_at_once() -> None:
    case = opened(replace(POLICY, reminder_days=()))
    hard = failed(1, 0, hard=True)
    assert decide(case, facts(invoice(hard)), day(3)) == Wait(day(10))
    assert decide(case, facts(invoice(hard, new_method=True)), day(3)) == Retry((("inv_1", 2),))
    nothing = AttemptFacts(1, AttemptStatus.NOT_COLLECTABLE, True, DAY0)  # no payment method at all
    assert decide(case, facts(invoice(nothing)), day(3)) == Wait(day(10))


def test_a_charge_in_flight_or_one_already_asked_for_is_not_charged_again() -> None:
    case = opened(replace(POLICY, reminder_days=()))
    live = AttemptFacts(2, AttemptStatus.CREATED, False, day(1))
    world = InvoiceFacts("inv_1", usd(8_000), day(14), DAY0, live)
    assert decide(case, facts(world), day(2)) == Wait(day(10))
    asked = case.record(Retry((("inv_1", 2),)), day(1))
    # the retry is recorded but its attempt is not read yet: not asked for again under the same number
    assert decide(asked, facts(invoice(failed(1, 0))), day(1)) == Wait(day(10))


def test_no_deactivation_under_the_threshold_nor_for_an_excluded_classification_nor_in_a_subscriptions_grace() -> None:
    case = opened(replace(POLICY, reminder_days=(), retry_days=(), excluded_from_deactivation=("vip",)))
    late = failed(1, 0)
    assert decide(case, facts(invoice(late, amount=5_000)), day(20)) == Wait(None), "5000 is not over 5000"
    assert decide(case, facts(invoice(late, amount=5_001)), day(20)) == Deactivate(("s1",))
    assert decide(case, facts(invoice(late), classification="vip"), day(20)) == Wait(None)
    graced = (service("s1", grace=day(25)), service("s2"))
    assert decide(case, facts(invoice(late), services=graced), day(20)) == Deactivate(("s2",))
    one_left = (service("s1", grace=day(25)), stopped("s2"))
    case = case.record(Deactivate(("s2",)), day(20))
    assert decide(case, facts(invoice(late), services=one_left), day(20)) == Wait(day(25))
    assert decide(case, facts(invoice(late), services=one_left), day(25)) == Deactivate(("s1",))
    never = opened(replace(POLICY, deactivation_threshold={}, reminder_days=(), retry_days=()))
    assert decide(never, facts(invoice(late)), day(400)) == Wait(None), "a currency without a threshold"


def test_only_services_billed_to_the_debt_are_deactivated() -> None:
    case = opened(replace(POLICY, reminder_days=(), retry_days=()))
    other = ServiceFacts("s9", "sub_9", ServiceState.EFFECTIVE, None, frozenset({"inv_paid"}))
    assert decide(case, facts(invoice(failed(1, 0)), services=(service("s1"), other)), day(10)) == Deactivate(("s1",))


def test_an_excluded_classification_is_deactivated_but_not_cancelled() -> None:
    case = opened(replace(POLICY, reminder_days=(), retry_days=(), excluded_from_cancellation=("gov",)))
    case = case.record(Deactivate(("s1",)), day(10))
    held = facts(invoice(failed(1, 0)), services=(stopped("s1"),), classification="gov")
    assert decide(case, held, day(90)) == Wait(None)
    assert decide(case, replace(held, classification=None), day(90)) == Cancel(("s1",), True)
    no_fees = replace(case, policy=replace(case.policy, cancel_with_fees=False))
    assert decide(no_fees, replace(held, classification=None), day(90)) == Cancel(("s1",), False)


def test_paid_ends_the_case_and_reactivates_only_what_it_deactivated() -> None:
    case = opened(replace(POLICY, reminder_days=(), retry_days=()))
    case = case.record(Deactivate(("s1", "s2", "s4")), day(10))
    services = (
        stopped("s1"),  # dunning's
        service("s2", ServiceState.EFFECTIVE),  # dunning's, reactivated by staff since
        stopped("s3", by=None),  # staff's
        stopped("s4", by=None),  # dunning's, then reactivated and deactivated again by staff
    )
    owing = facts(invoice(failed(1, 0)), services=services)
    assert decide(case, owing, day(40)) == Cancel(("s1",), True), "staff's word on s4 stands"
    paid = facts(invoice(failed(1, 0), amount=0), services=services)
    assert decide(case, paid, day(12)) == End(("s1",))
    ended = case.record(End(("s1",)), day(12))
    assert ended.ended and ended.record(End(("s1",)), day(12)) == ended, "a duplicate end changes nothing"
    assert decide(ended, paid, day(13)) == End()
    with pytest.raises(Conflict) as late:
        ended.record(Remind(1), day(13))
    assert late.value.code == "dunning.case_ended"


def test_credit_covering_the_debt_ends_the_case_and_a_transfer_invoice_is_in_debt_once_overdue() -> None:
    case = opened(replace(POLICY, reminder_days=()))
    assert decide(case, facts(invoice(failed(1, 0)), credit=usd(8_000)), day(1)) == End()
    assert decide(case, facts(invoice(failed(1, 0)), credit=usd(7_999)), day(1)) == Retry((("inv_1", 2),))
    transfer = invoice(None, due_date=day(5))
    assert decide(case, facts(transfer), day(5)) == End(), "not overdue yet: nothing is owed"
    assert decide(case, facts(transfer), day(6)) == Wait(day(10)), "overdue: owed, never charged by dunning"
    upcoming = InvoiceFacts("inv_2", usd(100), day(20))
    assert decide(case, facts(transfer, upcoming), day(6)) == Wait(day(10))
    assert decide(case, facts(transfer, upcoming), day(12)) == Deactivate(("s1",))
    still = facts(transfer, upcoming, services=(stopped("s1"),))
    deactivated = case.record(Deactivate(("s1",)), day(12))
    assert decide(deactivated, still, day(12)) == Wait(day(21)), "inv_2 falls overdue on day 21"


# -- through the API ------------------------------------------------------------------------------------
KEY = "bk_test_dunning"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-d", "Tenant D", KEY)
    yield InProcessClient(KEY)


def test_the_dunning_policy_is_read_changed_versioned_and_validated(api: InProcessClient) -> None:
    default = api.get("/settings/dunning")
    assert default.status == 200 and default.body == DunningPolicy().as_json()
    assert api.get("/settings").body["dunning"] == default.body
    changed = api.patch(
        "/settings/dunning",
        {"retry_days": [2, 4], "deactivation_threshold": {"USD": "50.00"}, "cancel_after_days": 30},
    )
    assert changed.status == 200, changed.body
    policy = changed.body["dunning"]
    assert policy["retry_days"] == [2, 4] and policy["deactivation_threshold"] == {"USD": "50.00"}
    assert policy["version"] == 1 and policy["cancel_after_days"] == 30
    assert api.patch("/settings/dunning", {"retry_days": [2, 4]}).body["dunning"]["version"] == 1, "no change"
    cleared = api.patch("/settings/dunning", {"cancel_after_days": None}).body["dunning"]
    assert cleared["cancel_after_days"] is None and cleared["version"] == 2
    assert api.get("/settings/dunning").body == cleared, "stored, and read back from the table"
    for body, code, field in (
        ({"retry_days": [3, 1]}, "dunning.retry_days", "retry_days"),
        ({"retry_days": [0]}, "dunning.retry_days", "retry_days"),
        ({"deactivation_threshold": {"USD": "1.005"}}, "money.too_many_decimals", "deactivation_threshold.USD"),
        ({"excluded_from_deactivation": ["vip", "vip"]}, "dunning.classifications", "excluded_from_deactivation"),
        ({"version": 9}, "request.validation_failed", "version"),
        # each rule's bounds answer its own code (docs/dunning.md's table, docs/errors.md)
        ({"grace_days": 400}, "dunning.grace_days", "grace_days"),
        ({"grace_days": -1}, "dunning.grace_days", "grace_days"),
        ({"cancel_after_days": 0}, "dunning.cancel_after_days", "cancel_after_days"),
        ({"excluded_from_deactivation": [""]}, "dunning.classifications", "excluded_from_deactivation"),
        ({"excluded_from_cancellation": ["x"] * 51}, "dunning.classifications", "excluded_from_cancellation"),
        ({"retry_days": list(range(1, 12))}, "dunning.retry_days", "retry_days"),
        ({"retry_days": [1, 400]}, "dunning.retry_days", "retry_days"),
        ({"reminder_days": [-1]}, "dunning.reminder_days", "reminder_days"),
        ({"deactivation_threshold": {"USD": "-1"}}, "dunning.threshold", "deactivation_threshold.USD"),
        ({"deactivation_threshold": {"USD": 5}}, "money.not_a_decimal", "deactivation_threshold.USD"),
        ({"grace_days": "3"}, "dunning.grace_days", "grace_days"),
    ):
        refused = api.patch("/settings/dunning", body)
        assert refused.status == 422, (body, refused.body)
        assert refused.body["error"] == code and refused.body["fields"][0]["field"] == field, refused.body
    assert api.get("/settings/dunning").body == cleared, "nothing half-written"


def test_a_step_delivered_again_later_changes_nothing() -> None:
    case = opened().record(Deactivate(("s1",)), day(10)).record(Remind(2), day(11))
    assert case.record(Deactivate(("s1",)), day(10)) == case
    assert case.deactivated == {"s1": day(10)}


def test_a_paused_case_does_nothing_but_end_and_catches_up_once_resumed() -> None:
    case = opened(replace(POLICY, reminder_days=())).paused(day(0), "customer disputes the invoice")
    assert case.paused(day(1)) == case, "pausing a paused case changes nothing"
    assert decide(case, facts(invoice(failed(1, 0))), day(20)) == Wait(None)
    assert decide(case, facts(invoice(failed(1, 0), amount=0)), day(20)) == End()
    resumed = case.resumed(day(20))
    assert resumed.status is CaseStatus.OPEN and resumed.resumed(day(20)) == resumed
    assert decide(resumed, facts(invoice(failed(1, 0))), day(20)) == Retry((("inv_1", 2),))
    again = resumed.paused(day(20)).resumed(day(20)).paused(day(20))
    assert again.status is CaseStatus.PAUSED, "a pause may come and go on one day"
    assert [s.kind for s in again.history][-3:] == ["pause", "resume", "pause"]
    with pytest.raises(Conflict):
        resumed.record(End(), day(21)).paused(day(22))


def test_a_deactivation_an_action_refused_is_not_tried_again_nor_undone() -> None:
    case = opened(replace(POLICY, reminder_days=(), retry_days=()))
    world = facts(invoice(failed(1, 0)))
    assert decide(case, world, day(10)) == Deactivate(("s1",))
    refused = case.record(Deactivate(("s1",)), day(10), "s1: lifecycle.illegal_transition")
    assert decide(refused, world, day(10)) == Wait(None), "s1 is still effective: not asked again"
    assert decide(refused, facts(invoice(failed(1, 0), amount=0)), day(11)) == End(())


def test_an_excluded_contacts_case_does_nothing_but_end() -> None:
    case = opened(replace(POLICY, reminder_days=(0,)))
    owing = facts(invoice(failed(1, 0)))
    assert decide(case, owing, day(20)) == Retry((("inv_1", 2),)), "not excluded: chased"
    assert decide(case, replace(owing, excluded=True), day(20)) == Wait(None), "excluded: as if paused"
    deactivated = case.record(Deactivate(("s1",)), day(12))
    paid = facts(invoice(failed(1, 0), amount=0), services=(stopped("s1"),), excluded=True)
    assert decide(deactivated, paid, day(20)) == End(("s1",)), "it still ends, reactivating what it stopped"


def test_an_operator_ends_a_case_without_reactivating_and_says_so() -> None:
    case = opened().record(Deactivate(("s1",)), day(10))
    ended = case.ended_by_operator(day(11), "settled out of band")
    assert ended.ended and ended.history[-1].kind is StepKind.END and ended.history[-1].targets == ()
    assert ended.history[-1].outcome == "ended by an operator: settled out of band; nothing reactivated"
    assert ended.history[-1].by_operator and not case.record(End(), day(11)).history[-1].by_operator
    assert ended.ended_by_operator(day(12), "again") == ended, "ending an ended case changes nothing"
    paid = case.record(End(("s1",)), day(11))
    assert paid.ended_by_operator(day(12)) == paid
    assert decide(ended, facts(invoice(failed(1, 0)), services=(stopped("s1"),)), day(12)) == End()
    for step in (ended.paused, ended.resumed):
        with pytest.raises(Conflict) as refused:
            step(day(12))
        assert refused.value.code == "dunning.case_ended"


def test_a_step_recorded_again_with_another_outcome_changes_nothing() -> None:
    """Two runs of one retry step (two processes, or a rerun after a crash, maybe past midnight)
    word its outcome differently: the case records the retry once (found racing processes)."""
    case = DunningCase.open("c1", "USD", 1, DunningPolicy(), date(2025, 3, 3))
    retry = Retry((("inv_1", 2),))
    once = case.record(retry, date(2025, 3, 4), "inv_1: failed")
    assert once.record(retry, date(2025, 3, 4), "inv_1: failed (recorded by another run)") == once
    assert once.record(retry, date(2025, 3, 5), "inv_1: failed") == once
    remind = Remind(1)
    reminded = once.record(remind, date(2025, 3, 4), "owed 31.00 USD")
    assert reminded.record(remind, date(2025, 3, 4), "owed 0.00 USD") == reminded


def test_a_clock_jump_deactivates_as_of_the_day_the_debt_went_over_the_threshold() -> None:
    # The new user's review: under the threshold at the grace's end (day 10), over it only once a
    # later invoice failed (day 20); a clock jumping from day 8 to day 25 deactivated as of day 10.
    case = opened(replace(POLICY, reminder_days=(), retry_days=()))
    small = InvoiceFacts("inv_1", usd(3_000), day(14), DAY0, failed(1, 0))
    big = InvoiceFacts("inv_2", usd(8_000), day(34), day(20), failed(1, 20))
    services = (ServiceFacts("s1", "sub_s1", ServiceState.EFFECTIVE, None, frozenset({"inv_1", "inv_2"})),)
    decided = decide(case, facts(small, big, services=services), day(25))
    assert decided == Deactivate(("s1",)) and decided.on == day(20)  # day by day: on day 20
    assert decide(case, facts(small, services=services), day(25)) == Wait(None)  # 30.00: never over
