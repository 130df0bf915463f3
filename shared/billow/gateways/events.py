"""The "put events on the bus" port, its EventBridge implementation, and the consumer rules.

On AWS the events publisher calls `PutEvents` on the bus `billow-<stage>`; locally
`billow.local.events.LocalBusClient` routes them in-process by the same rules. `BILLOW_EVENT_BUS_CLIENT`
names the implementation (`module:Class`; the default is EventBridge), so no handler imports the
local stack. boto3 is imported at the first put, not at import (cold start).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

from billow.services.events import SOURCE, Event

Entry = dict[str, Any]

MAX_BATCH = 10
"""Entries per PutEvents request (EventBridge's limit)."""
PUT_ATTEMPTS = 4
"""Tries per entry before the stream record is reported failed (and retried by the stream)."""
BUS_ENV = "BILLOW_EVENT_BUS"

DUNNING_OPENS = ("payment.failed", "invoice.overdue")
"""Events that open the contact's dunning case in the invoice's currency (functions/dunning)."""
DUNNING_WAKES = (
    "payment.succeeded",
    "payment.received",
    "invoice.paid",
    "invoice.voided",
    "invoice.uncollectible",
    "credit_note.applied",
    "payment_method.saved",
    "payment_method.default_changed",
    "subscription.payment_method_changed",
)
"""Events that can change a case's decision: they wake the contact's open cases."""
CONSUMER_RULES: dict[str, dict[str, Any]] = {
    "all-events": {"source": [SOURCE], "detail-type": [{"prefix": f"{SOURCE}."}]},
    "activation": {"source": [SOURCE], "detail-type": [f"{SOURCE}.invoice.paid"]},
    "invoice-issued": {"source": [SOURCE], "detail-type": [f"{SOURCE}.invoice.issued"]},
    "invoice-ended": {
        "source": [SOURCE],
        "detail-type": [f"{SOURCE}.invoice.voided", f"{SOURCE}.invoice.uncollectible"],
    },
    "dunning": {"source": [SOURCE], "detail-type": [f"{SOURCE}.{t}" for t in (*DUNNING_OPENS, *DUNNING_WAKES)]},
    "low-balance": {"source": [SOURCE], "detail-type": [f"{SOURCE}.credits.low_balance"]},
}
"""Rule name -> event pattern. CDK synthesizes one AWS::Events::Rule per entry (each feeding an
SQS queue with a dead-letter queue, infra/billow_infra/events.py); the local bus routes by the
same patterns (tests/infra asserts the synthesized ones equal these)."""
EXAMPLE_CONSUMER = "events-consumer"
RULE_CONSUMERS: dict[str, str] = {
    "activation": "activation",
    "invoice-issued": "collector",
    "invoice-ended": "collector",  # ends the live attempts of an invoice voided or written off
    "dunning": "dunning",  # opens and wakes dunning cases (functions/dunning)
    "low-balance": "collector",  # buys the auto top-up's pack and charges it
}
"""Rule name -> the concern of the function its queue feeds (`billow.gateways.invoke.handler_of`
names its handler); a rule not listed feeds the example consumer."""

COLLECTOR_CONCURRENCY = 10
"""Collectors charging at once. One collection makes 2 rail requests (create, confirm), one after
the other, each at least ~100 ms: at most 10 requests/s per collector, so 10 collectors stay within
Stripe's live limit of 100 requests/s per account even at its fastest (docs/payments.md has the
arithmetic, and the test-mode case)."""
ENDED_CONCURRENCY = 2
"""Collectors ending attempts of voided or written-off invoices at once (the `invoice-ended`
queue): rare events, each at most 2 rail requests (read, cancel) per live attempt; on top of the
collectors' 10, at most 2 x 10 more requests/s (docs/payments.md)."""
MAX_CONCURRENCY: dict[str, int] = {"collector": COLLECTOR_CONCURRENCY, "invoice-ended": ENDED_CONCURRENCY}
"""Rule or concern -> at most this many instances read that rule's queue (or each queue of that
concern) at once (the SQS event source's maximum concurrency, 2 to 1000; a rule's own entry comes
first); neither listed: as Lambda scales."""


def max_concurrency(rule: str) -> int | None:
    """The maximum concurrency of the consumer reading `rule`'s queue (`MAX_CONCURRENCY`)."""
    return MAX_CONCURRENCY.get(rule, MAX_CONCURRENCY.get(consumer_of(rule)))


CONSUMER_RECEIVES = 5
"""Receives of one message by its consumer before it moves to the consumer's dead-letter queue (the
queues' `maxReceiveCount`, infra/billow_infra/events.py; the local bus redelivers as many times,
billow.local.events.sqs_target)."""


def consumer_of(rule: str) -> str:
    """The concern of the function that consumes `rule`'s queue."""
    return RULE_CONSUMERS.get(rule, EXAMPLE_CONSUMER)


class EventBusClient(Protocol):
    def put(self, entries: Sequence[Entry]) -> list[Entry]:
        """Put up to `MAX_BATCH` entries; returns those that were not accepted."""
        ...


class PublishFailed(Exception):
    """Some events could not be put after every attempt: the stream record is retried."""


def entry(event: Event, bus_name: str) -> Entry:
    return {
        "Source": SOURCE,
        "DetailType": event.detail_type,
        "Detail": json.dumps(event.detail(), separators=(",", ":"), sort_keys=True),
        "Time": event.time,
        "Resources": [],
        "EventBusName": bus_name,
    }


def publish(client: EventBusClient, events: Sequence[Event], bus_name: str | None = None) -> None:
    """Put every event, in order, in batches of `MAX_BATCH`; entries refused (throttling, an
    internal error) are put again with backoff; raises `PublishFailed` when some never were."""
    name = bus_name or os.environ.get(BUS_ENV, "default")
    entries = [entry(e, name) for e in events]
    for start in range(0, len(entries), MAX_BATCH):
        pending = entries[start : start + MAX_BATCH]
        for attempt in range(PUT_ATTEMPTS):
            pending = client.put(pending)
            if not pending or attempt == PUT_ATTEMPTS - 1:
                break
            time.sleep(0.05 * 2**attempt)
        if pending:
            raise PublishFailed(f"{len(pending)} event(s) not accepted by the bus {name}")


class EventBridgeClient:
    def __init__(self) -> None:
        self._client: Any = None

    def put(self, entries: Sequence[Entry]) -> list[Entry]:
        if self._client is None:
            import boto3

            self._client = boto3.client("events")
        answer = self._client.put_events(Entries=list(entries))
        return [e for e, result in zip(entries, answer["Entries"], strict=True) if result.get("ErrorCode")]


class EnvironmentBusClient:
    """The implementation `BILLOW_EVENT_BUS_CLIENT` names, chosen at the first put."""

    def __init__(self) -> None:
        self._chosen: EventBusClient | None = None

    def put(self, entries: Sequence[Entry]) -> list[Entry]:
        if self._chosen is None:
            spec = os.environ.get("BILLOW_EVENT_BUS_CLIENT", "")
            module, _, name = spec.partition(":")
            self._chosen = getattr(importlib.import_module(module), name)() if spec else EventBridgeClient()
        assert self._chosen is not None
        return self._chosen.put(entries)
