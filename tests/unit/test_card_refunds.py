"""Card refunds of credit notes: the link from a credit note to the invoices it credits, the
bounds (what the payment received net of its refunds, what remains of the credit note), the
pending record before the rail is called, and the route's answers (on moto, with the fake rail,
which like localstripe accepts over-refunds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.errors import Conflict, DomainError, InvalidInput
from billow.domain.invoices import Invoice, Payment, PaymentMethod
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.receivables import (
    RefundStatus,
    credited_invoices,
    refund_leased,
    refund_settled,
    refund_to_payment,
)
from billow.local.stack import add_tenant
from billow.services.context import Scope
from billow.services.events import Change, events_of
from billow.services.gateway import GatewayUnavailable
from billow.services.invoices import payment_id_for
from billow.services.receivables import Refunded
from billow.storage.repository import DynamoStore

from tests.fake_rail import FakeRail
from tests.refund_support import Seeded, refund, seed
from tests.support import InProcessClient

NOW = datetime(2025, 1, 10, 12, tzinfo=UTC)
DAY = date(2025, 1, 10)
JAN = Period(date(2025, 1, 1), date(2025, 2, 1))


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def line(kind: str, amount: str, period: Period, service: str = "svc_1") -> LineDraft:
    money = usd(amount.lstrip("-"))
    money = -money if amount.startswith("-") else money
    return LineDraft(kind, "Pro", service, "prod_1", 1, money, Fraction(1), money, period)


def document(n: int, *lines: LineDraft, subscription: str = "sub_1") -> Invoice:
    draft = InvoiceDraft(subscription, "con_1", "USD", JAN.start, JAN.start, JAN, tuple(lines))
    return Invoice.issue(draft, invoice_id=f"inv_{n}", number=f"INV-{n}", payment_terms_days=14)


NOTE = document(9, line("credit", "-20.00", Period(date(2025, 1, 11), date(2025, 2, 1))))


def card(invoice_id: str = "inv_1", amount: str = "31.00", refunded: str = "0.00") -> Payment:
    return Payment("pay_1", invoice_id, usd(amount), PaymentMethod.CARD, "pi_1", DAY, NOW, usd(refunded), version=1)


def test_a_credit_note_credits_the_invoices_that_charged_its_days() -> None:
    charged = document(1, line("recurring", "31.00", JAN))
    later = document(2, line("recurring", "28.00", Period(date(2025, 2, 1), date(2025, 3, 1))))
    other_service = document(3, line("recurring", "31.00", JAN, service="svc_2"))
    other_subscription = document(4, line("recurring", "31.00", JAN), subscription="sub_2")
    prorated = document(5, line("prorated", "10.00", Period(date(2025, 1, 20), date(2025, 2, 1))))
    found = credited_invoices(NOTE, [charged, later, other_service, other_subscription, prorated, NOTE])
    assert {i.id for i in found} == {"inv_1", "inv_5"}


def test_a_refund_to_a_card_payment_is_bounded_by_the_payment_net_of_refunds_and_by_the_credit() -> None:
    note, payment, refund_ = refund_to_payment(
        NOTE, card(), usd("15.00"), credited={"inv_1"}, refund_id="ref_1", reference="r", on=DAY, now=NOW
    )
    assert (refund_.status, refund_.payment_id, refund_.invoice_id) == (RefundStatus.PENDING, "pay_1", "inv_1")
    assert note.credit_remaining == usd("5.00") and payment.refundable == usd("16.00")
    # Nothing given: as much as both allow (the credit remaining, here below the payment's net).
    _, _, whole = refund_to_payment(
        NOTE, card(), None, credited={"inv_1"}, refund_id="r2", reference="r", on=DAY, now=NOW
    )
    assert whole.amount == usd("20.00")
    _, _, net = refund_to_payment(
        NOTE, card(refunded="25.00"), None, credited={"inv_1"}, refund_id="r3", reference="r", on=DAY, now=NOW
    )
    assert net.amount == usd("6.00")


@pytest.mark.parametrize(
    ("payment", "amount", "credited", "code"),
    [
        (card(refunded="25.00"), "6.01", {"inv_1"}, "refund.exceeds_payment"),  # beyond what it received, net
        (card(refunded="31.00"), None, {"inv_1"}, "refund.exceeds_payment"),
        (card(), "20.01", {"inv_1"}, "credit.exceeds_remaining"),
        (card(), "5.00", {"inv_2"}, "refund.payment_not_credited"),
        (replace(card(), method=PaymentMethod.BANK_TRANSFER), "5.00", {"inv_1"}, "refund.not_a_card_payment"),
        (card(), "0.00", {"inv_1"}, "credit.amount_not_positive"),
    ],
)
def test_an_over_refund_or_a_payment_it_does_not_credit_is_refused(
    payment: Payment, amount: str | None, credited: set[str], code: str
) -> None:
    with pytest.raises(DomainError) as refused:
        refund_to_payment(
            NOTE,
            payment,
            None if amount is None else usd(amount),
            credited=credited,
            refund_id="r",
            reference="r",
            on=DAY,
            now=NOW,
        )
    assert refused.value.code == code


def test_a_refused_rail_refund_gives_its_amount_back_and_a_lease_excludes_a_second_sender() -> None:
    note, payment, pending = refund_to_payment(
        NOTE, card(), usd("15.00"), credited={"inv_1"}, refund_id="r", reference="r", on=DAY, now=NOW
    )
    leased = refund_leased(pending, NOW)
    with pytest.raises(Conflict) as busy:
        refund_leased(leased, NOW + timedelta(seconds=90))
    assert busy.value.code == "refund.in_progress"
    assert refund_leased(leased, NOW + timedelta(minutes=3)).leased_until == NOW + timedelta(
        minutes=5
    )  # died: taken over
    back, released, failed = refund_settled(note, payment, leased, rail_ref="re_1", failure="card closed")
    assert (failed.status, back.credit_remaining, released.refundable) == (
        RefundStatus.FAILED,
        usd("20.00"),
        usd("31.00"),
    )
    kept, _, done = refund_settled(note, payment, leased, rail_ref="re_1", failure=None)
    assert (done.status, done.rail_ref, kept.credit_remaining) == (RefundStatus.SUCCEEDED, "re_1", usd("5.00"))


def test_payment_refunded_is_published_once_when_the_rail_refund_is_recorded() -> None:
    from billow.services.context import Scope

    _, _, pending = refund_to_payment(
        NOTE, card(), usd("15.00"), credited={"inv_1"}, refund_id="r", reference="r", on=DAY, now=NOW
    )
    _, _, done = refund_settled(NOTE, card(), pending, rail_ref="re_1", failure=None)
    _, _, failed = refund_settled(NOTE, card(), pending, rail_ref=None, failure="no")

    def types(old: object, new: object, version: int) -> list[str]:
        change = Change(Scope("t1", "test"), "con_1", "pk|sk", "refund", old, new, version, NOW)
        return [e.type for e in events_of(change)]

    assert types(None, pending, 1) == [] and types(pending, failed, 3) == []
    assert types(pending, done, 3) == ["credit_note.refunded", "payment.refunded"]
    assert types(done, done, 4) == []
    (event,) = [
        e
        for e in events_of(Change(Scope("t1", "test"), "con_1", "k", "refund", pending, done, 3, NOW))
        if e.type == "payment.refunded"
    ]
    assert (
        event.data["payment_id"] == "pay_1"
        and event.data["rail_ref"] == "re_1"
        and event.data["amount"]["amount"] == "15.00"
    )


# -- the use case on moto, with the fake rail ----------------------------------------------------------
@pytest.fixture
def rail(tmp_path: Path) -> FakeRail:
    return FakeRail(tmp_path / "rail.sqlite")


@pytest.fixture
def seeded(moto_table: str, rail: FakeRail) -> Iterator[Seeded]:
    yield seed(DynamoStore(), rail)


def test_a_regrets_credit_note_is_refunded_to_the_card_partly_then_fully_and_no_further(
    seeded: Seeded, rail: FakeRail
) -> None:
    store = DynamoStore()
    assert seeded.note.credit_remaining == usd("31.00")
    first = refund(store, rail, seeded, "ticket-1", "10.00")
    assert (first.refund.status, first.refund.amount, first.replayed) == (RefundStatus.SUCCEEDED, usd("10.00"), False)
    assert rail.refunded(seeded.payment.reference) == [usd("10.00")]
    rest = refund(store, rail, seeded, "ticket-2")  # all that remains
    assert rest.refund.amount == usd("21.00") and rest.credit_note.credit_remaining.is_zero
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    assert payment is not None and payment.refundable.is_zero
    with pytest.raises(Conflict) as over:
        refund(store, rail, seeded, "ticket-3", "0.01")
    assert over.value.code == "credit.exceeds_remaining"
    again = refund(store, rail, seeded, "ticket-1", "10.00")  # a retry: the first refund, not another
    assert again.replayed and again.refund.id == first.refund.id
    assert rail.refunded(seeded.payment.reference) == [usd("10.00"), usd("21.00")]  # nothing more sent


def test_an_over_refund_writes_nothing_and_sends_nothing(seeded: Seeded, rail: FakeRail) -> None:
    store = DynamoStore()
    before = rail.request_count()
    with pytest.raises(Conflict) as over:
        refund(store, rail, seeded, "too-much", "31.01")
    assert over.value.code == "credit.exceeds_remaining"
    assert rail.request_count() == before and rail.refunded(seeded.payment.reference) == []
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    assert note is not None and note.version == seeded.note.version
    assert store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id) == []


def test_a_refund_beyond_what_the_card_payment_received_is_refused_though_credit_remains(
    moto_table: str, rail: FakeRail
) -> None:
    store = DynamoStore()
    seeded = seed(store, rail, by_card="20.00")  # 11.00 of the invoice came by bank transfer
    assert seeded.note.credit_remaining == usd("31.00") and seeded.payment.amount == usd("20.00")
    with pytest.raises(Conflict) as over:
        refund(store, rail, seeded, "all", "31.00")  # localstripe would take it; Billow does not send it
    assert (over.value.code, over.value.field) == ("refund.exceeds_payment", "amount")
    assert rail.refunded(seeded.payment.reference) == []
    done = refund(store, rail, seeded, "all-it-can")  # nothing given: as much as the payment received
    assert done.refund.amount == usd("20.00") and done.credit_note.credit_remaining == usd("11.00")
    assert rail.refunded(seeded.payment.reference) == [usd("20.00")]


# -- the route -------------------------------------------------------------------------------------------
KEY = "bk_test_card_refunds_unit"


@pytest.fixture
def api(moto_table: str, rail: FakeRail, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InProcessClient, Seeded]]:
    import runtime

    add_tenant("t-card", "Card Refunds", KEY)
    monkeypatch.setattr(runtime, "payment_gateway", lambda scope: rail, raising=False)
    yield InProcessClient(KEY), seed(DynamoStore(), rail, tenant_id="t-card")


def test_the_refund_route_sends_a_card_refund_and_answers_its_refusals_in_the_error_shape(
    api: tuple[InProcessClient, Seeded], rail: FakeRail
) -> None:
    client, seeded = api
    path = f"/credit-notes/{seeded.note.id}/refund"
    over = client.post(path, {"method": "card", "reference": "r-over", "amount": "31.01"})
    assert (over.status, over.body["error"]) == (409, "credit.exceeds_remaining")
    assert [f["field"] for f in over.body["fields"]] == ["amount"]
    manual_with_payment = client.post(path, {"reference": "r-x", "payment_id": seeded.payment.id})
    assert (manual_with_payment.status, manual_with_payment.body["error"]) == (422, "refund.payment_not_card")
    other = client.post(path, {"method": "card", "reference": "r-other", "payment_id": "pay_unknown"})
    assert (other.status, other.body["error"]) == (409, "refund.payment_not_credited"), other.body
    assert rail.refunded(seeded.payment.reference) == []

    done = client.post(path, {"method": "card", "reference": "r-1", "amount": "12.50"})
    assert done.status == 201, done.body
    shown = done.body["refund"]
    assert (shown["status"], shown["payment_id"], shown["method"]) == ("succeeded", seeded.payment.id, "card")
    assert shown["rail_ref"].startswith("re_") and done.body["credit_note"]["credit_remaining"]["amount"] == "18.50"
    again = client.post(path, {"method": "card", "reference": "r-1", "amount": "12.50"})
    assert again.status == 200 and again.body["refund"]["id"] == shown["id"], again.body
    assert rail.refunded(seeded.payment.reference) == [usd("12.50")]
    listed = client.get(f"/credit-notes/{seeded.note.id}").body["refunds"]
    assert [(r["status"], r["rail_ref"]) for r in listed] == [("succeeded", shown["rail_ref"])]


def test_a_kwd_refund_of_a_fraction_stripe_cannot_take_names_the_amount_in_the_409s_fields(
    api: tuple[InProcessClient, Seeded], rail: FakeRail
) -> None:
    """rail.amount_precision (and every rail.amount_* refusal) reaching the API says which input is at
    fault, like every other amount refusal. (`api`: the route's rail is the fake one.)"""
    add_tenant("t-card-kwd", "Card Refunds KWD", KEY + "_kwd")
    kwd = seed(DynamoStore(), rail, tenant_id="t-card-kwd", price="10.000", currency="KWD")
    answer = InProcessClient(KEY + "_kwd").post(
        f"/credit-notes/{kwd.note.id}/refund", {"method": "card", "reference": "r-fils", "amount": "0.005"}
    )
    assert (answer.status, answer.body["error"]) == (409, "rail.amount_precision"), answer.body
    assert [f["field"] for f in answer.body["fields"]] == ["amount"]
    assert rail.refunded(kwd.payment.reference) == []


def test_a_refund_the_rail_refuses_is_recorded_failed_and_its_amount_given_back(seeded: Seeded, rail: FakeRail) -> None:
    store = DynamoStore()
    rail.refund_failure = "expired_or_canceled_card"
    failed = refund(store, rail, seeded, "ticket-1", "10.00")
    assert (failed.refund.status, failed.refund.failure) == (RefundStatus.FAILED, "expired_or_canceled_card")
    assert failed.credit_note.credit_remaining == usd("31.00")
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    assert payment is not None and payment.refundable == usd("31.00")
    rail.refund_failure = None
    again = refund(store, rail, seeded, "ticket-1", "10.00")  # the same refund: failed, not tried again
    assert again.replayed and again.refund.status is RefundStatus.FAILED
    done = refund(store, rail, seeded, "ticket-2", "31.00")  # a new one may take all of it
    assert done.refund.status is RefundStatus.SUCCEEDED


def test_refunds_and_payments_stored_before_card_refunds_read_as_manual_and_unrefunded() -> None:
    from billow.storage import codec

    manual = {
        "id": "ref_1",
        "credit_note_id": "inv_9",
        "amount": codec.money_out(usd("5.00")),
        "method": "bank_transfer",
        "reference": "wire",
        "refunded_on": "2025-01-10",
        "recorded_at": NOW.isoformat(),
    }
    old = codec.refund_in(manual, 1)
    assert (old.status, old.payment_id, old.version) == (RefundStatus.SUCCEEDED, None, 1)
    payment = {k: v for k, v in codec.payment_out(card()).items() if k != "amount_refunded"}
    assert codec.payment_in(payment, 1).refunded == usd("0.00")
    _, paid, pending = refund_to_payment(
        NOTE, card(), usd("15.00"), credited={"inv_1"}, refund_id="r", reference="r", on=DAY, now=NOW
    )
    leased = refund_leased(pending, NOW)
    assert codec.refund_in(codec.refund_out(leased), 2) == replace(leased, version=2)
    assert codec.payment_in(codec.payment_out(paid), 2) == replace(paid, version=2)


def test_a_twin_request_that_refunds_between_the_credit_note_read_and_the_payment_read_is_answered_not_refused(
    seeded: Seeded, rail: FakeRail
) -> None:
    """Two requests with one reference (a client retrying at once): the second reads the credit
    note, finds no refund yet, and the first writes it all before the second reads the payment.
    The second must answer that refund (the payment refunded in full is this very refund), not
    refuse it as exceeding the payment."""

    class TwinWritesMeanwhile(DynamoStore):
        def payments_of(self, scope: Scope, contact_id: str, invoice_id: str) -> list[Payment]:
            if not twin:
                twin.append(refund(DynamoStore(), rail, seeded, "ticket-1"))
            return super().payments_of(scope, contact_id, invoice_id)

    twin: list[Refunded] = []
    second = refund(TwinWritesMeanwhile(), rail, seeded, "ticket-1")
    assert second.replayed and second.refund.id == twin[0].refund.id
    assert rail.refunded(seeded.payment.reference) == [usd("31.00")]


def test_a_reference_once_used_for_a_card_refund_is_not_answered_for_another_amount(
    seeded: Seeded, rail: FakeRail
) -> None:
    """Below the API's claim of the reference (which a refusal releases), the refund the reference
    names answers only for the amount and payment it was made with."""
    store = DynamoStore()
    first = refund(store, rail, seeded, "ticket-1", "10.00")
    assert refund(store, rail, seeded, "ticket-1", "10.00").refund.id == first.refund.id
    assert refund(store, rail, seeded, "ticket-1").refund.id == first.refund.id  # the default: as made
    with pytest.raises(InvalidInput) as reused:
        refund(store, rail, seeded, "ticket-1", "12.00")
    assert (reused.value.code, reused.value.field) == ("idempotency.key_reused", "reference")
    assert rail.refunded(seeded.payment.reference) == [usd("10.00")]


def test_a_rail_out_of_reach_leaves_the_refund_pending_and_the_retry_carries_it_on_at_once(
    seeded: Seeded, rail: FakeRail
) -> None:
    store = DynamoStore()
    rail.unavailable_at = rail.attempted + 2  # listing the charge's refunds answers; the refund does not
    with pytest.raises(GatewayUnavailable):
        refund(store, rail, seeded, "ticket-1", "10.00")
    (pending,) = store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)
    assert (pending.status, pending.leased_until) == (RefundStatus.PENDING, None)
    done = refund(store, rail, seeded, "ticket-1", "10.00")  # no wait for a lease
    assert done.refund.status is RefundStatus.SUCCEEDED
    assert rail.refunded(seeded.payment.reference) == [usd("10.00")]


