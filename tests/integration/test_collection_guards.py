"""Collection never takes money an invoice no longer owes, and records every cent the rail took
(DynamoDB Local, the fake rail): an attempt left live while the rail was out of reach, whose
invoice was then voided, lapsed or paid by transfer, ends without charging; a charge that succeeds
anyway (3-D Secure completed after a transfer) is recorded as the contact's credit."""

from __future__ import annotations

from pathlib import Path

import pytest
from billow.domain.collection import AttemptStatus, NotCollectable
from billow.domain.invoices import InvoiceStatus, PaymentMethod
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
