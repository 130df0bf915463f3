"""Card refunds against a real localstripe (on loopback) through `StripeGateway`, on DynamoDB Local:
the invoice collected by card, its regret's credit note refunded to that PaymentIntent; a crash
right after Stripe refunded, then a rerun, leaves exactly one refund in localstripe (which ignores
idempotency keys); and an over-refund localstripe itself would accept is refused before any request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from billow.domain.errors import Conflict
from billow.domain.money import Money
from billow.domain.receivables import RefundStatus
from billow.gateways.stripe import StripeGateway
from billow.local.stripe import TEST_API_KEY, LocalStripe
from billow.storage.repository import DynamoStore

from tests.refund_support import START, refund, seed
from tests.stripe_support import VISA, confirm_setup, stripe_client
from tests.support import unique

pytestmark = pytest.mark.integration

AT = START + timedelta(days=5)
LATER = AT + timedelta(minutes=3)


class Crash(BaseException):
    """The process dies."""


class CrashAfterRefund(StripeGateway):
    """Stripe refunds, then the process dies before Billow hears the answer."""

    def refund(self, *args: Any, **kwargs: Any) -> Any:
        super().refund(*args, **kwargs)
        raise Crash("after Stripe refunded")


@pytest.fixture
def server(local_stripe: LocalStripe) -> LocalStripe:
    return local_stripe


def saved_card(server: LocalStripe, gateway: StripeGateway) -> tuple[str, str]:
    customer = gateway.ensure_customer(
        existing_ref=None, email="ann@example.com", name="Ann", metadata={}, idempotency_key=unique("c")
    )
    setup = gateway.start_setup(customer, idempotency_key=unique("s"), metadata={})
    confirm_setup(server, setup.ref, VISA)
    state = gateway.setup_state(setup.ref)
    assert state.succeeded and state.method is not None
    gateway.attach_method(state.method.ref, customer)  # as recording it does (localstripe does not attach it)
    return customer, state.method.ref


def stripe_refunds(server: LocalStripe, payment_intent: str) -> list[dict[str, Any]]:
    listed = stripe_client(server).v1.refunds.list({"payment_intent": payment_intent, "limit": 100})
    return [r.to_dict() for r in listed.data]


def test_a_crash_right_after_stripe_refunded_then_a_rerun_leaves_one_refund_in_localstripe(
    local_table: str, server: LocalStripe
) -> None:
    gateway = StripeGateway(TEST_API_KEY, api_base=server.url, localstripe=True)
    store = DynamoStore()
    seeded = seed(store, gateway, tenant_id=unique("t"), card=saved_card(server, gateway))
    intent = seeded.payment.reference
    assert intent.startswith("pi_")

    crashing = CrashAfterRefund(TEST_API_KEY, api_base=server.url, localstripe=True)
    with pytest.raises(Crash):
        refund(store, crashing, seeded, "ticket-1", "12.00", at=AT)
    assert len(stripe_refunds(server, intent)) == 1  # refunded, unrecorded
    with pytest.raises(Conflict) as busy:  # the dead request's lease still runs
        refund(store, gateway, seeded, "ticket-1", "12.00", at=AT)
    assert busy.value.code == "refund.in_progress"
    done = refund(store, gateway, seeded, "ticket-1", "12.00", at=LATER)

    (made,) = stripe_refunds(server, intent)  # found by its refund id, not made again
    assert (made["amount"], made["metadata"]["refund_id"]) == (1200, done.refund.id)
    assert (done.refund.status, done.refund.rail_ref) == (RefundStatus.SUCCEEDED, made["id"])
    assert done.credit_note.credit_remaining == Money.parse("19.00", "USD")
    (listed,) = gateway.refunds_of(intent)
    assert (listed.ref, listed.metadata["refund_id"], listed.amount) == (made["id"], done.refund.id, Money(1200, "USD"))


def test_an_over_refund_localstripe_would_accept_is_refused_before_any_request(
    local_table: str, server: LocalStripe
) -> None:
    gateway = StripeGateway(TEST_API_KEY, api_base=server.url, localstripe=True)
    store = DynamoStore()
    seeded = seed(store, gateway, tenant_id=unique("t"), by_card="20.00", card=saved_card(server, gateway))
    intent = seeded.payment.reference
    with pytest.raises(Conflict) as over:
        refund(store, gateway, seeded, "too-much", "25.00", at=AT)
    assert over.value.code == "refund.exceeds_payment"
    assert stripe_refunds(server, intent) == []
    done = refund(store, gateway, seeded, "all-it-can", at=AT)
    assert done.refund.amount == Money.parse("20.00", "USD")
    # localstripe itself takes a refund beyond the charge (the laxness Billow must not rely on).
    gateway.refund(intent, Money.parse("5.00", "USD"), idempotency_key=unique("k"), metadata={})
    assert sum(r["amount"] for r in stripe_refunds(server, intent)) == 2500
