"""Collection on DynamoDB Local against the fake rail (tests/fake_rail.py: idempotency keys ignored,
as localstripe ignores them): each invoice charged once whatever crashes, retries, duplicate events
or racing collectors do, and a charge the rail made never lost; an invoice voided, lapsed or paid
by transfer while its attempt waited is not charged, and a charge that succeeds anyway is recorded
as the contact's credit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from billow.domain.collection import AttemptStatus, CollectionMode, CollectionSettings, NotCollectable
from billow.domain.invoices import InvoiceStatus, PaymentMethod
from billow.domain.money import Money
from billow.local.dynamodb import DynamoDBLocal
from billow.services.collection import collect_invoice, reconcile_charge
from billow.services.context import TenantContext
from billow.services.gateway import ChargeRequest, ChargeStatus, GatewayUnavailable
from billow.services.invoices import ManualPaymentInput, payment_id_for, record_manual_payment
from billow.services.receivables import void_invoice
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.collection_support import (
    DAY,
    SCOPE,
    FixedClock,
    declining_contact,
    seed_contact,
    seed_invoice,
    seed_tenant,
    stored_invoice,
)
from tests.fake_rail import DECLINING, Crash, FakeRail
from tests.integration.test_fault_injection import Crash as DynamoCrash
from tests.integration.test_fault_injection import crash_after
from tests.support import separate_processes

pytestmark = pytest.mark.integration

CLOCK = FixedClock()
USD30 = Money.parse("30.00", "USD")


@pytest.fixture
def rail(tmp_path: Path) -> FakeRail:
    return FakeRail(tmp_path / "rail.sqlite")


@pytest.fixture
def store(local_table: str) -> DynamoStore:
    store = DynamoStore()
    seed_tenant(store)
    return store


def _collect(store: DynamoStore, rail: FakeRail, invoice_id: str) -> Any:
    return collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)


def _assert_paid_once(store: DynamoStore, rail: FakeRail, invoice_id: str) -> None:
    assert rail.succeeded_per_invoice().get(invoice_id) == 1
    invoice = stored_invoice(store, invoice_id)
    assert invoice.status is InvoiceStatus.PAID
    (payment,) = store.payments_of(SCOPE, invoice.contact_id, invoice_id)
    assert payment.amount == invoice.total


def test_an_issued_invoice_is_charged_and_paid_and_a_duplicate_event_charges_nothing(
    store: DynamoStore, rail: FakeRail
) -> None:
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    attempt = _collect(store, rail, "inv_1")
    assert attempt.status is AttemptStatus.SUCCEEDED
    _assert_paid_once(store, rail, "inv_1")
    (payment,) = store.payments_of(SCOPE, "con_1", "inv_1")
    # the collector and a webhook: one payment
    assert payment.id == payment_id_for("inv_1", attempt.charge_ref, collected=True)
    (charge,) = rail.charges()
    assert dict(charge.metadata) == {
        "tenant_id": "t1",
        "mode": "test",
        "invoice_id": "inv_1",
        "attempt_id": attempt.id,
        "contact_id": "con_1",
    }
    requests = rail.request_count()
    again = _collect(store, rail, "inv_1")  # the invoice.issued event delivered again
    assert again == attempt
    assert rail.request_count() == requests  # not even a read of the rail
    assert len(rail.charges()) == 1


def test_a_declined_card_leaves_the_invoice_open_with_the_decline_code_and_is_not_retried_here(
    store: DynamoStore, rail: FakeRail
) -> None:
    declining_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    attempt = _collect(store, rail, "inv_1")
    assert (attempt.status, attempt.decline_code, attempt.hard_decline) == (
        AttemptStatus.FAILED,
        "card_declined",
        False,
    )
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.OPEN
    assert _collect(store, rail, "inv_1") == attempt  # final: dunning retries, not the collector
    assert len(rail.charges()) == 1


def test_without_a_payment_method_or_below_the_minimum_nothing_is_charged(store: DynamoStore, rail: FakeRail) -> None:
    seed_contact(store, "con_1", method=None)
    seed_invoice(store, "con_1", "inv_1", "30.00")
    attempt = _collect(store, rail, "inv_1")
    assert (attempt.status, attempt.reason) == (AttemptStatus.NOT_COLLECTABLE, "no_payment_method")
    assert rail.charges() == []
    seed_contact(store, "con_2")
    seed_invoice(store, "con_2", "inv_2", "0.30")
    small = _collect(store, rail, "inv_2")
    assert (small.status, small.reason, small.decline_code) == (
        AttemptStatus.NOT_COLLECTABLE,
        "below_minimum",
        "rail.amount_too_small",
    )
    assert stored_invoice(store, "inv_2").status is InvoiceStatus.OPEN


def test_manual_contacts_are_not_charged(store: DynamoStore, rail: FakeRail) -> None:
    seed_contact(store, "con_1", mode=CollectionMode.MANUAL)
    seed_invoice(store, "con_1", "inv_1", "30.00")
    assert _collect(store, rail, "inv_1") is None
    assert rail.charges() == []


@pytest.mark.parametrize("whole_debt", [False, True])
def test_a_credit_limit_contact_is_charged_only_once_its_balance_crosses_the_limit(
    local_table: str, rail: FakeRail, whole_debt: bool
) -> None:
    store = DynamoStore()
    seed_tenant(store, CollectionSettings(CollectionMode.CREDIT_LIMIT, collect_whole_debt=whole_debt))
    seed_contact(store, "con_1", credit_limit={"USD": Money.parse("50.00", "USD")})
    seed_invoice(store, "con_1", "inv_1", "30.00")
    assert _collect(store, rail, "inv_1") is None  # 30 owed: under the limit
    seed_invoice(store, "con_1", "inv_2", "20.00")
    assert _collect(store, rail, "inv_2") is None  # 50 owed: at the limit, not over it
    seed_invoice(store, "con_1", "inv_3", "15.00")
    attempt = _collect(store, rail, "inv_3")  # 65 owed: over it
    assert attempt.status is AttemptStatus.SUCCEEDED
    (charge,) = rail.charges()
    if whole_debt:
        assert charge.amount == Money.parse("65.00", "USD")
        assert {i: stored_invoice(store, i).status for i in ("inv_1", "inv_2", "inv_3")} == dict.fromkeys(
            ("inv_1", "inv_2", "inv_3"), InvoiceStatus.PAID
        )
    else:
        assert charge.amount == Money.parse("15.00", "USD")
        assert stored_invoice(store, "inv_3").status is InvoiceStatus.PAID
        assert stored_invoice(store, "inv_1").status is InvoiceStatus.OPEN
    assert _collect(store, rail, "inv_1") is None  # a late event for inv_1: paid, or back under the limit
    assert len(rail.charges()) == 1


def test_a_rail_outage_leaves_the_attempt_to_resume(store: DynamoStore, rail: FakeRail) -> None:
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    statuses = []
    # 503 on: the create; resumed pending, the confirm (after the look for an orphan charge and the
    # create); resumed created, the confirm (after the read).
    for failing in (1, 3, 2):
        run = FakeRail(rail.path)
        run.unavailable_at = failing
        with pytest.raises(GatewayUnavailable):
            _collect(store, run, "inv_1")
        attempt = store.latest_attempt(SCOPE, "con_1", "inv_1")
        assert attempt is not None
        statuses.append(attempt.status)
    assert statuses == [AttemptStatus.PENDING, AttemptStatus.CREATED, AttemptStatus.CREATED]
    assert rail.succeeded_per_invoice() == {}
    assert _collect(store, rail, "inv_1").status is AttemptStatus.SUCCEEDED
    _assert_paid_once(store, rail, "inv_1")


def _uninterrupted_requests(store: DynamoStore, tmp_path: Path) -> tuple[int, int]:
    """(DynamoDB requests, rail requests) of one collection from start to success."""
    seed_contact(store, "con_probe")
    seed_invoice(store, "con_probe", "inv_probe", "30.00")
    rail = FakeRail(tmp_path / "probe.sqlite")
    with crash_after(None) as calls:
        _collect(store, rail, "inv_probe")
    return calls.made, rail.requests


def test_a_collector_crashed_after_any_dynamodb_request_then_rerun_charges_once(
    store: DynamoStore, rail: FakeRail, tmp_path: Path
) -> None:
    dynamodb_requests, _ = _uninterrupted_requests(store, tmp_path)
    assert dynamodb_requests > 5
    for k in range(1, dynamodb_requests + 1):
        seed_contact(store, f"con_{k}")
        seed_invoice(store, f"con_{k}", f"inv_{k}", "30.00")
        with pytest.raises(DynamoCrash), crash_after(k):
            _collect(store, rail, f"inv_{k}")
        _collect(store, rail, f"inv_{k}")  # the event redelivered
        _collect(store, rail, f"inv_{k}")  # and once more
        _assert_paid_once(store, rail, f"inv_{k}")


def test_a_collector_crashed_after_any_rail_request_then_rerun_charges_once(store: DynamoStore, tmp_path: Path) -> None:
    _, rail_requests = _uninterrupted_requests(store, tmp_path)
    assert rail_requests == 2  # create, confirm
    path = tmp_path / "rail.sqlite"
    for k in range(1, rail_requests + 1):
        seed_contact(store, f"con_{k}")
        seed_invoice(store, f"con_{k}", f"inv_{k}", "30.00")
        crashing = FakeRail(path)
        crashing.crash_after = k
        with pytest.raises(Crash):
            _collect(store, crashing, f"inv_{k}")
        rail = FakeRail(path)
        _collect(store, rail, f"inv_{k}")
        _assert_paid_once(store, rail, f"inv_{k}")
    # A crash after the create, before it was recorded, left an unconfirmed charge: no money moved.
    assert all(c.status in (ChargeStatus.SUCCEEDED, ChargeStatus.CREATED) for c in FakeRail(path).charges())


def test_a_collector_whose_charge_lost_the_record_cancels_it_and_confirms_the_recorded_one(
    store: DynamoStore, rail: FakeRail
) -> None:
    """Two collectors resume the same pending attempt: each creates a charge; the second records its
    own first (it runs entirely between the first's look for an orphan charge and its create)."""
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    rail.unavailable_at = 1  # a first run writes the attempt, then cannot reach the rail
    with pytest.raises(GatewayUnavailable):
        _collect(store, rail, "inv_1")
    first, second = FakeRail(rail.path), FakeRail(rail.path)
    first.interleave["charges_of_attempt"] = lambda: _collect(store, second, "inv_1")
    attempt = _collect(store, first, "inv_1")
    assert attempt.status is AttemptStatus.SUCCEEDED
    recorded, mine = rail.charges()
    assert attempt.charge_ref == recorded.ref
    assert (mine.status, recorded.status) == (ChargeStatus.CANCELED, ChargeStatus.SUCCEEDED)
    _assert_paid_once(store, rail, "inv_1")


def test_a_collector_resuming_takes_the_charge_another_created_and_has_not_recorded_yet(
    store: DynamoStore, rail: FakeRail
) -> None:
    """Two collectors resume the same pending attempt; the second runs entirely between the first's
    create and its record: it finds that charge by the attempt's metadata and goes on with it, so the
    rail holds one charge, not two."""
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    rail.unavailable_at = 1
    with pytest.raises(GatewayUnavailable):
        _collect(store, rail, "inv_1")
    first, second = FakeRail(rail.path), FakeRail(rail.path)
    first.interleave["create_charge"] = lambda: _collect(store, second, "inv_1")
    attempt = _collect(store, first, "inv_1")
    (charge,) = rail.charges()
    assert attempt.status is AttemptStatus.SUCCEEDED and attempt.charge_ref == charge.ref
    _assert_paid_once(store, rail, "inv_1")


def _collector(table: str, endpoint: str, rail_path: Path, invoice_ids: list[str], barrier: Any) -> None:
    """One collector in its own process (its own Lambda container)."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store, rail = DynamoStore(), FakeRail(rail_path)
    barrier.wait()
    for invoice_id in invoice_ids:
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)


def test_collectors_racing_in_separate_processes_charge_each_invoice_once(
    store: DynamoStore, local_table: str, dynamodb_local: DynamoDBLocal, tmp_path: Path
) -> None:
    invoices = [f"inv_{i}" for i in range(6)]
    for i, invoice_id in enumerate(invoices):
        seed_contact(store, f"con_{i}")
        seed_invoice(store, f"con_{i}", invoice_id, "30.00")
    path = tmp_path / "rail.sqlite"
    FakeRail(path)
    spawn = separate_processes()
    barrier = spawn.Barrier(3)
    orders = [invoices, invoices[::-1], invoices[3:] + invoices[:3]]
    processes = [
        spawn.Process(target=_collector, args=(local_table, dynamodb_local.endpoint, path, order, barrier))
        for order in orders
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    rail = FakeRail(path)
    for invoice_id in invoices:
        _assert_paid_once(store, rail, invoice_id)
    # Every charge a losing collector created was cancelled or left unconfirmed: none moved money twice.
    assert sum(rail.succeeded_per_invoice().values()) == len(invoices)


# -- reconciling a charge from the rail (webhooks, a sweep) ------------------------------------------
def _pending_attempt_with_confirmed_charge(store: DynamoStore, rail: FakeRail) -> str:
    """A collector that wrote its attempt, and a charge of it the rail confirmed, before the
    collector recorded it (the success webhook arrives first)."""
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    rail.unavailable_at = 1  # the collector writes the attempt, then cannot reach the rail
    with pytest.raises(GatewayUnavailable):
        _collect(store, rail, "inv_1")
    attempt = store.latest_attempt(SCOPE, "con_1", "inv_1")
    assert attempt is not None and attempt.status is AttemptStatus.PENDING
    meta = {"tenant_id": "t1", "mode": "test", "invoice_id": "inv_1", "attempt_id": attempt.id}
    charge = rail.create_charge(ChargeRequest("cus_con_1", "pm_card_visa", attempt.amount, "k", meta))
    rail.confirm_charge(charge.ref, idempotency_key="k2")
    return charge.ref


def test_a_success_read_before_the_attempt_recorded_its_charge_records_it_and_pays_the_invoice(
    store: DynamoStore, rail: FakeRail
) -> None:
    ref = _pending_attempt_with_confirmed_charge(store, rail)
    attempt = reconcile_charge(store, rail, SCOPE, ref, clock=CLOCK)
    assert attempt is not None and (attempt.status, attempt.charge_ref) == (AttemptStatus.SUCCEEDED, ref)
    _assert_paid_once(store, rail, "inv_1")
    assert reconcile_charge(store, rail, SCOPE, ref, clock=CLOCK) == attempt  # delivered again
    assert _collect(store, rail, "inv_1") == attempt  # the collector's rerun charges nothing
    assert len(rail.charges()) == 1
    rail.settle(ref, ChargeStatus.FAILED, "card_declined")  # a failure read after the success
    assert reconcile_charge(store, rail, SCOPE, ref, clock=CLOCK) == attempt
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.PAID


def test_a_charge_of_another_tenant_or_mode_changes_nothing(store: DynamoStore, rail: FakeRail) -> None:
    ref = _pending_attempt_with_confirmed_charge(store, rail)
    for other in (SCOPE.__class__("t2", "test"), SCOPE.__class__("t1", "live")):
        assert reconcile_charge(store, rail, other, ref, clock=CLOCK) is None
    attempt = store.latest_attempt(SCOPE, "con_1", "inv_1")
    assert attempt is not None and attempt.status is AttemptStatus.PENDING
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.OPEN


def test_a_charge_that_is_not_the_recorded_one_is_cancelled_if_unconfirmed(store: DynamoStore, rail: FakeRail) -> None:
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    attempt = _collect(store, rail, "inv_1")
    meta = {"tenant_id": "t1", "mode": "test", "invoice_id": "inv_1", "attempt_id": attempt.id}
    orphan = rail.create_charge(ChargeRequest("cus_con_1", "pm_card_visa", attempt.amount, "k", meta))
    assert reconcile_charge(store, rail, SCOPE, orphan.ref, clock=CLOCK) == attempt
    assert rail.charge_state(orphan.ref).status is ChargeStatus.CANCELED
    _assert_paid_once(store, rail, "inv_1")


# -- events out --------------------------------------------------------------------------------------
def test_payment_succeeded_and_failed_are_published_from_the_committed_attempts(
    store: DynamoStore, rail: FakeRail, local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    from billow.local.events import StreamPoller, local_bus

    from tests.integration.test_events import RULE, Subscriber

    seed_contact(store, "con_1")
    declining_contact(store, "con_2")
    seed_contact(store, "con_3", method=None)
    for i in (1, 2, 3):
        seed_invoice(store, f"con_{i}", f"inv_{i}", "30.00")
    poller = StreamPoller(dynamodb_local.endpoint, local_table)
    poller.skip()
    subscriber = Subscriber()
    unsubscribe = local_bus().subscribe(RULE, subscriber)
    try:
        for i in (1, 2, 3):
            _collect(store, rail, f"inv_{i}")
            _collect(store, rail, f"inv_{i}")  # a duplicate event publishes nothing more
        poller.drain()
    finally:
        unsubscribe()
    payments = {
        (d["type"], d["data"]["invoice_id"]): d["data"]
        for d in subscriber.details()
        if d["type"] in ("payment.succeeded", "payment.failed")
    }
    assert sorted(payments) == [
        ("payment.failed", "inv_2"),
        ("payment.failed", "inv_3"),
        ("payment.succeeded", "inv_1"),
    ]
    assert len([d for d in subscriber.details() if d["type"].startswith("payment.")]) == 4  # + payment.received
    succeeded = payments[("payment.succeeded", "inv_1")]
    assert succeeded["amount"] == {"amount": "30.00", "currency": "USD"} and succeeded["charge_ref"].startswith("pi_")
    assert (
        payments[("payment.failed", "inv_2")]["decline_code"],
        payments[("payment.failed", "inv_2")]["hard_decline"],
    ) == (
        "card_declined",
        False,
    )
    none = payments[("payment.failed", "inv_3")]  # as the API shows the attempt: no rail was asked
    assert (none["decline_code"], none["reason"], none["hard_decline"]) == (None, "no_payment_method", True)


class _Interleaved(DynamoStore):
    """A store that lets another collector run to the end just before this one commits its attempt."""

    def __init__(self, meanwhile: Any) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def unit_of_work(self, what: str) -> Any:
        if what.startswith("payment attempt of invoice") and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return super().unit_of_work(what)


def test_two_collectors_deciding_on_one_contacts_whole_debt_at_once_charge_it_once(
    local_table: str, rail: FakeRail
) -> None:
    """Under a credit limit with the whole debt: the (late) event of the first invoice and the event
    of the invoice that crossed the limit are collected at once; each decides to charge both."""
    store = DynamoStore()
    seed_tenant(store, CollectionSettings(CollectionMode.CREDIT_LIMIT, collect_whole_debt=True))
    seed_contact(store, "con_1", credit_limit={"USD": Money.parse("50.00", "USD")})
    seed_invoice(store, "con_1", "inv_1", "30.00")
    seed_invoice(store, "con_1", "inv_2", "30.00")
    late = _Interleaved(lambda: _collect(store, rail, "inv_2"))
    assert _collect(late, rail, "inv_1") is None  # decided again: inv_2's attempt covers both
    (charge,) = [c for c in rail.charges() if c.status is ChargeStatus.SUCCEEDED]
    assert charge.amount == Money.parse("60.00", "USD")
    for invoice_id in ("inv_1", "inv_2"):
        assert stored_invoice(store, invoice_id).status is InvoiceStatus.PAID


# -- never take money an invoice no longer owes; record every cent the rail took -------------------
def _ctx(store: DynamoStore) -> TenantContext:
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    return TenantContext(SCOPE.tenant_id, SCOPE.mode, settings)


def _left_live(store: DynamoStore, rail: FakeRail, contact: str, invoice: str, unavailable_at: int) -> AttemptStatus:
    """An attempt the rail's outage left live: at its create (pending) or its confirm (created)."""
    seed_contact(store, contact)
    seed_invoice(store, contact, invoice, "30.00")
    outage = FakeRail(rail.path)
    outage.unavailable_at = unavailable_at
    with pytest.raises(GatewayUnavailable):
        collect_invoice(store, outage, SCOPE, invoice, clock=CLOCK)
    attempt = store.latest_attempt(SCOPE, contact, invoice)
    assert attempt is not None
    return attempt.status


def _succeeded_charges(rail: FakeRail) -> list[str]:
    return [c.ref for c in FakeRail(rail.path).charges() if c.status is ChargeStatus.SUCCEEDED]


@pytest.mark.parametrize(("unavailable_at", "live"), [(1, AttemptStatus.PENDING), (2, AttemptStatus.CREATED)])
def test_an_invoice_voided_while_its_attempt_waited_is_not_charged(
    store: DynamoStore, rail: FakeRail, unavailable_at: int, live: AttemptStatus
) -> None:
    assert _left_live(store, rail, "con_v", "inv_v", unavailable_at) is live
    void_invoice(store, _ctx(store), "inv_v", "customer cancelled", clock=CLOCK)
    attempt = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_v", clock=CLOCK)  # the redelivery
    assert attempt is not None
    assert attempt.status is AttemptStatus.NOT_COLLECTABLE
    assert attempt.reason == NotCollectable.NOT_PAYABLE
    assert _succeeded_charges(rail) == []
    # its unconfirmed charge is cancelled: no one can confirm it later
    assert all(c.status is ChargeStatus.CANCELED for c in FakeRail(rail.path).charges())
    assert stored_invoice(store, "inv_v").status is InvoiceStatus.VOID


@pytest.mark.parametrize(("unavailable_at", "live"), [(1, AttemptStatus.PENDING), (2, AttemptStatus.CREATED)])
def test_an_invoice_paid_by_transfer_while_its_attempt_waited_is_not_charged_again(
    store: DynamoStore, rail: FakeRail, unavailable_at: int, live: AttemptStatus
) -> None:
    assert _left_live(store, rail, "con_m", "inv_m", unavailable_at) is live
    spec = ManualPaymentInput("30.00", "USD", PaymentMethod.BANK_TRANSFER, "bank-1", DAY)
    record_manual_payment(store, _ctx(store), "inv_m", spec, CLOCK)
    attempt = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_m", clock=CLOCK)
    assert attempt is not None
    assert attempt.status is AttemptStatus.NOT_COLLECTABLE
    assert _succeeded_charges(rail) == []
    (payment,) = store.payments_of(SCOPE, "con_m", "inv_m")
    assert payment.method is PaymentMethod.BANK_TRANSFER


def test_a_declined_charge_is_cancelled_and_one_that_succeeds_anyway_after_a_transfer_is_kept_as_credit(
    store: DynamoStore, rail: FakeRail
) -> None:
    """Declined (or waiting for 3-D Secure): the attempt fails and its charge is cancelled, so it
    cannot succeed later. Should the rail report it succeeded anyway after the customer paid by
    transfer, the card's money is recorded, as the contact's credit, refundable to the card."""
    from billow.domain.receivables import balances
    from billow.services.collection import reconcile_charge

    from tests.collection_support import declining_contact

    declining_contact(store, "con_f")
    seed_invoice(store, "con_f", "inv_f", "30.00")
    failed = collect_invoice(store, rail, SCOPE, "inv_f", clock=CLOCK)
    assert failed is not None and failed.status is AttemptStatus.FAILED and failed.charge_ref
    assert rail.charge_state(failed.charge_ref).status is ChargeStatus.CANCELED

    spec = ManualPaymentInput("30.00", "USD", PaymentMethod.BANK_TRANSFER, "bank-9", DAY)
    record_manual_payment(store, _ctx(store), "inv_f", spec, CLOCK)
    rail.settle(failed.charge_ref, ChargeStatus.SUCCEEDED)  # what the rail's object says after all
    after = reconcile_charge(store, rail, SCOPE, failed.charge_ref, clock=CLOCK)
    assert after is not None and after.status is AttemptStatus.SUCCEEDED
    assert reconcile_charge(store, rail, SCOPE, failed.charge_ref, clock=CLOCK) == after  # once

    payments = {p.method: p for p in store.payments_of(SCOPE, "con_f", "inv_f")}
    card = payments[PaymentMethod.CARD]
    assert (card.amount, card.unapplied, card.reference) == (USD30, USD30, failed.charge_ref)
    assert card.refundable == USD30  # refundable to the card
    invoice = stored_invoice(store, "inv_f")
    assert invoice.status is InvoiceStatus.PAID and invoice.amount_paid == USD30  # the transfer only
    (usd,) = balances(store.invoices_of(SCOPE, "con_f")).values()
    assert (usd.outstanding, usd.credit) == (Money.zero("USD"), USD30)  # the card's 30.00 is the contact's credit


def test_a_charge_confirmed_for_an_invoice_voided_meanwhile_is_kept_as_credit(
    store: DynamoStore, rail: FakeRail
) -> None:
    """The race the pre-confirm check cannot close (voided between the check and the confirm):
    the money is recorded on the void invoice as the contact's credit, never dropped."""
    from billow.domain.receivables import balances
    from billow.services.collection import reconcile_charge

    assert _left_live(store, rail, "con_r", "inv_r", 2) is AttemptStatus.CREATED
    attempt = store.latest_attempt(SCOPE, "con_r", "inv_r")
    assert attempt is not None and attempt.charge_ref
    FakeRail(rail.path).confirm_charge(attempt.charge_ref, idempotency_key="k")  # confirmed, not recorded yet
    void_invoice(store, _ctx(store), "inv_r", "customer cancelled", clock=CLOCK)
    after = reconcile_charge(store, rail, SCOPE, attempt.charge_ref, clock=CLOCK)
    assert after is not None and after.status is AttemptStatus.SUCCEEDED
    (card,) = store.payments_of(SCOPE, "con_r", "inv_r")
    assert (card.amount, card.unapplied) == (USD30, USD30)
    assert stored_invoice(store, "inv_r").status is InvoiceStatus.VOID
    (usd,) = balances(store.invoices_of(SCOPE, "con_r")).values()
    assert usd.credit == USD30


# -- a failure is recorded only once its charge can no longer take money ---------------------------
def test_a_declined_charge_whose_cancel_fails_stays_live_and_its_invoice_is_not_charged_again_meanwhile(
    local_table: str, rail: FakeRail
) -> None:
    """The rail out of reach for the cancel of a declined charge (still confirmable on Stripe, in
    requires_payment_method): its attempt stays live, so a whole-debt attempt for the next invoice
    leaves the first invoice out; only once the rerun cancelled it and recorded the failure does a
    later attempt take the first invoice again, and the first charge can never take money."""
    store = DynamoStore()
    seed_tenant(store, CollectionSettings(CollectionMode.CREDIT_LIMIT, collect_whole_debt=True))
    seed_contact(store, "con_d", method=DECLINING, credit_limit={"USD": Money.parse("50.00", "USD")})
    seed_invoice(store, "con_d", "inv_1", "60.00")
    outage = FakeRail(rail.path)
    outage.unavailable_at = 3  # create, confirm (declined), then the cancel
    with pytest.raises(GatewayUnavailable):
        collect_invoice(store, outage, SCOPE, "inv_1", clock=CLOCK)
    first = store.latest_attempt(SCOPE, "con_d", "inv_1")
    assert first is not None and first.status is AttemptStatus.CREATED and first.charge_ref
    assert rail.charge_state(first.charge_ref).status is ChargeStatus.FAILED  # declined, still open

    seed_invoice(store, "con_d", "inv_2", "20.00")
    second = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_2", clock=CLOCK)
    assert second is not None and second.covered_ids() == {"inv_2"}  # not inv_1: its charge is open

    ended = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_1", clock=CLOCK)  # the redelivery
    assert ended is not None and (ended.status, ended.decline_code) == (AttemptStatus.FAILED, "card_declined")
    assert rail.charge_state(first.charge_ref).status is ChargeStatus.CANCELED

    seed_invoice(store, "con_d", "inv_3", "10.00")
    third = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_3", clock=CLOCK)
    assert third is not None and third.covered_ids() == {"inv_1", "inv_2", "inv_3"}  # now it may


def test_a_declined_charge_the_rail_will_not_cancel_because_it_succeeded_is_recorded_paid(
    store: DynamoStore, rail: FakeRail
) -> None:
    """Declined, then confirmed again on the rail (another card, a 3-D Secure) before Billow cancels
    it: the cancel is refused, and the success is applied, not a failure."""
    declining_contact(store, "con_s")
    seed_invoice(store, "con_s", "inv_s", "30.00")

    def confirmed_again() -> None:
        (charge,) = rail.charges()
        rail.settle(charge.ref, ChargeStatus.SUCCEEDED)

    rail.interleave["confirm_charge"] = confirmed_again
    attempt = _collect(store, rail, "inv_s")
    assert attempt.status is AttemptStatus.SUCCEEDED
    _assert_paid_once(store, rail, "inv_s")


def test_a_failure_applied_by_a_webhook_is_recorded_only_once_its_charge_is_cancelled(
    store: DynamoStore, rail: FakeRail
) -> None:
    """The same order when the decline arrives by `reconcile_charge` (the collector died after
    confirming): the rail out of reach for the cancel leaves the attempt live (the webhook is
    answered 503 and delivered again); the next delivery cancels it and records the failure."""
    declining_contact(store, "con_w")
    seed_invoice(store, "con_w", "inv_w", "30.00")
    dies = FakeRail(rail.path)
    dies.crash_after = 2  # create, confirm (declined): dies before reading the outcome back
    with pytest.raises(Crash):
        _collect(store, dies, "inv_w")
    attempt = store.latest_attempt(SCOPE, "con_w", "inv_w")
    assert attempt is not None and attempt.status is AttemptStatus.CREATED and attempt.charge_ref
    outage = FakeRail(rail.path)
    outage.unavailable_at = 2  # the read of the charge, then its cancel
    with pytest.raises(GatewayUnavailable):
        reconcile_charge(store, outage, SCOPE, attempt.charge_ref, clock=CLOCK)
    live = store.latest_attempt(SCOPE, "con_w", "inv_w")
    assert live is not None and live.status is AttemptStatus.CREATED
    failed = reconcile_charge(store, FakeRail(rail.path), SCOPE, attempt.charge_ref, clock=CLOCK)
    assert failed is not None and (failed.status, failed.decline_code) == (AttemptStatus.FAILED, "card_declined")
    assert rail.charge_state(attempt.charge_ref).status is ChargeStatus.CANCELED


def test_a_collector_dying_between_the_cancel_and_the_record_of_a_void_invoices_attempt_ends_it_on_rerun(
    store: DynamoStore, rail: FakeRail
) -> None:
    """Ending an attempt whose invoice was voided cancels its charge first; dying right after the
    cancel leaves the attempt live with its charge cancelled: the rerun ends it not_collectable
    (invoice_not_payable, no payment.failed), not failed with `canceled`."""
    assert _left_live(store, rail, "con_x", "inv_x", 2) is AttemptStatus.CREATED
    void_invoice(store, _ctx(store), "inv_x", "customer cancelled", clock=CLOCK)
    dies = FakeRail(rail.path)
    dies.crash_after = 2  # the read of the charge, then its cancel
    with pytest.raises(Crash):
        collect_invoice(store, dies, SCOPE, "inv_x", clock=CLOCK)
    live = store.latest_attempt(SCOPE, "con_x", "inv_x")
    assert live is not None and live.status is AttemptStatus.CREATED and live.charge_ref
    assert rail.charge_state(live.charge_ref).status is ChargeStatus.CANCELED
    ended = collect_invoice(store, FakeRail(rail.path), SCOPE, "inv_x", clock=CLOCK)
    assert ended is not None and (ended.status, ended.reason) == (AttemptStatus.NOT_COLLECTABLE, "invoice_not_payable")
