"""Receivables in the domain: amount due net of payments and credits, credit notes applied,
refunded and consumed, invoice statuses (draft, overdue, void, uncollectible) and a contact's
balance per currency; and the store refusing a second write from the same read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any

import pytest
from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.errors import ConcurrentModification, Conflict, DomainError, InvalidInput
from billow.domain.invoices import Invoice, InvoiceStatus, Payment, PaymentMethod
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.receivables import (
    MAX_NOTES_PER_INVOICE,
    apply_credit,
    balances,
    consume_credit,
    net_owed,
    refund_credit,
    void,
)
from billow.local.stack import add_tenant
from billow.services.billing import InvoiceNumbers, bill_due_subscriptions
from billow.services.context import Scope
from billow.services.events import invoice_data
from billow.services.receivables import Settlement
from billow.services.views import money
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, advance_clock, make_contact, make_product

NOW = datetime(2025, 1, 10, 12, tzinfo=UTC)
DAY = date(2025, 1, 10)


def usd(amount: str, currency: str = "USD") -> Money:
    return Money.parse(amount, currency)


def issued(
    n: int, amount: str, *, contact: str = "con_1", currency: str = "USD", day: date = date(2025, 1, 1), review: int = 0
) -> Invoice:
    money = usd(amount.lstrip("-"), currency)
    money = -money if amount.startswith("-") else money
    line = LineDraft(
        "recurring", "Pro", "svc_1", "prod_1", 1, money, Fraction(1), money, Period(day, day + timedelta(31))
    )
    draft = InvoiceDraft(f"sub_{n}", contact, currency, day, day, Period(day, day + timedelta(31)), (line,))
    return Invoice.issue(draft, invoice_id=f"inv_{n}", number=f"INV-{n:06d}", payment_terms_days=14, review_days=review)


def paid(invoice: Invoice, amount: str) -> Invoice:
    payment = Payment("pay_1", invoice.id, usd(amount, invoice.currency), PaymentMethod.CASH, "r", DAY, NOW)
    return invoice.apply_payment(payment)


def test_amount_due_is_the_total_less_payments_and_credits_applied() -> None:
    invoice, note = paid(issued(1, "100.00"), "30.00"), issued(2, "-50.00")
    note, invoice, application = apply_credit(note, invoice, usd("20.00"), application_id="cap_1", on=DAY, now=NOW)
    assert invoice.amount_due == usd("50.00") and invoice.status is InvoiceStatus.OPEN
    assert note.credit_remaining == usd("30.00") and application.amount == usd("20.00")
    note, invoice, _ = apply_credit(note, invoice, None, application_id="cap_2", on=DAY, now=NOW)
    assert invoice.amount_due == usd("20.00") and note.credit_remaining.is_zero  # as much as remains
    invoice = paid(invoice, "20.00")
    assert (invoice.status, invoice.status_on) == (InvoiceStatus.PAID, DAY)


def test_a_credit_covering_the_amount_due_pays_the_invoice_on_that_day() -> None:
    note, invoice, _ = apply_credit(issued(2, "-80.00"), issued(1, "50.00"), None, application_id="c", on=DAY, now=NOW)
    assert (invoice.status, invoice.status_on, invoice.amount_due) == (InvoiceStatus.PAID, DAY, usd("0.00"))
    assert note.credit_remaining == usd("30.00")


@pytest.mark.parametrize(
    ("invoice", "amount", "code"),
    [
        (issued(1, "100.00"), "60.00", "credit.exceeds_remaining"),
        (issued(1, "10.00"), "20.00", "credit.exceeds_amount_due"),
        (issued(1, "10.00", contact="con_2"), "5.00", "credit.other_contact"),
        (issued(1, "1000", currency="JPY"), None, "credit.currency_mismatch"),
        (paid(issued(1, "10.00"), "10.00"), "5.00", "credit.invoice_not_open"),
        (issued(1, "10.00", review=3), "5.00", "credit.invoice_not_open"),
        (issued(3, "-10.00"), "5.00", "credit.not_an_invoice"),
        (issued(1, "10.00"), "0.00", "credit.amount_not_positive"),
    ],
)
def test_credit_is_applied_only_within_its_rules(invoice: Invoice, amount: str | None, code: str) -> None:
    note = issued(2, "-50.00")
    with pytest.raises(DomainError) as refused:
        apply_credit(note, invoice, None if amount is None else usd(amount), application_id="c", on=DAY, now=NOW)
    assert refused.value.code == code


def test_a_refund_takes_what_remains_and_nothing_twice() -> None:
    note, _, _ = apply_credit(issued(2, "-50.00"), issued(1, "20.00"), None, application_id="c", on=DAY, now=NOW)
    refunded, refund = refund_credit(
        note, None, refund_id="ref_1", method=PaymentMethod.BANK_TRANSFER, reference="wire", on=DAY, now=NOW
    )
    assert refund.amount == usd("30.00") and refunded.credit_remaining.is_zero
    for again in (None, usd("0.01")):
        with pytest.raises(Conflict) as refused:
            refund_credit(refunded, again, refund_id="r2", method=PaymentMethod.CASH, reference="x", on=DAY, now=NOW)
        assert refused.value.code == "credit.exceeds_remaining"
    with pytest.raises(Conflict):
        refund_credit(issued(1, "5.00"), None, refund_id="r", method=PaymentMethod.CASH, reference="x", on=DAY, now=NOW)


def test_voiding_releases_the_credits_applied_to_the_invoice_and_nothing_else() -> None:
    first, second, invoice = issued(2, "-30.00"), issued(3, "-30.00"), issued(1, "100.00")
    first, invoice, a1 = apply_credit(first, invoice, usd("10.00"), application_id="c1", on=DAY, now=NOW)
    second, invoice, a2 = apply_credit(second, invoice, usd("25.00"), application_id="c2", on=DAY, now=NOW)
    other = replace(a1, id="c9", invoice_id="inv_9")  # another invoice's application of the same note
    voided, released, reversed_ = void(invoice, "duplicate", DAY, [a1, a2, other], [first, second])
    assert (voided.status, voided.status_reason, voided.status_on) == (InvoiceStatus.VOID, "duplicate", DAY)
    # Nothing is due on a void invoice, in the domain and in its `invoice.voided` event; its total stays.
    assert (voided.amount_due, voided.total, voided.credited) == (usd("0.00"), usd("100.00"), usd("0.00"))
    data = invoice_data(voided)
    assert (data["amount_due"], data["total"]) == (money(usd("0.00")), money(usd("100.00")))
    # A written-off invoice keeps what remains due: it may still be paid.
    assert invoice.written_off("gone", DAY).amount_due == usd("65.00")
    assert {n.id: n.credit_remaining for n in released} == {"inv_2": usd("30.00"), "inv_3": usd("30.00")}
    assert [(a.id, a.reversed_on) for a in reversed_] == [("c1", DAY), ("c2", DAY)]


@pytest.mark.parametrize(
    ("invoice", "code"),
    [
        (paid(issued(1, "10.00"), "10.00"), "invoice.not_open"),
        (paid(issued(1, "10.00"), "4.00"), "invoice.has_payments"),
        (issued(2, "-10.00"), "invoice.credit_note"),
    ],
)
def test_only_an_unpaid_open_invoice_is_voided(invoice: Invoice, code: str) -> None:
    with pytest.raises(Conflict) as refused:
        void(invoice, "mistake", DAY, [], [])
    assert refused.value.code == code


def test_refusals_name_the_invoice_and_say_what_can_be_done() -> None:
    """A draft has no number yet: a refusal names it by id. Voiding a paid invoice names every status
    that can be voided (a draft too), and one with payments says what can be done instead, since
    no route refunds a payment yet."""
    draft, partly = issued(1, "10.00", review=3), paid(issued(2, "10.00"), "4.00")
    refusals: dict[str, DomainError] = {}
    for name, attempt in {
        "pay a draft": lambda: paid(draft, "5.00"),
        "write off a draft": lambda: draft.written_off(None, DAY),
        "apply to a draft": lambda: apply_credit(issued(3, "-5.00"), draft, None, application_id="c", on=DAY, now=NOW),
        "void a paid one": lambda: void(paid(issued(4, "10.00"), "10.00"), "mistake", DAY, [], []),
        "write off a paid one": lambda: paid(issued(5, "10.00"), "10.00").written_off(None, DAY),
        "void a partly paid one": lambda: void(partly, "mistake", DAY, [], []),
    }.items():
        with pytest.raises(DomainError) as refused:
            attempt()
        refusals[name] = refused.value
    for name in ("pay a draft", "write off a draft", "apply to a draft"):
        assert refusals[name].message.startswith("invoice inv_1 is "), refusals[name].message
    assert refusals["void a paid one"].message == (
        "invoice INV-000004 is paid; only a draft, open or overdue invoice can be voided"
    )
    assert refusals["write off a paid one"].message == (
        "invoice INV-000005 is paid; only an open or overdue invoice can be marked uncollectible"
    )
    has_payments = refusals["void a partly paid one"]
    assert has_payments.code == "invoice.has_payments" and "refund the payments" not in has_payments.message
    assert "cannot be voided" in has_payments.message and "/invoices/inv_2/mark-uncollectible" in has_payments.message
    assert "cancel or regret the service" in has_payments.message
    assert all("  " not in r.message for r in refusals.values()), refusals


def test_a_write_off_and_a_void_leave_the_outstanding_and_overdue_shows_the_day_after_the_due_date() -> None:
    jan, feb, note = issued(1, "100.00"), issued(2, "40.00", day=date(2025, 2, 1)), issued(3, "-15.00")
    assert jan.due_date == date(2025, 1, 15)
    assert jan.went_overdue(date(2025, 1, 15)) is jan  # due that day: not overdue yet
    jan = jan.went_overdue(date(2025, 2, 20))
    assert (jan.status, jan.status_on) == (InvoiceStatus.OVERDUE, date(2025, 1, 16))
    (usd_balance,) = balances([jan, feb, note]).values()
    assert (usd_balance.outstanding, usd_balance.overdue, usd_balance.credit) == (
        usd("140.00"),
        usd("100.00"),
        usd("15.00"),
    )
    assert usd_balance.net == usd("125.00")
    written_off = jan.written_off("bankrupt", date(2025, 3, 1))
    after = balances([written_off, feb.voided("wrong plan", date(2025, 3, 1)), note])["USD"]
    assert (after.outstanding, after.uncollectible, after.net) == (usd("0.00"), usd("100.00"), usd("-15.00"))
    with pytest.raises(Conflict):
        written_off.written_off(None, date(2025, 3, 2))
    assert paid(written_off, "100.00").status is InvoiceStatus.PAID  # a late payment is still taken


def test_balances_and_debt_are_per_currency() -> None:
    owed = net_owed([issued(1, "100", currency="JPY"), issued(2, "1.500", currency="KWD"), issued(3, "-2.00")])
    assert owed == {"JPY": usd("100", "JPY"), "KWD": usd("1.500", "KWD"), "USD": usd("-2.00")}


def test_a_new_invoice_consumes_the_oldest_credit_first_up_to_its_amount_due() -> None:
    older, newer = issued(2, "-10.00", day=date(2024, 12, 1)), issued(3, "-50.00")
    eur = issued(4, "-99.00", currency="EUR")
    invoice, used, applications = consume_credit(
        issued(1, "30.00"), [newer, eur, older], on=DAY, now=NOW, application_id="a"
    )
    assert invoice.status is InvoiceStatus.PAID
    assert [(n.id, n.credit_remaining) for n in used] == [("inv_2", usd("0.00")), ("inv_3", usd("30.00"))]
    assert [(a.credit_note_id, a.amount, a.id) for a in applications] == [
        ("inv_2", usd("10.00"), "a_inv_2"),
        ("inv_3", usd("20.00"), "a_inv_3"),
    ]
    untouched, none_used, _ = consume_credit(issued(5, "30.00"), [eur], on=DAY, now=NOW, application_id="b")
    assert untouched.amount_due == usd("30.00") and none_used == []


def test_a_new_invoice_draws_on_at_most_20_credit_notes_so_its_transaction_fits() -> None:
    # 40 notes of 1.00 each and a 100.00 invoice: 20 notes used (60 writes beside the subscription,
    # the invoice and its action records, under DynamoDB's 100), 80.00 still due.
    notes = [issued(n, "-1.00", day=date(2024, 12, 1) + timedelta(n)) for n in range(2, 42)]
    invoice, used, applications = consume_credit(issued(1, "100.00"), notes, on=DAY, now=NOW, application_id="a")
    assert len(used) == len(applications) == MAX_NOTES_PER_INVOICE == 20
    assert [n.id for n in used] == [f"inv_{n}" for n in range(2, 22)]  # the oldest first
    assert invoice.amount_due == usd("80.00")


def test_a_review_window_issues_an_unnumbered_draft_finalised_later() -> None:
    draft = issued(1, "30.00", review=3)
    drafted = date(2025, 1, 1)
    assert (draft.issue_date, draft.due_date) == (drafted, date(2025, 1, 15))
    assert (draft.status, draft.number, draft.review_until, draft.next_transition()) == (
        InvoiceStatus.DRAFT,
        "",
        date(2025, 1, 4),
        date(2025, 1, 4),
    )
    assert balances([draft])["USD"].outstanding.is_zero  # not owed while in review
    with pytest.raises(Conflict):
        draft.apply_payment(Payment("p", draft.id, usd("1.00"), PaymentMethod.CASH, "r", DAY, NOW))
    final = draft.finalized("INV-000009", date(2025, 1, 2))
    assert (final.status, final.number, final.review_until, final.next_transition()) == (
        InvoiceStatus.OPEN,
        "INV-000009",
        None,
        date(2025, 1, 17),
    )
    # Issued the day it is finalised, due the payment terms (14 days) after that.
    assert (final.issue_date, final.due_date, final.billing_date) == (date(2025, 1, 2), date(2025, 1, 16), drafted)
    with pytest.raises(Conflict) as twice:
        final.finalized("INV-000010", date(2025, 1, 2))
    assert twice.value.code == "invoice.not_draft"
    assert issued(2, "-5.00", review=3).status is InvoiceStatus.ISSUED  # credit notes are not held back


def test_a_second_write_from_the_same_read_is_refused(moto_table: str) -> None:
    """The store writes a settlement only if each invoice is still at the version read: two uses of
    the same credit computed from one read cannot both be written."""
    store, scope = DynamoStore(), Scope("t", "test")
    note, invoice_a, invoice_b = issued(2, "-50.00"), issued(1, "50.00"), issued(4, "50.00")
    work = store.unit_of_work("invoices")
    for invoice in (note, invoice_a, invoice_b):
        work.add_invoice(scope, invoice)
    work.commit()
    note, invoice_a, invoice_b = (store.get_invoice(scope, i) for i in ("inv_2", "inv_1", "inv_4"))
    assert note is not None and invoice_a is not None and invoice_b is not None
    n1, a, app_a = apply_credit(note, invoice_a, None, application_id="cap_a", on=DAY, now=NOW)
    n2, b, app_b = apply_credit(note, invoice_b, None, application_id="cap_b", on=DAY, now=NOW)
    Settlement(((n1, note.version), (a, invoice_a.version)), (app_a,)).commit(store, scope, "a")
    with pytest.raises(ConcurrentModification):
        Settlement(((n2, note.version), (b, invoice_b.version)), (app_b,)).commit(store, scope, "b")
    stored = store.get_invoice(scope, "inv_2")
    assert stored is not None and stored.credit_remaining.is_zero
    assert [x.id for x in store.applications_of(scope, "con_1")] == ["cap_a"]
    assert store.credit_notes_with_credit(scope, "con_1", "USD") == []  # its marker went with its credit


def test_a_refund_is_recorded_only_as_money_returned_outside_billow() -> None:
    note = issued(2, "-5.00")
    with pytest.raises(InvalidInput) as card:
        refund_credit(note, None, refund_id="r", method=PaymentMethod.CARD, reference="x", on=DAY, now=NOW)
    assert (card.value.code, card.value.field) == ("refund.method_not_manual", "method")
    assert "bank_transfer, cash, check" in card.value.message
    for method in (PaymentMethod.BANK_TRANSFER, PaymentMethod.CASH, PaymentMethod.CHECK):
        _, refund = refund_credit(note, None, refund_id="r", method=method, reference="x", on=DAY, now=NOW)
        assert refund.method is method


def test_a_payment_amount_in_a_credit_notes_currency_is_checked() -> None:
    with pytest.raises(InvalidInput):
        refund_credit(
            issued(2, "-5.00"),
            usd("1", "JPY"),
            refund_id="r",
            method=PaymentMethod.CASH,
            reference="x",
            on=DAY,
            now=NOW,
        )


# -- the statuses' days, through the API, the test clock and the daily run -------------------------
KEY = "bk_test_receivables_unit"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-rcv", "Receivables", KEY)
    yield InProcessClient(KEY)


def ordered(api: InProcessClient, clock: str | None = "2025-01-01T10:00:00Z") -> tuple[str, dict[str, Any]]:
    """A contact (on a test clock from `clock`, or on the real clock) with a monthly service: its
    id and the order's first invoice."""
    product, contact = make_product(api, MONTHLY), make_contact(api)
    if clock is not None:
        assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": clock}).status == 201
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    placed = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert placed.status == 201, placed.body
    return contact["id"], placed.body["invoices"][0]


