"""Collection by card, end to end on the local stack with localstripe (docs/payments.md,
"Collection" and "Webhooks"): a contact saves a card over HTTP (its SetupIntent confirmed as
Stripe.js would), an order issues an invoice, the invoice.issued event on the local bus feeds the
collector, which charges the card on localstripe and the invoice becomes paid; a card declined at
charge time leaves the invoice open and publishes payment.failed with its decline code; a
credit-limit contact is charged only once its balance crosses its limit; a collector that dies
right after confirming the charge still gets its invoice paid, by localstripe's
payment_intent.succeeded webhook to the endpoint the stack registered; and with activation on
payment the order's service stays draft until the card pays its first invoice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local import stack
from billow.local.events import local_bus
from billow.local.stripe import LocalStripe

from tests.stripe_support import DECLINES_AT_CHARGE, VISA, confirm_setup, stripe_client
from tests.support import HttpClient, advance_clock, bus_events, eventually, local_stack, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_card_collection"
TENANT = "cardco"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def local() -> Iterator[stack.LocalStack]:
    with local_stack("billow-e2e-card-collection", TENANT, KEY) as running:
        yield running


@pytest.fixture(scope="module")
def api(local: stack.LocalStack) -> HttpClient:
    return HttpClient(local.url, KEY)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    with bus_events() as seen:
        yield seen


@pytest.fixture
def collected() -> Iterator[list[str]]:
    """The invoices whose invoice.issued the collector has handled: the rule's targets run in
    order, and this one was subscribed after the collector."""
    seen: list[str] = []
    unsubscribe = local_bus().subscribe(
        "invoice-issued", lambda event: seen.append(event["detail"]["data"]["invoice_id"])
    )
    yield seen
    unsubscribe()


def fake(local: stack.LocalStack) -> LocalStripe:
    assert local.stripe is not None
    return local.stripe


def customer_with_card(api: HttpClient, local: stack.LocalStack, card: str = VISA, **contact: Any) -> str:
    """A contact (with `contact`'s fields) who saved `card` through a SetupIntent: its id."""
    made = api.post("/contacts", {"name": "Ann Card", "email": "ann@example.com", **contact})
    assert made.status == 201, made.body
    contact_id = made.body["id"]
    setup = api.post(f"/contacts/{contact_id}/payment-methods/setup")
    assert setup.status == 201, setup.body
    confirm_setup(fake(local), setup.body["setup_id"], card)  # the customer, in Stripe.js
    saved = api.post(f"/contacts/{contact_id}/payment-methods", {"setup_id": setup.body["setup_id"]})
    assert saved.status == 201 and saved.body["default"] is True, saved.body
    return str(contact_id)


def place_order(api: HttpClient, contact_id: str, product: dict[str, Any]) -> dict[str, Any]:
    """The order's first invoice (issued at once: billed in advance)."""
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact_id, "items": [item]})
    assert placed.status == 201, placed.body
    (invoice,) = placed.body["invoices"]
    assert invoice["status"] == "open", invoice
    return dict(invoice)


def invoice_status(api: HttpClient, invoice_id: str) -> str:
    return str(api.get(f"/invoices/{invoice_id}").body["status"])


def charges_of(local: stack.LocalStack, invoice_id: str) -> list[Any]:
    """The PaymentIntents localstripe holds for the invoice (found by the metadata Billow attaches)."""
    every = stripe_client(fake(local)).v1.payment_intents.list({"limit": 100})
    return [p for p in every.auto_paging_iter() if p.to_dict().get("metadata", {}).get("invoice_id") == invoice_id]


def of_type(events: list[dict[str, Any]], kind: str, contact_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and e["contact_id"] == contact_id]


