"""Refunding a card payment's unapplied money (what its invoice never took) to the card, on
DynamoDB Local with the fake rail (which, like localstripe, accepts over-refunds): partly, then the
rest, never beyond what is unapplied; the invoice's amount_unapplied, the payment and the contact's
credit move together; refunds racing from separate processes never exceed it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from billow.domain.errors import Conflict, DomainError
from billow.domain.invoices import Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.receivables import RefundStatus, balances
from billow.local.dynamodb import DynamoDBLocal
from billow.local.scheduler import run_sweep
from billow.services.collection import collect_invoice, reconcile_charge
from billow.services.context import TenantContext, keyed_ids
from billow.services.gateway import ChargeStatus
from billow.services.invoices import ManualPaymentInput, record_manual_payment
from billow.services.receivables import Refunded, RefundInput, refund_unapplied_to_card
from billow.services.sweep import GRACE
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.collection_support import DAY, NOW, SCOPE, FixedClock, declining_contact, seed_invoice, seed_tenant
from tests.fake_rail import Crash, FakeRail
from tests.support import in_processes

pytestmark = pytest.mark.integration
CLOCK = FixedClock()


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def _ctx(store: DynamoStore) -> TenantContext:
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    return TenantContext(SCOPE.tenant_id, SCOPE.mode, settings)


def unapplied_card_payment(store: DynamoStore, rail: FakeRail, contact_id: str = "con_u") -> Payment:
    """An invoice of 30.00 paid by bank transfer while its card charge, declined at first, succeeded
    after all: the card's 30.00 is recorded unapplied (the contact's credit)."""
    if store.get_settings(SCOPE.tenant_id) is None:
        seed_tenant(store)
    declining_contact(store, contact_id)
    invoice_id = f"inv_{contact_id}"
    seed_invoice(store, contact_id, invoice_id, "30.00")
    failed = collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    assert failed is not None and failed.charge_ref
    spec = ManualPaymentInput("30.00", "USD", PaymentMethod.BANK_TRANSFER, "bank-1", DAY)
    record_manual_payment(store, _ctx(store), invoice_id, spec, CLOCK)
    rail.settle(failed.charge_ref, ChargeStatus.SUCCEEDED)
    reconcile_charge(store, rail, SCOPE, failed.charge_ref, clock=CLOCK)
    (card,) = [p for p in store.payments_of(SCOPE, contact_id, invoice_id) if p.method is PaymentMethod.CARD]
    assert card.unapplied == usd("30.00")
    return card


def refund(store: DynamoStore, rail: FakeRail, payment: Payment, reference: str, amount: str | None = None) -> Refunded:
    """As the route makes it: its id derived from its reference alone."""
    spec = RefundInput(amount, None, PaymentMethod.CARD, reference, payment.id)
    refund_id = keyed_ids(f"{SCOPE.tenant_id}:{SCOPE.mode}:refund-unapplied:{payment.id}", reference)("ref")
    return refund_unapplied_to_card(store, _ctx(store), payment.invoice_id, spec, CLOCK, refund_id, rail)


def _state(store: DynamoStore, payment: Payment) -> tuple[Money, Money, Money, Money]:
    """(payment's unapplied, payment's refunded, invoice's amount_unapplied, the contact's credit)."""
    invoice = store.get_invoice(SCOPE, payment.invoice_id)
    now = store.get_payment(SCOPE, "con_u", payment.invoice_id, payment.id)
    assert invoice is not None and now is not None
    (balance,) = balances(store.invoices_of(SCOPE, invoice.contact_id)).values()
    return now.unapplied, now.refunded, invoice.unapplied, balance.credit


def test_unapplied_money_is_refunded_to_the_card_partly_then_wholly_and_no_further(
    local_table: str, tmp_path: Path
) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    card = unapplied_card_payment(store, rail)
    part = refund(store, rail, card, "ticket-1", "12.00")
    assert (part.refund.status, part.refund.amount, part.refund.unapplied) == (
        RefundStatus.SUCCEEDED,
        usd("12.00"),
        True,
    )
    assert _state(store, card) == (usd("18.00"), usd("12.00"), usd("18.00"), usd("18.00"))
    assert refund(store, rail, card, "ticket-1", "12.00").replayed  # a retry: the same refund, nothing more

    with pytest.raises(Conflict) as over:
        refund(store, rail, card, "ticket-2", "18.01")
    assert (over.value.code, over.value.field) == ("refund.exceeds_unapplied", "amount")
    rest = refund(store, rail, card, "ticket-3")  # all that is left
    assert rest.refund.amount == usd("18.00")
    assert _state(store, card) == (usd("0.00"), usd("30.00"), usd("0.00"), usd("0.00"))
    with pytest.raises(Conflict) as none_left:
        refund(store, rail, card, "ticket-4")
    assert none_left.value.code == "refund.exceeds_unapplied"
    made = rail.refunds_of(card.reference)
    assert sorted(r.amount for r in made) == [usd("12.00"), usd("18.00")]
    assert {r.metadata["refund_id"] for r in made} == {part.refund.id, rest.refund.id}
    (recorded_part, recorded_rest) = sorted(store.refunds_of(SCOPE, "con_u", card.invoice_id), key=lambda r: r.amount)
    assert (recorded_part.rail_ref, recorded_rest.rail_ref) == tuple(
        r.ref for r in sorted(made, key=lambda r: r.amount)
    )


def test_a_refused_rail_refund_gives_the_unapplied_money_back(local_table: str, tmp_path: Path) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    card = unapplied_card_payment(store, rail)
    rail.refund_refused = "no such payment intent"
    with pytest.raises(Conflict) as refused:
        refund(store, rail, card, "ticket-1", "10.00")
    assert refused.value.code == "rail.refused"
    (failed,) = store.refunds_of(SCOPE, "con_u", card.invoice_id)
    assert failed.status is RefundStatus.FAILED
    assert _state(store, card) == (usd("30.00"), usd("0.00"), usd("30.00"), usd("30.00"))


def _refund_in_own_process(
    table: str, endpoint: str, rail_path: str, payment: Payment, reference: str, go: Any, out: Any, both_read: Any
) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store, rail = DynamoStore(), FakeRail(Path(rail_path))
    get_payment = store.get_payment
    waited: list[bool] = []

    def read_then_wait(*args: Any) -> Any:
        found = get_payment(*args)
        if not waited:  # both processes read the payment before either writes
            waited.append(True)
            both_read.wait(60)
        return found

    store.get_payment = read_then_wait  # type: ignore[method-assign]
    go.wait()
    try:
        refund(store, rail, payment, reference, "20.00")
        out.put("ok")
    except DomainError as refused:
        out.put(refused.code)


def test_two_refunds_racing_from_separate_processes_never_exceed_what_is_unapplied(
    dynamodb_local: DynamoDBLocal, local_table: str, tmp_path: Path
) -> None:
    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    card = unapplied_card_payment(store, rail)  # 30.00 unapplied; each asks 20.00
    endpoint = dynamodb_local.endpoint
    each = [(local_table, endpoint, str(rail.path), card, f"ticket-{n}") for n in range(2)]
    outcomes = sorted(in_processes(_refund_in_own_process, each, meet=2))
    assert outcomes == ["ok", "refund.exceeds_unapplied"], outcomes
    assert [r.amount for r in rail.refunds_of(card.reference)] == [usd("20.00")]
    assert _state(store, card) == (usd("10.00"), usd("20.00"), usd("10.00"), usd("10.00"))


def test_an_unapplied_refund_whose_request_died_after_the_rail_refunded_is_finished_by_the_sweep(
    local_table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime

    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    monkeypatch.setattr(runtime, "payment_gateway", lambda scope: rail, raising=False)
    card = unapplied_card_payment(store, rail)
    rail.crash_after = rail.requests + 2  # list the charge's refunds, then refund: dies before recording
    with pytest.raises(Crash):
        refund(store, rail, card, "ticket-1", "12.00")
    rail.crash_after = None
    (pending,) = store.refunds_of(SCOPE, "con_u", card.invoice_id)
    assert pending.status is RefundStatus.PENDING and pending.unapplied
    swept = run_sweep(NOW + GRACE + timedelta(minutes=1))
    assert sum(r["taken"] for r in swept) == 1, swept
    (made,) = rail.refunds_of(card.reference)  # found on the rail by its id, not refunded again
    (done,) = store.refunds_of(SCOPE, "con_u", card.invoice_id)
    assert (done.status, done.rail_ref, made.amount) == (RefundStatus.SUCCEEDED, made.ref, usd("12.00"))
    assert _state(store, card) == (usd("18.00"), usd("12.00"), usd("18.00"), usd("18.00"))


def test_a_stray_charge_kept_as_credit_is_refunded_to_its_card(local_table: str, tmp_path: Path) -> None:
    """Money a charge no attempt recorded took (made outside Billow's collection, naming the invoice;
    recorded by `reconcile_charge` as a stray) is a charge Billow knows on the rail: its unapplied
    money goes back to the card (it was refused as 'recorded by staff', refund.not_collected)."""
    from billow.services.gateway import ChargeRequest

    store, rail = DynamoStore(), FakeRail(tmp_path / "rail.sqlite")
    seed_tenant(store)
    declining_contact(store, "con_u")
    seed_invoice(store, "con_u", "inv_stray", "30.00")
    spec = ManualPaymentInput("30.00", "USD", PaymentMethod.BANK_TRANSFER, "bank-1", DAY)
    record_manual_payment(store, _ctx(store), "inv_stray", spec, CLOCK)
    contact = store.get_contact(SCOPE, "con_u")
    assert contact is not None and contact.gateway_customer_ref and contact.default_method_ref
    meta = {"tenant_id": SCOPE.tenant_id, "mode": SCOPE.mode, "invoice_id": "inv_stray", "contact_id": "con_u"}
    request = ChargeRequest(contact.gateway_customer_ref, contact.default_method_ref, usd("12.00"), "k-stray", meta)
    charge = rail.create_charge(request)
    rail.settle(charge.ref, ChargeStatus.SUCCEEDED)
    reconcile_charge(store, rail, SCOPE, charge.ref, clock=CLOCK)
    (stray,) = [p for p in store.payments_of(SCOPE, "con_u", "inv_stray") if p.reference == charge.ref]
    assert stray.stray_charge and stray.unapplied == usd("12.00")

    done = refund(store, rail, stray, "ticket-stray")
    assert (done.refund.status, done.refund.amount) == (RefundStatus.SUCCEEDED, usd("12.00"))
    assert [r.amount for r in rail.refunds_of(charge.ref)] == [usd("12.00")]
