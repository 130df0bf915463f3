"""Card refunds over HTTP on the local stack: a regret's credit note refunded to the card that paid
the invoice, partly then fully, the rail holding exactly those refunds; an over-refund refused with
nothing sent (the fake rail, like localstripe, would take it); the same refund sent from separate
processes reaching the rail once; `payment.refunded` published once per refund.

The rail is the tests' fake (tests/fake_rail.py: idempotency keys ignored, over-refunds accepted),
shared by the stack's worker processes through its SQLite file (the Stripe gateway is not on this
branch's main yet). The invoice is collected when issued, by the stack's collector (on the fake rail
too) or by `collect_invoice` called here, whichever comes first: once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from billow.domain.money import Money
from billow.local.events import local_bus
from billow.services.context import Scope, TenantContext
from billow.storage.repository import DynamoStore

from tests.fake_rail import FakeRail
from tests.refund_support import FAKE_RAIL_ENV, START, Clock, fake_rail_gateway, pay_by_card
from tests.support import HttpClient, local_api, make_contact, make_product, post_from_processes

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
TENANT, KEY = "cardrf", "bk_test_card_refunds"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def rail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRail]:
    """The fake rail, every tenant's: in the stack's workers (the API) through the environment,
    and in this process (the stream's consumers: the collector) through `runtime` itself."""
    import runtime

    path = tmp_path_factory.mktemp("rail") / "rail.sqlite"
    saved = {k: os.environ.get(k) for k in ("BILLOW_PAYMENT_GATEWAYS", FAKE_RAIL_ENV)}
    os.environ["BILLOW_PAYMENT_GATEWAYS"] = "tests.refund_support:fake_rail_gateway"
    os.environ[FAKE_RAIL_ENV] = str(path)
    had = runtime.__dict__.pop("payment_gateway", None)
    runtime.payment_gateway = fake_rail_gateway
    yield FakeRail(path)
    runtime.__dict__.pop("payment_gateway", None)
    if had is not None:
        runtime.payment_gateway = had
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def api(rail: FakeRail) -> Iterator[HttpClient]:
    with local_api("billow-e2e-card-refunds", TENANT, KEY) as client:
        yield client


class Events:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append(event["detail"])

    def of(self, kind: str, **data: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.seen if e["type"] == kind and all(e["data"].get(k) == v for k, v in data.items())]


def regretted_after_card_payment(api: HttpClient, rail: FakeRail) -> tuple[dict[str, Any], str, str]:
    """A contact's first invoice (31.00) paid by card, then its service regretted: the credit note,
    the payment's id and its charge ref."""
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"}).status == 201
    store, scope = DynamoStore(), Scope(TENANT, "test")
    saved = store.get_contact(scope, contact)
    assert saved is not None  # a saved card (the payment-method routes are another helper's)
    store.save_contact(scope, replace(saved, gateway_customer_ref=f"cus_{contact}", default_method_ref="pm_card_visa"))
    product = make_product(api, MONTHLY)
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    placed = api.post("/orders", {"contact_id": contact, "items": items})
    assert placed.status == 201, placed.body
    (first,) = placed.body["invoices"]
    ordered = placed.body["order"]["services"][0]

    settings = store.get_settings(TENANT)
    assert settings is not None
    # Collected by the stack's collector, or here first: once either way.
    payment = pay_by_card(store, rail, TenantContext(TENANT, "test", settings), first["id"], Clock(START))
    assert api.get(f"/invoices/{first['id']}").body["status"] == "paid"

    regret = api.post(f"/subscriptions/{ordered['subscription_id']}/services/{ordered['service_id']}/regret", {})
    assert regret.status == 201, regret.body
    (note,) = regret.body["invoices"]
    assert (note["kind"], note["credit_remaining"]["amount"]) == ("credit_note", "31.00")
    return note, payment.id, payment.reference


def test_a_regrets_credit_note_is_refunded_to_the_card_and_an_over_refund_is_refused(
    api: HttpClient, rail: FakeRail
) -> None:
    events = Events()
    unsubscribe = local_bus().subscribe(None, events)
    try:
        note, payment_id, charge = regretted_after_card_payment(api, rail)
        path = f"/credit-notes/{note['id']}/refund"

        over = api.post(path, {"method": "card", "reference": "too-much", "amount": "31.01"})
        assert (over.status, over.body["error"]) == (409, "credit.exceeds_remaining"), over.body
        assert rail.refunded(charge) == []  # nothing sent: the fake rail would have taken it

        part = api.post(path, {"method": "card", "reference": "ticket-1", "amount": "10.00"})
        assert part.status == 201, part.body
        refund = part.body["refund"]
        assert (refund["status"], refund["payment_id"], refund["amount"]["amount"]) == (
            "succeeded",
            payment_id,
            "10.00",
        )
        assert part.body["credit_note"]["credit_remaining"]["amount"] == "21.00"
        assert rail.refunded(charge) == [Money(1000, "USD")]

        # The rest, sent three times at once from separate processes (a client retrying in a hurry).
        rest = {"method": "card", "reference": "ticket-2"}
        replies = post_from_processes(api, [(path, rest, {})] * 3)
        assert all(r.status in (200, 201) or r.body["error"] == "refund.in_progress" for r in replies), replies
        settled = api.post(path, rest)  # whatever they were told, the retry answers the one refund
        assert settled.status == 200 and settled.body["refund"]["status"] == "succeeded", settled.body
        assert rail.refunded(charge) == [Money(1000, "USD"), Money(2100, "USD")]

        beyond = api.post(path, {"method": "card", "reference": "ticket-3", "amount": "0.01"})
        assert (beyond.status, beyond.body["error"]) == (409, "credit.exceeds_remaining"), beyond.body
        shown = api.get(f"/credit-notes/{note['id']}").body
        assert shown["credit_remaining"]["amount"] == "0.00"
        assert sorted(r["amount"]["amount"] for r in shown["refunds"]) == ["10.00", "21.00"]
        assert rail.refunded(charge) == [Money(1000, "USD"), Money(2100, "USD")]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(events.of("payment.refunded", payment_id=payment_id)) < 2:
            time.sleep(0.5)
        time.sleep(2)  # nothing more comes
        published = events.of("payment.refunded", payment_id=payment_id)
        assert sorted(e["data"]["amount"]["amount"] for e in published) == ["10.00", "21.00"], published
        assert {e["data"]["rail_ref"] for e in published} == {r.ref for r in rail.refunds_of(charge)}
    finally:
        unsubscribe()


def test_a_card_refund_names_only_a_card_payment_of_an_invoice_it_credits(api: HttpClient, rail: FakeRail) -> None:
    note, payment_id, charge = regretted_after_card_payment(api, rail)
    other_note, other_payment, _ = regretted_after_card_payment(api, rail)
    path = f"/credit-notes/{note['id']}/refund"
    elsewhere = api.post(path, {"method": "card", "reference": "x", "payment_id": other_payment})
    assert (elsewhere.status, elsewhere.body["error"]) == (409, "refund.payment_not_credited"), elsewhere.body
    manual = api.post(path, {"method": "bank_transfer", "reference": "y", "payment_id": payment_id})
    assert (manual.status, manual.body["error"]) == (422, "refund.payment_not_card"), manual.body
    assert [f["field"] for f in manual.body["fields"]] == ["payment_id"]
    named = api.post(path, {"method": "card", "reference": "z", "payment_id": payment_id})
    assert named.status == 201 and named.body["refund"]["amount"]["amount"] == "31.00", named.body
    assert rail.refunded(charge) == [Money(3100, "USD")]
    assert other_note["id"] != note["id"]