def test_a_tenant_without_a_card_processor_is_told_so_and_nothing_is_written(seeded: Seeded) -> None:
    store = DynamoStore()
    with pytest.raises(Conflict) as no_rail:
        refund(store, None, seeded, "ticket-1", "10.00")
    assert no_rail.value.code == "refund.no_rail"
    assert store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id) == []
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    assert note is not None and note.credit_remaining == usd("31.00")


# -- what the rail cannot take ---------------------------------------------------------------------------
def _refund_records(store: DynamoStore, seeded: Seeded) -> list[tuple[RefundStatus, Money]]:
    return [(r.status, r.amount) for r in store.refunds_of(seeded.ctx.scope, seeded.contact_id, seeded.note.id)]


def test_a_kwd_refund_stripe_cannot_take_is_refused_before_anything_is_reserved(
    moto_table: str, rail: FakeRail
) -> None:
    store = DynamoStore()
    seeded = seed(store, rail, price="10.000", currency="KWD")  # Stripe takes KWD in multiples of 0.010
    for attempt in range(2):  # the same reference again: the same refusal, not `refund.in_progress`
        with pytest.raises(Conflict) as refused:
            refund(store, rail, seeded, "ticket-kwd", "1.005")
        assert refused.value.code == "rail.amount_precision", attempt
        assert "1.000" in str(refused.value)  # the nearest amount it can take
    assert _refund_records(store, seeded) == [] and rail.refunded(seeded.payment.reference) == []
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    assert payment is not None and payment.refunded.is_zero
    done = refund(store, rail, seeded, "ticket-full", "10.000")  # nothing held: the whole payment can go back
    assert done.refund.status is RefundStatus.SUCCEEDED and done.credit_note.credit_remaining.is_zero