def test_a_saved_card_pays_the_invoice_of_an_order_by_itself(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    contact = customer_with_card(api, local)
    invoice = place_order(api, contact, make_product(api, MONTHLY))
    assert eventually(lambda: invoice_status(api, invoice["id"]) == "paid"), (
        [e["type"] for e in events],
        local_bus().undelivered,
    )
    (charge,) = charges_of(local, invoice["id"])
    assert (charge.status, charge.amount, charge.currency) == ("succeeded", 3100, "usd")
    (paid,) = api.get(f"/invoices/{invoice['id']}").body["payments"]
    assert (paid["method"], paid["reference"]) == ("card", charge.id)
    assert paid["amount"] == {"amount": "31.00", "currency": "USD"}
    (succeeded,) = eventually(lambda: of_type(events, "payment.succeeded", contact), 5)
    assert succeeded["data"]["charge_ref"] == charge.id and succeeded["data"]["invoice_id"] == invoice["id"]


def test_a_card_declined_at_charge_time_leaves_the_invoice_open(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    contact = customer_with_card(api, local, DECLINES_AT_CHARGE)
    invoice = place_order(api, contact, make_product(api, MONTHLY))
    (failed,) = eventually(lambda: of_type(events, "payment.failed", contact))
    assert (failed["data"]["invoice_id"], failed["data"]["status"]) == (invoice["id"], "failed")
    assert failed["data"]["decline_code"] == "card_declined"
    assert invoice_status(api, invoice["id"]) == "open"
    assert not of_type(events, "payment.succeeded", contact)
    assert api.get(f"/invoices/{invoice['id']}").body["payments"] == []


def test_a_credit_limit_contact_is_charged_only_once_its_balance_crosses_the_limit(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]], collected: list[str]
) -> None:
    contact = customer_with_card(api, local, collection="credit_limit", credit_limit={"USD": "50.00"})
    product = make_product(api, MONTHLY)
    first = place_order(api, contact, product)  # owes 31.00: under the limit
    assert eventually(lambda: first["id"] in collected)
    assert charges_of(local, first["id"]) == [] and invoice_status(api, first["id"]) == "open"
    second = place_order(api, contact, product)  # owes 62.00: over it
    assert eventually(lambda: invoice_status(api, second["id"]) == "paid")
    assert invoice_status(api, first["id"]) == "open" and charges_of(local, first["id"]) == []
    (charge,) = charges_of(local, second["id"])
    assert (charge.status, charge.amount) == ("succeeded", 3100)  # the new invoice only (not the whole debt)
    (succeeded,) = eventually(lambda: of_type(events, "payment.succeeded", contact), 5)
    assert succeeded["data"]["invoices"] == [{"invoice_id": second["id"], "amount": second["total"]}]


class CollectorDied(BaseException):
    """The collector's container is gone (not an error it could handle)."""


def test_a_charge_confirmed_by_a_collector_that_died_is_applied_by_the_webhook(
    api: HttpClient, local: stack.LocalStack, collected: list[str]
) -> None:
    """The collector of a manual contact's invoice does nothing; the contact then turns automatic
    and the test collects the invoice itself, as the collector would, with
    a rail that dies right after Stripe confirmed the charge: the attempt is left as created, and
    localstripe's payment_intent.succeeded (sent about a second later to the endpoint the stack
    registered) makes the invoice paid, once."""
    from billow.gateways.rails import charging_gateway
    from billow.local.secrets import LocalSecrets
    from billow.services.collection import collect_invoice
    from billow.services.context import Scope, SystemClock
    from billow.storage.repository import DynamoStore

    contact = customer_with_card(api, local, collection="manual")
    invoice = place_order(api, contact, make_product(api, MONTHLY))
    assert eventually(lambda: invoice["id"] in collected) and charges_of(local, invoice["id"]) == []
    assert api.patch(f"/contacts/{contact}", {"collection": "automatic"}).status == 200
    rail = charging_gateway(LocalSecrets(), TENANT, "test")
    assert rail is not None
    confirm = rail.confirm_charge

    def confirm_then_die(*args: Any, **kwargs: Any) -> Any:
        confirm(*args, **kwargs)
        raise CollectorDied

    rail.confirm_charge = confirm_then_die  # type: ignore[method-assign]
    with pytest.raises(CollectorDied):
        collect_invoice(DynamoStore(), rail, Scope(TENANT, "test"), invoice["id"], clock=SystemClock())
    assert invoice_status(api, invoice["id"]) == "open"  # Stripe has the money; Billow has not recorded it

    assert eventually(lambda: invoice_status(api, invoice["id"]) == "paid")
    (charge,) = charges_of(local, invoice["id"])
    assert charge.status == "succeeded"
    (paid,) = api.get(f"/invoices/{invoice['id']}").body["payments"]
    assert paid["reference"] == charge.id


