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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial

from billow.domain.actions import Action
from billow.domain.billing import BillingStep, InvoiceDraft
from billow.domain.calendar import local_date, tenant_zone
from billow.domain.errors import ConcurrentModification, InvalidInput, NotFound, RuleViolation
from billow.domain.invoices import Invoice
from billow.domain.subscriptions import Subscription, SubscriptionKey
from billow.domain.tenants import TenantSettings
from billow.domain.timeline import next_step, receive, receiving_subscription, upcoming_invoices
from billow.domain.usage import LateMarker, UsageRater
from billow.services.contacts import contact_today
from billow.services.context import Clock, Scope, TenantContext
from billow.services.credits.overdraft import with_overdraft
from billow.services.credits.prepaid import deactivate_unpaid, pay_periods, pay_running
from billow.services.ports import (
    BillingPorts,
    DueSubscription,
    InvoiceStore,
    RunPorts,
    SubscriptionStore,
    TenantStore,
    Transactions,
)
from billow.services.receivables import Settlement, consumed_credit, move_due_invoice
from billow.services.usage.rating import StoredUsage

MAX_CONFLICT_RETRIES = 5
NUMBER_BLOCK = 25
# The due index is read up to the latest calendar day any time zone can be in at the run's instant.
_LATEST_ZONE_OFFSET = timedelta(hours=14)


class InvoiceNumbers:
    """Hands out invoice numbers from blocks reserved with one write each.

    Numbers are unique and increase per tenant and mode (test invoices have their own sequence).
    A process that dies with part of a block unused
    leaves a gap: numbering is unique, not gapless (see docs/billing.md)."""

    def __init__(self, store: InvoiceStore, block: int = NUMBER_BLOCK) -> None:
        self._store = store
        self._block = block
        self._free: dict[Scope, list[int]] = {}
        self._lock = threading.Lock()

    def next(self, ctx: TenantContext) -> str:
        with self._lock:
            free = self._free.setdefault(ctx.scope, [])
            if not free:
                free.extend(reversed(self._store.reserve_invoice_numbers(ctx.scope, self._block)))
            return ctx.settings.invoice_number(free.pop())


def invoice_id_for(subscription: Subscription) -> str:
    """Deterministic: the n-th invoice of a subscription always has the same id."""
    return f"inv_{subscription.id.removeprefix('sub_')}_{subscription.invoice_count:04d}"


def commit_step(
    store: Transactions,
    scope: Scope,
    subscription: Subscription,
    expected_version: int,
    invoice: Invoice | None = None,
    actions: Iterable[Action] = (),
    credit: Settlement | None = None,
    cleared: Iterable[LateMarker] = (),
) -> None:
    """One billing step as one transaction: the advanced subscription (only if still at
    `expected_version`), its new invoice (only if that invoice id is new), the log records of
    the actions the step executed, scheduled, cancelled or rejected, the credit the invoice
    consumed (its credit notes, each only if still at the version read), and the late-usage
    markers its invoice settles (each only if no later record moved it on)."""
    work = store.unit_of_work(f"billing subscription {subscription.id}")
    work.save_subscription(scope, subscription, expected_version)
    if invoice is not None:
        work.add_invoice(scope, invoice)
    for action in actions:
        work.log_action(scope, subscription, action)
    if credit is not None:
        credit.stage(work, scope)
    for marker in cleared:
        work.clear_late_marker(scope, subscription.contact_id, marker)
    work.commit()


def bill_subscription(
    store: BillingPorts,
    ctx: TenantContext,
    contact_id: str,
    subscription_id: str,
    as_of: date,
    numbers: InvoiceNumbers,
    *,
    today: date | None = None,
    rater: UsageRater | None = None,
) -> list[Invoice]:
    """Create every invoice of the subscription due at `as_of`, one atomic step at a time.

    `today` is given when billing ahead of time (as_of in the future): it is the issue date."""
    subscription = store.load_subscription(ctx.scope, contact_id, subscription_id)
    if subscription is None:
        return []
    return bill_loaded(store, ctx, subscription, as_of, numbers, today=today, rater=rater)[0]