def test_a_review_window_holds_invoices_as_unnumbered_drafts_until_finalised(api: InProcessClient) -> None:
    assert api.patch("/settings/profile", {"invoice_review_days": 3}).body["invoice_review_days"] == 3
    contact, draft = ordered(api)
    assert (draft["status"], draft["number"], draft["review_until"]) == ("draft", "", "2025-01-04")
    pay = {"amount": "31.00", "currency": "USD", "reference": "w", "received_on": "2025-01-01"}
    early = api.post(f"/invoices/{draft['id']}/payments", pay)
    assert early.status == 409 and early.body["error"] == "payment.invoice_not_open"
    for path in ("finalize", "void", "mark-uncollectible"):  # a body with a field no route takes: refused
        unknown = api.post(f"/invoices/{draft['id']}/{path}", {"reason": "r", "x": 1})
        assert (unknown.status, unknown.body["error"]) == (422, "request.validation_failed"), (path, unknown.body)
        assert {"field": "x", "reason": "unknown field"} in unknown.body["fields"], unknown.body
    assert api.post(f"/invoices/{draft['id']}/finalize", {"x": 1}).status == 422
    assert api.get(f"/invoices/{draft['id']}").body["status"] == "draft"  # nothing was written
    assert (draft["issue_date"], draft["due_date"]) == ("2025-01-01", "2025-01-15")
    advance_clock(api, contact, "2025-01-03T10:00:00Z")  # staff finalise it on the 3rd, within its window
    final = api.post(f"/invoices/{draft['id']}/finalize", {})  # an empty object, like no body at all
    assert final.status == 200, final.body
    assert api.post(f"/invoices/{draft['id']}/finalize").body["error"] == "invoice.not_draft"  # no body: read
    assert (final.body["status"], final.body["status_on"], final.body["review_until"]) == ("open", "2025-01-03", None)
    assert final.body["number"].startswith("INV-")
    # Issued the day it was finalised, due 14 days (the payment terms) after that; billed for the 1st.
    assert (final.body["billing_date"], final.body["issue_date"], final.body["due_date"]) == (
        "2025-01-01",
        "2025-01-03",
        "2025-01-17",
    )

    advance_clock(api, contact, "2025-02-02T10:00:00Z")
    february = api.get(f"/contacts/{contact}/invoices").body["items"][-1]
    assert (february["status"], february["number"], february["issue_date"]) == ("draft", "", "2025-02-01")
    advance_clock(api, contact, "2025-02-05T10:00:00Z")  # its window ended on the 4th: finalised that day
    february = api.get(f"/invoices/{february['id']}").body
    assert (february["status"], february["status_on"]) == ("open", "2025-02-04") and february["number"]
    assert (february["issue_date"], february["due_date"]) == ("2025-02-04", "2025-02-18")
    january = api.get(f"/invoices/{draft['id']}").body
    assert (january["status"], january["status_on"]) == ("overdue", "2025-01-18")  # the day after the 17th


