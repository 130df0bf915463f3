"""The dunning function (docs/dunning.md, "The flow"): every task of a case's Step Functions
execution, the hourly wake, and the events that open or wake a case. Thin: it parses what it was
invoked with and calls `billow.services.dunning`.

- A task of the state machine, `{"task": decide|retry|remind|deactivate|cancel|end, "tenant_id",
  "mode", "case_id"}`, answers the case's next decision `{"tenant_id", "mode", "case_id", "action",
  "due", "wake_seq"}`; `park` (with `wake_seq` and the task `token`) answers `{}` (its result is
  discarded). A case changed under a task raises `ConcurrentModification`, and the payment rail out
  of reach `TemporaryFailure`: the state machine retries both with backoff (a retry resumes the
  attempt it started: never a second charge).
- The hourly schedule's "Scheduled Event" (or `{"task": "wake"}`) wakes every case whose day came.
- SQS batches from the rule `dunning` (Powertools batch processing, as the collector): a
  `payment.failed` or `invoice.overdue` opens the contact's case (and starts its execution) when
  something is owed; the others wake the contact's open cases. A message that fails is redelivered
  alone, then dead-lettered.
"""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

import json
from typing import Any, Literal

import runtime
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.dunning import StepKind
from billow.domain.errors import InvalidInput, NotFound, TemporaryFailure
from billow.gateways.events import DUNNING_OPENS, DUNNING_WAKES
from billow.services import dunning
from billow.services.context import TenantContext
from billow.services.events import billow_detail
from billow.services.gateway import GatewayUnavailable
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from runtime import imported, invocation, logger

TIME_LEFT_MS = 30_000
"""The hourly wake reads no further page with less than this left (the next hour goes on)."""
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

STEPS = {k.value: k for k in (StepKind.RETRY, StepKind.REMIND, StepKind.DEACTIVATE, StepKind.CANCEL, StepKind.END)}


class Task(BaseModel):
    """A task of the dunning state machine."""

    model_config = ConfigDict(extra="forbid")
    task: Literal["decide", "retry", "remind", "deactivate", "cancel", "end", "park"]
    tenant_id: str = Field(min_length=1, max_length=200)
    mode: Literal["test", "live"]
    case_id: str = Field(min_length=1, max_length=200)
    wake_seq: int | None = Field(default=None, ge=0)
    token: str | None = Field(default=None, min_length=1, max_length=1024)


def _context(tenant_id: str, mode: str) -> TenantContext:
    """The tenant's context; an unknown tenant is refused (never acted on with default settings)."""
    settings = runtime.store.get_settings(tenant_id)
    if settings is None:
        raise NotFound(f"no tenant {tenant_id}", field="tenant_id")
    return TenantContext(tenant_id, mode, settings)


def run_task(task: Task) -> dict[str, Any]:
    ctx = _context(task.tenant_id, task.mode)
    store, clock = runtime.store, runtime.clock
    if task.task == "park":
        if task.wake_seq is None or task.token is None:
            raise InvalidInput("a park task carries its wake_seq and token", field="token")
        parked = dunning.park(store, ctx, task.case_id, task.wake_seq, task.token, runtime.flows)
        logger.info("parked" if parked else "resumed at once", extra={"case_id": task.case_id})
        return {}
    if task.task == "decide":
        decided = dunning.decide_case(store, ctx, task.case_id, clock=clock)
    else:
        gateway = runtime.payment_gateway(ctx.scope)
        try:
            decided = dunning.take_step(
                store, ctx, task.case_id, STEPS[task.task], clock=clock, gateway=gateway, numbers=runtime.numbers
            )
        except GatewayUnavailable as error:  # the state machine retries a TemporaryFailure with backoff
            raise TemporaryFailure(f"the payment rail is out of reach: {error}") from error
    logger.info("dunning task", extra={"task": task.task, "case_id": task.case_id, "next": decided.action})
    return decided.output()


def record_handler(record: SQSRecord) -> str:
    try:
        return _follow(record)
    except Exception:  # the batch answers this item as failed (retried, then dead-lettered): say why
        logger.exception("dunning could not follow an event", extra={"message_id": record.message_id})
        raise


def _follow(record: SQSRecord) -> str:
    detail = billow_detail(json.loads(record.body), f"message {record.message_id}")
    if detail.get("type") not in (*DUNNING_OPENS, *DUNNING_WAKES):
        raise InvalidInput(f"message {record.message_id} is {detail.get('type')}, not an event dunning follows")
    ctx = _context(detail["tenant_id"], detail["mode"])
    if detail["type"] in DUNNING_OPENS:
        invoice_id = (detail.get("data") or {}).get("invoice_id")
        if not invoice_id:
            raise InvalidInput(f"message {record.message_id} names no invoice", field="invoice_id")
        case = dunning.open_for_invoice(
            runtime.store, ctx, invoice_id, runtime.flows, clock=runtime.clock, cause=detail["type"]
        )
        return "nothing_owed" if case is None else case.id
    woken = dunning.wake_contact(runtime.store, ctx, detail["contact_id"], lambda: runtime.flows, clock=runtime.clock)
    return f"woken:{woken}"


def _scheduled(event: dict[str, Any]) -> bool:
    return event.get("detail-type") == "Scheduled Event" or event.get("task") == "wake"


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    invocation()
    if "Records" in event:
        return dict(
            process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        )
    if _scheduled(event):
        run = dunning.wake_due(
            runtime.store,
            runtime.flows,
            clock=runtime.clock,
            keep_going=lambda: context.get_remaining_time_in_millis() >= TIME_LEFT_MS,
        )
        logger.info("dunning wake", extra={"woken": run.woken, "seen": run.seen, "done": run.done})
        return {"woken": run.woken, "seen": run.seen, "done": run.done}
    try:
        task = Task.model_validate(event)
    except ValidationError as error:
        raise InvalidInput(f"not a dunning task: {error.errors()[0]['msg']}") from error
    return run_task(task)


imported()