def test_with_activation_on_payment_the_service_waits_for_the_card(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    """The tenant's setting on: the order's service stays draft while its first invoice is unpaid,
    and becomes effective once the collector's charge pays it (invoice.paid -> activation)."""
    on = api.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7})
    assert on.status == 200, on.body
    try:
        declined = customer_with_card(api, local, DECLINES_AT_CHARGE)
        pays = customer_with_card(api, local)
        product = make_product(api, MONTHLY)
        unpaid = place_order(api, declined, product)
        paid = place_order(api, pays, product)
        assert eventually(lambda: invoice_status(api, paid["id"]) == "paid")

        def state(invoice: dict[str, Any]) -> str:
            (only,) = api.get(f"/subscriptions/{invoice['subscription_id']}").body["services"]
            return str(only["state"])

        assert eventually(lambda: state(paid) == "effective"), state(paid)
        assert eventually(lambda: of_type(events, "payment.failed", declined))
        assert (invoice_status(api, unpaid["id"]), state(unpaid)) == ("open", "draft")

        def activated() -> list[tuple[str, str]]:
            changes = of_type(events, "service.state_changed", pays)
            return [(e["data"]["from"], e["data"]["to"]) for e in changes if e["data"]["to"] == "effective"]

        assert eventually(activated, 5) == [("draft", "effective")]
    finally:
        api.patch("/settings/subscriptions", {"activate_on_payment": False})


def _save_another(api: HttpClient, local: stack.LocalStack, contact_id: str) -> str:
    setup = api.post(f"/contacts/{contact_id}/payment-methods/setup").body
    confirm_setup(fake(local), setup["setup_id"], VISA)
    saved = api.post(f"/contacts/{contact_id}/payment-methods", {"setup_id": setup["setup_id"]})
    assert saved.status == 201, saved.body
    return str(saved.body["id"])


@pytest.mark.parametrize("keeps_a_default", [True, False])
def test_a_removed_card_is_never_charged(api: HttpClient, local: stack.LocalStack, keeps_a_default: bool) -> None:
    """A subscription names a saved card, which is then removed: its next invoice is charged on the
    contact's default, or, with none left, not at all (no_payment_method) — never on the removed card."""
    from billow.gateways.stripe import StripeGateway
    from billow.local.stripe import TEST_API_KEY
    from billow.services.collection import collect_invoice
    from billow.services.context import Scope, SystemClock
    from billow.storage.repository import DynamoStore

    contact = customer_with_card(api, local, collection="manual")  # not charged while the card is named
    default = api.get(f"/contacts/{contact}").body["default_payment_method"]
    named = _save_another(api, local, contact)
    if not keeps_a_default:
        assert api.delete(f"/contacts/{contact}/payment-methods/{default}").status == 200
        api.post(f"/contacts/{contact}/payment-methods/{named}/default")
    invoice = place_order(api, contact, make_product(api, MONTHLY))
    subscription = api.get(f"/invoices/{invoice['id']}").body["subscription_id"]
    assert api.post(f"/subscriptions/{subscription}/payment-method", {"payment_method": named}).status == 201
    assert api.delete(f"/contacts/{contact}/payment-methods/{named}").status == 200
    assert api.patch(f"/contacts/{contact}", {"collection": "automatic"}).status == 200

    rail = StripeGateway(TEST_API_KEY, api_base=fake(local).url, localstripe=True)
    attempt = collect_invoice(DynamoStore(), rail, Scope(TENANT, "test"), invoice["id"], clock=SystemClock())
    assert attempt is not None
    charged = [c.to_dict().get("payment_method") for c in charges_of(local, invoice["id"])]
    assert named not in charged
    if keeps_a_default:
        assert attempt.status.value == "succeeded" and charged == [default]
        assert invoice_status(api, invoice["id"]) == "paid"
    else:
        assert (attempt.status.value, attempt.reason) == ("not_collectable", "no_payment_method")
        assert charged == [] and invoice_status(api, invoice["id"]) == "open"


def _left_live(api: HttpClient, local: stack.LocalStack, invoice_id: str) -> str:
    """The invoice's charge created on localstripe and recorded, then its collector died before
    confirming it (a live attempt, created, its PaymentIntent open): the PaymentIntent's id."""
    from billow.gateways.rails import charging_gateway
    from billow.local.secrets import LocalSecrets
    from billow.services.collection import collect_invoice
    from billow.services.context import Scope, SystemClock
    from billow.storage.repository import DynamoStore

    rail = charging_gateway(LocalSecrets(), TENANT, "test")
    assert rail is not None

    def die(*args: Any, **kwargs: Any) -> Any:
        raise CollectorDied

    rail.confirm_charge = die  # type: ignore[method-assign]
    with pytest.raises(CollectorDied):
        collect_invoice(DynamoStore(), rail, Scope(TENANT, "test"), invoice_id, clock=SystemClock())
    (attempt,) = api.get(f"/invoices/{invoice_id}/payment-attempts").body["items"]
    assert attempt["status"] == "created", attempt
    (intent,) = charges_of(local, invoice_id)
    assert (intent.id, intent.status) == (attempt["charge_ref"], "requires_confirmation")
    return str(intent.id)


