"""Usage routes: records submitted by other systems (`POST /usage`, one record or a batch of up to
1,000, answered per record), a service's usage in one billing period, and a contact's totals per
meter (docs/billing.md, "Usage")."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.errors import InvalidInput, error_body
from billow.domain.usage import UsageRecord
from billow.services.usage import records as usage_records
from billow.services.usage.ingest import MAX_BATCH, RecordInput, RecordOutcome, submit_usage
from billow.services.views import Json, period
from runtime import clock, store

from api.context import current_tenant
from api.schemas import Cursor, Id, UsageBatchBody, UsageRecordBody

router = APIGatewayRouter()

PeriodDay = Annotated[
    date | None,
    Query(alias="period", description="a day in the billing period to show (default: today on the contact's clock)"),
]
UsageLimit = Annotated[int, Query(ge=1, le=usage_records.MAX_PAGE, description="most records on one page")]


def _record_inputs(body: Any) -> tuple[list[RecordInput], bool]:
    """The records of a body (one record, or `{"records": [...]}`), and whether it was a batch."""
    if isinstance(body, dict) and "records" in body:
        listed = body["records"]
        if set(body) != {"records"} or not isinstance(listed, list):
            raise InvalidInput(
                'a batch is {"records": [...]} and nothing else', field="records", code="usage.invalid_batch"
            )
        if len(listed) > MAX_BATCH:
            raise InvalidInput(
                f"a batch holds at most {MAX_BATCH} records; got {len(listed)}",
                field="records",
                code="usage.batch_too_large",
            )
        return [RecordInput(raw, f"records[{i}]") for i, raw in enumerate(listed)], True
    return [RecordInput(body)], False


def _outcome(outcome: RecordOutcome) -> Json:
    shown: Json = {
        "id": outcome.id,
        "status": outcome.status,
        "service_id": outcome.service_id,
        "period": period(outcome.period),
        "late": outcome.late,
    }
    if outcome.error is not None:
        error = outcome.error
        fields = [{"field": error.field, "reason": error.message}] if error.field else []
        shown["error"] = error_body(error.code, error.message, fields)
    return shown


def _record(record: UsageRecord) -> Json:
    return {
        "id": record.id,
        "quantity": str(record.quantity),
        "at": record.at.isoformat(),
        "day": record.day.isoformat(),
        "properties": dict(record.properties),
        "received_at": record.received_at.isoformat(),
    }


@router.post(
    "/usage",
    summary="Submit usage: one record, or {records: [...]} up to 1,000, each answered accepted, duplicate or refused",
)
def submit(body: UsageBatchBody | UsageRecordBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    inputs, batch = _record_inputs(router.current_event.json_body)
    outcomes = submit_usage(store, ctx, clock, inputs)
    if not batch and outcomes[0].error is not None:
        raise outcomes[0].error  # a single record refused answers its own 4xx
    statuses = [o.status for o in outcomes]
    return {
        "records": [_outcome(o) for o in outcomes],
        "accepted": statuses.count("accepted"),
        "duplicates": statuses.count("duplicate"),
        "refused": statuses.count("refused"),
    }


@router.get(
    "/subscriptions/<subscription_id>/services/<service_id>/usage",
    summary="A metered service's usage in one billing period: its total, count and records (paged)",
)
def service_usage(
    subscription_id: Annotated[Id, Path()],
    service_id: Annotated[Id, Path()],
    period_day: PeriodDay = None,
    limit: UsageLimit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    usage = usage_records.service_usage(store, ctx, clock, subscription_id, service_id, period_day, limit, cursor)
    return {
        "subscription_id": usage.subscription_id,
        "service_id": usage.service_id,
        "period": period(usage.period),
        "meter": usage.meter,
        "aggregation": usage.aggregation.value,
        "total": str(usage.total),
        "count": usage.count,
        "records": [_record(r) for r in usage.records],
        "cursor": usage.next_cursor,
    }


@router.get(
    "/contacts/<contact_id>/usage",
    summary="A contact's usage totals per meter, for the billing periods containing one day",
)
def contact_usage(
    contact_id: Annotated[Id, Path()],
    on: Annotated[date | None, Query(description="default: today on the contact's clock")] = None,
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    found = usage_records.contact_usage(store, ctx, clock, contact_id, on)
    return {
        "contact_id": contact_id,
        "meters": [
            {
                "meter": m.meter,
                "aggregation": m.aggregation.value,
                "total": str(m.total),
                "count": m.count,
                "services": [
                    {
                        "subscription_id": u.subscription_id,
                        "service_id": u.service_id,
                        "period": period(u.period),
                        "total": str(u.total),
                        "count": u.count,
                    }
                    for u in m.services
                ],
            }
            for m in found
        ],
    }
