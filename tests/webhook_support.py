"""Stripe webhook deliveries for tests, signed by hand (the v1 scheme: HMAC-SHA256 of "{t}.{body}"
with the endpoint secret), and an applier that counts what it applied in the table itself, so that
separate processes count together."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from billow.services.context import Scope
from billow.storage.models import BillowItem

SECRETS = {"acme": "whsec_acme_test", "globex": "whsec_globex_test"}
LIVE_SECRETS = {"acme": "whsec_acme_live"}


def event_body(
    event_id: str,
    event_type: str = "payment_intent.succeeded",
    *,
    tenant: str = "acme",
    mode: str = "test",
    ref: str = "pi_1",
    livemode: bool | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """A Stripe event as Stripe sends it: the object it is about carries Billow's metadata."""
    thing = {"id": ref, "object": "payment_intent", "metadata": metadata or {"tenant_id": tenant, "mode": mode}}
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": 1_764_600_000,
            "livemode": (mode == "live") if livemode is None else livemode,
            "type": event_type,
            "data": {"object": thing},
        }
    ).encode()


def sign(payload: bytes, secret: str, at: datetime) -> str:
    """The `Stripe-Signature` header Stripe would send at `at`."""
    t = int(at.timestamp())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def configured_secrets() -> str:
    """`BILLOW_LOCAL_RAIL_SECRETS` with the tenants above."""
    from billow.local.secrets import configured
    from billow.services.gateway import RailSecrets

    found = {("stripe", t, "test"): RailSecrets(f"sk_test_{t}", s) for t, s in SECRETS.items()}
    found |= {("stripe", t, "live"): RailSecrets(f"sk_live_{t}", s) for t, s in LIVE_SECRETS.items()}
    return configured(found)


def _counter(scope: Scope, ref: str) -> BillowItem:
    return BillowItem(f"TEST#APPLIED#{scope.tenant_id}#{scope.mode}#{ref}", "COUNT", kind="test_count")


def count_application(store: Any, gateway: Any, scope: Scope, ref: str) -> None:
    """The test applier: one atomic increment per application of an event about `ref`."""
    _counter(scope, ref).update(actions=[BillowItem.counter.add(1), BillowItem.kind.set("test_count")])


def applications(scope: Scope, ref: str) -> int:
    try:
        return int(BillowItem.get(_counter(scope, ref).pk, "COUNT", consistent_read=True).counter or 0)
    except BillowItem.DoesNotExist:
        return 0


def crash_application(store: Any, gateway: Any, scope: Scope, ref: str) -> None:
    """The process dies (a Lambda container killed) after the event was recorded, before applying."""
    import os

    os._exit(17)


def failing_application(store: Any, gateway: Any, scope: Scope, ref: str) -> None:
    raise RuntimeError("the rail did not answer")


APPLIERS = {
    "payment_intent.succeeded": "tests.webhook_support:count_application",
    "payment_intent.payment_failed": "tests.webhook_support:count_application",
}