def bill_loaded(
    store: BillingPorts,
    ctx: TenantContext,
    subscription: Subscription,
    as_of: date,
    numbers: InvoiceNumbers,
    *,
    today: date | None = None,
    rater: UsageRater | None = None,
) -> tuple[list[Invoice], Subscription]:
    """`bill_subscription` for a subscription just read; also returns the subscription as written
    (with its new version), so the caller need not read it back. Usage is rated from the stored
    records unless `rater` says otherwise."""
    rater = rater or StoredUsage(store, ctx)
    created: list[Invoice] = []
    conflicts = 0
    current: Subscription | None = subscription

    def reloaded(lost: ConcurrentModification) -> Subscription | None:
        """Another writer came first: the subscription read again (raises after too many)."""
        nonlocal conflicts
        conflicts += 1
        if conflicts > MAX_CONFLICT_RETRIES:
            raise lost
        return store.load_subscription(ctx.scope, subscription.contact_id, subscription.id)

    while current is not None:
        step = next_step(current, as_of, today=today, rater=rater)
        try:
            # Payment-driven services: the periods this step bills are paid from the wallet first
            # (with none left to bill, those running ahead of their billing); one the wallet cannot
            # pay stops its service instead (billow.services.credits.prepaid).
            if step is None:
                unpaid = pay_running(store, ctx, current, as_of)
                if not unpaid:
                    return created, current
            else:
                unpaid = [] if step.transfer is not None else pay_periods(store, ctx, current, step.subscription)
            stopped = deactivate_unpaid(store, ctx, current, unpaid) if unpaid else None
        except ConcurrentModification as lost:
            current = reloaded(lost)
            continue
        if stopped is not None or step is None:
            if stopped is None:
                return created, current  # every deactivation refused: nothing more to do
            current = stopped
            continue
        if (
            step.invoice is not None
            and step.transfer is None
            and ctx.settings.credit_overdraft_price is not None
            and not step.subscription.waiting_for_payment(line.service_id for line in step.invoice.lines)
        ):  # credits owed, billed once (not on an order's first invoice that may lapse: voided, it bills nothing)
            step = with_overdraft(store, ctx, step, invoice_id_for(step.subscription))
        invoice, credit = None, None
        if step.invoice is not None:
            invoice, credit = issued(store, ctx, step, step.invoice, numbers)
        written = step.subscription
        try:
            if step.transfer is not None:
                moved, written = _move(store, ctx, current, step, as_of, numbers, today=today, rater=rater)
                created += moved
            else:
                commit_step(store, ctx.scope, written, current.version, invoice, step.actions, credit, step.cleared)
        except ConcurrentModification as lost:
            current = reloaded(lost)
            continue
        if invoice is not None:
            created.append(invoice)
        # What was just written is the current state: no need to read it back.
        current = replace(written, version=current.version + 1)
    raise NotFound(f"no subscription {subscription.id}", field="subscription_id")


def issued(
    store: BillingPorts,
    ctx: TenantContext,
    step: BillingStep,
    draft: InvoiceDraft,
    numbers: InvoiceNumbers,
    invoice_id: str | None = None,
) -> tuple[Invoice, Settlement | None]:
    """The invoice of a billing step: a draft (unnumbered) under the tenant's review window, else
    numbered and, under `auto_apply_credit`, consuming the contact's credit (the settlement to
    write with it; None when there is none, so a step without credit writes what it always did)."""
    # Access on payment: the first invoice of services kept draft until it is paid lapses with them,
    # and is never held for review: the customer must be able to pay it at once, and a draft cannot
    # be paid (the order itself was the business's check).
    waiting = step.subscription.waiting_for_payment(line.service_id for line in draft.lines)
    review = 0 if waiting else ctx.settings.invoice_review_days
    unnumbered = review > 0 and not draft.total.is_negative and not draft.total.is_zero
    invoice = Invoice.issue(
        draft,
        invoice_id=invoice_id or invoice_id_for(step.subscription),
        number="" if unnumbered else numbers.next(ctx),
        payment_terms_days=ctx.settings.payment_terms_days,
        review_days=review,
        test_clock=step.subscription.test_clock,
        lapses_on=min((s.lapses_on for s in waiting if s.lapses_on is not None), default=None),
    )
    invoice, settlement = consumed_credit(store, ctx, invoice, invoice.issue_date)
    return invoice, settlement if settlement.invoices else None


