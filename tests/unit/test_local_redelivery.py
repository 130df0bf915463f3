"""The local bus delivers to a consumer as its SQS queue does: a message the consumer fails on is
received again (the same message, its receive count up), up to the queue's maxReceiveCount, then
dead-lettered where tests and the log can see it (billow.local.events.sqs_target)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from billow.gateways.events import CONSUMER_RECEIVES, CONSUMER_RULES
from billow.local.events import LocalBus, sqs_target

HANDLER = f"{__name__}.lambda_handler"

receipts: list[tuple[str, str, str]] = []
"""(message id, receive count, event id) of every message the consumer below was handed."""
applied: Counter[str] = Counter()
"""Event id -> times the consumer applied it."""
fail_first: dict[str, int] = {}
"""Event id -> how many receives of it fail (each failing one way or the other, in turn)."""


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """A consumer that fails the first receives of an event: by a batch item failure, then by
    raising (on AWS the whole batch fails), alternately."""
    (record,) = event["Records"]
    body = json.loads(record["body"])
    receives = int(record["attributes"]["ApproximateReceiveCount"])
    event_id = body["detail"]["id"]
    receipts.append((record["messageId"], record["attributes"]["ApproximateReceiveCount"], event_id))
    if receives <= fail_first.get(event_id, 0):
        if receives % 2:
            return {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
        raise RuntimeError("the consumer died")
    applied[event_id] += 1
    return {"batchItemFailures": []}


@pytest.fixture
def bus() -> LocalBus:
    receipts.clear()
    applied.clear()
    fail_first.clear()
    bus = LocalBus(CONSUMER_RULES)
    bus.subscribe("invoice-issued", sqs_target(HANDLER))
    return bus


def put(bus: LocalBus, invoice_id: str) -> str:
    bus.put([{"Source": "billow", "DetailType": "billow.invoice.issued", "Detail": json.dumps({"id": invoice_id})}])
    return invoice_id


def event_ids(bus: LocalBus) -> list[str]:
    return [event["detail"]["id"] for _, event, _ in bus.undelivered]


def test_a_message_failed_once_is_received_again_and_applied_once(bus: LocalBus) -> None:
    fail_first["inv_1"] = 1
    put(bus, "inv_1")
    assert applied == {"inv_1": 1}
    (first, second) = [(m, n) for m, n, e in receipts if e == "inv_1"]
    assert first[0] == second[0], "the same message is received again, as SQS redelivers it"
    assert (first[1], second[1]) == ("1", "2")
    assert bus.undelivered == []


def test_a_consumer_that_raises_gets_the_message_again(bus: LocalBus) -> None:
    fail_first["inv_2"] = 2  # a batch item failure, then the handler raising, then success
    put(bus, "inv_2")
    assert applied == {"inv_2": 1}
    assert [n for _, n, _ in receipts] == ["1", "2", "3"]
    assert bus.undelivered == []


def test_a_message_that_always_fails_is_dead_lettered_after_max_receives(
    bus: LocalBus, caplog: pytest.LogCaptureFixture
) -> None:
    fail_first["inv_3"] = 1000
    put(bus, "inv_3")
    fail_first["inv_4"] = 0
    put(bus, "inv_4")  # the next message is delivered as usual
    assert applied == {"inv_4": 1}
    assert [n for _, n, e in receipts if e == "inv_3"] == [str(n) for n in range(1, CONSUMER_RECEIVES + 1)]
    assert event_ids(bus) == ["inv_3"]
    (rule, _, why) = bus.undelivered[0]
    assert rule == "invoice-issued" and f"{CONSUMER_RECEIVES} times" in why
    assert any(r.levelname == "ERROR" and "dead-lettered" in r.getMessage() for r in caplog.records)
