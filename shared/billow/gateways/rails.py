"""The payment rail that collects for a tenant in a mode: Stripe when the tenant has a Stripe
account in that mode (its secrets are in the `SecretsSource`), else the manual rail (bank transfer
confirmed by staff). The one place a gateway is chosen and built.

`BILLOW_STRIPE_API_BASE` points the Stripe SDK elsewhere than api.stripe.com: the local stack sets
it to its localstripe (and only a stand-in is ever configured so), whose differences the gateway
then allows for (`StripeGateway(localstripe=True)`).
"""

from __future__ import annotations

import os

from billow.gateways.manual import ManualGateway
from billow.services.gateway import PaymentGateway, SecretsSource

API_BASE_ENV = "BILLOW_STRIPE_API_BASE"
STRIPE = "stripe"


def payment_gateway(secrets: SecretsSource, tenant_id: str, mode: str) -> PaymentGateway:
    return charging_gateway(secrets, tenant_id, mode) or ManualGateway()


def charging_gateway(secrets: SecretsSource, tenant_id: str, mode: str) -> PaymentGateway | None:
    """The rail that charges the tenant's saved methods in `mode`; None when it has no account on
    one (its invoices are paid by transfer: the collector leaves them alone)."""
    found = secrets.rail_secrets(STRIPE, tenant_id, mode)
    if found is None:
        return None
    from billow.gateways.stripe import StripeGateway  # the SDK only where a Stripe rail is used

    api_base = os.environ.get(API_BASE_ENV) or None
    return StripeGateway(found.api_key, api_base=api_base, localstripe=api_base is not None)
