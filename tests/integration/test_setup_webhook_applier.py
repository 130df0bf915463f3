"""The `setup_intent.succeeded` applier (billow.services.payment_methods.record_setup) on DynamoDB
Local and localstripe: it records the card for the contact the setup names, once, whatever the
page did; a setup Billow did not start is left alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billow.domain.contacts import Contact
from billow.domain.tenants import TenantSettings
from billow.gateways.stripe import StripeGateway
from billow.local.stripe import TEST_API_KEY, LocalStripe
from billow.services import payment_methods
from billow.services.context import SystemClock, TenantContext
from billow.storage.repository import DynamoStore

from tests.support import unique

pytestmark = pytest.mark.integration


def test_the_webhook_records_a_confirmed_setup_once(local_table: str, local_stripe: LocalStripe) -> None:
    store = DynamoStore()
    ctx = TenantContext("acme", "test", TenantSettings(tenant_id="acme", name="Acme"))
    contact = Contact("con_hook", "Ada", "ada@example.com", None, None, {}, None, True, datetime.now(UTC))
    store.add_contact(ctx.scope, contact)
    gateway = StripeGateway(TEST_API_KEY, api_base=local_stripe.url, localstripe=True)
    setup = payment_methods.start_setup(store, ctx, contact.id, gateway, SystemClock(), request_id=unique("setup"))
    local_stripe.confirm_setup(setup.ref)

    for _ in range(3):  # delivered again: the same method, recorded once
        payment_methods.record_setup(store, gateway, ctx.scope, setup.ref)
    methods = store.payment_methods_of(ctx.scope, contact.id)
    assert [(m.setup_ref, m.last4) for m in methods] == [(setup.ref, "4242")]
    stored = store.get_contact(ctx.scope, contact.id)
    assert stored is not None and stored.default_method_ref == methods[0].id

    foreign = gateway.start_setup(stored.gateway_customer_ref or "", idempotency_key=unique("k"), metadata={})
    local_stripe.confirm_setup(foreign.ref)
    assert payment_methods.record_setup(store, gateway, ctx.scope, foreign.ref) is None  # no contact named
    assert len(store.payment_methods_of(ctx.scope, contact.id)) == 1
