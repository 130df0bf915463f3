"""localstripe helpers for tests: a client to look at what it holds."""

from __future__ import annotations

from typing import Any

import stripe
from billow.local.stripe import DECLINES_AT_CHARGE, TEST_API_KEY, VISA, LocalStripe

__all__ = [
    "DECLINES_AT_CHARGE",
    "VISA",
    "StripeCrash",
    "StripeRequests",
    "confirm_setup",
    "intents_of",
    "stripe_client",
]


def stripe_client(server: LocalStripe) -> stripe.StripeClient:
    return stripe.StripeClient(TEST_API_KEY, base_addresses={"api": server.url}, max_network_retries=0)


def confirm_setup(server: LocalStripe, setup_ref: str, card: str = VISA) -> None:
    """The customer types `card` into Stripe.js, which confirms the SetupIntent."""
    server.confirm_setup(setup_ref, card)


def intents_of(server: LocalStripe, invoice_id: str) -> list[Any]:
    """The PaymentIntents localstripe holds for the invoice, found by the metadata Billow attaches
    (localstripe does not list by customer)."""
    every = stripe_client(server).v1.payment_intents.list({"limit": 100}).auto_paging_iter()
    return [p for p in every if p.to_dict().get("metadata", {}).get("invoice_id") == invoice_id]


class StripeCrash(BaseException):
    pass


class StripeRequests:
    """Counts the Stripe SDK's HTTP requests; after the k-th one returns (or fails), dies."""

    def __init__(self, k: int | None) -> None:
        self.k, self.made = k, 0

    def __enter__(self) -> StripeRequests:
        http = stripe._http_client.HTTPClient
        self._original = original = http.request_with_retries
        counter = self

        def request_with_retries(client: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(client, *args, **kwargs)
            finally:
                counter.made += 1
                if counter.made == counter.k:
                    raise StripeCrash(f"after Stripe request {counter.k}")

        http.request_with_retries = request_with_retries  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        stripe._http_client.HTTPClient.request_with_retries = self._original  # type: ignore[method-assign]