def test_the_daily_run_marks_an_unpaid_invoice_overdue_the_day_after_its_due_date(api: InProcessClient) -> None:
    contact, invoice = ordered(api, clock=None)  # on the real clock: the daily run moves it
    due = date.fromisoformat(invoice["due_date"])
    store, numbers = DynamoStore(), InvoiceNumbers(DynamoStore())
    bill_due_subscriptions(store, datetime.combine(due, time(12), UTC), numbers)
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "open"  # due that day: not overdue yet
    bill_due_subscriptions(store, datetime.combine(due + timedelta(days=1), time(12), UTC), numbers)
    shown = api.get(f"/invoices/{invoice['id']}").body
    assert (shown["status"], shown["status_on"]) == ("overdue", (due + timedelta(days=1)).isoformat())
    assert api.get(f"/contacts/{contact}/balance").body["currencies"][0]["overdue"]["amount"] == "31.00"


def test_a_twin_request_with_the_same_key_that_writes_between_the_reads_is_answered_as_a_replay(
    moto_table: str,
) -> None:
    """Two requests with one Idempotency-Key run at once (both hold the claim): when the twin's write
    lands after this request read the credit note but before it read the invoice, this request
    still answers the twin's application, not 409 `credit.invoice_not_open`."""
    from billow.domain.tenants import TenantSettings
    from billow.services import receivables
    from billow.services.context import TenantContext, keyed_ids

    from tests.integration.test_billing_run import FixedClock

    store, ctx = DynamoStore(), TenantContext("t", "live", TenantSettings("t", "T"))
    note, invoice = issued(2, "-50.00"), issued(1, "10.00")
    work = store.unit_of_work("seed")
    for item in (note, invoice):
        work.add_invoice(ctx.scope, item)
    work.commit()
    clock = FixedClock(NOW)

    def apply(on: Any) -> receivables.Applied:
        return receivables.apply_credit_note(on, ctx, note.id, invoice.id, None, None, clock, keyed_ids("k", "apply"))

    class TwinWritesFirst:
        """The store, with the twin request's whole apply landing just before the first invoice read."""

        def __init__(self) -> None:
            self.twin: receivables.Applied | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def get_invoice(self, scope: Scope, invoice_id: str) -> Invoice | None:
            if self.twin is None and invoice_id == invoice.id:
                self.twin = apply(store)
            return store.get_invoice(scope, invoice_id)

    racing = TwinWritesFirst()
    answer = apply(racing)
    assert racing.twin is not None and not racing.twin.replayed
    assert answer.replayed and answer.application == racing.twin.application
    assert [a.id for a in store.applications_of(ctx.scope, "con_1")] == [answer.application.id]
