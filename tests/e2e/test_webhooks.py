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
from billow.local.secrets import ENV as SECRETS_ENV

from tests.support import HttpClient, local_api
from tests.webhook_support import SECRETS, configured_secrets, event_body, sign

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_webhooks"
PATH = "/webhooks/stripe/acme"


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    before = os.environ.get(SECRETS_ENV)
    os.environ[SECRETS_ENV] = configured_secrets()  # the workers' configuration: acme's endpoint secrets
    try:
        with local_api("billow-webhooks", "acme", KEY) as client:
            yield client
    finally:
        if before is None:
            os.environ.pop(SECRETS_ENV, None)
        else:
            os.environ[SECRETS_ENV] = before


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


@pytest.mark.parametrize(
    ("payload", "signature", "code"),
    [
        (b"{not json", None, "webhook.malformed"),
        (b'{"object": "list"}', None, "webhook.malformed"),
        (event_body("evt_e2e_nosig"), None, "webhook.bad_signature"),
        (b'{"object": "event", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}", "t=1,v1=00", "webhook.malformed"),
    ],
)
def test_what_is_not_a_signed_event_is_400(api: HttpClient, payload: bytes, signature: str | None, code: str) -> None:
    status, body = send(api, payload, signature)
    assert (status, body["error"]) == (400, code)


def test_an_unknown_tenant_is_refused_like_a_bad_signature(api: HttpClient) -> None:
    payload = event_body("evt_e2e_nobody", tenant="nobody")
    status, body = send(api, payload, sign(payload, SECRETS["acme"], datetime.now(UTC)), "/webhooks/stripe/nobody")
    assert (status, body["error"]) == (400, "webhook.bad_signature")


def test_the_rest_of_the_api_still_needs_its_key(api: HttpClient) -> None:
    assert api.get("/contacts", key=None).status == 401
    assert api.request("POST", "/webhooks/stripe/acme/more", {}, key=None).status == 401
    assert api.get(PATH, key=None).status == 401  # only POST is outside the authorizer
