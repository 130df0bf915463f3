"""Stripe webhooks: verify a delivery's `Stripe-Signature` with the official SDK against the
endpoint's secrets, and turn the event into Billow's `GatewayEvent`.

Stripe signs `"{t}.{body}"` with the endpoint's secret (HMAC-SHA256, the `v1` scheme) and sends
`Stripe-Signature: t=<unix time>,v1=<hex>[,v1=...]`. The signature is checked by
`stripe.WebhookSignature.verify_header`; the timestamp against `now` (injectable, so tests sign
payloads at any time) within `TOLERANCE`, as the SDK's own tolerance does with the wall clock.
Nothing of the body is read before the signature verifies: a tenant's endpoint has a secret per
mode, and the mode a delivery is from is the one whose secret verifies it (`verify_with`), never
what its body says.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from billow.domain.json_text import BodyTooDeep, parse_json
from billow.services.gateway import GatewayEvent, WebhookRejected
from billow.services.webhooks import MalformedDelivery

TOLERANCE = timedelta(seconds=300)
"""Stripe's default: a delivery signed more than 5 minutes before (or after) `now` is refused, so a
captured request cannot be replayed later."""
MAX_EVENT_DEPTH = 64
"""Nesting a delivery may have: Stripe's events nest about 10 levels (an event, its object, a
charge's payment method details...). A deeper body is malformed, refused before it is parsed."""


class StripeWebhooks:
    """Stripe's webhook format, as `billow.services.webhooks` reads a rail's (`WebhookVerifier`)."""

    def verify(
        self, payload: bytes, signature: str | None, secrets: Mapping[str, str], *, now: datetime
    ) -> tuple[str, GatewayEvent]:
        return verify_with(payload, signature, secrets, now=now)


def parse_body(payload: bytes) -> dict[str, Any]:
    """The body as a JSON object with an id and a type, else `MalformedDelivery`. Not yet trusted."""
    try:
        body = parse_json(payload, limit=MAX_EVENT_DEPTH)  # never json.loads: a deep body exhausts its recursion
    except BodyTooDeep as error:
        raise MalformedDelivery(str(error)) from error
    except ValueError as error:  # not UTF-8, not JSON
        raise MalformedDelivery("the body is not JSON") from error
    if not isinstance(body, dict) or body.get("object") != "event":
        raise MalformedDelivery("the body is not a Stripe event")
    if not isinstance(body.get("id"), str) or not isinstance(body.get("type"), str):
        raise MalformedDelivery("the event has no id or no type")
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise MalformedDelivery("the event has no data.object")
    return body


def signed_at(signature: str) -> datetime:
    """The `t=` of a `Stripe-Signature` header: the very item the SDK verifies the signature with
    (the first named exactly `t`, split as the SDK splits), and the only one. A header with another
    `t` (` t=`, a second `t=`) is refused: the signature would be checked against one time and the
    age against another, letting an old delivery pass as fresh."""
    times = [item.split("=", 2) for item in signature.split(",") if item.split("=", 1)[0].strip() == "t"]
    if len(times) != 1 or times[0][0] != "t" or len(times[0]) != 2 or not times[0][1].isdigit():
        raise WebhookRejected("the Stripe-Signature header must have exactly one timestamp, t=<seconds>")
    try:
        return datetime.fromtimestamp(int(times[0][1]), UTC)
    except (OverflowError, OSError, ValueError):  # beyond any date: not a delivery of now
        raise WebhookRejected("the Stripe-Signature timestamp is not a time", code="webhook.stale") from None


def verify(payload: bytes, signature: str | None, secret: str, *, now: datetime) -> GatewayEvent:
    """The event, if `signature` is a valid `v1` signature of `payload` with `secret`, made within
    `TOLERANCE` of `now`; else `WebhookRejected` (`webhook.bad_signature` or `webhook.stale`)."""
    return verify_with(payload, signature, {"": secret}, now=now)[1]


def verify_with(
    payload: bytes, signature: str | None, secrets: Mapping[str, str], *, now: datetime
) -> tuple[str, GatewayEvent]:
    """The name of the one secret among `secrets` (an endpoint's, by mode) that `signature` is a
    valid `v1` signature of `payload` with, made within `TOLERANCE` of `now`, and the event; else
    `WebhookRejected`: `webhook.bad_signature` (none verifies), `webhook.mode_unproven` (more than
    one does: the secrets are the same, so the signature proves no mode) or `webhook.stale`. The
    body is read only once it verified (`MalformedDelivery` if it is not an event)."""
    if not signature:
        raise WebhookRejected("the Stripe-Signature header is missing")
    from stripe import SignatureVerificationError, WebhookSignature  # at the first delivery, not at cold start

    signed_with = []
    for name, secret in secrets.items():
        try:
            WebhookSignature.verify_header(payload, signature, secret, tolerance=None)
        except SignatureVerificationError:
            continue
        except UnicodeDecodeError as error:  # what Stripe signs is UTF-8 text
            raise MalformedDelivery("the body is not UTF-8 text") from error
        signed_with.append(name)
    if not signed_with:
        raise WebhookRejected("the Stripe-Signature does not verify with this endpoint's secret")
    if len(signed_with) > 1:
        raise WebhookRejected(
            f"the Stripe-Signature verifies with the secrets of {' and '.join(signed_with)} alike: "
            "each mode's endpoint needs its own secret",
            code="webhook.mode_unproven",
        )
    sent = signed_at(signature)
    if abs(now - sent) > TOLERANCE:
        raise WebhookRejected(
            f"the delivery was signed at {sent.isoformat()}, more than 5 minutes from now", code="webhook.stale"
        )
    return signed_with[0], event_of(parse_body(payload))


def event_of(body: Mapping[str, Any]) -> GatewayEvent:
    """A verified event in Billow's terms: the object it is about and the metadata Billow gave it."""
    thing = body["data"]["object"]
    metadata = thing.get("metadata") or {}
    created = body.get("created")
    return GatewayEvent(
        id=body["id"],
        type=body["type"],
        live=body.get("livemode") is True,
        created=datetime.fromtimestamp(created if isinstance(created, int) else 0, UTC),
        object_ref=str(thing.get("id") or ""),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )
