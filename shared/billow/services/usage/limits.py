"""Usage charge limits: an immediate invoice once a service's unbilled usage crosses its limit.

A usage price may carry `charge_limit` (an amount of unbilled usage, a count of unbilled records,
or both). After each accepted batch, ingest calls `after_accept`; it adds the batch to the
service-period's counter (contact partition, `ULIMIT#<service>#<period start>`, one `ADD` per batch
and service-period: no read, no condition, so it never contends with anything). The counter only
says when the limit MAY have been crossed: it counts what was accepted, before the allowance, and
for the models whose price grows with the quantity (per unit, graduated, package, summed or
counted) rating its quantity gives an upper bound. Only then is the period's usage read and rated
precisely (`StoredUsage`, the billing run's rater): if rated minus billed so far reaches the amount
limit, or the unbilled records the record limit, an immediate invoice bills the usage so far
(`usage_so_far_step`, issued by the engine's issue path like any invoice: numbered, credit applied,
collected from the invoice events) and records it on the service (`usage_billed`: a progressive
invoice), so the period's final invoice bills only the rest.

Exactly once: the invoice's id is derived from the subscription, the service, the period and the
progressive sequence, and it is written with the subscription conditioned on the version it was
computed from. Two batches crossing at once in two processes compute the same invoice; one write
wins, the other reloads, rates again and finds nothing left over the limit. A crash after the
invoice leaves nothing to redo: the service already counts it as billed.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Protocol

from billow.domain.billing import usage_so_far_step
from billow.domain.calendar import Period
from billow.domain.catalog import BillingModel
from billow.domain.errors import ConcurrentModification, TemporaryFailure
from billow.domain.invoices import Invoice
from billow.domain.pricing import Aggregation, ChargeLimit, UsageModel, UsagePrice, rate
from billow.domain.subscriptions import Service, Subscription
from billow.domain.usage import BilledUsage, RatedUsage, UsageRecord, aggregate, billed_for
from billow.services.billing import MAX_CONFLICT_RETRIES, InvoiceNumbers, commit_step, issued
from billow.services.contacts import contact_today
from billow.services.context import Clock, TenantContext
from billow.services.ports import BillingPorts, UsageCount, UsageLimitStore
from billow.services.usage.rating import RatingPorts, StoredUsage, service_period

log = logging.getLogger(__name__)

GROWING = frozenset({UsageModel.PER_UNIT, UsageModel.GRADUATED, UsageModel.PACKAGE})
"""Models whose total never falls as the quantity grows: the counter's rating bounds the real one."""


class LimitPorts(BillingPorts, RatingPorts, UsageLimitStore, Protocol):
    """Counting accepted usage, rating it, and issuing an immediate invoice."""


def after_accept(
    store: LimitPorts,
    ctx: TenantContext,
    clock: Clock,
    subscription: Subscription,
    service: Service,
    accepted: Sequence[UsageRecord],
    duplicates: Sequence[UsageRecord] = (),
    numbers: InvoiceNumbers | None = None,
) -> list[Invoice]:
    """Count a batch of the service's accepted records; issue the immediate invoice of each
    period whose usage crossed the service's charge limit. Returns the invoices issued. A period
    with `duplicates` (a retry: its first write may have stopped before it was counted, and a
    duplicate is never counted) is checked precisely, whatever the counter says."""
    price = service.terms.usage
    limit = None if price is None else price.charge_limit
    if price is None or limit is None or service.terms.billing_model is BillingModel.NONE:
        return []
    by_period: dict[date, list[UsageRecord]] = defaultdict(list)
    for record in accepted:
        by_period[record.period_start].append(record)
    retried = {record.period_start for record in duplicates}
    invoices: list[Invoice] = []
    for start in sorted(set(by_period) | retried):
        records = by_period.get(start, [])
        if service.usage_billed_through is not None and start < service.usage_billed_through:
            continue  # late usage: the next invoice bills it
        try:
            if records:
                quantity = aggregate(Aggregation.SUM, records)  # exactly, as billing sums them
                count = store.count_usage(ctx.scope, subscription.contact_id, service.id, start, len(records), quantity)
                billed = billed_for(service.usage_billed, start)
                maybe = may_have_crossed(price, limit, subscription.currency, count, billed)
            else:
                maybe = False
            if not maybe and start not in retried:
                continue
            invoice = charge_usage_so_far(store, ctx, clock, subscription, service.id, start, numbers)
        except TemporaryFailure as busy:
            # The records are stored and answered: the next batch checks the limit again, and the
            # period's final invoice bills everything anyway.
            log.warning("charge limit of service %s not checked: %s", service.id, busy)
            continue
        if invoice is not None:
            invoices.append(invoice)
    return invoices


