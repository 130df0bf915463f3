"""Advancing a test clock as an API client does: each advance answers 202 with the clock
`advancing` and bills in the background, so the client polls the clock until it is `ready`; and
one advance reaches at most the clock's `advance_limit`, so a longer trip is several advances.
Used by the demo data and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

Call = Callable[[str, str, "dict[str, Any] | None"], "tuple[int, Any]"]
"""(method, path, JSON body or None) -> (status, JSON reply)"""


class ClockError(RuntimeError):
    pass


def wait_until_ready(call: Call, contact_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """The contact's test clock once it is `ready` (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        status, clock = call("GET", f"/contacts/{contact_id}/test-clock", None)
        if status != 200:
            raise ClockError(f"GET test-clock -> {status} {clock}")
        if clock["status"] == "ready":
            return dict(clock)
        if time.monotonic() > deadline:
            raise ClockError(f"the test clock of {contact_id} is still advancing after {timeout} s: {clock}")
        time.sleep(0.05)


def advance_clock(call: Call, contact_id: str, to: datetime | str, *, timeout: float = 120.0) -> dict[str, Any]:
    """Advance the contact's test clock to `to` in as few advances as its bound allows, waiting for
    each to finish; returns the clock, ready."""
    target = to if isinstance(to, datetime) else datetime.fromisoformat(to)
    clock = wait_until_ready(call, contact_id, timeout=timeout)
    while True:
        step = min(target, datetime.fromisoformat(clock["advance_limit"]))
        status, reply = call("POST", f"/contacts/{contact_id}/test-clock/advance", {"to": step.isoformat()})
        if status != 202:
            raise ClockError(f"advance to {step.isoformat()} -> {status} {reply}")
        clock = wait_until_ready(call, contact_id, timeout=timeout)
        if step == target:
            return clock
