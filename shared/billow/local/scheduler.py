"""EventBridge schedules do not fire locally; this thread fires the scheduled handlers instead:
once at start, then whenever the UTC day turns."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from billow.local.lambda_runtime import invoke


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


def run_billing(instant: datetime) -> dict[str, Any]:
    result: dict[str, Any] = invoke(
        "billing_run.handler.lambda_handler", scheduled_event(instant, "billow-daily-billing")
    )
    return result


class DailyScheduler:
    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC), poll_seconds: float = 30.0) -> None:
        self._now = now
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._last_day: date | None = None
        self.runs: list[dict[str, Any]] = []
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

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self._poll)
