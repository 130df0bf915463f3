"""StripeGateway against a real localstripe on loopback: customers, saving a card with a SetupIntent
(confirmed as Stripe.js would), unconfirmed charges confirmed off-session, declines as states,
refunds, detaching; and Stripe out of reach as GatewayUnavailable."""

from __future__ import annotations

import socket

import pytest
from billow.domain.money import Money
from billow.gateways.stripe import StripeGateway
from billow.local.stripe import TEST_API_KEY, LocalStripe
from billow.services.gateway import (
    ChargeNotPossible,
    ChargeRequest,
    ChargeStatus,
    GatewayUnavailable,
    RailRefused,
    UnknownObject,
)

from tests.stripe_support import DECLINES_AT_CHARGE, VISA, confirm_setup, intents_of, stripe_client
from tests.support import unique

pytestmark = pytest.mark.integration


def _gateway(server: LocalStripe) -> StripeGateway:
    return StripeGateway(TEST_API_KEY, api_base=server.url, localstripe=True)


def _saved(server: LocalStripe, gateway: StripeGateway, card: str = VISA) -> tuple[str, str]:
    customer = gateway.ensure_customer(
        existing_ref=None,
        email="ada@example.com",
        name="Ada",
        metadata={"tenant_id": "t1"},
        idempotency_key=unique("c"),
    )
    setup = gateway.start_setup(customer, idempotency_key=unique("s"), metadata={"contact_id": "con_1"})
    assert setup.client_secret.startswith(setup.ref)
    before = gateway.setup_state(setup.ref)
    assert not before.succeeded and before.method is None
    confirm_setup(server, setup.ref, card)
    after = gateway.setup_state(setup.ref)
    assert after.succeeded and after.method is not None and after.customer_ref == customer
    gateway.attach_method(after.method.ref, customer)  # as recording it does (localstripe does not attach it)
    return customer, after.method.ref


def _request(customer: str, method: str, amount: str = "25.00", currency: str = "EUR") -> ChargeRequest:
    metadata = {"tenant_id": "t1", "mode": "test", "invoice_id": "inv_1", "attempt_id": unique("att")}
    return ChargeRequest(customer, method, Money.parse(amount, currency), unique("idem"), metadata)


