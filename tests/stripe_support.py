"""localstripe helpers for tests: a client to look at what it holds."""

from __future__ import annotations

import stripe
from billow.local.stripe import DECLINES_AT_CHARGE, TEST_API_KEY, VISA, LocalStripe

__all__ = ["DECLINES_AT_CHARGE", "VISA", "confirm_setup", "stripe_client"]


def stripe_client(server: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_API_KEY, base_addresses={"api": server.url}, max_network_retries=0)


def confirm_setup(server: LocalStripe, setup_ref: str, card: str = VISA) -> None:
    """The customer types `card` into Stripe.js, which confirms the SetupIntent."""
    server.confirm_setup(setup_ref, card)
