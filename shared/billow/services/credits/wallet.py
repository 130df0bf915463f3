"""THE read-change-write of a contact's credit wallet, every credits use case goes through it.

`change_wallet` reads the wallet (consistently), books the expiry of every grant past its expiry
at the contact's now, applies the operation (`billow.domain.credits`), and writes the wallet with
the entries booked in ONE transaction conditioned on the version it read. Exactly once: the
operation's own entry is keyed by its cause (a consumption's request id, a grant's id), so a
retry or a racing copy of the same operation finds it booked (`DuplicateEntry`) and answers what
was booked, never a second entry. A transaction that lost to another change of the wallet reads it
again and retries after a short random pause (`MAX_ATTEMPTS`, then 503 to resend). The balance can
never go below what the domain allows: each write is computed from the version it replaces.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from billow.domain.credits import (
    Change,
    Grant,
    GrantKind,
    InsufficientCredits,
    LedgerEntry,
    Wallet,
    expire,
    grant,
    watched,
)
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, RuleViolation, TemporaryFailure
from billow.services.contacts import ContactTime, contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.credits import included
from billow.services.ports import ContactStore, CreditStore, DuplicateEntry, SubscriptionStore

MAX_ATTEMPTS = 60
"""Writes of one operation that may lose to concurrent changes of the same wallet before giving up
(503 `service.temporarily_unavailable`: safe to resend, the operation is idempotent)."""


class WalletPorts(CreditStore, ContactStore, SubscriptionStore, Protocol):
    """A contact's wallet and ledger, the contact (it must exist) and its subscriptions (the
    included credits they grant)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """An operation's outcome: its own entry (None when it booked nothing, e.g. the same grant again
    while its entry is not needed), the wallet after it, and whether it was done before (a retry)."""

    entry: LedgerEntry | None
    wallet: Wallet
    replayed: bool


def compact(wallet: Wallet, now: datetime) -> Wallet:
    """The wallet without holdings that can never count again: nothing left and expired (its
    expiry booked), refunded, or a purchased or promotional grant spent (a retry of its grant
    finds its ledger entry). Included grants stay until they expire: their cycle's grant is due
    until then. The ledger keeps the history; the item stays small."""
    kept = tuple(
        h
        for h in wallet.holdings
        if h.remaining or not (h.refunded or h.grant.expired(now) or h.grant.kind is not GrantKind.INCLUDED)
    )
    return wallet if len(kept) == len(wallet.holdings) else replace(wallet, holdings=kept)


def with_due(change: Change, due: Sequence[Grant], now: datetime) -> Change:
    """`change` followed by each grant of `due` the wallet does not hold yet."""
    wallet, entries = change.wallet, list(change.entries)
    for given in due:
        if included.covered(wallet, given, now):
            continue
        try:
            granted = grant(wallet, given)
        except Conflict:  # a grant of that id with other terms: the one booked stands
            continue
        wallet = granted.wallet
        entries += granted.entries
    return Change(wallet, tuple(entries))


def _booked(store: WalletPorts, ctx: TenantContext, contact_id: str, own: str) -> LedgerEntry | None:
    return store.get_credit_entry(ctx.scope, contact_id, own) if own else None


def change_wallet_now(
    store: WalletPorts,
    ctx: TenantContext,
    contact_id: str,
    clock: Clock,
    own: str,
    operation: Callable[[Wallet, datetime], Change],
    *,
    first: ContactTime | None = None,
) -> Applied:
    """`change_wallet` at the contact's now (`first`, if read already; read again for each retry)."""
    first = first or contact_time(store, ctx, contact_id, clock)
    return change_wallet(store, ctx, contact_id, included.moments(store, ctx, contact_id, clock, first), own, operation)


Moment = Callable[[], tuple[datetime, Sequence[Grant]]]
"""The contact's now and the included grants due then: read again for each attempt (a retry that
lost a race across a cycle's end books against the new cycle, not the one that has ended)."""


def change_wallet(
    store: WalletPorts,
    ctx: TenantContext,
    contact_id: str,
    moment: Moment,
    own: str,
    operation: Callable[[Wallet, datetime], Change],
) -> Applied:
    """Apply `operation` to the contact's wallet at its now, exactly once per `own` entry id, after
    booking the expiries due and the grants due it does not hold yet (the included credits of the
    current cycle), and before booking the balance's fall below the low-balance threshold
    (`watched`). A refusal (not enough credits, an action no longer priced...) of an operation
    booked before answers what was booked. `own` empty: an operation booking no entry of its own
    (a setting of the wallet), answered with no entry."""
    scope = ctx.scope
    for attempt in range(MAX_ATTEMPTS):
        now, due = moment()
        stored = store.get_wallet(scope, contact_id)
        if stored.version == 0:
            get_contact(store, ctx, contact_id)  # a wallet is made for a contact that exists
        expired = with_due(expire(stored.wallet, now), due, now)
        try:
            changed = operation(expired.wallet, now)
        except (InsufficientCredits, InvalidInput, RuleViolation) as refused:
            done = store.get_credit_entry(scope, contact_id, own)
            if done is not None:  # done before, when it could be
                return Applied(done, stored.wallet, replayed=True)
            if isinstance(refused, InsufficientCredits):
                refused.wallet_version = stored.version
            raise
        after = watched(Change(changed.wallet, (*expired.entries, *changed.entries)), now, version=stored.version + 1)
        entries = after.entries
        mine = next((e for e in changed.entries if e.id == own), None) if own else None
        if mine is None and not entries and after.wallet == expired.wallet:  # nothing to do (the same grant again)
            return Applied(_booked(store, ctx, contact_id, own), stored.wallet, replayed=bool(own))
        try:
            store.commit_wallet(scope, contact_id, compact(after.wallet, now), stored.version, entries, own or None)
        except DuplicateEntry:
            return Applied(store.get_credit_entry(scope, contact_id, own), stored.wallet, replayed=True)
        except ConcurrentModification:
            time.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))  # full jitter: a herd spreads out
            continue
        if mine is None:  # only expiries were due, or a setting changed
            return Applied(_booked(store, ctx, contact_id, own), after.wallet, replayed=bool(own))
        return Applied(mine, after.wallet, replayed=False)
    raise TemporaryFailure(f"the credit wallet of contact {contact_id} is too busy; retry")
