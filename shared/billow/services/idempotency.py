"""Idempotency keys bound to the request they were first sent with.

A key (an `Idempotency-Key` header, an order's or a manual payment's `reference`) is claimed by
one conditional write that stores a fingerprint of the request: its method, path and validated
body as canonical JSON. A later request with the key and the same fingerprint is a retry and is
answered with the first result (marked as a replay). Another request with the key is refused: with
409 `idempotency.in_progress` (retry) while the request holding the key is still executing, then
with 422 `idempotency.key_reused` once it has answered, as Stripe does.

`bound_key` runs a request under its key: the claim is marked done when the request answers (one
more write, on keyed creates only), and a request refused before it wrote anything releases the
key it claimed, so the corrected request may use the key. A create refused by a domain rule
(`DomainError`) wrote nothing; an action may have (a refused action is logged, and its key replays
the refusal; a scheduled one is resumed by its retry), so only its invalid or not-found refusals
release the key.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from billow.domain.errors import Conflict, DomainError, InvalidInput
from billow.services.context import Clock
from billow.services.ports import IdempotencyClaim, IdempotencyStore

RETENTION = timedelta(hours=24)
"""How long an `Idempotency-Key` stays bound to its request (at least: DynamoDB's TTL deletes
the claim some time after it expires; until then it still holds)."""
EXECUTING_AT_MOST = timedelta(seconds=30)
"""How long a request can still be executing after it claimed its key: an API request runs at most
29 s (API Gateway's limit and the API function's timeout). A claim left unfinished longer than this
was left by a request that died: another request with its key is then refused as reusing it (the
same request again resumes it)."""


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
    store: IdempotencyStore,
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
    Raises 409 `idempotency.in_progress` while another request holding it may still be executing,
    then 422 `idempotency.key_reused`, both naming `field`."""
    now = clock.now()
    key_hash = hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()
    expires = None if retention is None else now + retention
    mine = IdempotencyClaim(key_hash, request, secrets.token_hex(8), expires, claimed_at=now, done=False)
    held = store.claim_idempotency_key(tenant_id, mine, now)
    if held.fingerprint != request:
        if _executing(held, now):
            raise Conflict(
                f"{field} '{key}' is held by another request (another route or body) that is still being "
                "executed; retry shortly",
                field=field,
                code="idempotency.in_progress",
            )
        raise key_reused(field, key)
    return ClaimedKey(held, seen=held.nonce != mine.nonce)


def key_reused(field: str, key: str) -> InvalidInput:
    """422 `idempotency.key_reused`: `key` (in `field`) is bound to another request."""
    return InvalidInput(
        f"{field} '{key}' was first used with another request (another route or body); "
        f"repeat that request exactly, or use a new {field} for a new one",
        field=field,
        code="idempotency.key_reused",
    )


@contextmanager
def bound_key(
    store: IdempotencyStore,
    tenant_id: str,
    claimed: ClaimedKey,
    *,
    clock: Clock,
    released: tuple[type[DomainError], ...] = (DomainError,),
) -> Iterator[ClaimedKey]:
    """Run a request under the key it claimed (`claim_key`). When it answers, the claim is marked done,
    so another request with the key is told it reuses it. A refusal of the `released` kinds wrote
    nothing: a claim this request made is released, so the corrected request may use the key; any
    other refusal is the request's answer and keeps the key bound. A crash leaves the claim
    unfinished: the same request again resumes it, and answers for the claim once the request that
    made it can no longer be executing."""
    try:
        yield claimed
    except DomainError as refusal:
        if claimed.seen and _executing(claimed.claim, clock.now()):
            raise  # the request that claimed the key answers for its claim
        if isinstance(refusal, released):
            store.release_idempotency_key(tenant_id, claimed.claim)
        else:
            _finish(store, tenant_id, claimed)
        raise
    _finish(store, tenant_id, claimed)


def _executing(claim: IdempotencyClaim, now: datetime) -> bool:
    """Whether the request that made `claim` may still be executing."""
    return not claim.done and claim.claimed_at is not None and now < claim.claimed_at + EXECUTING_AT_MOST


def _finish(store: IdempotencyStore, tenant_id: str, claimed: ClaimedKey) -> None:
    if not claimed.claim.done:
        store.finish_idempotency_key(tenant_id, claimed.claim)
