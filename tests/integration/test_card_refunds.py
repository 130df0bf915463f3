"""Card refunds on DynamoDB Local with the fake rail (which, like localstripe, ignores idempotency
keys and accepts over-refunds): a crash after every DynamoDB request and after every rail request,
then a rerun, refunds exactly once; refunds racing from separate processes never spend more than
the payment received, and the same refund sent from several processes reaches the rail once."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from billow.domain.errors import Conflict, DomainError
from billow.domain.money import Money
from billow.domain.receivables import RefundStatus
from billow.local.dynamodb import DynamoDBLocal
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.fake_rail import Crash as RailCrash
from tests.fake_rail import FakeRail
from tests.integration.test_fault_injection import Crash, crash_after
from tests.refund_support import START, Seeded, refund, seed
from tests.support import in_processes

pytestmark = pytest.mark.integration

AT = START + timedelta(days=5)
LATER = AT + timedelta(minutes=3)  # past any lease a crashed request left (RAIL_CALL_AT_MOST)


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def assert_refunded_once(store: DynamoStore, rail: FakeRail, seeded: Seeded, amount: str) -> None:
    """One refund of `amount` on the rail, recorded succeeded with its rail ref, and counted once on
    the credit note and once on the payment."""
    (made,) = rail.refunds_of(seeded.payment.reference)
    assert made.amount == usd(amount)
    (record,) = store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)
    assert (record.status, record.rail_ref, record.amount) == (RefundStatus.SUCCEEDED, made.ref, usd(amount))
    assert made.metadata["refund_id"] == record.id
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    assert note is not None and payment is not None
    assert (note.refunded, payment.refunded) == (usd(amount), usd(amount))


def test_a_crash_after_any_dynamodb_request_then_a_rerun_refunds_exactly_once(local_table: str, tmp_path: Path) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    probe = seed(store, rail, tenant_id="probe")
    with crash_after(None) as calls:
        refund(store, rail, probe, "ticket-1", "12.00", at=AT)
    assert_refunded_once(store, rail, probe, "12.00")
    assert calls.made > 8, calls.made  # reserve, lease, record: each a few reads and one transaction
    for k in range(1, calls.made + 1):
        seeded = seed(store, rail, tenant_id=f"t{k}")
        with pytest.raises(Crash), crash_after(k):
            refund(store, rail, seeded, "ticket-1", "12.00", at=AT)
        try:  # at once: the rerun carries the refund on, or waits for the lease a dead request holds
            refund(store, rail, seeded, "ticket-1", "12.00", at=AT)
        except Conflict as busy:
            assert busy.code == "refund.in_progress", f"crash after request {k}: {busy}"
            refund(store, rail, seeded, "ticket-1", "12.00", at=LATER)
        done = refund(store, rail, seeded, "ticket-1", "12.00", at=LATER)  # and any later retry answers it
        assert done.replayed and done.refund.status is RefundStatus.SUCCEEDED
        assert_refunded_once(store, rail, seeded, "12.00")


@pytest.mark.parametrize("op", [1, 2])
def test_a_crash_after_a_rail_request_then_a_rerun_refunds_exactly_once(
    local_table: str, tmp_path: Path, op: int
) -> None:
    """Rail request 1 lists the charge's refunds, 2 makes the refund: the process dies right after
    either took effect, before Billow recorded anything of it. The rerun, once the dead request's
    lease ran out, finds the refund on the rail by its id instead of refunding again."""
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    seeded = seed(store, rail)
    rail.crash_after = rail.requests + op  # requests this rail object answered so far, plus op
    with pytest.raises(RailCrash):
        refund(store, rail, seeded, "ticket-1", "12.00", at=AT)
    rail.crash_after = None
    (pending,) = store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)
    assert pending.status is RefundStatus.PENDING
    with pytest.raises(Conflict) as busy:  # the dead request's lease still runs
        refund(store, rail, seeded, "ticket-1", "12.00", at=AT + timedelta(seconds=30))
    assert busy.value.code == "refund.in_progress"
    done = refund(store, rail, seeded, "ticket-1", "12.00", at=LATER)
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert_refunded_once(store, rail, seeded, "12.00")


# -- separate processes ------------------------------------------------------------------------------
def _refund_in_own_process(
    table: str,
    endpoint: str,
    rail_path: str,
    seeded: Seeded,
    reference: str,
    amount: str,
    go: Any,
    out: Any,
    at_rail: Any,
) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store, rail = DynamoStore(), FakeRail(Path(rail_path))
    refunds_of = rail.refunds_of

    def listed_then_wait(charge_ref: str) -> Any:
        found = refunds_of(charge_ref)
        with contextlib.suppress(threading.BrokenBarrierError):  # hold the rail call until another
            at_rail.wait(5)  # process got this far too (none should)
        return found

    rail.refunds_of = listed_then_wait  # type: ignore[method-assign]
    go.wait()
    try:
        done = refund(store, rail, seeded, reference, amount, at=AT)
        out.put((reference, "ok", done.refund.id))
    except DomainError as refused:
        out.put((reference, refused.code, None))


def race(
    dynamodb_local: DynamoDBLocal, table: str, rail: FakeRail, seeded: Seeded, asks: list[tuple[str, str]]
) -> list[tuple[str, str, str | None]]:
    each = [(table, dynamodb_local.endpoint, str(rail.path), seeded, reference, amount) for reference, amount in asks]
    results = in_processes(_refund_in_own_process, each, meet=2)
    return sorted(results)


def test_refunds_racing_from_separate_processes_never_exceed_what_the_payment_received(
    dynamodb_local: DynamoDBLocal, local_table: str, tmp_path: Path
) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    seeded = seed(store, rail, by_card="20.00")  # a credit note of 31.00; 20.00 of it came by card
    results = race(dynamodb_local, local_table, rail, seeded, [(f"ticket-{n}", "8.00") for n in range(4)])
    outcomes = sorted(code for _, code, _ in results)
    assert outcomes == ["ok", "ok", "refund.exceeds_payment", "refund.exceeds_payment"], results
    assert sorted(r.amount for r in rail.refunds_of(seeded.payment.reference)) == [usd("8.00"), usd("8.00")]
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    assert payment is not None and note is not None
    assert (payment.refunded, note.refunded) == (usd("16.00"), usd("16.00"))


def test_the_same_refund_sent_from_separate_processes_reaches_the_rail_once(
    dynamodb_local: DynamoDBLocal, local_table: str, tmp_path: Path
) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    seeded = seed(store, rail)
    results = race(dynamodb_local, local_table, rail, seeded, [("ticket-1", "12.00")] * 4)
    assert {code for _, code, _ in results} <= {"ok", "refund.in_progress"} and ("ticket-1", "ok") in {
        (r, c) for r, c, _ in results
    }, results
    assert len({refund_id for _, code, refund_id in results if code == "ok"}) == 1
    done = refund(store, rail, seeded, "ticket-1", "12.00", at=LATER)  # whatever the others were told
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert_refunded_once(store, rail, seeded, "12.00")


def _refund_note_in_own_process(
    table: str, endpoint: str, rail_path: str, seeded: Seeded, note_id: str, go: Any, out: Any, both_read: Any
) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store, rail = DynamoStore(), FakeRail(Path(rail_path))
    payments_of = store.payments_of
    waited: list[bool] = []

    def read_then_wait(*args: Any) -> Any:
        found = payments_of(*args)
        if not waited:  # the first reads of both processes happen before either writes
            waited.append(True)
            both_read.wait(60)
        return found

    store.payments_of = read_then_wait  # type: ignore[method-assign]
    go.wait()
    try:
        refund(store, rail, seeded, "ticket-1", "31.00", note_id=note_id, at=AT)
        out.put("ok")
    except DomainError as refused:
        out.put(refused.code)


def test_two_credit_notes_racing_to_refund_one_payment_never_exceed_what_it_received(
    dynamodb_local: DynamoDBLocal, local_table: str, tmp_path: Path
) -> None:
    """Two services on one invoice, 40.00 of its 62.00 paid by card, both regretted: two credit notes
    of 31.00, each crediting that invoice, refunded at once from separate processes to its card
    payment. Only the payment's own version keeps them from refunding 62.00 of a 40.00 charge (no
    test clock: its check would serialise the two transactions anyway)."""
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    seeded = seed(store, rail, by_card="40.00", services=2, test_clock=False)
    each = [(local_table, dynamodb_local.endpoint, str(rail.path), seeded, note.id) for note in seeded.notes]
    outcomes = sorted(in_processes(_refund_note_in_own_process, each, meet=2))
    assert outcomes == ["ok", "refund.exceeds_payment"], outcomes
    assert [r.amount for r in rail.refunds_of(seeded.payment.reference)] == [usd("31.00")]
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    assert payment is not None and payment.refunded == usd("31.00")
