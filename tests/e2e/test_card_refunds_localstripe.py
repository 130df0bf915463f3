"""The issue's "done when" for refunds, over HTTP on the local stack with localstripe: a contact
saves a card, orders, the invoice is charged and becomes paid by itself (collector, then the
payment_intent.succeeded webhook), the service is regretted, and its credit note is refunded to the
card over HTTP: the Refund objects exist in localstripe with the right amounts. An over-refund
(which localstripe would accept) is refused with a coded 4xx and sends nothing to localstripe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local import stack

from tests.e2e.test_card_collection import MONTHLY, charges_of, customer_with_card, fake, invoice_status, place_order
from tests.stripe_support import stripe_client
from tests.support import HttpClient, eventually, local_stack, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_card_refunds_ls"
TENANT = "cardrfls"


@pytest.fixture(scope="module")
def local() -> Iterator[stack.LocalStack]:
    with local_stack("billow-e2e-card-refunds-ls", TENANT, KEY) as running:
        yield running


@pytest.fixture(scope="module")
def api(local: stack.LocalStack) -> HttpClient:
    return HttpClient(local.url, KEY)


def refunds_in_localstripe(local: stack.LocalStack, charge_id: str) -> list[Any]:
    listed = stripe_client(fake(local)).v1.refunds.list({"payment_intent": charge_id, "limit": 100})
    return sorted(listed.auto_paging_iter(), key=lambda r: r.created)


def test_a_regrets_credit_note_is_refunded_to_the_card_in_localstripe_and_an_over_refund_is_refused(
    api: HttpClient, local: stack.LocalStack
) -> None:
    contact = customer_with_card(api, local)
    product = make_product(api, MONTHLY)
    invoice = place_order(api, contact, product)
    assert eventually(lambda: invoice_status(api, invoice["id"]) == "paid")
    (charge,) = charges_of(local, invoice["id"])
    (payment,) = api.get(f"/invoices/{invoice['id']}/payments").body["items"]
    assert (payment["reference"], payment["amount"]["amount"]) == (charge.id, "31.00")

    (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    service = subscription["services"][0]["id"]
    regret = api.post(f"/subscriptions/{subscription['id']}/services/{service}/regret", {})
    assert regret.status == 201, regret.body
    (note,) = regret.body["invoices"]
    assert (note["kind"], note["credit_remaining"]["amount"]) == ("credit_note", "31.00")
    path = f"/credit-notes/{note['id']}/refund"

    unsaid = api.post(path, {"reference": "ls-no-method", "amount": "10.00"})  # not silently a transfer
    assert (unsaid.status, unsaid.body["error"]) == (422, "refund.method_required"), unsaid.body
    assert [f["field"] for f in unsaid.body["fields"]] == ["method"]
    assert api.get(f"/credit-notes/{note['id']}").body["refunds"] == [] and not refunds_in_localstripe(local, charge.id)

    part = api.post(path, {"method": "card", "reference": "ls-ticket-1", "amount": "10.00"})
    assert part.status == 201, part.body
    refund = part.body["refund"]
    assert (refund["status"], refund["payment_id"], refund["amount"]["amount"]) == ("succeeded", payment["id"], "10.00")
    (made,) = refunds_in_localstripe(local, charge.id)
    assert (made.id, made.amount, made.currency, made.status) == (refund["rail_ref"], 1000, "usd", "succeeded")
    assert made.metadata["refund_id"] == refund["id"] and made.metadata["credit_note_id"] == note["id"]

    over = api.post(path, {"method": "card", "reference": "ls-too-much", "amount": "21.01"})
    assert (over.status, over.body["error"]) == (409, "credit.exceeds_remaining"), over.body
    assert [r.id for r in refunds_in_localstripe(local, charge.id)] == [made.id]  # nothing sent

    rest = api.post(path, {"method": "card", "reference": "ls-ticket-2"})
    assert rest.status == 201 and rest.body["refund"]["amount"]["amount"] == "21.00", rest.body
    beyond = api.post(path, {"method": "card", "reference": "ls-ticket-3", "amount": "0.01"})
    assert (beyond.status, beyond.body["error"]) == (409, "credit.exceeds_remaining"), beyond.body
    assert [(r.amount, r.status) for r in refunds_in_localstripe(local, charge.id)] == [
        (1000, "succeeded"),
        (2100, "succeeded"),
    ]
    (shown,) = api.get(f"/invoices/{invoice['id']}/payments").body["items"]
    assert shown["amount_refunded"]["amount"] == "31.00"
