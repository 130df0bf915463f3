"""The daily billing run (EventBridge schedule). Idempotent by construction: see
billow.services.billing. The event's `time` is the run's instant, so a re-delivered event bills
as of the same day, and a late one catches up."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.services.billing import bill_due_subscriptions
from billow.services.ports import DUE_SHARDS
from pydantic import AwareDatetime, Field
from runtime import logger, metrics, numbers, store, tracer


class BillingRunIncomplete(Exception):
    """Some due subscriptions could not be billed (details in the log)."""


class BillingRunEvent(BaseModel):
    """An EventBridge scheduled event, or a manual invocation with the same fields."""

    time: AwareDatetime = Field(description="the run's instant (EventBridge sets it to the scheduled time)")
    shards: list[Annotated[int, Field(ge=0, lt=DUE_SHARDS)]] | None = Field(
        default=None, description="due-index shards to bill; default all"
    )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@event_parser(model=BillingRunEvent)
def lambda_handler(event: BillingRunEvent, context: LambdaContext) -> dict[str, Any]:
    shards = event.shards if event.shards is not None else list(range(DUE_SHARDS))
    report = bill_due_subscriptions(store, event.time, numbers, shards)
    metrics.add_metric(name="InvoicesCreated", unit=MetricUnit.Count, value=report.invoices_created)
    metrics.add_metric(name="SubscriptionsBilled", unit=MetricUnit.Count, value=report.subscriptions_seen)
    logger.info("billing run finished", extra={"as_of": str(report.as_of_utc), "invoices": report.invoices_created})
    if report.failures:
        metrics.add_metric(name="SubscriptionsFailed", unit=MetricUnit.Count, value=len(report.failures))
        logger.error("subscriptions not billed", extra={"failures": report.failures[:100]})
        # Failing the invocation makes EventBridge retry (then dead-letter) the run; a retry bills
        # only what is still due, so the subscriptions billed above are not billed again.
        raise BillingRunIncomplete(f"{len(report.failures)} of {report.subscriptions_seen} subscriptions not billed")
    return {
        "as_of": report.as_of_utc.isoformat(),
        "subscriptions": report.subscriptions_seen,
        "invoices_created": report.invoices_created,
    }
