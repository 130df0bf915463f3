"""payment_method.expiring on DynamoDB Local: the daily billing run's shards announce each saved
card that expires at the end of next month, once, however often they run and however many run at
once in separate processes; a card expiring another month, or removed, is not announced."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.payment_methods import SavedPaymentMethod, next_month
from billow.local.dynamodb import DynamoDBLocal
from billow.services.context import Scope
from billow.services.payment_methods import announce_expiring
from billow.services.ports import DUE_SHARDS
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.support import separate_processes

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 20)  # cards expiring at the end of December 2026 are announced


def _save(store: DynamoStore, scope: Scope, method_id: str, month: int, year: int, removed: bool = False) -> None:
    method = SavedPaymentMethod(
        method_id,
        f"con_{method_id}",
        "stripe",
        "cus_1",
        "seti_1",
        "card",
        "visa",
        "4242",
        month,
        year,
        datetime(2026, 1, 5, tzinfo=UTC),
    )
    work = store.unit_of_work("seeding")
    saved = work.save_payment_method(scope, method)
    work.commit()
    if removed:
        work = store.unit_of_work("removing")
        work.save_payment_method(scope, replace(saved, removed_at=datetime(2026, 2, 1, tzinfo=UTC)))
        work.commit()


def _daily_run(store: DynamoStore, today: date = TODAY) -> int:
    return sum(announce_expiring(store, today, shard) for shard in range(DUE_SHARDS))


def _announcer(table: str, endpoint: str, barrier: Any, counts: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    barrier.wait()
    counts.put(_daily_run(DynamoStore()))


def test_each_card_expiring_at_the_end_of_next_month_is_announced_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    assert next_month(TODAY) == "2026-12" and next_month(date(2026, 12, 31)) == "2027-01"
    store = DynamoStore()
    acme, acme_live, globex = Scope("acme", "test"), Scope("acme", "live"), Scope("globex", "test")
    expiring = {(acme, f"pm_a{i}") for i in range(5)} | {(acme_live, "pm_live"), (globex, "pm_g")}
    for scope, method_id in expiring:
        _save(store, scope, method_id, 12, 2026)
    _save(store, acme, "pm_this_month", 11, 2026)
    _save(store, acme, "pm_later", 1, 2027)
    _save(store, acme, "pm_next_year_same_month", 12, 2027)
    _save(store, acme, "pm_removed", 12, 2026, removed=True)

    spawn = separate_processes()
    barrier, counts = spawn.Barrier(3), spawn.Queue()
    processes = [
        spawn.Process(target=_announcer, args=(local_table, dynamodb_local.endpoint, barrier, counts)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert sum(counts.get(timeout=5) for _ in processes) == len(expiring)  # each by one process
    assert _daily_run(store) == 0  # the next run (or a retried shard) announces nothing again

    announced = {
        (scope, m.id): m.expiring_announced_on
        for scope in (acme, acme_live, globex)
        for contact in {f"con_{mid}" for s, mid in expiring if s == scope} | {"con_pm_this_month", "con_pm_later"}
        for m in store.payment_methods_of(scope, contact)
    }
    assert {k for k, on in announced.items() if on is not None} == expiring
    assert set(announced.values()) == {TODAY, None}
    assert store.get_payment_method(acme, "con_pm_removed", "pm_removed").expiring_announced_on is None  # type: ignore[union-attr]
    assert _daily_run(store, date(2026, 12, 1)) == 1  # a month on: January 2027's card
