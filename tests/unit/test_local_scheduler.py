"""The local scheduler fires what EventBridge schedules would: the billing run when the UTC day
turns, the sweep every `SWEEP_EVERY` of its clock, each group of shards (billow.local.scheduler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billow.local import scheduler
from billow.services.sweep import SWEEP_EVERY, SWEEP_GROUPS


def test_the_sweep_runs_at_start_then_every_sweep_period_of_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    invoked: list[tuple[str, dict[str, Any]]] = []

    def invoke(handler: str, event: dict[str, Any]) -> dict[str, Any]:
        invoked.append((handler, event))
        return {"done": True, "totals": {}} if "shard" in event else {"taken": 0}

    monkeypatch.setattr(scheduler, "invoke", invoke)
    monkeypatch.setattr(scheduler, "DUE_SHARDS", 1)
    clock = [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)]
    runner = scheduler.DailyScheduler(now=lambda: clock[0])
    for step in (timedelta(0), SWEEP_EVERY - timedelta(minutes=1), timedelta(minutes=1), SWEEP_EVERY):
        clock[0] += step
        runner.tick()
    sweeps = [event for handler, event in invoked if handler == scheduler.SWEEPER]
    times = sorted({event["time"] for event in sweeps})
    assert times == ["2026-03-01T09:00:00Z", "2026-03-01T09:15:00Z", "2026-03-01T09:30:00Z"]
    groups = [(e["group"], e["groups"]) for e in sweeps[:SWEEP_GROUPS]]
    assert groups == [(g, SWEEP_GROUPS) for g in range(SWEEP_GROUPS)]
    assert len(runner.sweeps) == 3 and len(runner.runs) == 1  # billed once: the day did not turn
