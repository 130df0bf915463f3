"""The daily billing run, one shard page at a time, as the billing-run state machine calls it.

The state machine (infra/billow_infra/billing_run.py) fans out over the shards of the due index
and calls this function for each shard until the shard is done, then once more with every shard's
totals. Billing is idempotent by construction (billow.services.billing): the event's `time` is the
run's instant, so a re-delivered or re-driven run bills as of the same day, bills nothing twice,
and a late one catches up.
"""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

from datetime import UTC
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.services.billing import SettingsCache, bill_due_page
from billow.services.payment_methods import announce_expiring
from billow.services.ports import DUE_SHARDS
from pydantic import AwareDatetime, ConfigDict, Field, model_validator
from runtime import imported, invocation, logger, metrics, numbers, store, tracer

WORKERS = 2
"""Subscriptions billed concurrently per invocation: enough to hide some DynamoDB latency, few
enough that one shard's due-index partition stays below its write limit (docs/scale.md)."""
PAGE_SIZE = 200
"""Due subscriptions read per query."""
TIME_LEFT_MS = 60_000
"""Stop taking pages when less than this is left, and hand the cursor back to the state machine."""


class BillingRunIncomplete(Exception):
    """Some due subscriptions could not be billed (details in the log); they stay due."""


class ShardTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscriptions: int = Field(default=0, ge=0)
    invoices: int = Field(default=0, ge=0)
    invoices_checked: int = Field(default=0, ge=0, description="due invoices finalised or moved overdue")
    failures: int = Field(default=0, ge=0)
    cards_expiring: int = Field(default=0, ge=0, description="payment_method.expiring announced")


class BillingRunEvent(BaseModel):
    """Either one shard's next pages ({time, shard, cursor, totals}) or the run's summary ({time, results})."""

    time: AwareDatetime = Field(description="the run's instant (the schedule's time)")
    shard: int | None = Field(default=None, ge=0, lt=DUE_SHARDS)
    cursor: str | None = Field(default=None, max_length=2048)
    totals: ShardTotals = Field(default_factory=ShardTotals)
    results: list[ShardTotals] | None = Field(default=None, max_length=DUE_SHARDS)

    @model_validator(mode="after")
    def _one_kind(self) -> BillingRunEvent:
        if (self.shard is None) == (self.results is None):
            raise ValueError("give either shard (bill it) or results (summarize the run)")
        return self


def bill_shard(event: BillingRunEvent, context: LambdaContext) -> dict[str, Any]:
    assert event.shard is not None
    totals = event.totals.model_copy()
    cursor = event.cursor
    settings = SettingsCache(store)  # one read per tenant per invocation, not per page
    if cursor is None:  # the shard's first call of the day: its cards expiring at the end of next month
        totals.cards_expiring += announce_expiring(store, event.time.astimezone(UTC).date(), event.shard)
    while True:
        page = bill_due_page(
            store, event.time, numbers, event.shard, cursor, limit=PAGE_SIZE, workers=WORKERS, settings=settings
        )
        totals.subscriptions += page.subscriptions_seen
        totals.invoices_checked += page.invoices_checked
        totals.invoices += page.invoices_created
        totals.failures += len(page.failures)
        if page.failures:
            logger.error("subscriptions not billed", extra={"shard": event.shard, "failures": page.failures[:50]})
        cursor = page.cursor
        if cursor is None or context.get_remaining_time_in_millis() < TIME_LEFT_MS:
            break
    return {
        "time": event.time.isoformat(),
        "shard": event.shard,
        "cursor": cursor,
        "done": cursor is None,
        "totals": totals.model_dump(),
    }


def summarize(event: BillingRunEvent) -> dict[str, Any]:
    assert event.results is not None
    subscriptions = sum(r.subscriptions for r in event.results)
    invoices = sum(r.invoices for r in event.results)
    failures = sum(r.failures for r in event.results)
    checked = sum(r.invoices_checked for r in event.results)
    metrics.add_metric(name="SubscriptionsBilled", unit=MetricUnit.Count, value=subscriptions)
    metrics.add_metric(name="InvoicesCreated", unit=MetricUnit.Count, value=invoices)
    metrics.add_metric(name="SubscriptionsFailed", unit=MetricUnit.Count, value=failures)
    logger.info("billing run finished", extra={"time": event.time.isoformat(), "invoices": invoices})
    if failures:
        # Fails the execution (alarmed); the failed subscriptions stay due and the next run retries them.
        raise BillingRunIncomplete(f"{failures} of {subscriptions} subscriptions and {checked} invoices due not done")
    return {
        "time": event.time.isoformat(),
        "subscriptions": subscriptions,
        "invoices_created": invoices,
        "invoices_checked": checked,
        "cards_expiring": sum(r.cards_expiring for r in event.results),
    }


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@event_parser(model=BillingRunEvent)
def lambda_handler(event: BillingRunEvent, context: LambdaContext) -> dict[str, Any]:
    invocation()
    return bill_shard(event, context) if event.shard is not None else summarize(event)


imported()