def may_have_crossed(
    price: UsagePrice, limit: ChargeLimit, currency: str, count: UsageCount, billed: BilledUsage | None
) -> bool:
    """Whether the counter allows that the unbilled usage crossed the limit (then read precisely)."""
    billed_records = 0 if billed is None else billed.records
    if limit.records is not None and count.records - billed_records >= limit.records:
        return True
    if limit.amount is None:
        return False
    if price.model not in GROWING or price.aggregation not in (Aggregation.SUM, Aggregation.COUNT):
        return True  # the counter bounds nothing: rate the records
    units = count.quantity if price.aggregation is Aggregation.SUM else Decimal(count.records)
    bound = rate(price, currency, units=units).total
    if billed is not None:
        bound = bound - billed.amount
    return bound.to_decimal() >= limit.amount


def crossed(limit: ChargeLimit, rated: RatedUsage, billed: BilledUsage | None) -> bool:
    """Whether the usage rated so far, less what was billed of it, reaches the limit."""
    unbilled = rated.total if billed is None else rated.total - billed.amount
    records = rated.records - (0 if billed is None else billed.records)
    if limit.records is not None and records >= limit.records:
        return True
    return limit.amount is not None and unbilled.to_decimal() >= limit.amount


def progressive_invoice_id(subscription: Subscription, service_id: str, period_start: date, sequence: int) -> str:
    """Deterministic: the n-th immediate invoice of a service's period always has the same id
    (the service, period and sequence hashed, so the id stays within an id's 64 characters)."""
    sub = subscription.id.removeprefix("sub_")
    digest = hashlib.sha256(f"{service_id}#{period_start}#{sequence}".encode()).hexdigest()
    return f"inv_{sub}_u{digest[:20]}"


def charge_usage_so_far(
    store: LimitPorts,
    ctx: TenantContext,
    clock: Clock,
    subscription: Subscription,
    service_id: str,
    period_start: date,
    numbers: InvoiceNumbers | None = None,
) -> Invoice | None:
    """Read, rate and, if the limit is crossed, invoice the service's usage so far in the period
    starting `period_start`; None when it is not crossed (or another process invoiced it)."""
    numbers = numbers or InvoiceNumbers(store, block=1)
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        current = store.load_subscription(ctx.scope, subscription.contact_id, subscription.id)
        service = None if current is None else next((s for s in current.services if s.id == service_id), None)
        if current is None or service is None or service.terms.usage is None:
            return None
        limit = service.terms.usage.charge_limit
        if limit is None or (service.usage_billed_through is not None and period_start < service.usage_billed_through):
            return None  # the period's final invoice went out meanwhile
        today = contact_today(store, ctx, current.contact_id, clock)
        period = service_period(current, service, period_start)
        so_far = Period(period.start, min(period.end, today + timedelta(days=1)))
        if so_far.start >= so_far.end:
            return None
        rated = StoredUsage(store, ctx).rate(current, service, so_far)
        before = billed_for(service.usage_billed, period_start)
        if rated is None or not crossed(limit, rated, before):
            return None
        step = usage_so_far_step(current, service_id, Period(period_start, period.end), rated, today)
        if step is None or step.invoice is None:
            return None
        sequence = 1 + (0 if before is None else before.progressive)
        invoice_id = progressive_invoice_id(current, service_id, period_start, sequence)
        invoice, credit = issued(store, ctx, step, step.invoice, numbers, invoice_id)
        try:
            commit_step(store, ctx.scope, step.subscription, current.version, invoice, (), credit)
        except ConcurrentModification:
            continue  # another batch (or the billing run) moved it: look again
        return invoice
    return None
