"""The sweeper: takes payment attempts left live and card refunds left pending on to the end
(billow.services.sweep, docs/payments.md "Sweep").

Fired every `SWEEP_EVERY` by an EventBridge schedule with one target per group of shards of the
sweep index (`{"time", "group", "groups"}`; infra/billow_infra/sweep.py), locally by the scheduler
(billow.local.scheduler). Each invocation sweeps its group's shards, a page of `PAGE_SIZE` at a
time, and stops after `MAX_ENTRIES` entries or when little time is left: what remains waits for
the next run (its first shard rotates with the run's time, so no shard waits behind the others).
"""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

from typing import Any

import runtime
from aws_lambda_powertools.utilities.parser import BaseModel, event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.services.ports import DUE_SHARDS
from billow.services.sweep import SWEEP_EVERY, SweepTotals, sweep_page
from pydantic import AwareDatetime, ConfigDict, Field, model_validator
from runtime import imported, invocation, logger

PAGE_SIZE = 25
"""Entries read per query of a shard."""
MAX_ENTRIES = 500
"""Entries resumed per invocation at most (each a few DynamoDB and rail requests)."""
TIME_LEFT_MS = 30_000
"""Stop taking pages when less than this is left of the invocation."""


class SweepEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: AwareDatetime = Field(description="the schedule's time: entries older than it less the grace are swept")
    group: int = Field(default=0, ge=0, lt=DUE_SHARDS)
    groups: int = Field(default=1, ge=1, le=DUE_SHARDS, description="shard s is swept by group s % groups")

    @model_validator(mode="after")
    def _group_in_groups(self) -> SweepEvent:
        if self.group >= self.groups:
            raise ValueError("group is one of 0..groups-1")
        return self


def shards_of(event: SweepEvent) -> list[int]:
    """The group's shards, starting from one that moves on with every run."""
    shards = list(range(event.group, DUE_SHARDS, event.groups))
    start = int(event.time.timestamp() // SWEEP_EVERY.total_seconds()) % len(shards)
    return shards[start:] + shards[:start]


@logger.inject_lambda_context(log_event=False)
@event_parser(model=SweepEvent)
def lambda_handler(event: SweepEvent, context: LambdaContext) -> dict[str, Any]:
    invocation()
    totals = SweepTotals()
    complete = True
    for shard in shards_of(event):
        cursor: str | None = None
        while True:
            if totals.taken + totals.failed >= MAX_ENTRIES or context.get_remaining_time_in_millis() < TIME_LEFT_MS:
                complete = False
                break
            cursor = sweep_page(
                runtime.store,
                runtime.payment_gateway,
                shard,
                now=event.time,
                clock=runtime.clock,
                limit=PAGE_SIZE,
                cursor=cursor,
                totals=totals,
            )
            if cursor is None:
                break
        if not complete:
            break
    if totals.failed:
        logger.warning("sweep: entries left for the next run", extra={"errors": totals.errors[:50]})
    summary = {"taken": totals.taken, "failed": totals.failed, "no_rail": totals.no_rail, "complete": complete}
    logger.info("sweep finished", extra={"time": event.time.isoformat(), "group": event.group, **summary})
    return {"time": event.time.isoformat(), "group": event.group, **summary}


imported()
