"""Access on payment: the consumer of `invoice.paid` (docs/payments.md, "Access on payment").

Fed by the `activation` rule's SQS queue (CONSUMER_RULES in billow.gateways.events). Each message
is one `billow.invoice.paid` event; its invoice's services that wait for that payment are activated
(`billow.services.activation.activate_paid`). Idempotent: a duplicate, a redelivery after a crash,
or an event for an invoice that is not an order's first finds nothing to do. A message that fails
(DynamoDB unavailable, a conflict that outlasts the retries) is reported as a batch item failure,
so SQS redelivers it, then dead-letters it; the daily run's backstop (`Invoice.activation_due`)
activates the services anyway. An event for a tenant that does not exist is refused the same way
(logged, redelivered, dead-lettered), never applied with default settings.
"""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.errors import NotFound
from billow.services.activation import activate_paid
from billow.services.context import TenantContext
from billow.services.events import billow_detail
from runtime import clock, imported, invocation, logger, numbers, store

PAID = "invoice.paid"
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> int:
    """Activate what waits for the paid invoice; returns how many services were activated."""
    detail = billow_detail(json.loads(record.body), f"message {record.message_id}", of_type=PAID)
    tenant_id = detail["tenant_id"]
    settings = store.get_settings(tenant_id)
    if settings is None:
        # No such tenant (or not any more): nothing is done on guessed settings. Refused as the
        # collector refuses one: a batch item failure, redelivered, then dead-lettered for a look.
        logger.error(
            "invoice.paid for an unknown tenant refused", extra={"event_id": detail["id"], "tenant_id": tenant_id}
        )
        raise NotFound(f"no tenant {tenant_id}", field="tenant_id")
    ctx = TenantContext(tenant_id, detail["mode"], settings)
    records = activate_paid(store, ctx, detail["data"]["invoice_id"], clock=clock, numbers=numbers)
    if records:
        logger.info(
            "activated on payment",
            extra={"event_id": detail["id"], "invoice_id": detail["data"]["invoice_id"], "actions": len(records)},
        )
    return len(records)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    invocation()
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


imported()
