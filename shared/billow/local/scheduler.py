"""EventBridge schedules do not fire locally; this thread fires the scheduled handlers instead: the
billing run once at start, then whenever the UTC day turns; the sweep (every group of shards) at
start, then every `SWEEP_EVERY`; the dunning wake at start, then every `WAKE_EVERY`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from billow.gateways.flows import DUNNING, WAKE_EVERY
from billow.gateways.invoke import handler_of
from billow.local.lambda_runtime import invoke
from billow.services.ports import DUE_SHARDS
from billow.services.sweep import SWEEP_EVERY, SWEEP_GROUPS


def scheduled_event(instant: datetime, rule: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:000000000000:rule/{rule}"],
        "detail": {},
    }


BILLING_RUN = "billing_run.handler.lambda_handler"


def run_billing(instant: datetime, shards: int = DUE_SHARDS) -> dict[str, Any]:
    """What the billing-run state machine does on AWS, step for step: each shard page by page
    (the distributed map and its "ShardDone?" loop), then the summary. A run with subscriptions
    that could not be billed is reported, not raised: the scheduler keeps running."""
    time = scheduled_event(instant, "billow-daily-billing")["time"]
    results = []
    for shard in range(shards):
        event: dict[str, Any] = {"time": time, "shard": shard}
        while not (event := invoke(BILLING_RUN, event))["done"]:
            pass
        results.append(event["totals"])
    try:
        summary: dict[str, Any] = invoke(BILLING_RUN, {"time": time, "results": results})
    except Exception as error:
        return {"time": time, "error": f"{type(error).__name__}: {error}"}
    return summary


SWEEPER = "sweeper.handler.lambda_handler"


def run_sweep(instant: datetime) -> list[dict[str, Any]]:
    """What the sweep schedule does on AWS: the sweeper invoked once per group of shards (one after
    the other here), with the schedule's time. A sweep that raised is reported, not raised."""
    time = scheduled_event(instant, "billow-sweep")["time"]
    results: list[dict[str, Any]] = []
    for group in range(SWEEP_GROUPS):
        try:
            results.append(invoke(SWEEPER, {"time": time, "group": group, "groups": SWEEP_GROUPS}))
        except Exception as error:
            results.append({"time": time, "group": group, "error": f"{type(error).__name__}: {error}"})
    return results


DUNNING_HANDLER = handler_of(DUNNING)


def run_dunning_wake(instant: datetime) -> dict[str, Any]:
    """What the hourly dunning schedule does on AWS: the dunning function invoked with EventBridge's
    "Scheduled Event". A wake that raised is reported, not raised."""
    event = scheduled_event(instant, "billow-dunning-wake")
    try:
        result: dict[str, Any] = invoke(DUNNING_HANDLER, event) or {}
    except Exception as error:
        return {"time": event["time"], "error": f"{type(error).__name__}: {error}"}
    return result


class DailyScheduler:
    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC), poll_seconds: float = 30.0) -> None:
        self._now = now
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._last_day: date | None = None
        self._last_sweep: datetime | None = None
        self._last_wake: datetime | None = None
        self.runs: list[dict[str, Any]] = []
        self.sweeps: list[list[dict[str, Any]]] = []
        self.wakes: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._loop, name="billow-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def tick(self) -> None:
        instant = self._now()
        if instant.date() != self._last_day:
            self._last_day = instant.date()
            self.runs.append(run_billing(instant))
        if self._last_sweep is None or instant - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = instant
            self.sweeps.append(run_sweep(instant))
        if self._last_wake is None or instant - self._last_wake >= WAKE_EVERY:
            self._last_wake = instant
            self.wakes.append(run_dunning_wake(instant))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self._poll)
