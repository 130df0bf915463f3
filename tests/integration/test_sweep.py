"""The sweep on DynamoDB Local and the fake rail (which ignores idempotency keys, as localstripe):
payment attempts left live by a collector that died or whose message was lost, and card refunds
left pending by a request no one retried, are found in the sweep index (not by a scan) once older
than the grace, and taken on to the end, exactly once, by sweepers racing in separate processes
(docs/payments.md, "Sweep")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import runtime
from billow.domain.collection import AttemptStatus
from billow.domain.invoices import InvoiceStatus
from billow.domain.receivables import RefundStatus
from billow.local.dynamodb import DynamoDBLocal
from billow.local.lambda_runtime import invoke
from billow.local.scheduler import SWEEPER, run_sweep
from billow.services.collection import collect_invoice
from billow.services.gateway import GatewayUnavailable
from billow.services.ports import DUE_SHARDS
from billow.services.sweep import GRACE
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.collection_support import NOW, SCOPE, FixedClock, seed_contact, seed_invoice, seed_tenant, stored_invoice
from tests.fake_rail import Crash, FakeRail
from tests.refund_support import START, Seeded, refund, seed
from tests.support import separate_processes

pytestmark = pytest.mark.integration

CLOCK = FixedClock()


@pytest.fixture
def rail(tmp_path: Path) -> Iterator[FakeRail]:
    """The fake rail as every tenant's gateway (runtime's factory, injected, as the collector's)."""
    rail = FakeRail(tmp_path / "rail.sqlite")
    runtime.payment_gateway = lambda scope: rail  # type: ignore[attr-defined]
    yield rail
    del runtime.payment_gateway  # type: ignore[attr-defined]


def unfinished(store: DynamoStore, before: datetime) -> list[Any]:
    return [e for shard in range(DUE_SHARDS) for e in store.unfinished_page(before, shard, 100, None).items]


def left_pending(store: DynamoStore, rail: FakeRail, invoice_id: str) -> None:
    """A collector that wrote the attempt and then could not reach the rail; its message is lost."""
    seed_contact(store, invoice_id.replace("inv", "con"))
    seed_invoice(store, invoice_id.replace("inv", "con"), invoice_id, "30.00")
    rail.unavailable_at = rail.attempted + 1
    with pytest.raises(GatewayUnavailable):
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    rail.unavailable_at = None


def left_confirmed(store: DynamoStore, rail: FakeRail, invoice_id: str) -> None:
    """A collector that died right after the rail confirmed its charge, before recording it."""
    seed_contact(store, invoice_id.replace("inv", "con"))
    seed_invoice(store, invoice_id.replace("inv", "con"), invoice_id, "30.00")
    rail.crash_after = rail.requests + 2  # create, then confirm
    with pytest.raises(Crash):
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    rail.crash_after = None


def left_refund(store: DynamoStore, rail: FakeRail, tenant_id: str) -> Seeded:
    """A card refund whose request died right after the rail refunded, before recording it."""
    seeded = seed(store, rail, tenant_id=tenant_id)
    rail.crash_after = rail.requests + 2  # list the charge's refunds, then refund
    with pytest.raises(Crash):
        refund(store, rail, seeded, "ticket-1", "12.00", at=START)
    rail.crash_after = None
    return seeded


def assert_paid_once(store: DynamoStore, rail: FakeRail, invoice_id: str) -> None:
    assert stored_invoice(store, invoice_id).status is InvoiceStatus.PAID
    assert rail.succeeded_per_invoice()[invoice_id] == 1
    contact_id = invoice_id.replace("inv", "con")
    (attempt,) = store.attempts_of(SCOPE, contact_id)
    assert attempt.status is AttemptStatus.SUCCEEDED
    (payment,) = store.payments_of(SCOPE, contact_id, invoice_id)
    assert payment.reference == attempt.charge_ref


def assert_refunded_once(store: DynamoStore, rail: FakeRail, seeded: Seeded) -> None:
    (made,) = rail.refunds_of(seeded.payment.reference)
    (record,) = store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)
    assert (record.status, record.rail_ref, made.metadata["refund_id"]) == (RefundStatus.SUCCEEDED, made.ref, record.id)
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    assert note is not None and note.refunded == record.amount


def totals(results: list[dict[str, Any]]) -> dict[str, int]:
    assert all("error" not in r for r in results), results
    return {k: sum(r[k] for r in results) for k in ("taken", "failed", "no_rail")}


