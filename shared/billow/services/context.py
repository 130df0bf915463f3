"""What every use case is given: who is asking, and what time it is."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from billow.domain.errors import ConcurrentModification
from billow.domain.tenants import TenantSettings

T = TypeVar("T")
MAX_EDIT_RETRIES = 5


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


MODES = ("test", "live")


@dataclass(frozen=True, slots=True)
class Scope:
    """One mode of one tenant: the key space of its contacts and everything beneath them
    (subscriptions, orders, invoices, payments, actions, test clocks) and of its invoice numbers.
    Test mode and live mode are separate worlds: the storage port takes a `Scope`, never a bare
    tenant id, for all of those, so no request can reach the other mode's data (docs/auth.md)."""

    tenant_id: str
    mode: str  # "test" or "live"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}, not {self.mode!r}")

    @property
    def test_mode(self) -> bool:
        return self.mode == "test"


@dataclass(frozen=True, slots=True)
class TenantContext:
    tenant_id: str
    mode: str  # the key's mode: it sees only the contacts of its mode; only "test" has test clocks
    settings: TenantSettings

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant_id, self.mode)

    @property
    def test_mode(self) -> bool:
        return self.mode == "test"


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """A ULID-style id: 48 bits of milliseconds then 80 random bits, so ids sort by creation."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(secrets.token_bytes(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def keyed_ids(scope: str, idempotency_key: str) -> Callable[[str], str]:
    """Ids derived from a caller's idempotency key: a retried create produces the same ids, so its
    conditional put finds the first attempt's item instead of writing a duplicate."""
    counters: dict[str, int] = {}

    def make(prefix: str) -> str:
        counters[prefix] = counters.get(prefix, 0) + 1
        digest = hashlib.sha256(f"{scope}\x00{idempotency_key}\x00{prefix}\x00{counters[prefix]}".encode())
        return f"{prefix}_K{digest.hexdigest()[:25].upper()}"

    return make


def edit_versioned(load: Callable[[], T], save: Callable[[T], T], change: Callable[[T], T | None], what: str) -> T:
    """Apply `change` to the entity as last stored and save it conditioned on the version it was
    read at (`save` raises ConcurrentModification otherwise), retrying when someone else changed it
    first. `change` returns None when there is nothing to change (a repeated request) and raises to
    refuse."""
    for _ in range(MAX_EDIT_RETRIES + 1):
        current = load()
        changed = change(current)
        if changed is None:
            return current
        try:
            return save(changed)
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"{what} kept changing; try again", code="resource.concurrent_modification")
