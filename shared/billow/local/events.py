"""Events locally: DynamoDB Local's stream feeds the very publisher handler Lambda runs, and a bus
in this process routes what it puts by the rules CDK synthesizes, to in-process consumers.

- `StreamPoller` reads the table's stream (DescribeStream, GetShardIterator, GetRecords against
  DynamoDB Local), hands the records to `events_publisher.handler.lambda_handler` in the shape an
  event source mapping gives them, and on a batch item failure reads again from the first failed
  record, as the mapping does.
- `LocalBus` matches each event against every rule's event pattern (`matches`: EventBridge's
  pattern language, for the operators listed there) and calls each target of every rule that
  matches. Its rules are `billow.gateways.events.CONSUMER_RULES`, the patterns CDK synthesizes;
  `rules_from_template` reads them back from a synthesized template. Tests `subscribe` a callable
  to a rule; the local stack subscribes the example consumer's handler, called with an SQS-shaped
  event, as its queue would, and subscribes `file_target` to every event, writing every event to a
  file (`make run`: .billow/events.jsonl).
- `sqs_target` is a rule's queue: a message its consumer fails on (a batch item failure, or the
  handler raising) is received again, the same message with its receive count up, up to
  `CONSUMER_RECEIVES` times (the queues' `maxReceiveCount`), after a short pause instead of the
  visibility timeout; then it is dead-lettered: logged as an error and kept in the bus's
  `undelivered` list, the local dead-letter queue.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from billow.gateways.events import CONSUMER_RECEIVES, CONSUMER_RULES, Entry
from billow.local.lambda_runtime import invoke

log = logging.getLogger(__name__)

PUBLISHER = "events_publisher.handler.lambda_handler"
CONSUMER = "events_consumer.handler.lambda_handler"
Target = Callable[[dict[str, Any]], None]

# -- EventBridge event patterns -------------------------------------------------------------------
_MISSING: Any = object()


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether `event` matches an EventBridge event pattern: every field of the pattern matches
    (nested objects recursively); a list matches when any of its values or operators does. The
    operators: prefix, suffix, equals-ignore-case, anything-but (values, or a prefix), exists,
    numeric, wildcard; an unknown operator is refused rather than ignored."""
    for key, rule in pattern.items():
        value = event.get(key, _MISSING)
        if isinstance(rule, Mapping):
            if not isinstance(value, Mapping) or not matches(rule, value):
                return False
        elif isinstance(rule, list):
            if not any(_matches_one(r, value) for r in rule):
                return False
        else:
            raise ValueError(f"a pattern field holds an object or a list, not {rule!r}")
    return True