def test_a_saved_card_is_listed_charged_and_refunded(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    customer, method = _saved(local_stripe, gateway)
    assert (
        gateway.ensure_customer(existing_ref=customer, email="x", name="x", metadata={}, idempotency_key="k")
        == customer
    )  # no second customer
    [listed] = gateway.methods(customer)
    assert (listed.ref, listed.brand, listed.last4, listed.customer_ref) == (method, "visa", "4242", customer)

    created = gateway.create_charge(_request(customer, method))
    assert created.status is ChargeStatus.CREATED and created.received == Money.zero("EUR")
    assert created.metadata["invoice_id"] == "inv_1"
    assert gateway.charge_state(created.ref).status is ChargeStatus.CREATED  # no money moved yet

    paid = gateway.confirm_charge(created.ref, idempotency_key=unique("confirm"))
    assert paid.status is ChargeStatus.SUCCEEDED and paid.received == Money.parse("25.00", "EUR")

    refund = gateway.refund(created.ref, Money.parse("10.00", "EUR"), idempotency_key=unique("r"), metadata={})
    assert refund.amount == Money.parse("10.00", "EUR") and refund.status == "succeeded"
    [seen] = stripe_client(local_stripe).v1.refunds.list({"payment_intent": created.ref}).data
    assert seen.amount == 1000


def test_a_declining_card_fails_with_its_code(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    customer, method = _saved(local_stripe, gateway, DECLINES_AT_CHARGE)
    created = gateway.create_charge(_request(customer, method))
    failed = gateway.confirm_charge(created.ref, idempotency_key=unique("confirm"))
    assert failed.status is ChargeStatus.FAILED
    assert failed.decline_code == "card_declined" and not failed.hard_decline
    assert failed.received == Money.zero("EUR")
    assert gateway.charge_state(created.ref).status is ChargeStatus.FAILED  # as read again later


def test_a_created_charge_can_be_canceled(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    customer, method = _saved(local_stripe, gateway)
    created = gateway.create_charge(_request(customer, method, "5000", "JPY"))
    assert created.amount == Money(5000, "JPY")
    assert stripe_client(local_stripe).v1.payment_intents.retrieve(created.ref).amount == 5000  # yen as they are
    assert gateway.cancel_charge(created.ref).status is ChargeStatus.CANCELED


def test_an_amount_stripe_cannot_charge_is_refused_without_a_request(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    customer, method = _saved(local_stripe, gateway)
    for amount, currency, code in (("0.30", "EUR", "rail.amount_too_small"), ("5.125", "KWD", "rail.amount_precision")):
        with pytest.raises(ChargeNotPossible) as refused:
            gateway.create_charge(_request(customer, method, amount, currency))
        assert refused.value.code == code
    assert not stripe_client(local_stripe).v1.payment_intents.list({}).data or all(
        pi.customer != customer for pi in stripe_client(local_stripe).v1.payment_intents.list({}).data
    )


def test_a_removed_method_is_gone(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    customer, method = _saved(local_stripe, gateway)
    gateway.remove_method(method)
    assert gateway.methods(customer) == []
    gateway.remove_method(method)  # a retry of the removal: nothing to do


def test_stripe_out_of_reach_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    gateway = StripeGateway(TEST_API_KEY, api_base=f"http://127.0.0.1:{port}", localstripe=True)
    with pytest.raises(GatewayUnavailable):
        gateway.charge_state("pi_123")


def test_localstripe_listens_on_loopback_only_and_keeps_no_pickle(local_stripe: LocalStripe) -> None:
    """localstripe's own CLI binds every interface and pickles its store to /tmp after each write."""
    from pathlib import Path
    from urllib.parse import urlparse

    address = urlparse(local_stripe.url)
    assert address.hostname == "127.0.0.1"
    pickle = Path("/tmp/localstripe.pickle")
    before = pickle.stat().st_mtime_ns if pickle.exists() else None
    _saved(local_stripe, _gateway(local_stripe))  # a few writes
    after = pickle.stat().st_mtime_ns if pickle.exists() else None
    assert before == after
    with socket.socket() as probe:  # not reachable on another address of this machine
        probe.settimeout(1)
        others = [a for a in {socket.gethostbyname(socket.gethostname())} if not a.startswith("127.")]
        for other in others:
            assert probe.connect_ex((other, address.port or 0)) != 0


@pytest.mark.parametrize(
    ("amount", "currency", "reason", "code"),
    [
        ("0.30", "EUR", "below_minimum", "rail.amount_too_small"),
        ("1.235", "KWD", "amount_precision", "rail.amount_precision"),
    ],
)
def test_collection_records_an_amount_stripe_cannot_charge_without_calling_it(
    local_table: str, local_stripe: LocalStripe, amount: str, currency: str, reason: str, code: str
) -> None:
    """0.30 EUR is below Stripe's minimum; 1.235 KWD is not a multiple of 0.010, which Stripe
    requires of three-decimal currencies: the attempt is not collectable with that outcome (never the
    catch-all `refused`), the invoice stays open, and no PaymentIntent is made."""
    from billow.domain.collection import AttemptStatus
    from billow.services.collection import collect_invoice
    from billow.services.context import SystemClock
    from billow.storage.repository import DynamoStore

    from tests.collection_support import SCOPE, seed_contact, seed_invoice, seed_tenant

    store = DynamoStore()
    seed_tenant(store)
    seed_contact(store, "con_small")
    invoice_id = unique("inv_small")
    seed_invoice(store, "con_small", invoice_id, amount, currency)
    attempt = collect_invoice(store, _gateway(local_stripe), SCOPE, invoice_id, clock=SystemClock())
    assert attempt is not None
    assert (attempt.status, attempt.reason, attempt.decline_code) == (AttemptStatus.NOT_COLLECTABLE, reason, code)
    assert intents_of(local_stripe, invoice_id) == []  # every page of localstripe's, by Billow's metadata


def test_a_payment_intent_stripe_does_not_have_is_an_unknown_object(local_stripe: LocalStripe) -> None:
    gateway = _gateway(local_stripe)
    for ref in ("pi_billow_never_created", "seti_1abc"):  # missing, and another kind's id (no request)
        with pytest.raises(UnknownObject):
            gateway.charge_state(ref)


def test_a_method_stripe_cannot_use_is_a_hard_failure_recorded_on_the_attempt(
    local_table: str, local_stripe: LocalStripe
) -> None:
    """A charge naming a method Stripe refuses (detached by a removal, or gone) ends the attempt
    (no_payment_method, rail.method_unusable) instead of raising and leaving it pending forever."""
    from billow.domain.collection import AttemptStatus
    from billow.services.collection import collect_invoice
    from billow.services.context import SystemClock
    from billow.storage.repository import DynamoStore

    from tests.collection_support import SCOPE, seed_contact, seed_invoice, seed_tenant

    store = DynamoStore()
    seed_tenant(store)
    gateway = _gateway(local_stripe)
    customer = gateway.ensure_customer(
        existing_ref=None, email="a@example.com", name="A", metadata={}, idempotency_key=unique("c")
    )
    seed_contact(store, "con_gone", method="pm_detached_or_gone", customer_ref=customer)
    seed_invoice(store, "con_gone", "inv_gone", "30.00")
    attempt = collect_invoice(store, gateway, SCOPE, "inv_gone", clock=SystemClock())
    assert attempt is not None
    assert (attempt.status, attempt.reason, attempt.decline_code) == (
        AttemptStatus.NOT_COLLECTABLE,
        "no_payment_method",
        "rail.method_unusable",
    )
    assert collect_invoice(store, gateway, SCOPE, "inv_gone", clock=SystemClock()) == attempt  # final


def test_a_confirm_refused_for_the_method_is_a_hard_decline() -> None:
    """Stripe refuses the confirm of a charge whose method was detached after the charge was made
    (localstripe confirms it anyway, so Stripe's answer is played by its SDK's own error)."""
    import stripe

    gateway = StripeGateway(TEST_API_KEY, api_base="http://127.0.0.1:9", localstripe=True)
    intent = {"id": "pi_1", "status": "requires_confirmation", "amount": 3000, "currency": "usd", "metadata": {}}

    def confirm(*args: object, **kwargs: object) -> None:
        raise stripe.InvalidRequestError(
            "The PaymentMethod pm_1 was detached from this customer", param="payment_method", http_status=400
        )

    class Intents:
        retrieve = staticmethod(lambda *a, **k: stripe.PaymentIntent.construct_from(intent, "sk"))

    Intents.confirm = staticmethod(confirm)  # type: ignore[attr-defined]
    gateway._client = type("Client", (), {"v1": type("V1", (), {"payment_intents": Intents})})()  # type: ignore[assignment]
    state = gateway.confirm_charge("pi_1", idempotency_key="k")
    assert (state.status, state.decline_code, state.hard_decline) == (
        ChargeStatus.FAILED,
        "rail.method_unusable",
        True,
    )


def test_a_refund_stripe_refuses_as_invalid_is_a_coded_refusal_not_an_sdk_error(local_stripe: LocalStripe) -> None:
    """A charge ref Stripe does not know (a staff-typed reference, say) is refused `rail.refused` (a
    409 through the API), and an amount it cannot take exactly is refused without a request."""
    gateway = _gateway(local_stripe)
    with pytest.raises(RailRefused) as unknown:
        gateway.refund("POS-TERMINAL-778", Money.parse("10.00", "EUR"), idempotency_key=unique("r"), metadata={})
    assert unknown.value.code == "rail.refused"
    with pytest.raises(RailRefused):
        gateway.refunds_of("POS-TERMINAL-778")
    with pytest.raises(ChargeNotPossible) as precision:
        gateway.refund("pi_any", Money.parse("1.005", "KWD"), idempotency_key=unique("r"), metadata={})
    assert precision.value.code == "rail.amount_precision"
