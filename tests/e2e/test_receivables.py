"""Receivables over HTTP on the local stack: a regretted, paid invoice refunded through its credit
note; a downgrade's credit note consumed by the next invoices under the tenant setting, applied by
hand otherwise; void and write-off moving a contact's outstanding; overdue as a stored transition
on the contact's clock; and the same credit spent twice at once, from separate processes, taking
effect once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from billow.local import stack

from tests.support import HttpClient, advance_clock, local_api, make_contact, make_product, post_from_processes

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY, AUTO_KEY = "bk_test_receivables", "bk_test_receivables_auto"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}
QUARTERLY = {"price": "90.00", "currency": "USD", "cycle": "quarter", "billing_model": "advance"}
BASIC = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def apis() -> Iterator[tuple[HttpClient, HttpClient]]:
    """Two tenants: credit applied by hand (the default), and consumed automatically."""
    with local_api("billow-e2e-receivables", "recv", KEY) as client:
        stack.add_tenant("recv-auto", "Recv Auto", AUTO_KEY)
        auto = HttpClient(client.base_url, AUTO_KEY)
        for api in (client, auto):
            assert api.patch("/settings/subscriptions", {"downgrade": "immediate"}).status == 200
        settings = auto.patch("/settings/profile", {"auto_apply_credit": True})
        assert settings.status == 200 and settings.body["auto_apply_credit"] is True, settings.body
        yield client, auto


@pytest.fixture
def api(apis: tuple[HttpClient, HttpClient]) -> HttpClient:
    return apis[0]


def amount(money: dict[str, str]) -> str:
    return money["amount"]


def balance(**given: str) -> dict[str, str]:
    """A balance as `Customer.balance` reads it: every amount 0.00 but those given."""
    return {**dict.fromkeys(("outstanding", "overdue", "credit", "net", "uncollectible"), "0.00"), **given}


class Customer:
    """A contact on its own test clock (from 1 January 2025) with one service of `terms`."""

    def __init__(self, api: HttpClient, terms: dict[str, Any]) -> None:
        self.api = api
        self.contact_id = make_contact(api)["id"]
        assert (
            api.post(f"/contacts/{self.contact_id}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"}).status == 201
        )
        product = make_product(api, terms)
        placed = api.post(
            "/orders",
            {
                "contact_id": self.contact_id,
                "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}],
            },
        )
        assert placed.status == 201, placed.body
        ordered = placed.body["order"]["services"][0]
        self.service = f"/subscriptions/{ordered['subscription_id']}/services/{ordered['service_id']}"
        (self.first,) = placed.body["invoices"]

    def advance(self, day: str) -> None:
        advance_clock(self.api, self.contact_id, f"{day}T10:00:00Z")

    def pay(self, invoice: dict[str, Any], reference: str = "wire-1") -> None:
        body = {"amount": amount(invoice["amount_due"]), "currency": "USD", "reference": reference}
        paid = self.api.post(f"/invoices/{invoice['id']}/payments", {**body, "received_on": invoice["issue_date"]})
        assert paid.status == 201 and paid.body["invoice"]["status"] == "paid", paid.body

    def invoices(self, kind: str = "invoice") -> list[dict[str, Any]]:
        return list(self.api.get(f"/contacts/{self.contact_id}/invoices?kind={kind}").body["items"])

    def balance(self) -> dict[str, str]:
        reply = self.api.get(f"/contacts/{self.contact_id}/balance")
        assert reply.status == 200, reply.body
        (usd,) = reply.body["currencies"]
        return {name: amount(value) for name, value in usd.items() if name != "currency"}

    def downgrade(self) -> dict[str, Any]:
        """On 11 January, from 90.00 a quarter to 10.00 a month: the quarter's unused 80.00 comes
        back as a credit note, and the monthly invoice of 11 January is the next invoice."""
        basic = make_product(self.api, BASIC, name="Basic")
        self.advance("2025-01-11")
        changed = self.api.post(
            f"{self.service}/change", {"product_id": basic["id"], "terms_id": basic["terms"][0]["id"]}
        )
        assert changed.status == 201, changed.body
        (note,) = self.invoices("credit_note")
        assert amount(note["total"]) == "-80.00" and amount(note["credit_remaining"]) == "80.00"
        return note


def test_a_regretted_paid_invoice_is_refunded_through_its_credit_note(api: HttpClient) -> None:
    ann = Customer(api, MONTHLY)
    ann.pay(ann.first)
    ann.advance("2025-01-05")
    regret = api.post(f"{ann.service}/regret", {"reason": "changed my mind"})
    assert regret.status == 201, regret.body
    (note,) = regret.body["invoices"]
    assert (note["kind"], note["status"], amount(note["credit_remaining"])) == ("credit_note", "issued", "31.00")
    assert ann.balance() == balance(credit="31.00", net="-31.00")

    # Paid by wire: there is no card payment to refund to (tests/e2e/test_card_refunds.py refunds one).
    card = api.post(f"/credit-notes/{note['id']}/refund", {"reference": "REFUND-0001", "method": "card"})
    assert (card.status, card.body["error"]) == (409, "refund.no_card_payment"), card.body
    assert ann.balance()["credit"] == "31.00"  # nothing refunded

    key = {"Idempotency-Key": "refund-ann"}
    body = {"reference": "REFUND-0001", "method": "bank_transfer"}
    refunded = api.post(f"/credit-notes/{note['id']}/refund", body, headers=key)
    assert refunded.status == 201, refunded.body
    assert (
        amount(refunded.body["refund"]["amount"]) == "31.00" and refunded.body["refund"]["refunded_on"] == "2025-01-05"
    )
    assert amount(refunded.body["credit_note"]["credit_remaining"]) == "0.00"
    assert ann.balance()["credit"] == "0.00" and ann.balance()["net"] == "0.00"

    again = api.post(f"/credit-notes/{note['id']}/refund", body, headers=key)  # a retry: the same refund
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true", again.body
    assert again.body["refund"]["id"] == refunded.body["refund"]["id"]
    twice = api.post(f"/credit-notes/{note['id']}/refund", {"reference": "REFUND-0002"})
    assert twice.status == 409 and twice.body["error"] == "credit.exceeds_remaining", twice.body
    shown = api.get(f"/credit-notes/{note['id']}").body
    assert [(amount(r["amount"]), r["reference"]) for r in shown["refunds"]] == [("31.00", "REFUND-0001")]
    not_a_note = api.post(f"/credit-notes/{ann.first['id']}/refund", {"reference": "x"})
    assert not_a_note.status == 409 and not_a_note.body["error"] == "credit.not_a_credit_note"


def test_a_downgrade_credit_note_is_consumed_by_the_next_invoices_under_the_tenant_setting(
    apis: tuple[HttpClient, HttpClient],
) -> None:
    bob = Customer(apis[1], QUARTERLY)
    bob.pay(bob.first)
    note = bob.downgrade()
    # The first monthly invoice went out in the same change, before the credit note: paid by wire.
    (monthly,) = [i for i in bob.invoices() if i["issue_date"] == "2025-01-11"]
    assert amount(monthly["amount_credited"]) == "0.00"
    bob.pay(monthly)
    bob.advance("2025-03-12")  # the next invoices, February's and March's, consume the credit
    later = [i for i in bob.invoices() if i["issue_date"] > "2025-01-11"]
    assert [(i["issue_date"], i["status"], amount(i["amount_credited"]), i["status_on"]) for i in later] == [
        ("2025-02-11", "paid", "10.00", "2025-02-11"),
        ("2025-03-11", "paid", "10.00", "2025-03-11"),
    ]
    shown = apis[1].get(f"/credit-notes/{note['id']}").body
    assert amount(shown["credit_remaining"]) == "60.00"
    assert [(a["applied_on"], amount(a["amount"])) for a in shown["applications"]] == [
        ("2025-02-11", "10.00"),
        ("2025-03-11", "10.00"),
    ]
    assert bob.balance() == balance(credit="60.00", net="-60.00")


def test_without_the_setting_a_downgrade_credit_note_is_applied_by_hand(api: HttpClient) -> None:
    cat = Customer(api, QUARTERLY)
    cat.pay(cat.first)
    note = cat.downgrade()
    (monthly,) = [i for i in cat.invoices() if i["issue_date"] == "2025-01-11"]
    assert (monthly["status"], amount(monthly["amount_due"])) == ("open", "10.00")  # the credit waits
    assert cat.balance()["net"] == "-70.00"

    part = api.post(f"/credit-notes/{note['id']}/apply", {"invoice_id": monthly["id"], "amount": "4.00"})
    assert part.status == 201, part.body
    assert (part.body["invoice"]["status"], amount(part.body["invoice"]["amount_due"])) == ("open", "6.00")
    rest = api.post(f"/credit-notes/{note['id']}/apply", {"invoice_id": monthly["id"]})  # as much as is due
    assert rest.status == 201 and rest.body["invoice"]["status"] == "paid", rest.body
    assert amount(rest.body["credit_note"]["credit_remaining"]) == "70.00"
    paid_already = api.post(f"/credit-notes/{note['id']}/apply", {"invoice_id": monthly["id"], "amount": "1.00"})
    assert paid_already.status == 409 and paid_already.body["error"] == "credit.invoice_not_open"

    other = Customer(api, MONTHLY)  # another contact's invoice takes none of it
    foreign = api.post(f"/credit-notes/{note['id']}/apply", {"invoice_id": other.first["id"]})
    assert foreign.status == 422 and foreign.body["error"] == "credit.other_contact", foreign.body
    too_much = api.post(f"/credit-notes/{note['id']}/refund", {"reference": "r", "amount": "70.01"})
    assert too_much.status == 409 and too_much.body["error"] == "credit.exceeds_remaining"
    cat.advance("2025-02-12")
    february = cat.invoices()[-1]  # without the setting, the next invoice leaves the credit alone
    assert (february["issue_date"], february["status"], amount(february["amount_due"])) == (
        "2025-02-11",
        "open",
        "10.00",
    )
    assert cat.balance() == balance(outstanding="10.00", credit="70.00", net="-60.00")


def test_a_void_and_a_write_off_change_the_contacts_outstanding(api: HttpClient) -> None:
    dan = Customer(api, MONTHLY)
    dan.advance("2025-02-02")
    january, february = dan.invoices()
    assert (january["status"], january["status_on"]) == ("overdue", "2025-01-16")  # the day after its due date
    assert february["status"] == "open"
    assert dan.balance() == balance(outstanding="62.00", overdue="31.00", net="62.00")
    assert {i["id"] for i in api.get(f"/invoices?status=overdue&contact_id={dan.contact_id}").body["items"]} == {
        january["id"]
    }

    voided = api.post(
        f"/invoices/{february['id']}/void", {"reason": "billed in error"}, headers={"Idempotency-Key": "v1"}
    )
    assert voided.status == 200, voided.body
    assert (voided.body["status"], voided.body["status_reason"], voided.body["status_on"]) == (
        "void",
        "billed in error",
        "2025-02-02",
    )
    replay = api.post(
        f"/invoices/{february['id']}/void", {"reason": "billed in error"}, headers={"Idempotency-Key": "v1"}
    )
    assert replay.status == 200 and replay.headers.get("Idempotent-Replayed") == "true"
    assert (amount(voided.body["amount_due"]), amount(voided.body["total"])) == ("0.00", "31.00")  # nothing due
    assert dan.balance()["outstanding"] == "31.00"

    written_off = api.post(f"/invoices/{january['id']}/mark-uncollectible", {"reason": "customer gone"})
    assert written_off.status == 200 and written_off.body["status"] == "uncollectible", written_off.body
    assert amount(written_off.body["amount_due"]) == "31.00"  # still payable
    assert dan.balance() == balance(uncollectible="31.00")
    again = api.post(f"/invoices/{february['id']}/void", {"reason": "again"})
    assert again.status == 409 and again.body["error"] == "invoice.not_open"

    eve = Customer(api, MONTHLY)
    eve.pay(eve.first)
    paid = api.post(f"/invoices/{eve.first['id']}/void", {"reason": "too late"})
    assert paid.status == 409 and paid.body["error"] == "invoice.not_open", paid.body


def test_voiding_an_invoice_gives_back_the_credit_applied_to_it(api: HttpClient) -> None:
    fay = Customer(api, QUARTERLY)
    fay.pay(fay.first)
    note = fay.downgrade()
    (monthly,) = [i for i in fay.invoices() if i["issue_date"] == "2025-01-11"]
    assert api.post(f"/credit-notes/{note['id']}/apply", {"invoice_id": monthly["id"], "amount": "6.00"}).status == 201
    assert fay.balance()["credit"] == "74.00"
    voided = api.post(f"/invoices/{monthly['id']}/void", {"reason": "goodwill"})
    assert voided.status == 200 and amount(voided.body["amount_due"]) == "0.00", voided.body  # its credit went back
    assert amount(api.get(f"/invoices/{monthly['id']}").body["amount_due"]) == "0.00"
    shown = api.get(f"/credit-notes/{note['id']}").body
    assert amount(shown["credit_remaining"]) == "80.00"
    assert [a["reversed_on"] for a in shown["applications"]] == ["2025-01-11"]
    assert fay.balance() == balance(credit="80.00", net="-80.00")


@pytest.mark.parametrize("same_key", [True, False])
def test_the_same_credit_spent_twice_at_once_from_separate_processes_takes_effect_once(
    api: HttpClient, same_key: bool
) -> None:
    """Each credit note's whole remaining credit, applied twice at once and refunded twice at once,
    each request from its own process: with one Idempotency-Key the second is the first's replay
    (or told to retry while it runs), with none the second finds nothing left."""
    gus = Customer(api, QUARTERLY)
    gus.pay(gus.first)
    note = gus.downgrade()
    (monthly,) = [i for i in gus.invoices() if i["issue_date"] == "2025-01-11"]

    def headers(n: int, what: str) -> dict[str, str]:
        return {"Idempotency-Key": f"{what}-{same_key}"} if same_key else {"Idempotency-Key": f"{what}-{n}"}

    apply = f"/credit-notes/{note['id']}/apply"
    applied = post_from_processes(api, [(apply, {"invoice_id": monthly["id"]}, headers(n, "apply")) for n in range(2)])
    refund = f"/credit-notes/{note['id']}/refund"
    # A refund's key is its reference: one reference with one key, or two refunds with their own.
    bodies = [{"reference": "R-1" if same_key else f"R-{n}"} for n in range(2)]
    refunds = post_from_processes(api, [(refund, bodies[n], headers(n, "refund")) for n in range(2)])

    for replies in (applied, refunds):
        outcomes = Counter((r.status, r.body.get("error")) for r in replies)
        assert outcomes[(201, None)] == 1, [r.body for r in replies]
        allowed = (
            {(201, None), (200, None), (409, "idempotency.in_progress")}
            if same_key
            else {(201, None), (409, "credit.exceeds_remaining"), (409, "credit.invoice_not_open")}
        )
        assert set(outcomes) <= allowed, outcomes
    shown = api.get(f"/credit-notes/{note['id']}").body
    assert [amount(a["amount"]) for a in shown["applications"]] == ["10.00"]
    assert [amount(r["amount"]) for r in shown["refunds"]] == ["70.00"]
    assert (amount(shown["amount_applied"]), amount(shown["amount_refunded"]), amount(shown["credit_remaining"])) == (
        "10.00",
        "70.00",
        "0.00",
    )
    assert gus.balance() == balance()


def test_a_refund_sent_again_with_its_bank_reference_is_recorded_once(api: HttpClient) -> None:
    """No Idempotency-Key: the refund's bank reference is its key, within the credit note's refunds.
    Sent three times at once, each from its own process, it is recorded once; sent again later it
    answers the first refund; the same reference with another amount is refused."""
    dan = Customer(api, QUARTERLY)
    dan.pay(dan.first)
    note = dan.downgrade()
    refund = f"/credit-notes/{note['id']}/refund"
    body = {"reference": "r-a", "amount": "10.00"}
    replies = post_from_processes(api, [(refund, body, {}) for _ in range(3)])
    outcomes = Counter((r.status, r.body.get("error")) for r in replies)
    assert outcomes[(201, None)] == 1, [r.body for r in replies]
    assert set(outcomes) <= {(201, None), (200, None), (409, "idempotency.in_progress")}, outcomes
    (first,) = [r.body for r in replies if r.status == 201]
    assert all(r.body["refund"]["id"] == first["refund"]["id"] for r in replies if r.status == 200)

    again = api.post(refund, body)  # a retry, later: the first refund, nothing recorded
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true", again.body
    assert again.body["refund"]["id"] == first["refund"]["id"]
    assert amount(again.body["credit_note"]["credit_remaining"]) == "70.00"
    other = api.post(refund, {**body, "amount": "5.00"})
    assert (other.status, other.body["error"]) == (422, "idempotency.key_reused"), other.body
    assert [f["field"] for f in other.body["fields"]] == ["reference"], other.body
    assert api.post(refund, {"reference": "r-b", "amount": "10.00"}).status == 201  # another refund
    shown = api.get(f"/credit-notes/{note['id']}").body
    assert sorted((amount(r["amount"]), r["reference"]) for r in shown["refunds"]) == [
        ("10.00", "r-a"),
        ("10.00", "r-b"),
    ]
    assert amount(shown["credit_remaining"]) == "60.00"
    assert dan.balance() == balance(outstanding="10.00", credit="60.00", net="-50.00")  # 10.00 billed monthly
