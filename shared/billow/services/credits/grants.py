"""`POST /contacts/{id}/credits/grants`: staff give a contact credits (docs/credits.md, "Grant
types"): promotional (with an expiry) or purchased (paid outside Billow; optional expiry).
Included credits come from the plan, purchased ones also from top-ups: not through this route.

The grant's id is the caller's: the same grant again is booked once (answered `replayed`); another
grant under a used id is refused (409 `credits.grant_exists`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billow.domain.credits import EntryKind, Grant, GrantKind, LedgerEntry, Wallet, entry_id, grant
from billow.domain.errors import Conflict, InvalidInput
from billow.services.contacts import contact_time
from billow.services.context import Clock, TenantContext
from billow.services.credits import included
from billow.services.credits.wallet import WalletPorts, change_wallet

STAFF_KINDS = frozenset({GrantKind.PROMOTIONAL, GrantKind.PURCHASED})


@dataclass(frozen=True, slots=True)
class Granted:
    entry: LedgerEntry
    wallet: Wallet
    replayed: bool


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.utcoffset() is None:
        raise InvalidInput(
            'expires_at is an ISO 8601 instant with a UTC offset, e.g. "2026-06-01T00:00:00Z"',
            field="expires_at",
            code="credits.expiry",
        )
    return parsed


def give_credits(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, raw: dict[str, Any], source: str
) -> Granted:
    """Book a staff grant `{"id", "kind", "credits", "expires_at"}` at the contact's now."""
    kind = raw.get("kind")
    if kind not in {k.value for k in STAFF_KINDS}:
        raise InvalidInput(
            "staff grant promotional or purchased credits (included ones come from the plan)",
            field="kind",
            code="credits.grant_kind",
        )
    time = contact_time(store, ctx, contact_id, clock)
    now = time.now
    given = Grant(
        raw.get("id"),  # type: ignore[arg-type]  # checked by Grant
        GrantKind(kind),
        raw.get("credits"),  # type: ignore[arg-type]
        now,
        _expiry(raw.get("expires_at")),
        source=source,
    )
    own = entry_id(EntryKind.GRANT, given.id)
    due = included.due(store, ctx, contact_id, time)
    applied = change_wallet(store, ctx, contact_id, now, own, lambda wallet: grant(wallet, given), due)
    entry = applied.entry
    if entry is None:  # its holding is gone from the wallet (spent and expired) and no entry: cannot happen
        raise Conflict(f"credit grant '{given.id}' exists", field="id", code="credits.grant_exists")
    if applied.replayed and (entry.grant_kind, entry.credits) != (given.kind, given.credits):
        raise Conflict(f"credit grant '{given.id}' exists and differs", field="id", code="credits.grant_exists")
    return Granted(entry, applied.wallet, applied.replayed)
