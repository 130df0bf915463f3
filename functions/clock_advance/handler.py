"""Bills a test clock's advance off the request path (invoked asynchronously by the API, see
billow.services.time_travel). When little time is left it hands the same event to a fresh
invocation of itself and stops: each invocation is a bounded step, and billing is idempotent per
period, so a retried, duplicated or resumed event bills nothing twice."""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

from typing import Any, Literal

import runtime
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.gateways.invoke import CLOCK_ADVANCE
from billow.services import dunning, time_travel
from billow.services.tenants import tenant_context
from pydantic import AwareDatetime, ConfigDict, Field
from runtime import clock, imported, invocation, invoker, logger, metrics, numbers, store, tracer

TIME_LEFT_MS = 60_000
"""Start no further subscription with less than this left; continue in a new invocation."""


class ClockAdvanceEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: str = Field(min_length=1, max_length=200)
    mode: Literal["test"] = Field(description="test clocks exist only in test mode")
    contact_id: str = Field(min_length=1, max_length=64)
    to: AwareDatetime


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
@event_parser(model=ClockAdvanceEvent)
def lambda_handler(event: ClockAdvanceEvent, context: LambdaContext) -> dict[str, Any]:
    invocation()
    ctx = tenant_context(store, event.tenant_id, event.mode)
    run = time_travel.run_advance(
        store,
        ctx,
        event.contact_id,
        event.to,
        numbers,
        keep_going=lambda: context.get_remaining_time_in_millis() >= TIME_LEFT_MS,
        wake=lambda: dunning.wake_contact(store, ctx, event.contact_id, lambda: runtime.flows, clock=clock),
    )
    if not run.done:
        invoker.invoke_async(CLOCK_ADVANCE, event.model_dump(mode="json"))
    logger.info("test clock advance step", extra={"done": run.done, "invoices": len(run.invoices)})
    return {"done": run.done, "invoices_created": len(run.invoices)}


imported()