def subscription_for(
    store: SubscriptionStore, scope: Scope, contact_id: str, key: SubscriptionKey
) -> Subscription | None:
    """The contact's subscription that bills services of this cycle, billing model and currency."""
    return next((s for s in store.subscriptions_of(scope, contact_id) if s.key == key), None)


def _move(
    store: BillingPorts,
    ctx: TenantContext,
    source: Subscription,
    step: BillingStep,
    as_of: date,
    numbers: InvoiceNumbers,
    *,
    today: date | None,
    rater: UsageRater,
) -> tuple[list[Invoice], Subscription]:
    """Write a step that moves a service out of `source`: into the contact's subscription of its
    new cycle and billing model (billed up to the day before first, so the service joins it as it
    stands that day), or a new one, in one transaction with `source`; then bill the receiving
    subscription up to `as_of`. Returns the invoices created on the receiving side and `source`
    as written (without the service; or, when the receiving side has no room left, with the
    change rejected and nothing moved)."""
    transfer = step.transfer
    assert transfer is not None
    on = transfer.record.on
    created: list[Invoice] = []
    target = subscription_for(store, ctx.scope, source.contact_id, transfer.key)
    if target is None:
        target, target_version = receiving_subscription(source, transfer, ctx.settings.billing), None
    else:
        created, target = bill_loaded(store, ctx, target, on - timedelta(days=1), numbers, rater=rater)
        target_version = target.version
    try:
        joined = receive(target, transfer, new=target_version is None)
    except RuleViolation as full:  # it filled up since the change was requested: nothing moves
        pending = source.with_actions(a for a in source.actions if a.id != transfer.record.id)
        refused = replace(transfer.record, executed_on=None).rejected(full.message, full.rule)
        commit_step(store, ctx.scope, pending, source.version, None, [refused])
        return created, pending
    record = replace(transfer.record, moved_to=joined.id)
    source_log = [record if a.id == record.id else a for a in step.actions]
    # One transaction: both subscriptions (each only if still at its version; the receiving one
    # only if new when it is) and both action logs.
    work = store.unit_of_work(f"moving a service to subscription {joined.id}")
    work.save_subscription(ctx.scope, step.subscription, source.version)
    work.save_subscription(ctx.scope, joined, target_version or 0, new=target_version is None)
    for subscription, log in ((step.subscription, source_log), (joined, [record, *transfer.actions])):
        for action in log:
            work.log_action(ctx.scope, subscription, action)
    work.commit()
    written = replace(joined, version=(target_version or 0) + 1)
    created += bill_loaded(store, ctx, written, as_of, numbers, today=today, rater=rater)[0]
    return created, step.subscription


