"""Receiving a payment rail's webhook: verified, checked against the tenant it is addressed to,
recorded once by event id, and applied once (docs/payments.md, "Webhooks").

A delivery is for the tenant in its path, and is trusted only once its signature verifies with
one of THAT tenant's endpoint secrets (one per mode): the mode is the one whose secret verified it
(the body's `livemode` must agree), never what the unverified body says. An event about another tenant's or
another mode's object (its metadata says so), or of a type Billow does not handle, is acknowledged
(2xx, so the rail stops sending it) and applied nowhere.

Exactly once: the event id is recorded (a conditional put) before the event is applied, with a
lease; the delivery that wrote it applies the event and marks the record applied. A duplicate
finds the record applied and applies nothing. A delivery that finds it still being applied
(leased) is answered 409, so the rail delivers it again later; one that finds it unapplied with
the lease run out (the applying delivery crashed) takes the lease over and applies it. If applying
fails, the lease is given back and the answer is 503: the rail's next delivery applies it.

Applying re-reads the object from the rail (`reconcile_charge`) rather than trusting the event's
copy, so the order events arrive in never matters; the appliers are idempotent themselves, the
record only keeps a redelivery from doing the work again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from billow.domain.errors import ConcurrentModification, Conflict, DomainError, TemporaryFailure
from billow.services.context import MODES, Scope
from billow.services.gateway import GatewayEvent, PaymentGateway, SecretsSource, UnknownObject, WebhookRejected

RETENTION = timedelta(days=30)
"""How long an event id is kept (the table's TTL): far beyond Stripe's 3 days of redeliveries."""
LEASE = timedelta(seconds=60)
"""How long a delivery may be applying an event before another may take it over: longer than the
webhook function's timeout (30 s), so a lease that ran out belongs to a delivery that died."""
MAX_BODY_BYTES = 256_000
"""Stripe's events are a few kilobytes; a body above this is refused unread."""

CHARGE = "billow.services.collection:reconcile_charge"
SETUP = "billow.services.payment_methods:record_setup"

APPLIERS: dict[str, dict[str, str]] = {
    "stripe": {
        "payment_intent.succeeded": CHARGE,
        "payment_intent.payment_failed": CHARGE,
        "payment_intent.processing": CHARGE,
        "payment_intent.requires_action": CHARGE,
        "payment_intent.canceled": CHARGE,
        "setup_intent.succeeded": SETUP,
    }
}
"""The event types each rail's webhooks apply, each to `module:function`, called as
`function(ports, gateway, scope, object_ref)` and imported only when an event of its type arrives.
Every other type is acknowledged and ignored."""

Applier = Callable[[Any, PaymentGateway, Scope, str], object]


def never_applicable(error: Exception) -> bool:
    """An applier's failure no redelivery can cure: the rail has no such object (a PaymentIntent
    Billow never created, another kind's id), or Billow's records refuse it (a `DomainError`).
    Only a transient one (the rail or the table out of reach or busy, a concurrent write, or
    anything unexpected) is worth the rail's next delivery."""
    return isinstance(error, UnknownObject) or (
        isinstance(error, DomainError) and not isinstance(error, ConcurrentModification)
    )


class MalformedDelivery(WebhookRejected):
    """A delivery that is not an event at all (too big, not JSON): 400, nothing read further."""

    code = "webhook.malformed"


class WebhookVerifier(Protocol):
    """A rail's webhook format (`billow.gateways.stripe_webhooks.StripeWebhooks`)."""

    def verify(
        self, payload: bytes, signature: str | None, secrets: Mapping[str, str], *, now: datetime
    ) -> tuple[str, GatewayEvent]:
        """The mode (a key of `secrets`, the endpoint's secret of each mode) whose secret
        `signature` verifies with, within 5 minutes of `now`, and the event; else
        `WebhookRejected` (`MalformedDelivery` when what verified is not an event). Nothing of the
        body is read before its signature verifies."""
        ...


class EventClaim(StrEnum):
    CLAIMED = "claimed"  # this delivery applies the event
    APPLIED = "applied"  # applied already: nothing more to do
    IN_PROGRESS = "in_progress"  # another delivery is applying it now


class WebhookEventStore(Protocol):
    """The record of each event received, per tenant, mode and rail (docs/data-model.md)."""

    def claim_webhook_event(
        self, scope: Scope, rail: str, event: GatewayEvent, *, now: datetime, lease: timedelta, keep: timedelta
    ) -> EventClaim:
        """Record the event as received with a lease to apply it (a conditional put), or take over
        an unapplied record whose lease ran out; else say what the record is."""
        ...

    def release_webhook_event(self, scope: Scope, rail: str, event_id: str) -> None:
        """Give an unapplied event's lease back (applying failed): the next delivery applies it."""
        ...

    def finish_webhook_event(self, scope: Scope, rail: str, event_id: str) -> None:
        """Mark the event applied: every later delivery of it applies nothing."""
        ...


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a delivery came to (all acknowledged with 2xx)."""

    outcome: Outcome
    event_id: str
    event_type: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WebhookPorts:
    """What receiving a rail's webhooks needs: the record of events, the store the appliers write
    (the same DynamoDB store on AWS), the tenants' secrets, the rail's verification and the rail's
    gateway for a scope (built at first need: most deliveries are duplicates or ignored)."""

    events: WebhookEventStore
    store: Any
    secrets: SecretsSource
    verifier: WebhookVerifier
    gateway_for: Callable[[Scope], PaymentGateway]
    appliers: dict[str, str] | None = None  # default: APPLIERS[rail]


def applier(target: str) -> Applier:
    """`module:function`, imported now (at the first event of its type)."""
    module, _, name = target.partition(":")
    function: Applier = getattr(importlib.import_module(module), name)
    return function


def receive(
    ports: WebhookPorts,
    rail: str,
    tenant_id: str,
    payload: bytes,
    signature: str | None,
    *,
    now: datetime,
    log: Callable[[str, dict[str, Any]], None] = lambda message, extra: None,
) -> Receipt:
    """One delivery of a webhook for `tenant_id`. It is verified with that tenant's endpoint
    secrets (test and live) before its body is read: the mode is the one whose secret verified it,
    and the body's `livemode` must say the same.

    Raises `MalformedDelivery` and `WebhookRejected` (400: too big, not an event, bad signature,
    stale, a mode the body and the signature disagree on), `Conflict` `webhook.in_progress` (409:
    another delivery is applying it, deliver again later) and `TemporaryFailure` (503: applying
    failed, deliver again later)."""
    if len(payload) > MAX_BODY_BYTES:
        raise MalformedDelivery(
            f"the body is {len(payload)} bytes; events are at most {MAX_BODY_BYTES}", code="webhook.too_large"
        )
    secrets = {
        mode: found.webhook_secret for mode in MODES if (found := ports.secrets.rail_secrets(rail, tenant_id, mode))
    }
    if not secrets:
        # No endpoint for this tenant: nothing can verify (said the same way as a bad signature,
        # so that the route does not tell which tenants exist).
        raise WebhookRejected("the Stripe-Signature does not verify with this endpoint's secret")
    mode, event = ports.verifier.verify(payload, signature, secrets, now=now)
    if event.live != (mode == "live"):
        raise WebhookRejected(
            f"the event says livemode {str(event.live).lower()} but is signed with the {mode}-mode endpoint secret",
            code="webhook.mode_mismatch",
        )
    appliers = APPLIERS[rail] if ports.appliers is None else ports.appliers
    target = appliers.get(event.type)
    if target is None:
        return Receipt(Outcome.IGNORED, event.id, event.type, "unhandled_type")
    scope = Scope(tenant_id, mode)
    if not event.object_ref:
        log("webhook event about no object ignored", {"event_id": event.id, "event_type": event.type})
        return Receipt(Outcome.IGNORED, event.id, event.type, "no_object")
    owner = (event.metadata.get("tenant_id"), event.metadata.get("mode"))
    if owner != (tenant_id, mode):
        log(
            "webhook event for another tenant or mode ignored",
            {"event_id": event.id, "event_type": event.type, "tenant_id": tenant_id, "mode": mode},
        )
        return Receipt(Outcome.IGNORED, event.id, event.type, "not_this_tenant")
    claim = ports.events.claim_webhook_event(scope, rail, event, now=now, lease=LEASE, keep=RETENTION)
    if claim is EventClaim.APPLIED:
        return Receipt(Outcome.DUPLICATE, event.id, event.type)
    if claim is EventClaim.IN_PROGRESS:
        raise Conflict(
            f"event {event.id} is being applied by another delivery; deliver it again later",
            code="webhook.in_progress",
        )
    try:
        applier(target)(ports.store, ports.gateway_for(scope), scope, event.object_ref)
    except Exception as error:
        if never_applicable(error):
            # Delivering it again for 3 days would change nothing and get the endpoint disabled.
            ports.events.finish_webhook_event(scope, rail, event.id)
            log("webhook event ignored", {"event_id": event.id, "event_type": event.type, "error": repr(error)})
            return Receipt(Outcome.IGNORED, event.id, event.type, "not_applicable")
        ports.events.release_webhook_event(scope, rail, event.id)
        log("webhook event not applied", {"event_id": event.id, "event_type": event.type, "error": repr(error)})
        raise TemporaryFailure(f"event {event.id} could not be applied now; deliver it again later") from error
    ports.events.finish_webhook_event(scope, rail, event.id)
    return Receipt(Outcome.APPLIED, event.id, event.type)
