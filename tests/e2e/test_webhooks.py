"""Stripe's webhooks over HTTP through the local gateway: the route answers without an API key (it
is outside the authorizer, on its own function) and trusts only the signature: refusals are 400 in
the one error shape, events about another tenant or of unhandled types are acknowledged with 2xx
and applied nowhere. (Applying a handled event is tested with a registered applier in
tests/integration/test_webhooks.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from billow.local import stack
from billow.local.secrets import ENV as SECRETS_ENV
from billow.local.secrets import LocalSecrets
from billow.services.context import Scope
from billow.storage.models import BillowItem
from billow.storage.repository import webhook_event_pk

from tests.support import HttpClient, local_stack
from tests.webhook_support import SECRETS, configured_secrets, event_body, sign

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_webhooks"
PATH = "/webhooks/stripe/acme"


OTHERS = ("initech", "umbrella")
"""Tenants with no secrets configured: each gets the local stack's own, derived for it and each mode."""


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    before = os.environ.get(SECRETS_ENV)
    os.environ[SECRETS_ENV] = configured_secrets()  # the workers' configuration: acme's endpoint secrets
    try:
        with local_stack("billow-webhooks", "acme", KEY) as local:
            for tenant in OTHERS:
                stack.add_tenant(tenant, tenant.title(), f"bk_test_{tenant}")
                local.register_stripe_webhook(tenant)
            yield HttpClient(local.url, KEY)
    finally:
        if before is None:
            os.environ.pop(SECRETS_ENV, None)
        else:
            os.environ[SECRETS_ENV] = before


def local_secret(tenant: str, mode: str) -> str:
    """The tenant's endpoint secret in `mode`, as the stack configured its webhook function."""
    found = LocalSecrets().rail_secrets("stripe", tenant, mode)
    assert found is not None
    return found.webhook_secret


def send(api: HttpClient, payload: bytes, signature: str | None, path: str = PATH) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature:
        headers["Stripe-Signature"] = signature
    reply = api.send("POST", path, headers, payload)  # as Stripe sends it: no API key
    return reply.status, reply.body


def test_a_signed_event_is_acknowledged_without_an_api_key(api: HttpClient) -> None:
    payload = event_body("evt_e2e_unknown", "customer.created", ref="cus_1")
    for _ in range(2):
        status, body = send(api, payload, sign(payload, SECRETS["acme"], datetime.now(UTC)))
        assert (status, body["outcome"], body["reason"]) == (200, "ignored", "unhandled_type")


def test_an_event_about_another_tenants_object_is_acknowledged_and_ignored(api: HttpClient) -> None:
    payload = event_body("evt_e2e_theirs", tenant="globex", ref="pi_theirs")
    status, body = send(api, payload, sign(payload, SECRETS["acme"], datetime.now(UTC)))
    assert (status, body["outcome"], body["reason"]) == (200, "ignored", "not_this_tenant")


@pytest.mark.parametrize(
    ("secret", "age", "code"),
    [
        ("whsec_wrong", timedelta(0), "webhook.bad_signature"),
        (SECRETS["globex"], timedelta(0), "webhook.bad_signature"),  # another tenant's endpoint secret
        (SECRETS["acme"], timedelta(minutes=6), "webhook.stale"),
    ],
)
def test_a_bad_or_stale_signature_is_400_in_the_error_shape(
    api: HttpClient, secret: str, age: timedelta, code: str
) -> None:
    payload = event_body("evt_e2e_refused", ref="pi_refused")
    status, body = send(api, payload, sign(payload, secret, datetime.now(UTC) - age))
    assert status == 400
    assert body["error"] == code and isinstance(body["message"], str) and body["fields"] == []


DEEP = b'{"object": "event", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}"


@pytest.mark.parametrize(
    ("payload", "signed", "code"),
    [
        (b"{not json", True, "webhook.malformed"),
        (b'{"object": "list"}', True, "webhook.malformed"),
        (DEEP, True, "webhook.malformed"),
        (b"{not json", False, "webhook.bad_signature"),  # nothing of an unverified body is read
        (DEEP, False, "webhook.bad_signature"),
        (event_body("evt_e2e_nosig"), False, "webhook.bad_signature"),
    ],
)
def test_what_is_not_a_signed_event_is_400(api: HttpClient, payload: bytes, signed: bool, code: str) -> None:
    status, body = send(api, payload, sign(payload, SECRETS["acme"], datetime.now(UTC)) if signed else None)
    assert (status, body["error"]) == (400, code)


def test_each_local_tenant_and_mode_has_its_own_endpoint_secret(api: HttpClient) -> None:
    secrets = {(tenant, mode): local_secret(tenant, mode) for tenant in OTHERS for mode in ("test", "live")}
    assert len(set(secrets.values())) == 4
    payload = event_body("evt_e2e_own", "customer.created", tenant="initech", ref="cus_own")
    own = send(api, payload, sign(payload, secrets["initech", "test"], datetime.now(UTC)), "/webhooks/stripe/initech")
    assert (own[0], own[1]["outcome"]) == (200, "ignored")
    # initech's secret on umbrella's endpoint does not verify: 400, whatever the body says
    for about in ("initech", "umbrella"):
        theirs = event_body(f"evt_e2e_cross_{about}", tenant=about, ref="pi_cross")
        status, body = send(
            api, theirs, sign(theirs, secrets["initech", "test"], datetime.now(UTC)), "/webhooks/stripe/umbrella"
        )
        assert (status, body["error"]) == (400, "webhook.bad_signature")


def test_a_test_mode_signature_on_a_body_claiming_livemode_is_400_and_applies_nothing(api: HttpClient) -> None:
    claims_live = event_body("evt_e2e_claims_live", tenant="initech", mode="live", ref="pi_claims_live")
    signature = sign(claims_live, local_secret("initech", "test"), datetime.now(UTC))
    status, body = send(api, claims_live, signature, "/webhooks/stripe/initech")
    assert (status, body["error"]) == (400, "webhook.mode_mismatch")
    for mode in ("test", "live"):  # not even recorded as received
        key = webhook_event_pk(Scope("initech", mode), "stripe", "evt_e2e_claims_live")
        with pytest.raises(BillowItem.DoesNotExist):
            BillowItem.get(key, "WHEVT", consistent_read=True)


def test_an_unknown_tenant_is_refused_like_a_bad_signature(api: HttpClient) -> None:
    payload = event_body("evt_e2e_nobody", tenant="nobody")
    status, body = send(api, payload, sign(payload, SECRETS["acme"], datetime.now(UTC)), "/webhooks/stripe/nobody")
    assert (status, body["error"]) == (400, "webhook.bad_signature")


def test_the_rest_of_the_api_still_needs_its_key(api: HttpClient) -> None:
    assert api.get("/contacts", key=None).status == 401
    assert api.request("POST", "/webhooks/stripe/acme/more", {}, key=None).status == 401
    assert api.get(PATH, key=None).status == 401  # only POST is outside the authorizer