@dataclass
class RunReport:
    as_of_utc: date
    subscriptions_seen: int = 0
    invoices_checked: int = 0
    """Due invoices seen: drafts to finalise, unpaid invoices to move overdue."""
    invoices_created: int = 0
    invoice_ids: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(subscription id, error) of subscriptions that could not be billed; the others still were."""
    cursor: str | None = None
    """Where a page of one shard stopped; None when the shard is done."""

    def merge(self, other: RunReport) -> None:
        self.subscriptions_seen += other.subscriptions_seen
        self.invoices_checked += other.invoices_checked
        self.invoices_created += other.invoices_created
        self.invoice_ids += other.invoice_ids
        self.failures += other.failures


PAGE_SIZE = 200


class SettingsCache:
    """Tenant settings read once per run (or per invocation), shared by the worker threads."""

    def __init__(self, store: TenantStore) -> None:
        self._store = store
        self._cache: dict[str, TenantSettings] = {}

    def __call__(self, tenant_id: str) -> TenantSettings:
        settings = self._cache.get(tenant_id)
        if settings is None:
            settings = self._store.get_settings(tenant_id) or TenantSettings(tenant_id, tenant_id)
            self._cache[tenant_id] = settings
        return settings


def bill_due_page(
    store: RunPorts,
    instant: datetime,
    numbers: InvoiceNumbers,
    shard: int,
    cursor: str | None = None,
    *,
    limit: int = PAGE_SIZE,
    workers: int = 1,
    settings: Callable[[str], TenantSettings] | None = None,
) -> RunReport:
    """Bill one page of one due-index shard: every subscription in it due at `instant` in its
    tenant's time zone, and every invoice whose status moves by then (a draft finalised, an unpaid
    invoice overdue the day after its due date). The report's `cursor` continues the shard (None: the shard is done).

    One subscription that cannot be billed (a corrupt item, a conflict that outlasts the retries)
    is recorded in `failures` and skipped, so it does not stop the others; it stays due, so the
    next run (or a rerun) tries it again and bills only what is still due."""
    report = RunReport(as_of_utc=local_date(instant, tenant_zone("UTC")))
    horizon = (instant + _LATEST_ZONE_OFFSET).date()
    settings_of = settings or SettingsCache(store)
    page = store.due_page(horizon, shard, limit, cursor)

    def bill(due: DueSubscription) -> list[Invoice]:
        tenant = settings_of(due.scope.tenant_id)
        as_of = local_date(instant, tenant_zone(tenant.timezone))
        ctx = TenantContext(due.scope.tenant_id, due.scope.mode, tenant)
        if due.is_invoice:  # a draft to finalise or an unpaid invoice going overdue: no invoice created
            move_due_invoice(store, ctx, due.contact_id, due.subscription_id, as_of, numbers)
            return []
        return bill_subscription(store, ctx, due.contact_id, due.subscription_id, as_of, numbers)

    if workers > 1 and len(page.items) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(bill, due) for due in page.items]
            outcomes = [_outcome(future.result) for future in futures]
    else:
        outcomes = [_outcome(partial(bill, due)) for due in page.items]
    for due, (invoices, error) in zip(page.items, outcomes, strict=True):
        if due.is_invoice:
            report.invoices_checked += 1
        else:
            report.subscriptions_seen += 1
        if error is not None:
            report.failures.append((due.subscription_id, error))
            continue
        report.invoices_created += len(invoices)
        report.invoice_ids.extend(i.id for i in invoices)
    report.cursor = page.cursor
    return report


def _outcome(call: Callable[[], list[Invoice]]) -> tuple[list[Invoice], str | None]:
    try:
        return call(), None
    except Exception as error:
        return [], f"{type(error).__name__}: {error}"


def bill_due_subscriptions(
    store: RunPorts,
    instant: datetime,
    numbers: InvoiceNumbers,
    shards: Iterable[int] | None = None,
    *,
    workers: int = 1,
) -> RunReport:
    """The whole daily run in one process: every page of every shard (the local stack, tests and
    the benchmark; on AWS the Step Functions map runs `bill_due_page` per shard in parallel)."""
    report = RunReport(as_of_utc=local_date(instant, tenant_zone("UTC")))
    settings = SettingsCache(store)
    for shard in range(store.due_shards) if shards is None else shards:
        cursor: str | None = None
        while True:
            page = bill_due_page(store, instant, numbers, shard, cursor, workers=workers, settings=settings)
            report.merge(page)
            if page.cursor is None:
                break
            cursor = page.cursor
    return report


MAX_UPCOMING = 12


def subscription_by_id(store: SubscriptionStore, ctx: TenantContext, subscription_id: str) -> Subscription:
    subscription = store.get_subscription(ctx.scope, subscription_id)
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}", field="subscription_id")
    return subscription


@dataclass(frozen=True, slots=True)
class ViewBill:
    invoices: list[InvoiceDraft]
    today: date
    """The contact's today: usage lines of periods ending after it are the usage so far."""


def view_bill(
    store: BillingPorts, ctx: TenantContext, subscription_id: str, count: int = 3, *, clock: Clock
) -> ViewBill:
    """The next `count` invoices of a subscription, as the billing run will create them; the
    open period's usage is its usage so far, rated with the same code."""
    if not 1 <= count <= MAX_UPCOMING:
        raise InvalidInput(f"count is 1 to {MAX_UPCOMING}", field="count")
    subscription = subscription_by_id(store, ctx, subscription_id)
    today = contact_today(store, ctx, subscription.contact_id, clock)
    return ViewBill(upcoming_invoices(subscription, count, rater=StoredUsage(store, ctx)), today)
