"""`POST /contacts/{id}/credits/grants`: staff give a contact credits (docs/credits.md, "Grant
types"): promotional (with an expiry) or purchased (paid outside Billow; optional expiry).
Included credits come from the plan, purchased ones also from top-ups: not through this route.

The grant's id is the caller's: the same grant again is booked once (answered `replayed`); another
grant under a used id is refused (409 `credits.grant_exists`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billow.domain.credits import (
    ID_PATTERN,
    TOP_UP_GRANT_PREFIX,
    Change,
    EntryKind,
    Grant,
    GrantKind,
    LedgerEntry,
    Wallet,
    entry_id,
    grant,
)
from billow.domain.errors import Conflict, InvalidInput, RuleViolation
from billow.services.contacts import contact_time
from billow.services.context import Clock, TenantContext
from billow.services.credits.wallet import WalletPorts, change_wallet_now

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
    if parsed is None or parsed.utcoffset() is None or not 1971 <= parsed.year <= 9998:
        raise InvalidInput(
            "expires_at is an ISO 8601 instant with a UTC offset, of the years 1971 to 9998, "
            'e.g. "2026-06-01T00:00:00Z"',
            field="expires_at",
            code="credits.expiry",
        )
    return parsed


MAX_LIVE_GRANTS = 500
"""Grants a wallet holds with something left (its one item stays far below DynamoDB's 400 KB)."""


def give_credits(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, raw: dict[str, Any], source: str
) -> Granted:
    """Book a staff grant `{"id", "kind", "credits", "expires_at"}` at the contact's now; the same
    grant again (whenever: even once it has expired and been spent) answers what was booked."""
    kind = raw.get("kind")
    if kind not in {k.value for k in STAFF_KINDS}:
        raise InvalidInput(
            "staff grant promotional or purchased credits (included ones come from the plan)",
            field="kind",
            code="credits.grant_kind",
        )
    grant_id, credits, expires_at = raw.get("id"), raw.get("credits"), _expiry(raw.get("expires_at"))
    if isinstance(grant_id, str) and grant_id.startswith(("inc_", TOP_UP_GRANT_PREFIX)):
        raise InvalidInput(
            f"grant ids starting inc_ are the plan's included credits', {TOP_UP_GRANT_PREFIX} top-ups'",
            field="id",
            code="credits.reference",
        )
    if isinstance(grant_id, str) and ID_PATTERN.match(grant_id):
        done = store.get_credit_entry(ctx.scope, contact_id, entry_id(EntryKind.GRANT, grant_id))
        if done is not None:
            return _replay(store, ctx, contact_id, done, GrantKind(kind), credits, expires_at)
    time = contact_time(store, ctx, contact_id, clock)
    given = Grant(
        grant_id,  # type: ignore[arg-type]  # checked by Grant
        GrantKind(kind),
        credits,  # type: ignore[arg-type]
        time.now,
        expires_at,
        source=source,
    )
    own = entry_id(EntryKind.GRANT, given.id)

    def operation(wallet: Wallet, now: datetime) -> Change:
        if wallet.live_grants >= MAX_LIVE_GRANTS:
            raise RuleViolation(
                f"the wallet holds {MAX_LIVE_GRANTS} grants with credits left: no more until some are spent",
                rule="credits.too_many_grants",
                field="id",
            )
        try:
            return grant(wallet, given)
        except Conflict as clash:
            raise Conflict(clash.message, field="id", code="credits.grant_exists") from None

    applied = change_wallet_now(store, ctx, contact_id, clock, own, operation, first=time)
    entry = applied.entry
    if entry is None:  # cannot happen: booked now or before
        raise Conflict(f"credit grant '{given.id}' exists", field="id", code="credits.grant_exists")
    if applied.replayed:
        return _replay(store, ctx, contact_id, entry, given.kind, given.credits, given.expires_at)
    return Granted(entry, applied.wallet, False)


def _replay(
    store: WalletPorts,
    ctx: TenantContext,
    contact_id: str,
    entry: LedgerEntry,
    kind: GrantKind,
    credits: object,
    expires_at: datetime | None,
) -> Granted:
    """The grant booked before, if the same grant was asked again; 409 if another one was."""
    if (entry.grant_kind, entry.credits, entry.expires_at) != (kind, credits, expires_at):
        raise Conflict(f"credit grant '{entry.grant_id}' exists and differs", field="id", code="credits.grant_exists")
    return Granted(entry, store.get_wallet(ctx.scope, contact_id).wallet, True)