def _matches_one(rule: Any, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    present = [v for v in values if v is not _MISSING]
    if not isinstance(rule, Mapping):
        return any(v == rule and type(v) is type(rule) for v in present)
    ((name, arg),) = rule.items()
    if name == "exists":
        return (value is not _MISSING) is bool(arg)
    strings = [v for v in present if isinstance(v, str)]
    if name == "prefix":
        if isinstance(arg, Mapping):  # {"prefix": {"equals-ignore-case": "x"}}
            return any(v.lower().startswith(arg["equals-ignore-case"].lower()) for v in strings)
        return any(v.startswith(arg) for v in strings)
    if name == "suffix":
        if isinstance(arg, Mapping):
            return any(v.lower().endswith(arg["equals-ignore-case"].lower()) for v in strings)
        return any(v.endswith(arg) for v in strings)
    if name == "equals-ignore-case":
        return any(v.lower() == arg.lower() for v in strings)
    if name == "wildcard":
        return any(fnmatch.fnmatchcase(v, arg.replace("[", "[[]")) for v in strings)
    if name == "anything-but":
        if not present:
            return False
        if isinstance(arg, Mapping):
            return not any(_matches_one(arg, v) for v in present)
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(v == x for v in present for x in excluded)
    if name == "numeric":
        numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
        return any(_numeric(arg, n) for n in numbers)
    raise ValueError(f"event pattern operator {name!r} is not supported locally")


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _numeric(conditions: Sequence[Any], value: float) -> bool:
    pairs = zip(conditions[::2], conditions[1::2], strict=True)
    return all(_COMPARE[op](value, bound) for op, bound in pairs)


def rules_from_template(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Rule name -> event pattern, of every AWS::Events::Rule with a pattern in a synthesized template."""
    return {
        resource["Properties"]["Name"]: resource["Properties"]["EventPattern"]
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::Events::Rule" and "EventPattern" in resource.get("Properties", {})
    }


# -- the bus --------------------------------------------------------------------------------------
def envelope(entry: Entry) -> dict[str, Any]:
    """The event EventBridge delivers for a PutEvents entry."""
    time: datetime = entry.get("Time") or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": "000000000000",
        "time": time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": list(entry.get("Resources", [])),
        "detail": json.loads(entry["Detail"]),
    }


class LocalBus:
    """Routes each event to the targets of every rule whose pattern it matches. A target that
    raises (an `sqs_target` after every receive of its message failed) leaves the event in
    `undelivered`, the local dead-letter queue, logged as an error."""

    def __init__(self, rules: Mapping[str, Mapping[str, Any]]) -> None:
        self.rules = {name: dict(pattern) for name, pattern in rules.items()}
        self._targets: dict[str | None, list[Target]] = {None: [], **{name: [] for name in self.rules}}
        self._lock = threading.Lock()
        self.undelivered: list[tuple[str | None, dict[str, Any], str]] = []
        """(rule, event, why) of each event a target could not take: what its dead-letter queue holds."""

    def subscribe(self, rule: str | None, target: Target) -> Callable[[], None]:
        """Call `target` with every event `rule` matches (with every event put, once, for None);
        returns the unsubscribe."""
        with self._lock:
            self._targets[rule].append(target)

        def unsubscribe() -> None:
            with self._lock:
                self._targets[rule].remove(target)

        return unsubscribe

    def put(self, entries: Sequence[Entry]) -> list[Entry]:
        for entry in entries:
            event = envelope(entry)
            with self._lock:
                names = [None, *(n for n, p in self.rules.items() if matches(p, event))]
                routed = [(n, list(self._targets[n])) for n in names]
            for rule, targets in routed:
                for target in targets:
                    try:
                        target(event)
                    except Exception as error:
                        log.error("local consumer of rule %s: %s dead-lettered: %s", rule, event["detail-type"], error)
                        self.undelivered.append((rule, event, repr(error)))
        return []


_BUS: LocalBus | None = None
_BUS_LOCK = threading.Lock()


def local_bus() -> LocalBus:
    """This process's bus, routing by `CONSUMER_RULES`."""
    global _BUS
    with _BUS_LOCK:
        if _BUS is None:
            _BUS = LocalBus(CONSUMER_RULES)
        return _BUS


class LocalBusClient:
    """The bus port locally (`BILLOW_EVENT_BUS_CLIENT`): puts on this process's `local_bus()`."""

    def put(self, entries: Sequence[Entry]) -> list[Entry]:
        return local_bus().put(entries)


def sqs_message(event: dict[str, Any], *, message_id: str | None = None, receives: int = 1) -> dict[str, Any]:
    """The SQS record a rule's queue hands its function for one event (received `receives` times)."""
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": "local",
        "body": json.dumps(event),
        "attributes": {"ApproximateReceiveCount": str(receives)},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:local",
        "awsRegion": "us-east-1",
    }


REDELIVERY_PAUSE = 0.05
"""Seconds before a failed message is received again locally, doubled each time (SQS waits for the
queue's visibility timeout: 6 x the consumer's timeout)."""


class DeadLettered(RuntimeError):
    """Every receive of a message failed: SQS would move it to the consumer's dead-letter queue."""


def sqs_target(
    handler: str = CONSUMER, *, receives: int = CONSUMER_RECEIVES, pause: float = REDELIVERY_PAUSE
) -> Target:
    """A target calling a consumer's handler as its SQS queue would: one message per event. A
    reported batch item failure, or the handler raising (on AWS the whole batch then fails), has the
    same message (same id, receive count up) received again after a short pause, up to `receives`
    times; then `DeadLettered` is raised (the bus keeps the event in `undelivered`)."""

    def deliver(event: dict[str, Any]) -> None:
        message_id = str(uuid.uuid4())
        why = ""
        for receive in range(1, receives + 1):
            if receive > 1:
                time.sleep(pause * 2 ** (receive - 2))
            message = sqs_message(event, message_id=message_id, receives=receive)
            try:
                answer = invoke(handler, {"Records": [message]})
            except Exception as error:
                why = f"{type(error).__name__}: {error}"
            else:
                if not answer or not answer.get("batchItemFailures"):
                    return
                why = "a batch item failure"
            log.warning("%s failed on %s (receive %d of %d): %s", handler, event["detail-type"], receive, receives, why)
        raise DeadLettered(f"{handler} failed on {event['detail-type']} {receives} times; last: {why}")

    return deliver


def file_target(path: Path) -> Target:
    """A target appending each event, whole (EventBridge's envelope, Billow's `detail` in it), as
    one JSON line to `path`: what `make run` writes for `tail -f` (docs/events.md)."""
    lock = threading.Lock()

    def write(event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        with lock, path.open("a", encoding="utf-8") as out:
            out.write(line)

    return write


# -- the stream -----------------------------------------------------------------------------------
def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record in the shape Lambda's event source mapping hands it to a function."""
    stream = dict(record["dynamodb"])
    created = stream.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        stream["ApproximateCreationDateTime"] = created.timestamp()
    return {**{k: v for k, v in record.items() if k != "dynamodb"}, "dynamodb": stream, "eventSourceARN": stream_arn}


class StreamPoller:
    """Reads the table's stream from where it left off and feeds the publisher handler."""

    def __init__(self, endpoint: str, table_name: str, *, handler: str = PUBLISHER, batch_size: int = 100) -> None:
        credentials = {"region_name": "us-east-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, **credentials)  # type: ignore[call-overload]
        self.stream_arn: str = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._streams = boto3.client("dynamodbstreams", endpoint_url=endpoint, **credentials)  # type: ignore[call-overload]
        self._handler = handler
        self._batch_size = batch_size
        self._positions: dict[str, str] = {}  # shard -> last sequence number handled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def _shards(self) -> list[str]:
        shards: list[str] = []
        start: dict[str, str] = {}
        while True:
            description = self._streams.describe_stream(StreamArn=self.stream_arn, **start)["StreamDescription"]
            shards += [s["ShardId"] for s in description["Shards"]]
            if not description.get("LastEvaluatedShardId"):
                return shards
            start = {"ExclusiveStartShardId": description["LastEvaluatedShardId"]}

    def _unread(self, shard: str) -> list[dict[str, Any]]:
        after = self._positions.get(shard)
        where = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator = self._streams.get_shard_iterator(StreamArn=self.stream_arn, ShardId=shard, **where)["ShardIterator"]
        records: list[dict[str, Any]] = []
        while iterator:
            page = self._streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            records += page["Records"]
            iterator = page.get("NextShardIterator")
        return records

    def poll(self, *, publish: bool = True) -> int:
        """Hand every record not handled yet to the publisher, in stream order, in batches; a
        batch item failure stops the shard at the first failed record (read again next time).
        Returns how many records were handled."""
        handled = 0
        with self._lock:
            for shard in self._shards():
                records = self._unread(shard)
                for start in range(0, len(records), self._batch_size):
                    batch = records[start : start + self._batch_size]
                    failed = self._publish(batch) if publish else None
                    done = (
                        batch
                        if failed is None
                        else batch[: [r["dynamodb"]["SequenceNumber"] for r in batch].index(failed)]
                    )
                    if done:
                        self._positions[shard] = done[-1]["dynamodb"]["SequenceNumber"]
                    handled += len(done)
                    if failed is not None:
                        self.failures += 1
                        break
        return handled

    def _publish(self, batch: list[dict[str, Any]]) -> str | None:
        """The sequence number of the first record the publisher reported failed, if any."""
        answer = invoke(self._handler, {"Records": [lambda_record(r, self.stream_arn) for r in batch]})
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        return next((r["dynamodb"]["SequenceNumber"] for r in batch if r["dynamodb"]["SequenceNumber"] in failed), None)

    def drain(self) -> None:
        """Publish everything the stream holds now (tests call this after a change)."""
        while self.poll():
            pass

    def skip(self) -> None:
        """Mark everything the stream holds now as handled, publishing nothing."""
        self.poll(publish=False)

    def start(self, interval: float = 0.5) -> None:
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # keep polling: DynamoDB Local may be stopping
                    log.exception("stream poller")

        self._thread = threading.Thread(target=run, name="billow-stream-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
