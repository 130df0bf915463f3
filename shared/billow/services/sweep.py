"""The sweep: payment attempts left live and card refunds left pending are taken on to the end, so
nothing stuck is forgotten (docs/payments.md, "Sweep").

A collector whose message was dead-lettered, or that died with nothing to redeliver its event, leaves
its attempt pending or created; a refund request whose client never retries leaves its refund
pending, its amount held. Each is in the sweep index (billow.storage.repository.sweep_keys) from the
write that makes it live to the write that makes it final, at no extra write. A scheduled function
reads the entries older than `GRACE` and resumes each exactly as a rerun would: an attempt with
`billow.services.collection.resume`, a refund with `billow.services.receivables.resume_refund`.
Both are safe to run twice and concurrently with anything (a redelivered message, a webhook, a
client's retry, another sweeper), so sweepers need no lock and may overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from billow.services.collection import resume
from billow.services.context import Clock, Scope, TenantContext
from billow.services.gateway import PaymentGateway
from billow.services.ports import CollectionPorts, SweepIndex, Unfinished
from billow.services.receivables import resume_refund

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=10)
"""How old an entry must be before the sweep takes it on: far longer than a collector's run (its
function's timeout is 60 s) and a refund request's (29 s, its lease 2 minutes), so the sweep takes
on only what its own process left behind, not what is still in flight (taking that on would be
safe too: only wasted requests)."""

SWEEP_EVERY = timedelta(minutes=15)
"""How often the sweep runs (the EventBridge schedule, infra/billow_infra/sweep.py; locally the scheduler)."""
SWEEP_GROUPS = 4
"""Sweepers started by each run, each sweeping the shards `s` with `s % SWEEP_GROUPS` = its group."""


class SweepPorts(CollectionPorts, SweepIndex, Protocol):
    """The sweep: its index, then what resuming an attempt reads and writes (a refund's ports,
    `RefundPorts`, are among them)."""


@dataclass
class SweepTotals:
    taken: int = 0
    """Entries resumed (whatever their outcome: final, or still settling on the rail)."""
    failed: int = 0
    """Entries that could not be resumed now (rail out of reach, a request holding a refund's
    lease...): they stay in the index for the next sweep."""
    no_rail: int = 0
    """Entries of a tenant mode with no payment rail (left as they are)."""
    errors: list[str] = field(default_factory=list)


def sweep_page(
    store: SweepPorts,
    gateway_of: Callable[[Scope], PaymentGateway | None],
    shard: int,
    *,
    now: datetime,
    clock: Clock,
    limit: int,
    cursor: str | None,
    totals: SweepTotals,
) -> str | None:
    """Resume one page (up to `limit`) of the shard's entries older than `GRACE` at `now`; the cursor
    of the next page (None: the shard is done)."""
    page = store.unfinished_page(now - GRACE, shard, limit, cursor)
    for entry in page.items:
        try:
            gateway = gateway_of(entry.scope)  # a tenant's secrets unreadable: its entries wait
            if gateway is None:
                totals.no_rail += 1
                continue
            outcome = _resume(store, gateway, entry, clock)
        except Exception as error:  # one entry never stops the others: it stays for the next sweep
            log.warning("sweep: %s %s/%s not resumed: %s", entry.kind, entry.parent_id, entry.item_id, error)
            totals.failed += 1
            totals.errors.append(f"{entry.kind} {entry.item_id}: {type(error).__name__}: {error}")
            continue
        log.info("sweep: %s %s/%s resumed: %s", entry.kind, entry.parent_id, entry.item_id, outcome)
        totals.taken += 1
    return page.cursor


def _resume(store: SweepPorts, gateway: PaymentGateway, entry: Unfinished, clock: Clock) -> str:
    """The entry resumed; its status after."""
    if entry.kind == "attempt":
        attempt = store.get_attempt(entry.scope, entry.contact_id, entry.parent_id, int(entry.item_id))
        if attempt is None or not attempt.live:
            return "gone" if attempt is None else attempt.status.value
        return resume(store, gateway, entry.scope, attempt, clock=clock).status.value
    settings = store.get_settings(entry.scope.tenant_id)
    if settings is None:
        return "no tenant"
    ctx = TenantContext(entry.scope.tenant_id, entry.scope.mode, settings)
    refund = resume_refund(store, ctx, entry.contact_id, entry.parent_id, entry.item_id, clock, gateway)
    return "gone" if refund is None else refund.status.value
