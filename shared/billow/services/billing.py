"""Billing use cases: bill one subscription up to a date, and the daily run over the due index.

Exactly-once comes from the storage write, not from locks: each billing step writes the advanced
subscription (conditioned on the version it was computed from) and its invoice (conditioned on the
invoice id being new, and that id is derived from the subscription and its invoice count) in one
transaction. A crash before the write leaves nothing; after it, a rerun sees the advanced
subscription and has nothing left to bill. Two runs racing compute the same step; one write wins
and the other reloads and finds nothing due.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from billow.domain.billing import next_billing_step
from billow.domain.calendar import local_date, tenant_zone
from billow.domain.errors import ConcurrentModification
from billow.domain.invoices import Invoice
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.services.ports import DUE_SHARDS, Store

MAX_CONFLICT_RETRIES = 5
NUMBER_BLOCK = 25
# The due index is read up to the latest calendar day any time zone can be in at the run's instant.
_LATEST_ZONE_OFFSET = timedelta(hours=14)


class InvoiceNumbers:
    """Hands out invoice numbers from blocks reserved with one write each.

    Numbers are unique and increase per tenant. A process that dies with part of a block unused
    leaves a gap: numbering is unique, not gapless (see docs/billing.md)."""

    def __init__(self, store: Store, block: int = NUMBER_BLOCK) -> None:
        self._store = store
        self._block = block
        self._free: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def next(self, settings: TenantSettings) -> str:
        with self._lock:
            free = self._free.setdefault(settings.tenant_id, [])
            if not free:
                free.extend(reversed(self._store.reserve_invoice_numbers(settings.tenant_id, self._block)))
            return settings.invoice_number(free.pop())


def invoice_id_for(subscription: Subscription) -> str:
    """Deterministic: the n-th invoice of a subscription always has the same id."""
    return f"inv_{subscription.id.removeprefix('sub_')}_{subscription.invoice_count:04d}"


def bill_subscription(
    store: Store, settings: TenantSettings, contact_id: str, subscription_id: str, as_of: date, numbers: InvoiceNumbers
) -> list[Invoice]:
    """Create every invoice of the subscription due at `as_of`, one atomic step at a time."""
    created: list[Invoice] = []
    conflicts = 0
    subscription = store.load_subscription(settings.tenant_id, contact_id, subscription_id)
    while subscription is not None:
        step = next_billing_step(subscription, as_of)
        if step is None:
            return created
        invoice = None
        if step.invoice is not None:
            invoice = Invoice.issue(
                step.invoice,
                invoice_id=invoice_id_for(step.subscription),
                number=numbers.next(settings),
                payment_terms_days=settings.payment_terms_days,
            )
        try:
            store.apply_billing_step(settings.tenant_id, step.subscription, subscription.version, invoice)
        except ConcurrentModification:
            conflicts += 1
            if conflicts > MAX_CONFLICT_RETRIES:
                raise
            subscription = store.load_subscription(settings.tenant_id, contact_id, subscription_id)
            continue
        if invoice is not None:
            created.append(invoice)
        # What was just written is the current state: no need to read it back.
        subscription = replace(step.subscription, version=subscription.version + 1)
    return created


@dataclass
class RunReport:
    as_of_utc: date
    subscriptions_seen: int = 0
    invoices_created: int = 0
    invoice_ids: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(subscription id, error) of subscriptions that could not be billed; the others still were."""


def bill_due_subscriptions(
    store: Store, instant: datetime, numbers: InvoiceNumbers, shards: Iterable[int] = range(DUE_SHARDS)
) -> RunReport:
    """The daily run: every subscription due at `instant` in its tenant's time zone.

    One subscription that cannot be billed (a corrupt item, a conflict that outlasts the retries)
    is recorded in `failures` and skipped, so it does not stop the others; rerunning the same run
    bills only what is still due."""
    report = RunReport(as_of_utc=local_date(instant, tenant_zone("UTC")))
    horizon = (instant + _LATEST_ZONE_OFFSET).date()
    settings_cache: dict[str, TenantSettings] = {}
    for shard in shards:
        for due in store.due_subscriptions(horizon, shard):
            settings = settings_cache.get(due.tenant_id)
            if settings is None:
                settings = store.get_settings(due.tenant_id) or TenantSettings(due.tenant_id, due.tenant_id)
                settings_cache[due.tenant_id] = settings
            as_of = local_date(instant, tenant_zone(settings.timezone))
            report.subscriptions_seen += 1
            try:
                invoices = bill_subscription(store, settings, due.contact_id, due.subscription_id, as_of, numbers)
            except Exception as error:
                report.failures.append((due.subscription_id, f"{type(error).__name__}: {error}"))
                continue
            report.invoices_created += len(invoices)
            report.invoice_ids.extend(i.id for i in invoices)
    return report
