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


def test_the_dunning_wake_runs_at_start_then_every_hour_of_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the hourly EventBridge schedule does on AWS: the dunning function, with a Scheduled Event."""
    from billow.gateways.flows import WAKE_EVERY

    invoked: list[tuple[str, dict[str, Any]]] = []

    def invoke(handler: str, event: dict[str, Any]) -> dict[str, Any]:
        invoked.append((handler, event))
        if handler == scheduler.DUNNING_HANDLER and [h for h, _ in invoked].count(handler) == 3:
            raise RuntimeError("a wake that fails is reported, the scheduler goes on")
        return {"done": True, "totals": {}} if "shard" in event else {"woken": 0}

    monkeypatch.setattr(scheduler, "invoke", invoke)
    monkeypatch.setattr(scheduler, "DUE_SHARDS", 1)
    clock = [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)]
    runner = scheduler.DailyScheduler(now=lambda: clock[0])
    for step in (timedelta(0), WAKE_EVERY - timedelta(minutes=1), timedelta(minutes=1), WAKE_EVERY):
        clock[0] += step
        runner.tick()
    wakes = [event for handler, event in invoked if handler == "dunning.handler.lambda_handler"]
    assert [(e["detail-type"], e["source"], e["time"]) for e in wakes] == [
        ("Scheduled Event", "aws.events", "2026-03-01T09:00:00Z"),
        ("Scheduled Event", "aws.events", "2026-03-01T10:00:00Z"),
        ("Scheduled Event", "aws.events", "2026-03-01T11:00:00Z"),
    ]
    assert runner.wakes[:2] == [{"woken": 0}, {"woken": 0}]
    assert runner.wakes[2]["error"].startswith("RuntimeError")
