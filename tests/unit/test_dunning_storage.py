"""Dunning case storage: the item, its wake-up entry, the wake and park updates (moto)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from billow.domain.dunning import DunningCase, DunningPolicy, End, Remind
from billow.domain.errors import ConcurrentModification, InvalidInput
from billow.domain.money import Money
from billow.services.context import Scope
from billow.services.ports import StoredCase
from billow.storage.repository import DynamoStore

SCOPE = Scope("ten_1", "test")
DAY = date(2026, 3, 2)
POLICY = DunningPolicy(deactivation_threshold={"EUR": Money.parse("10.00", "EUR")}, version=3)


def _save(store: DynamoStore, stored: StoredCase, expected: int) -> StoredCase:
    work = store.unit_of_work("case")
    saved = work.save_case(SCOPE, stored, expected)
    work.commit()
    return saved


def _open(store: DynamoStore, contact_id: str = "con_a_b", sequence: int = 1, **flow: object) -> StoredCase:
    case = DunningCase.open(contact_id, "EUR", sequence, POLICY, DAY)
    return _save(store, StoredCase(case, **flow), 0)  # type: ignore[arg-type]


def test_a_case_round_trips_by_id_and_contact(moto_table: str) -> None:
    store = DynamoStore()
    saved = _open(store, due=DAY, decided_on=DAY)
    assert saved.version == 1
    read = store.get_case(SCOPE, saved.id)
    assert read == saved
    assert read is not None and read.case.policy == POLICY.for_currency("EUR")
    assert store.open_case_of(SCOPE, "con_a_b", "EUR") == saved
    assert store.open_case_of(SCOPE, "con_a_b", "USD") is None
    assert store.get_case(Scope("ten_1", "live"), saved.id) is None  # the other mode sees nothing


def test_creating_a_case_twice_and_a_stale_write_are_refused(moto_table: str) -> None:
    store = DynamoStore()
    saved = _open(store)
    with pytest.raises(ConcurrentModification):
        _open(store)
    reminded = replace(saved, case=saved.case.record(Remind(1), DAY))
    _save(store, reminded, saved.version)
    with pytest.raises(ConcurrentModification):
        _save(store, reminded, saved.version)


def test_ended_cases_are_not_open_and_cases_list_newest_first(moto_table: str) -> None:
    store = DynamoStore()
    first = _open(store)
    _save(store, replace(first, case=first.case.record(End(), DAY)), first.version)
    assert store.open_case_of(SCOPE, "con_a_b", "EUR") is None
    second = _open(store, sequence=2)
    assert store.open_case_of(SCOPE, "con_a_b", "EUR") == second
    assert [c.id for c in store.cases_of(SCOPE, "con_a_b")] == [second.id, first.id]


def test_only_open_due_cases_without_a_test_clock_have_a_wake_up_entry(moto_table: str) -> None:
    store = DynamoStore(due_shards=1)
    due = _open(store, "con_1", due=DAY)
    _open(store, "con_2", due=DAY, clocked=True)
    _open(store, "con_3", due=None)
    later = _open(store, "con_4", due=date(2026, 3, 9))
    ended = _open(store, "con_5", due=DAY)
    _save(store, replace(ended, case=ended.case.record(End(), DAY)), ended.version)
    found = [e for shard in range(64) for e in store.due_cases(shard, DAY, 50, None).items]
    assert [(e.scope, e.contact_id, e.case_id, e.due) for e in found] == [(SCOPE, "con_1", due.id, DAY)]
    upto = [e.case_id for shard in range(64) for e in store.due_cases(shard, date(2026, 3, 9), 50, None).items]
    assert sorted(upto) == sorted([due.id, later.id])


def test_a_wake_resumes_the_parked_token_once_and_a_stale_park_is_refused(moto_table: str) -> None:
    store = DynamoStore()
    saved = _open(store)
    assert store.park_case(SCOPE, saved.id, 0, "tok-1")
    parked = store.get_case(SCOPE, saved.id)
    assert parked is not None and parked.token == "tok-1" and parked.version == 2
    first = store.wake_case(SCOPE, saved.id)
    second = store.wake_case(SCOPE, saved.id)
    assert first is not None and second is not None
    assert first[1] == "tok-1" and second[1] is None
    assert second[0].wake_seq == 2 and second[0].token is None
    assert not store.park_case(SCOPE, saved.id, 1, "tok-2")  # a wake came after the decision
    assert store.park_case(SCOPE, saved.id, 2, "tok-3")
    assert store.wake_case(SCOPE, "dun_con_x_EUR_1") is None


def test_an_ended_case_is_not_parked_and_a_save_keeps_the_token(moto_table: str) -> None:
    store = DynamoStore()
    saved = _open(store)
    assert store.park_case(SCOPE, saved.id, 0, "tok-1")
    parked = store.get_case(SCOPE, saved.id)
    assert parked is not None
    kept = _save(store, replace(parked, due=DAY), parked.version)
    assert store.get_case(SCOPE, saved.id) == kept and kept.token == "tok-1"
    _save(store, replace(kept, case=kept.case.record(End(), DAY)), kept.version)
    assert not store.park_case(SCOPE, saved.id, 0, "tok-2")


def test_a_case_id_that_is_not_one_is_refused(moto_table: str) -> None:
    with pytest.raises(InvalidInput):
        DynamoStore().get_case(SCOPE, "inv_1")
