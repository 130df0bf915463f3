"""Stripe's webhook signatures as the official SDK makes and checks them, read by
`billow.gateways.stripe_webhooks` with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import stripe
from billow.gateways.stripe_webhooks import StripeWebhooks, verify
from billow.services.gateway import WebhookRejected

from tests.webhook_support import event_body, sign

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "whsec_unit"


def test_the_hand_signed_header_is_the_one_the_sdk_makes_and_accepts() -> None:
    payload = event_body("evt_sdk")
    ours = sign(payload, SECRET, NOW)
    assert ours == stripe.WebhookSignature.generate_signature_header(payload.decode(), SECRET, int(NOW.timestamp()))
    assert stripe.WebhookSignature.verify_header(payload, ours, SECRET, tolerance=None)


def test_a_verified_event_names_its_object_mode_and_metadata() -> None:
    payload = event_body("evt_one", "payment_intent.payment_failed", tenant="acme", mode="live", ref="pi_9")
    event = verify(payload, sign(payload, SECRET, NOW), SECRET, now=NOW + timedelta(minutes=4))
    assert (event.id, event.type, event.live, event.object_ref) == (
        "evt_one",
        "payment_intent.payment_failed",
        True,
        "pi_9",
    )
    assert dict(event.metadata) == {"tenant_id": "acme", "mode": "live"}


def test_the_mode_is_the_one_whose_secret_verifies_the_signature() -> None:
    payload = event_body("evt_modes", mode="live")
    secrets = {"test": "whsec_unit_test", "live": SECRET}
    mode, event = StripeWebhooks().verify(payload, sign(payload, SECRET, NOW), secrets, now=NOW)
    assert (mode, event.live) == ("live", True)
    # the same body signed with the test secret is from test mode, whatever it says (the service refuses it)
    mode, event = StripeWebhooks().verify(payload, sign(payload, "whsec_unit_test", NOW), secrets, now=NOW)
    assert (mode, event.live) == ("test", True)


def test_a_secret_both_modes_share_proves_no_mode() -> None:
    payload = event_body("evt_shared")
    with pytest.raises(WebhookRejected) as refused:
        StripeWebhooks().verify(payload, sign(payload, SECRET, NOW), {"test": SECRET, "live": SECRET}, now=NOW)
    assert refused.value.code == "webhook.mode_unproven"


def test_during_a_secret_roll_any_of_the_v1_signatures_may_match() -> None:
    payload = event_body("evt_roll")
    old = sign(payload, "whsec_old", NOW).split(",")[1]
    header = sign(payload, SECRET, NOW) + "," + old
    assert verify(payload, header, SECRET, now=NOW).id == "evt_roll"
    assert verify(payload, header, "whsec_old", now=NOW).id == "evt_roll"
    with pytest.raises(WebhookRejected):
        verify(payload, header, "whsec_other", now=NOW)


def test_the_tolerance_is_5_minutes_against_the_injected_clock() -> None:
    payload = event_body("evt_clock")
    header = sign(payload, SECRET, NOW)
    assert verify(payload, header, SECRET, now=NOW + timedelta(seconds=300)).id == "evt_clock"
    with pytest.raises(WebhookRejected) as stale:
        verify(payload, header, SECRET, now=NOW + timedelta(seconds=301))
    assert stale.value.code == "webhook.stale"


@pytest.mark.parametrize(
    "forge",
    [
        lambda old, fresh: f"{old.split(',')[1]}, t={fresh},{old.split(',')[0]}",  # v1=<sig>, t=<now>,t=<old>
        lambda old, fresh: f"t= {old.split(',')[0][2:]},{old.split(',')[1]},t={fresh}",  # t= <old>,v1=<sig>,t=<now>
        lambda old, fresh: f"{old},t={fresh}",  # a second t after the signed one
    ],
)
def test_an_old_delivery_cannot_pass_as_fresh_with_a_second_timestamp(forge: object) -> None:
    """The age is read from the very `t` the signature is verified with: a captured header with a
    fresh `t` added (which the SDK skips, verifying against the old one) is refused."""
    payload = event_body("evt_replayed")
    captured = sign(payload, SECRET, NOW - timedelta(days=40))
    header = forge(captured, int(NOW.timestamp()))  # type: ignore[operator]
    with pytest.raises(WebhookRejected) as refused:
        verify(payload, header, SECRET, now=NOW)
    assert refused.value.code in ("webhook.stale", "webhook.bad_signature")


@pytest.mark.parametrize("t", [10**15, 10**30])
def test_a_signed_timestamp_beyond_any_date_is_stale_not_an_error(t: int) -> None:
    payload = event_body("evt_far")
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), SECRET, timestamp=t)
    with pytest.raises(WebhookRejected) as refused:
        verify(payload, header, SECRET, now=NOW)
    assert refused.value.code == "webhook.stale"


def test_a_deeply_nested_body_is_malformed_before_any_recursion() -> None:
    """~4 kB of brackets exhaust json.loads' recursion (RecursionError, a 502 at the route): signed,
    it is refused as malformed; unsigned, it is refused before anything of it is read."""
    from billow.services.webhooks import MalformedDelivery

    deep = b'{"object": "event", "id": "evt_deep", "type": "x", "data": {"object": ' + b"[" * 2000 + b"]" * 2000 + b"}}"
    with pytest.raises(MalformedDelivery) as malformed:
        verify(deep, sign(deep, SECRET, NOW), SECRET, now=NOW)
    assert malformed.value.code == "webhook.malformed"
    with pytest.raises(WebhookRejected) as unsigned:
        verify(deep, sign(deep, "whsec_other", NOW), SECRET, now=NOW)
    assert unsigned.value.code == "webhook.bad_signature"


def test_a_body_that_is_not_utf8_is_malformed() -> None:
    from billow.services.webhooks import MalformedDelivery

    with pytest.raises(MalformedDelivery):
        verify(b"\xff\xfe", sign(b"\xff\xfe", SECRET, NOW), SECRET, now=NOW)
