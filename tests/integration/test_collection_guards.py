"""Collection never takes money an invoice no longer owes, and records every cent the rail took
(DynamoDB Local, the fake rail): an attempt left live while the rail was out of reach, whose
invoice was then voided, lapsed or paid by transfer, ends without charging; a charge that succeeds
anyway (3-D Secure completed after a transfer) is recorded as the contact's credit."""

from __future__ import annotations

from pathlib import Path

import pytest
from billow.domain.collection import AttemptStatus, NotCollectable
from billow.domain.invoices import InvoiceStatus, PaymentMethod
from billow.domain.money import Money
from billow.services.collection import collect_invoice
from billow.services.context import TenantContext
from billow.services.gateway import ChargeStatus, GatewayUnavailable
from billow.services.invoices import ManualPaymentInput, record_manual_payment
from billow.services.receivables import void_invoice
from billow.storage.repository import DynamoStore

from tests.collection_support import DAY, SCOPE, FixedClock, seed_contact, seed_invoice, seed_tenant, stored_invoice
from tests.fake_rail import FakeRail

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