@pytest.mark.parametrize("ended_by", ["staff_void", "lapse"])
def test_an_invoice_voided_while_its_charge_is_open_ends_the_attempt_and_cancels_the_charge(
    api: HttpClient, local: stack.LocalStack, collected: list[str], ended_by: str
) -> None:
    """An attempt left live (its PaymentIntent created, not confirmed), then its invoice voided by
    staff, or by the order's lapse (activation on payment, the contact's test clock past the lapse
    day): invoice.voided reaches the collector, which ends the attempt not_collectable and cancels
    the PaymentIntent in localstripe, so nothing can take money for a void invoice."""
    lapse = ended_by == "lapse"
    if lapse:
        on = api.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7})
        assert on.status == 200, on.body
    try:
        contact = customer_with_card(api, local, collection="manual")
        if lapse:
            clock = api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"})
            assert clock.status == 201, clock.body
        invoice = place_order(api, contact, make_product(api, MONTHLY))
        assert eventually(lambda: invoice["id"] in collected) and charges_of(local, invoice["id"]) == []
        assert api.patch(f"/contacts/{contact}", {"collection": "automatic"}).status == 200
        intent = _left_live(api, local, invoice["id"])
        if lapse:
            assert invoice["lapses_on"] == "2025-01-08"
            advance_clock(api, contact, "2025-01-08T10:00:00Z")
        else:
            assert api.post(f"/invoices/{invoice['id']}/void", {"reason": "ordered by mistake"}).status == 200
        assert invoice_status(api, invoice["id"]) == "void"

        def intent_status() -> str:
            return str(stripe_client(fake(local)).v1.payment_intents.retrieve(intent).status)

        assert eventually(lambda: intent_status() == "canceled"), intent_status()
        (attempt,) = api.get(f"/invoices/{invoice['id']}/payment-attempts").body["items"]
        assert (attempt["status"], attempt["reason"]) == ("not_collectable", "invoice_not_payable")
        assert api.get(f"/invoices/{invoice['id']}").body["payments"] == []
    finally:
        if lapse:
            api.patch("/settings/subscriptions", {"activate_on_payment": False})


def test_an_invoices_payment_attempts_are_read_over_http_by_its_tenant_and_mode_only(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    """GET /invoices/{id}/payment-attempts: the declined attempt as recorded (status, amount, the
    invoices it covers, the PaymentIntent, the decline code, times); another tenant, and the same
    tenant's live mode, get 404 as for an invoice they do not have."""
    contact = customer_with_card(api, local, DECLINES_AT_CHARGE)
    invoice = place_order(api, contact, make_product(api, MONTHLY))
    eventually(lambda: of_type(events, "payment.failed", contact))
    answer = api.get(f"/invoices/{invoice['id']}/payment-attempts")
    assert answer.status == 200, answer.body
    (attempt,) = answer.body["items"]
    (intent,) = charges_of(local, invoice["id"])
    assert answer.body["invoice_id"] == invoice["id"]
    assert {k: attempt[k] for k in ("number", "invoice_id", "status", "charge_ref", "decline_code", "reason")} == {
        "number": 1,
        "invoice_id": invoice["id"],
        "status": "failed",
        "charge_ref": intent.id,
        "decline_code": "card_declined",
        "reason": None,
    }
    assert attempt["id"].startswith("att_") and attempt["hard_decline"] is False
    assert attempt["amount"] == {"amount": "31.00", "currency": "USD"}
    assert attempt["invoices"] == [{"invoice_id": invoice["id"], "amount": {"amount": "31.00", "currency": "USD"}}]
    assert attempt["payment_method"] == api.get(f"/contacts/{contact}").body["default_payment_method"]
    assert attempt["created_at"] <= attempt["updated_at"] and attempt["created_at"].endswith("+00:00")
    assert intent.status == "canceled"  # declined, then cancelled before the failure was recorded

    stack.add_tenant("cardco-other", "Other Tenant", "bk_test_cardco_other")
    stack.add_tenant(TENANT, "Cardco Tenant", "bk_live_cardco_attempts", mode="live")
    for key in ("bk_test_cardco_other", "bk_live_cardco_attempts"):
        refused = HttpClient(local.url, key).get(f"/invoices/{invoice['id']}/payment-attempts")
        assert (refused.status, refused.body["error"]) == (404, "resource.not_found"), (key, refused.body)
        assert refused.body["fields"] == [{"field": "invoice_id", "reason": f"no invoice {invoice['id']}"}]
    missing = api.get("/invoices/inv_none/payment-attempts")
    assert (missing.status, missing.body["error"]) == (404, "resource.not_found")
