"""Idempotency keys bound to the request they were first sent with.

A key (an `Idempotency-Key` header, an order's or a manual payment's `reference`) is claimed by
one conditional write that stores a fingerprint of the request: its method, path and validated
body as canonical JSON. A later request with the key and the same fingerprint is a retry and is
answered with the first result (marked as a replay); with another fingerprint it is refused with
422 `idempotency.key_reused`, as Stripe does.

The claim is all the state there is: the create itself stays idempotent at the storage level (its
ids derive from the key and the claim, and every create is conditional), so a crash between the
claim and the create neither blocks the key (the retry finds its own claim and creates) nor
applies twice (the retry's create finds the first one's items). A claim from an `Idempotency-Key`
expires after `RETENTION` (a key can then be used again, for a new request, as at Stripe); a
reference claim never does, since the reference itself stays on the order or the payment.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from billow.domain.errors import InvalidInput
from billow.services.context import Clock
from billow.services.ports import IdempotencyClaim, Store

RETENTION = timedelta(hours=24)
"""How long an `Idempotency-Key` stays bound to its request (at least: DynamoDB's TTL deletes
the claim some time after it expires; until then it still holds)."""


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    claim: IdempotencyClaim
    seen: bool
    """True when an earlier request (with the same fingerprint) claimed the key: this is a retry."""


def fingerprint(method: str, path: str, body: dict[str, Any] | None) -> str:
    """sha256 of the request: method, path and the validated body as canonical JSON."""
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim_key(
    store: Store,
    tenant_id: str,
    *,
    scope: str,
    key: str,
    request: str,
    field: str,
    clock: Clock,
    retention: timedelta | None = RETENTION,
) -> ClaimedKey:
    """Bind `key` (within `scope`) to the request fingerprint `request`, or find it bound already.
    Raises 422 `idempotency.key_reused`, naming `field`, when it is bound to another request."""
    now = clock.now()
    key_hash = hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()
    mine = IdempotencyClaim(key_hash, request, secrets.token_hex(8), None if retention is None else now + retention)
    held = store.claim_idempotency_key(tenant_id, mine, now)
    if held.fingerprint != request:
        raise InvalidInput(
            f"{field} '{key}' was first used with another request (another route or body); "
            "repeat that request exactly, or use a new key for a new one",
            field=field,
            code="idempotency.key_reused",
        )
    return ClaimedKey(held, seen=held.nonce != mine.nonce)
