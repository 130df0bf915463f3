"""Publishes Billow's events: reads the table's stream (the outbox, docs/events.md), derives the
events each committed change means and puts them on the bus `billow-<stage>`.

A record whose events could not all be put is reported as a batch item failure, and so is every
record after it in the batch: the stream retries from the first failed record, so a later change of
an entity is never published before an earlier one (per-entity order). What was put before a
failure is put again on the retry, under the same ids (at-least-once; consumers de-duplicate).
Imports stay light (no pynamodb, no X-Ray): boto3 is loaded at the first put."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.gateways.events import EnvironmentBusClient, publish
from billow.services.events import events_of
from billow.storage.stream import change_of

logger = Logger(service="billow")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
bus = EnvironmentBusClient()


class EarlierRecordFailed(Exception):
    """Not tried: an earlier record of the batch failed, and this one must not overtake it."""


class _Batch:
    failed = False


def record_handler(record: DynamoDBRecord) -> int:
    if _Batch.failed:
        raise EarlierRecordFailed("an earlier record of this batch failed")
    try:
        change = change_of(record.raw_event)
        events = [] if change is None else events_of(change)
        publish(bus, events)
    except Exception:
        _Batch.failed = True
        raise
    return len(events)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _Batch.failed = False
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
