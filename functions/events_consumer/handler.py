"""An example consumer of Billow's events: an SQS queue fed by a rule on the bus (CONSUMER_RULES in
billow.gateways.events), processed with Powertools batch processing. A message that fails is
reported as a batch item failure, so SQS redelivers only it (and moves it to the dead-letter queue
after a few receives). Events arrive at least once and not necessarily in order: a real consumer
de-duplicates on `detail.id` and orders an entity's events by `detail.sequence` (docs/events.md)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.services.events import billow_detail

logger = Logger(service="billow")
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> str:
    detail = billow_detail(json.loads(record.body), f"message {record.message_id}")
    logger.info(
        "billow event",
        extra={
            "event_id": detail["id"],
            "type": detail["type"],
            "tenant_id": detail["tenant_id"],
            "mode": detail["mode"],
        },
    )
    return str(detail["id"])


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )
