"""Counting what DynamoDB is asked and charges: requests and consumed capacity units, per
operation, while a `measured()` block runs (the benchmarks' figures; docs/scale.md).

Every request pynamodb sends asks for `ReturnConsumedCapacity: TOTAL`; the count reads the
`ConsumedCapacity` of each answer. A conditional write whose condition fails answers an error,
without `ConsumedCapacity`, although DynamoDB bills it (at least one write unit): those are counted
apart (`failed_conditions`), and `write_units` adds one per failure (a usage record is < 1 KB).
A cancelled transaction (TransactionCanceledException: a condition of one of its items failed, or
it collided with another transaction on an item) is counted apart too (`cancelled`, by the reasons
DynamoDB gave), and adds nothing to `write_units`: what AWS bills for one is not stated in the
pages checked (docs/scale.md, "Credits")."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from billow.storage.models import connection

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


@dataclass
class Capacity:
    requests: Counter[str] = field(default_factory=Counter)
    """Requests per operation (PutItem, Query...)."""
    consumed: Counter[str] = field(default_factory=Counter)
    """Capacity units DynamoDB reported per operation."""
    failed_conditions: int = 0
    cancelled: Counter[str] = field(default_factory=Counter)
    """Cancelled transactions by cancellation reason (`ConditionalCheckFailed`, `TransactionConflict`),
    each counted once under the first reason that is not `None`."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def cancelled_transactions(self) -> int:
        return sum(self.cancelled.values())

    @property
    def write_units(self) -> float:
        reported = sum(units for operation, units in self.consumed.items() if operation in WRITES)
        return reported + self.failed_conditions

    @property
    def read_units(self) -> float:
        return sum(units for operation, units in self.consumed.items() if operation not in WRITES)

    def note(self, operation: str, parsed: dict[str, Any]) -> None:
        consumed = parsed.get("ConsumedCapacity")
        reports = consumed if isinstance(consumed, list) else [consumed] if isinstance(consumed, dict) else []
        units = sum(float(r.get("CapacityUnits") or 0) for r in reports)
        code = parsed.get("Error", {}).get("Code")
        failed = code == "ConditionalCheckFailedException"
        reason = None
        if code == "TransactionCanceledException":
            codes = [r.get("Code") for r in parsed.get("CancellationReasons") or () if isinstance(r, dict)]
            reason = next((c for c in codes if c and c != "None"), "unknown")
        with self._lock:
            self.requests[operation] += 1
            self.consumed[operation] += units  # type: ignore[assignment]  # units are fractional
            self.failed_conditions += failed
            if reason is not None:
                self.cancelled[reason] += 1


@contextmanager
def measured() -> Iterator[Capacity]:
    """Count every DynamoDB request the models send (on any thread) until the block ends."""
    capacity = Capacity()

    def after_call(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        capacity.note(str(model.name), parsed)

    events = connection().client.meta.events
    events.register("after-call.dynamodb", after_call, unique_id=f"billow-capacity-{id(capacity)}")
    try:
        yield capacity
    finally:
        events.unregister("after-call.dynamodb", unique_id=f"billow-capacity-{id(capacity)}")
