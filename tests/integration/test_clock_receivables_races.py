"""A test clock moved by another process while a receivable write is under way, on DynamoDB Local.

Applying and refunding a credit note, voiding, writing off and finalising an invoice and recording a
payment read the contact's clock and write records stamped with its time (`clock_time`, the time of
their events) and its day (a refund's `refunded_on`, a status's `status_on`). The advance is
injected between that read and the write, from a separate process (a separate Lambda container: its
clock write is not seen by this one's memory): the write must lose, re-read the clock and carry the
new time and day, never the previous day's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.invoices import Invoice, PaymentMethod
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.tenants import TenantSettings
from billow.local.dynamodb import DynamoDBLocal
from billow.services import receivables
from billow.services.billing import InvoiceNumbers
from billow.services.contacts import create_contact, create_test_clock
from billow.services.context import TenantContext
from billow.services.invoices import ManualPaymentInput, record_manual_payment
from billow.services.tenants import tenant_context
from billow.services.time_travel import request_advance
from billow.storage.models import BillowItem, configure
from billow.storage.repository import DynamoStore, contact_pk

from tests.integration.test_clock_races import RealClock, inject_after
from tests.support import RecordingInvoker, separate_processes

pytestmark = pytest.mark.integration

TENANT = "t-clock-rcv"
ON_CLOCK = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MOVED = datetime(2026, 1, 6, 11, 30, tzinfo=UTC)  # the next day: what the competing advance moves it to


def _context(store: DynamoStore) -> TenantContext:
    return tenant_context(store, TENANT, "test")


def _issued(n: int, contact_id: str, amount: str, *, review: int = 0) -> Invoice:
    money = Money.parse(amount.lstrip("-"), "USD")
    money = -money if amount.startswith("-") else money
    day = ON_CLOCK.date() - timedelta(days=2)
    period = Period(day, day + timedelta(31))
    line = LineDraft("recurring", "Pro", "svc_1", "prod_1", 1, money, Fraction(1), money, period)
    draft = InvoiceDraft(f"sub_{n}", contact_id, "USD", day, day, period, (line,))
    number = "" if review else f"INV-{n:06d}"
    return Invoice.issue(draft, invoice_id=f"inv_{n}", number=number, payment_terms_days=14, review_days=review)


def seed(store: DynamoStore) -> str:
    """A test-mode contact on a clock at ON_CLOCK with a credit note (inv_1), an open invoice
    (inv_2) and a draft in its review window (inv_3)."""
    store.put_settings(TenantSettings(TENANT, TENANT))
    ctx = _context(store)
    contact = create_contact(
        store,
        ctx,
        name="Clocked",
        email="c@example.com",
        billing_address=None,
        classification=None,
        credit_limit={},
        preferred_payment_method=None,
        clock=RealClock(),
        new_id=lambda kind: f"{kind}_clocked",
    )
    create_test_clock(store, ctx, contact.id, ON_CLOCK)
    work = store.unit_of_work("seed")
    for invoice in (
        _issued(1, contact.id, "-40.00"),
        _issued(2, contact.id, "31.00"),
        _issued(3, contact.id, "31.00", review=5),
    ):
        work.add_invoice(ctx.scope, invoice)
    work.commit()
    return contact.id


def _advance_in_own_process(table: str, endpoint: str, contact_id: str) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    request_advance(store, _context(store), contact_id, MOVED, RecordingInvoker())


def advance_from_another_process(table: str, endpoint: str, contact_id: str) -> Callable[[], None]:
    def competing() -> None:
        process = separate_processes().Process(target=_advance_in_own_process, args=(table, endpoint, contact_id))
        process.start()
        process.join(120)
        assert process.exitcode == 0

    return competing


def _ids(kind: str) -> str:
    return f"{kind}_race"


# Each use case: run it, and return the (sort key of the record it wrote, the day it recorded).
UseCase = Callable[[DynamoStore, TenantContext], tuple[str, date]]


def _refund(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    spec = receivables.RefundInput("10.00", "USD", PaymentMethod.BANK_TRANSFER, "back-1")
    done = receivables.refund_credit_note(store, ctx, "inv_1", spec, RealClock(), _ids)
    return f"REFUND#inv_1#{done.refund.id}", done.refund.refunded_on


def _apply(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    done = receivables.apply_credit_note(store, ctx, "inv_1", "inv_2", "5.00", "USD", RealClock(), _ids)
    return f"CRAPP#inv_1#{done.application.id}", done.application.applied_on


def _void(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    voided = receivables.void_invoice(store, ctx, "inv_2", "sent twice", clock=RealClock())
    assert voided.status_on is not None
    return "INV#inv_2", voided.status_on


def _write_off(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    written_off = receivables.mark_uncollectible(store, ctx, "inv_2", "gone", clock=RealClock())
    assert written_off.status_on is not None
    return "INV#inv_2", written_off.status_on


def _finalize(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    final = receivables.finalize_invoice(store, ctx, "inv_3", InvoiceNumbers(store), clock=RealClock())
    assert final.status_on is not None
    return "INV#inv_3", final.status_on


def _payment(store: DynamoStore, ctx: TenantContext) -> tuple[str, date]:
    spec = ManualPaymentInput("5.00", "USD", PaymentMethod.BANK_TRANSFER, "wire-1", ON_CLOCK.date())
    paid = record_manual_payment(store, ctx, "inv_2", spec, RealClock())
    return f"PAY#inv_2#{paid.payment.id}", MOVED.date()  # its day is the one staff give: only its time is the clock's


@pytest.mark.parametrize(
    "use_case",
    [_refund, _apply, _void, _write_off, _finalize, _payment],
    ids=["refund", "apply", "void", "uncollectible", "finalize", "payment"],
)
def test_a_clock_moved_between_the_read_and_the_write_stamps_the_write_with_the_new_time(
    local_table: str, dynamodb_local: DynamoDBLocal, use_case: UseCase
) -> None:
    store = DynamoStore()
    contact_id = seed(store)
    ctx = _context(store)
    inject_after(store, "get_clock", advance_from_another_process(local_table, dynamodb_local.endpoint, contact_id))

    sort_key, day = use_case(store, ctx)

    clock = DynamoStore().get_clock(ctx.scope, contact_id)
    assert clock is not None and clock.frozen_time == MOVED  # the advance did land in between
    written: Any = BillowItem.get(contact_pk(ctx.scope, contact_id), sort_key, consistent_read=True)
    assert (written.clock_time, day) == (MOVED.isoformat(), MOVED.date())