def test_a_refund_the_rail_refuses_as_invalid_ends_failed_gives_its_amount_back_and_answers_a_coded_409(
    seeded: Seeded, rail: FakeRail
) -> None:
    store = DynamoStore()
    rail.refund_refused = "charge_already_refunded"
    with pytest.raises(Conflict) as refused:
        refund(store, rail, seeded, "ticket-1", "10.00")
    assert refused.value.code == "rail.refused"
    assert _refund_records(store, seeded) == [(RefundStatus.FAILED, usd("10.00"))]
    payment = store.get_payment(seeded.ctx.scope, seeded.contact_id, seeded.invoice.id, seeded.payment.id)
    note = store.get_invoice(seeded.ctx.scope, seeded.note.id)
    assert payment is not None and payment.refunded.is_zero
    assert note is not None and note.credit_remaining == usd("31.00")
    rail.refund_refused = None
    again = refund(store, rail, seeded, "ticket-1", "10.00")  # its reference answers the failed refund
    assert again.replayed and again.refund.status is RefundStatus.FAILED
    done = refund(store, rail, seeded, "ticket-2", "31.00")  # nothing held back
    assert done.refund.status is RefundStatus.SUCCEEDED


# -- only what collection recorded goes back to a card ---------------------------------------------------
def test_a_card_payment_staff_recorded_is_never_refunded_through_the_rail_even_quoting_anothers_charge(
    moto_table: str, rail: FakeRail
) -> None:
    """Staff record B's invoice as paid "by card", quoting A's PaymentIntent as the reference: a card
    refund of B's credit note must send no money back, least of all to A's card."""
    store = DynamoStore()
    victim = seed(store, rail, tenant_id="t-cards")  # A paid 31.00 by card, collected by Billow
    charge_of_a = victim.payment.reference
    other = seed(
        store, rail, tenant_id="t-cards", by_card="1.00", wired=(PaymentMethod.CARD, charge_of_a), key="b"
    )  # B: 30.00 recorded by staff as "card" with A's charge as reference, 1.00 collected by card
    assert other.contact_id != victim.contact_id
    by_staff = payment_id_for(other.invoice.id, charge_of_a)
    with pytest.raises(Conflict) as named:
        refund(store, rail, other, "ticket-b", "20.00", payment_id=by_staff)
    assert (named.value.code, named.value.field) == ("refund.not_collected", "payment_id")
    with pytest.raises(Conflict) as default:  # the default payment is the collected one, which got 1.00
        refund(store, rail, other, "ticket-c", "20.00")
    assert default.value.code == "refund.exceeds_payment"
    assert rail.refunded(charge_of_a) == [] and _refund_records(store, other) == []
    payment = store.get_payment(other.ctx.scope, other.contact_id, other.invoice.id, by_staff)
    assert payment is not None and payment.method is PaymentMethod.CARD and payment.refunded.is_zero
    done = refund(store, rail, other, "ticket-d")  # what B's collected card payment received goes back to it
    assert (done.refund.payment_id, done.refund.amount) == (other.payment.id, usd("1.00"))
    assert rail.refunded(other.payment.reference) == [usd("1.00")] and rail.refunded(charge_of_a) == []


def test_a_refund_in_another_currency_names_the_currency_field(api: tuple[InProcessClient, Seeded]) -> None:
    client, seeded = api
    path = f"/credit-notes/{seeded.note.id}/refund"
    for method in ("card", "bank_transfer"):
        other = client.post(
            path, {"method": method, "reference": f"r-eur-{method}", "amount": "10.00", "currency": "EUR"}
        )
        assert (other.status, other.body["error"]) == (422, "money.currency_mismatch"), other.body
        assert [f["field"] for f in other.body["fields"]] == ["currency"]