def test_live_attempts_are_resumed_by_the_sweep_once_older_than_the_grace(local_table: str, rail: FakeRail) -> None:
    store = DynamoStore()
    seed_tenant(store)
    left_pending(store, rail, "inv_1")
    left_confirmed(store, rail, "inv_2")
    assert stored_invoice(store, "inv_2").status is InvoiceStatus.OPEN  # charged, not recorded
    assert {e.parent_id for e in unfinished(store, NOW + GRACE)} == {"inv_1", "inv_2"}

    within = run_sweep(NOW + GRACE - timedelta(minutes=1))  # the collector may still be running
    assert totals(within)["taken"] == 0 and rail.succeeded_per_invoice() == {"inv_2": 1}

    swept = run_sweep(NOW + GRACE + timedelta(minutes=1))
    assert totals(swept) == {"taken": 2, "failed": 0, "no_rail": 0}
    assert_paid_once(store, rail, "inv_1")
    assert_paid_once(store, rail, "inv_2")
    assert unfinished(store, NOW + timedelta(days=1)) == [], "a final attempt leaves the sweep index"
    assert totals(run_sweep(NOW + timedelta(hours=1)))["taken"] == 0


def test_a_pending_refund_whose_request_died_is_finished_by_the_sweep(local_table: str, rail: FakeRail) -> None:
    store = DynamoStore()
    seeded = left_refund(store, rail, "t1")
    (pending,) = store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)
    assert pending.status is RefundStatus.PENDING
    assert [(e.kind, e.item_id) for e in unfinished(store, START + GRACE)] == [("refund", pending.id)]
    assert totals(run_sweep(START + GRACE + timedelta(minutes=1)))["taken"] == 1
    assert_refunded_once(store, rail, seeded)  # found on the rail by its id, not refunded again
    assert unfinished(store, START + timedelta(days=30)) == []


def test_a_rail_out_of_reach_leaves_the_entry_for_the_next_sweep(local_table: str, rail: FakeRail) -> None:
    store = DynamoStore()
    seed_tenant(store)
    left_pending(store, rail, "inv_1")
    rail.unavailable_at = rail.attempted + 1
    assert totals(run_sweep(NOW + GRACE + timedelta(minutes=1)))["failed"] == 1
    assert [e.parent_id for e in unfinished(store, NOW + GRACE)] == ["inv_1"]
    assert totals(run_sweep(NOW + GRACE + timedelta(minutes=16)))["taken"] == 1
    assert_paid_once(store, rail, "inv_1")


def test_one_sweep_takes_a_bounded_batch_in_pages_and_the_next_takes_the_rest(
    local_table: str, rail: FakeRail, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweeper import handler

    store = DynamoStore()
    seed_tenant(store)
    for i in range(3):
        left_pending(store, rail, f"inv_{i}")
    monkeypatch.setattr(handler, "PAGE_SIZE", 1)
    monkeypatch.setattr(handler, "MAX_ENTRIES", 2)
    event = {"time": (NOW + GRACE + timedelta(minutes=1)).isoformat(), "group": 0, "groups": 1}
    first = invoke(SWEEPER, event)
    assert (first["taken"], first["complete"]) == (2, False)
    assert len(unfinished(store, NOW + GRACE)) == 1
    second = invoke(SWEEPER, event)
    assert (second["taken"], second["complete"]) == (1, True)
    for i in range(3):
        assert_paid_once(store, rail, f"inv_{i}")


def _sweeper(table: str, endpoint: str, rail_path: Path, at: datetime, barrier: Any) -> None:
    """One sweeper in its own process (its own Lambda container)."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    rail = FakeRail(rail_path)
    runtime.payment_gateway = lambda scope: rail  # type: ignore[attr-defined]
    barrier.wait()
    results = run_sweep(at)
    assert all("error" not in r for r in results), results


def test_sweepers_racing_in_separate_processes_finish_each_entry_once(
    local_table: str, dynamodb_local: DynamoDBLocal, rail: FakeRail
) -> None:
    store = DynamoStore()
    seed_tenant(store)
    pending = [f"inv_{i}" for i in range(4)]
    confirmed = [f"inv_{i}" for i in range(4, 6)]
    for invoice_id in pending:
        left_pending(store, rail, invoice_id)
    for invoice_id in confirmed:
        left_confirmed(store, rail, invoice_id)
    refunded = left_refund(store, rail, "t9")
    at = datetime.now().astimezone() + timedelta(days=3650)  # past every entry's grace
    spawn = separate_processes()
    barrier = spawn.Barrier(3)
    processes = [
        spawn.Process(target=_sweeper, args=(local_table, dynamodb_local.endpoint, rail.path, at, barrier))
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    for invoice_id in pending + confirmed:
        assert_paid_once(store, rail, invoice_id)
    assert sum(rail.succeeded_per_invoice().values()) == len(pending + confirmed) + 1  # + the refund's payment
    assert_refunded_once(store, rail, refunded)
    assert unfinished(store, at) == []
