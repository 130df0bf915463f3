"""One payment attempt, one description: the API's attempt (`GET /invoices/{id}/payment-attempts`)
and the `payment.succeeded` / `payment.failed` event of the same attempt carry the same fields with
the same values (the event adds the names it had first: `attempt_id`, `attempt`, `method_ref`);
and a normal success logs no warning. Collection on moto with the fake rail."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from billow.domain.invoices import Payment, PaymentMethod
from billow.domain.money import Money
from billow.local.stack import add_tenant
from billow.services import contacts
from billow.services.collection import collect_invoice
from billow.services.context import TenantContext
from billow.services.events import Change, events_of
from billow.storage.repository import DynamoStore

from tests.collection_support import NOW, SCOPE, FixedClock, declining_contact, seed_contact, seed_invoice
from tests.fake_rail import EXPIRED, FakeRail
from tests.support import InProcessClient

KEY = "bk_test_attempt_description"


@pytest.fixture
def rail(moto_table: str, tmp_path: Path) -> FakeRail:
    add_tenant(SCOPE.tenant_id, "Tenant One", KEY)
    return FakeRail(tmp_path / "rail.sqlite")


def test_the_api_and_the_event_describe_each_attempt_alike(rail: FakeRail) -> None:
    store = DynamoStore()
    seed_contact(store, "con_none", method=None)
    seed_contact(store, "con_small")
    declining_contact(store, "con_declined")
    seed_contact(store, "con_expired", method=EXPIRED)
    seed_contact(store, "con_pays")
    expected = {  # contact: (amount, status, decline_code, reason, hard_decline, event)
        "con_none": ("30.00", "not_collectable", None, "no_payment_method", True, "payment.failed"),
        "con_small": ("0.30", "not_collectable", "rail.amount_too_small", "below_minimum", True, "payment.failed"),
        "con_declined": ("30.00", "failed", "card_declined", None, False, "payment.failed"),
        "con_expired": ("30.00", "failed", "expired_card", None, True, "payment.failed"),
        "con_pays": ("30.00", "succeeded", None, None, False, "payment.succeeded"),
    }
    client = InProcessClient(KEY)
    for contact_id, (amount, status, decline_code, reason, hard, event_type) in expected.items():
        invoice_id = f"inv_{contact_id}"
        seed_invoice(store, contact_id, invoice_id, amount)
        attempt = collect_invoice(store, rail, SCOPE, invoice_id, clock=FixedClock())
        assert attempt is not None
        answer = client.get(f"/invoices/{invoice_id}/payment-attempts")
        assert answer.status == 200, answer.body
        (shown,) = answer.body["items"]
        assert (shown["status"], shown["decline_code"], shown["reason"], shown["hard_decline"]) == (
            status,
            decline_code,
            reason,
            hard,
        ), contact_id
        stored = store.get_attempt(SCOPE, contact_id, invoice_id, attempt.number)
        change = Change(SCOPE, contact_id, "pk|sk", "payment_attempt", None, stored, attempt.version, NOW)
        (event,) = events_of(change)
        assert event.type == event_type
        assert {k: event.data[k] for k in shown} == shown, contact_id  # the API's fields, the same values
        assert (event.data["attempt_id"], event.data["attempt"], event.data["method_ref"]) == (
            shown["id"],
            shown["number"],
            shown["payment_method"],
        )


def test_an_attempt_shows_the_contacts_day_it_was_made_on(rail: FakeRail) -> None:
    """`made_on`: the contact's day (its test clock's) when the attempt was made, in the API and in
    its event; `created_at` stays real time. An attempt stored before attempts kept it: null."""
    store = DynamoStore()
    declining_contact(store, "con_clocked")
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    ctx = TenantContext(SCOPE.tenant_id, SCOPE.mode, settings)
    contacts.create_test_clock(store, ctx, "con_clocked", datetime(2023, 1, 10, 12, tzinfo=UTC))
    seed_invoice(store, "con_clocked", "inv_clocked", "30.00")
    attempt = collect_invoice(store, rail, SCOPE, "inv_clocked", clock=FixedClock())
    assert attempt is not None
    client = InProcessClient(KEY)
    (shown,) = client.get("/invoices/inv_clocked/payment-attempts").body["items"]
    assert (shown["made_on"], shown["created_at"]) == ("2023-01-10", NOW.isoformat())
    change = Change(SCOPE, "con_clocked", "pk|sk", "payment_attempt", None, attempt, attempt.version, NOW)
    (event,) = events_of(change)
    assert (event.type, event.data["made_on"]) == ("payment.failed", "2023-01-10")

    store.save_attempt(SCOPE, replace(attempt, made_on=None))
    (legacy,) = client.get("/invoices/inv_clocked/payment-attempts").body["items"]
    assert legacy["made_on"] is None and legacy["created_at"] == NOW.isoformat()


def test_a_normal_success_logs_no_warning(rail: FakeRail, caplog: pytest.LogCaptureFixture) -> None:
    store = DynamoStore()
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    with caplog.at_level(logging.INFO, logger="billow"):
        attempt = collect_invoice(store, rail, SCOPE, "inv_1", clock=FixedClock())
    assert attempt is not None and attempt.status.value == "succeeded"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


def test_a_charge_no_attempt_recorded_is_payment_succeeded_from_its_payment() -> None:
    """`reconcile_charge` records such a charge as a payment (`stray_charge`): its event has the
    attempt's fields (those of an attempt null) and the payment's; a staff payment has none."""
    usd20 = Money.parse("20.00", "USD")
    stray = Payment(
        "pay_1", "inv_1", usd20, PaymentMethod.CARD, "pi_1", NOW.date(), NOW, unapplied=usd20, stray_charge=True
    )
    events = events_of(Change(SCOPE, "con_1", "pk|sk", "payment", None, stray, 1, NOW))
    assert [e.type for e in events] == ["payment.received", "payment.succeeded"]
    data = events[1].data
    assert (data["invoice_id"], data["charge_ref"], data["status"], data["attempt_id"]) == (
        "inv_1",
        "pi_1",
        "succeeded",
        None,
    )
    assert data["made_on"] == NOW.date().isoformat()  # the day it was received
    assert data["amount"] == data["unapplied"] == {"amount": "20.00", "currency": "USD"}
    assert data["invoices"] == [{"invoice_id": "inv_1", "amount": {"amount": "20.00", "currency": "USD"}}]
    staff = replace(stray, stray_charge=False, method=PaymentMethod.BANK_TRANSFER)
    assert [e.type for e in events_of(Change(SCOPE, "con_1", "pk|sk", "payment", None, staff, 1, NOW))] == [
        "payment.received"
    ]
