"""What Stripe.js does in a browser, done against localstripe: confirm a SetupIntent with a card."""

from __future__ import annotations

import stripe
from billow.local.stripe import TEST_API_KEY, LocalStripe

VISA = "4242424242424242"
DECLINES_AT_CHARGE = "4000000000000341"  # attaches, then every charge is declined


def stripe_client(server: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_API_KEY, base_addresses={"api": server.url}, max_network_retries=0)


def confirm_setup(server: LocalStripe, setup_ref: str, card: str = VISA) -> None:
    """The customer types `card` into Stripe.js, which confirms the SetupIntent."""
    data = {"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    stripe_client(server).v1.setup_intents.confirm(setup_ref, {"payment_method_data": data})  # type: ignore[typeddict-item]
