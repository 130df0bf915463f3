"""The collector: charges each issued invoice on its tenant's payment rail (docs/payments.md,
"Collection"), after billing, off its transaction; and ends the live payment attempts of an
invoice voided (by staff, or by its order's lapse) or written off, cancelling their charges.

Fed by the bus rule `invoice-issued` (billow.gateways.events: an invoice created final, or a draft
finalised) through an SQS queue with a dead-letter queue, at a bounded concurrency that keeps the
rail's request rate under its limit. Each message is one event, processed with Powertools batch
processing: one that fails (the rail unreachable or rate-limiting, DynamoDB throttling) is reported
as a batch item failure, so SQS redelivers only it, and the rerun resumes the invoice's attempt
from its recorded state (billow.services.collection). Events arrive at least once: a duplicate
finds the attempt and charges nothing.

Fed also by the rule `low-balance` (`credits.low_balance`), its own queue: a contact with an auto
top-up buys its pack (`top_up_on_low_balance`: a top-up invoice, charged at once, its credits
granted once paid); a duplicate finds the top-up bought (docs/credits.md).

Fed also by the rule `invoice-ended` (`invoice.voided`, `invoice.uncollectible`), its own queue:
each live attempt covering the invoice is resumed, finds it not payable and ends, its charge
cancelled on the rail (`end_attempts_covering`). A duplicate finds nothing live.
"""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

import json
from typing import Any

import runtime
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.errors import NotFound
from billow.services.collection import collect_invoice, end_attempts_covering
from billow.services.context import Scope, TenantContext
from billow.services.events import billow_detail
from runtime import imported, invocation, logger

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

ISSUED = "invoice.issued"
ENDED = ("invoice.voided", "invoice.uncollectible")
LOW_BALANCE = "credits.low_balance"


def record_handler(record: SQSRecord) -> str:
    envelope, what = json.loads(record.body), f"message {record.message_id}"
    if (envelope.get("detail") or {}).get("type") == LOW_BALANCE:
        low = billow_detail(envelope, what, of_type=LOW_BALANCE, naming="entry_id")
        return _auto_top_up(Scope(low["tenant_id"], low["mode"]), low)
    detail = billow_detail(envelope, what, of_type=(ISSUED, *ENDED))
    scope = Scope(detail["tenant_id"], detail["mode"])
    invoice_id = detail["data"]["invoice_id"]
    gateway = runtime.payment_gateway(scope)
    if gateway is None:
        logger.info("no payment rail: left to be paid by transfer", extra={"invoice_id": invoice_id})
        return "no_rail"
    if detail["type"] in ENDED:
        ended = end_attempts_covering(runtime.store, gateway, scope, invoice_id, clock=runtime.clock)
        outcome = ",".join(a.status.value for a in ended) or "nothing_live"
    else:
        attempt = collect_invoice(runtime.store, gateway, scope, invoice_id, clock=runtime.clock)
        outcome = "nothing_to_collect" if attempt is None else attempt.status.value
    logger.info(
        "collected",
        extra={"invoice_id": invoice_id, "tenant_id": scope.tenant_id, "mode": scope.mode, "outcome": outcome},
    )
    return outcome


def _auto_top_up(scope: Scope, detail: dict[str, Any]) -> str:
    # Imported on the first such event: it bills (a top-up is an invoice), which charging alone never needs.
    from billow.services.credits.low_balance import top_up_on_low_balance

    settings = runtime.store.get_settings(scope.tenant_id)
    if settings is None:
        raise NotFound(f"no tenant {scope.tenant_id}", field="tenant_id")  # redelivered, then dead-lettered
    ctx = TenantContext(scope.tenant_id, scope.mode, settings)
    state = top_up_on_low_balance(
        runtime.store,
        runtime.payment_gateway(scope),
        ctx,
        runtime.clock,
        runtime.numbers,
        detail["contact_id"],
        detail["data"]["entry_id"],
    )
    outcome = "no_auto_top_up" if state is None else f"top_up_{state.status.value}"
    logger.info("auto top-up", extra={"event_id": detail["id"], "contact_id": detail["contact_id"], "outcome": outcome})
    return outcome


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    invocation()
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


imported()
