#!/usr/bin/env python3
"""Credits benchmark on DynamoDB Local, through the real API handler.

`POST /contacts/{id}/credits/consume` sent by separate processes (spawned, as separate Lambda
containers), the API handler called in-process with an API-key event as the local gateway builds
it (the authorizer's answer taken once per process: API Gateway caches it for 5 minutes), measured
side by side in one run:

1. ONE hot wallet consumed by 1, 4, 16... processes at once: consumes/s, and how many wallet
   transactions lost to a concurrent one (cancelled and retried: `change_wallet` reads again and
   retries after a random pause) and how many consumes were answered 503 (too busy; resent);
2. the same numbers of processes each consuming from its own wallet (one wallet per process);
3. one process on wallets holding 1, 10, 50 grants: the wallet item's size, the write units
   DynamoDB Local reports and what AWS bills per consume by its rules (transactional writes
   2 WRU per KB per item, index writes 1 per KB).

For each pass: the DynamoDB requests per consume (by operation) and the capacity units per
consume, counted by `billow.storage.capacity` as bench/usage_ingest.py counts them.

    .venv/bin/python bench/credits_consume.py [--processes 1,4,16] [--seconds 4] [--grants 1,10,50]

Wall time on Local is not AWS latency (Local is one Java process sharing this machine's cores with
every consuming process): use the request and capacity counts and the conflict rate, and the
arithmetic of docs/scale.md ("Credits"), the rates only to compare passes of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "functions")]

from billow.domain.credits import EntryKind, entry_id  # noqa: E402
from billow.local import dynamodb, gateway  # noqa: E402
from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.local.lambda_runtime import invoke, prepare_environment  # noqa: E402
from billow.local.stack import add_tenant  # noqa: E402
from billow.services.context import Scope  # noqa: E402
from billow.storage.capacity import WRITES, measured  # noqa: E402
from billow.storage.credits import ENTRY_PREFIX, WALLET_SK, ledger_pk  # noqa: E402
from billow.storage.models import configure  # noqa: E402
from billow.storage.repository import contact_pk  # noqa: E402

KEY = "bk_test_bench_credits"
TENANT = "bench"
ACTION = "sms"
GRANT_CREDITS = 10**12
"""Credits in each grant: no consume in a run comes near spending one."""
PORTS = (20001, 60999)
"""DynamoDB Local listens on a loopback port drawn from this range."""
CONSUME = "/contacts/{}/credits/consume"
WARM_UP = 3.0
"""Seconds of consumes, not reported, before the first pass: DynamoDB Local's JIT compiles meanwhile
(its CPU per consume falls about fourfold over its first thousand requests)."""


def headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}


def call(method: str, path: str, body: Any = None, context: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One request through the API handler, as the local gateway makes it; through the authorizer
    too unless its answer (`context`) is given, as API Gateway's authorizer cache gives it."""
    if context is None:
        context = gateway.authorize(method, path, headers())
        assert context is not None, "the API key was refused"
    text = None if body is None else json.dumps(body)
    result = invoke("api.handler.lambda_handler", gateway.api_gateway_event(method, path, headers(), text, context))
    return int(result["statusCode"]), json.loads(result["body"] or "null")


def point_at(table: str, endpoint: str) -> None:
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    prepare_environment()
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    os.environ["BILLOW_TABLE"], os.environ["BILLOW_DYNAMODB_ENDPOINT"] = table, endpoint


# -- the consuming processes ------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    label: str
    contact_id: str
    start_at: float
    """time.time() at which every process of the pass starts."""
    seconds: float


@dataclass
class Outcome:
    """What one process did in one pass."""

    booked: int = 0
    busy: int = 0
    """Consumes answered 503 (the wallet too busy after `MAX_ATTEMPTS` lost transactions): resent."""
    elapsed: float = 0.0
    cpu: float = 0.0
    """CPU seconds this process used (the handler, pynamodb, botocore; not DynamoDB Local's)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per booked consume, from its first send to its 201 (503s resent included)."""
    requests: Counter[str] = field(default_factory=Counter)
    consumed: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    failed_conditions: int = 0


def worker(table: str, endpoint: str, tasks: Queue[Task | None], results: Queue[Outcome | str]) -> None:
    """A process consuming as each task says until told to stop (None)."""
    try:
        point_at(table, endpoint)
        context = gateway.authorize("POST", CONSUME.format("c"), headers())
        assert context is not None, "the API key was refused"
        status, _ = call("GET", "/credits/prices", context=context)  # the handler and the credits routes loaded
        assert status == 200
        results.put(Outcome())  # ready
        while (task := tasks.get()) is not None:
            results.put(consume_for(task, context))
    except Exception as crash:  # reported, so the run stops with it instead of waiting on the queue
        results.put(f"crashed: {crash!r}")


def consume_for(task: Task, context: dict[str, Any]) -> Outcome:
    outcome = Outcome()
    path = CONSUME.format(task.contact_id)
    prefix = f"{task.label}-{os.getpid()}"
    time.sleep(max(0.0, task.start_at - time.time()))
    with measured() as capacity:
        began, cpu = time.perf_counter(), time.process_time()
        deadline = began + task.seconds
        n = 0
        while time.perf_counter() < deadline:
            body = {"action": ACTION, "quantity": 1, "request_id": f"{prefix}-{n}"}
            sent = time.perf_counter()
            while True:
                status, answer = call("POST", path, body, context)
                if status != 503:
                    break
                outcome.busy += 1  # as a client does: the same request again
            assert status == 201, (status, answer)
            outcome.latencies.append(time.perf_counter() - sent)
            outcome.booked += 1
            n += 1
        outcome.elapsed, outcome.cpu = time.perf_counter() - began, time.process_time() - cpu
    outcome.requests, outcome.consumed = capacity.requests, capacity.consumed
    outcome.cancelled, outcome.failed_conditions = capacity.cancelled, capacity.failed_conditions
    return outcome


class Pool:
    """`size` spawned processes, started once and given one task each per pass."""

    def __init__(self, size: int, table: str, endpoint: str, local_pid: int) -> None:
        self.local_pid = local_pid
        spawn = multiprocessing.get_context("spawn")
        self.tasks: list[Queue[Task | None]] = [spawn.Queue() for _ in range(size)]
        self.results: Queue[Outcome | str] = spawn.Queue()
        self.processes = [
            spawn.Process(target=worker, args=(table, endpoint, tasks, self.results), daemon=True)
            for tasks in self.tasks
        ]
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self._take()

    def _take(self) -> Outcome:
        got = self.results.get(timeout=300)
        if isinstance(got, str):
            raise RuntimeError(got)
        return got

    def run(self, title: str, label: str, contacts: list[str], seconds: float) -> Pass:
        """Each contact consumed by one process, all starting together."""
        start_at = time.time() + 0.5
        before = cpu_seconds(self.local_pid)
        for tasks, contact_id in zip(self.tasks, contacts, strict=False):
            tasks.put(Task(label, contact_id, start_at, seconds))
        outcomes = [self._take() for _ in contacts]
        after = cpu_seconds(self.local_pid)
        return Pass(title, outcomes, None if before is None or after is None else after - before)

    def stop(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# -- set-up ----------------------------------------------------------------------------------------
def wallet(grants: int = 1) -> str:
    """A new contact whose wallet holds `grants` purchased grants."""
    status, contact = call("POST", "/contacts", {"name": "Bench Customer", "email": "bench@example.com"})
    assert status == 201, contact
    for g in range(grants):
        body = {"id": f"pack-{g:03d}", "kind": "purchased", "credits": GRANT_CREDITS}
        status, given = call("POST", f"/contacts/{contact['id']}/credits/grants", body)
        assert status == 201, given
    return str(contact["id"])


def number_bytes(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0").rstrip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def value_bytes(value: dict[str, Any]) -> int:
    """An attribute value's size by DynamoDB's rules (item sizes, docs/scale.md)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return number_bytes(v)
    if kind == "B":
        return len(v)
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_bytes(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + value_bytes(x) for x in v)
    if kind == "SS":
        return sum(len(x.encode()) for x in v)
    if kind == "NS":
        return sum(number_bytes(x) for x in v)
    return sum(len(x) for x in v)  # BS


def item_bytes(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


@dataclass(frozen=True)
class Sizes:
    wallet: int
    entry: int
    """A consumption's ledger entry (its listing copy in GSI3 projects all of it)."""

    @property
    def wallet_wru(self) -> int:
        """The wallet's put in the transaction: 2 WRU per KB (or part of one)."""
        return 2 * math.ceil(self.wallet / 1024)

    @property
    def entry_wru(self) -> int:
        return 2 * math.ceil(self.entry / 1024)

    @property
    def index_wru(self) -> int:
        """The entry's copy in the listing index (GSI3 projects all of it): 1 WRU per KB."""
        return math.ceil(self.entry / 1024)

    @property
    def aws_wru(self) -> int:
        """Write units AWS bills a consume that commits at once."""
        return self.wallet_wru + self.entry_wru + self.index_wru


def sizes(client: Any, table: str, contact_id: str) -> Sizes:
    pk = contact_pk(Scope(TENANT, "test"), contact_id)
    found = client.get_item(TableName=table, Key={"PK": {"S": pk}, "SK": {"S": WALLET_SK}})
    assert "Item" in found, f"no wallet under {pk}"
    entries = client.query(
        TableName=table,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :e)",
        ExpressionAttributeValues={
            ":pk": {"S": ledger_pk(pk)},
            ":e": {"S": ENTRY_PREFIX + entry_id(EntryKind.CONSUMPTION, "")},
        },
        Limit=1,
    )["Items"]
    assert entries, "no consumption booked"
    return Sizes(item_bytes(found["Item"]), item_bytes(entries[0]))


# -- report ----------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """CPU seconds process `pid` has used (user + system), where /proc tells (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pass:
    title: str
    outcomes: list[Outcome]
    local_cpu: float | None = None
    """CPU seconds DynamoDB Local used during the pass."""

    @property
    def booked(self) -> int:
        return sum(o.booked for o in self.outcomes)

    @property
    def rate(self) -> float:
        return self.booked / max(o.elapsed for o in self.outcomes)

    def total(self, name: str) -> Counter[str]:
        summed: Counter[str] = Counter()
        for o in self.outcomes:
            summed.update(getattr(o, name))
        return summed

    @property
    def write_units(self) -> float:
        consumed = self.total("consumed")
        return sum(u for op, u in consumed.items() if op in WRITES) + sum(o.failed_conditions for o in self.outcomes)

    @property
    def read_units(self) -> float:
        return sum(u for op, u in self.total("consumed").items() if op not in WRITES)


def report(p: Pass) -> None:
    n = p.booked
    requests, cancelled = p.total("requests"), p.total("cancelled")
    transactions = requests["TransactWriteItems"]
    lost = sum(cancelled.values())
    busy = sum(o.busy for o in p.outcomes)
    latencies = sorted(x for o in p.outcomes for x in o.latencies)
    p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"{p.title}: {n} consumes in {max(o.elapsed for o in p.outcomes):.1f}s = {p.rate:,.0f} consumes/s")
    local = "" if p.local_cpu is None else f", DynamoDB Local {p.local_cpu / n * 1000:.1f} ms"
    print(f"  CPU per consume: consuming processes {sum(o.cpu for o in p.outcomes) / n * 1000:.1f} ms{local}")
    print(
        f"  wallet transactions lost to a concurrent one: {lost} of {transactions} "
        f"({lost / transactions:.1%}; {lost / n:.2f} retries per consume; {_reasons(cancelled)}); "
        f"503 answered and resent: {busy}; latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    shown = ", ".join(f"{op} {count / n:.3f}" for op, count in sorted(requests.items()))
    print(f"  DynamoDB requests per consume: {sum(requests.values()) / n:.3f}  ({shown})")
    wru = p.write_units / n
    print(
        f"  write units per consume (Local): {wru:.3f}, up to {wru * transactions / (transactions - lost):.3f} "
        f"if each lost transaction is billed like one that commits (Local reports none for them); "
        f"read units per consume (Local): {p.read_units / n:.3f}"
    )


def _reasons(cancelled: Counter[str]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(cancelled.items())) or "none"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"


def counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def start_local() -> dynamodb.DynamoDBLocal:
    """DynamoDB Local on a loopback port drawn at random from PORTS (another draw if it is taken)."""
    for attempt in range(5):
        try:
            return dynamodb.start(port=random.randint(*PORTS))
        except RuntimeError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=counts, default=[1, 4, 16], help="processes per pass (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each pass consumes (default 4)")
    parser.add_argument("--grants", type=counts, default=[1, 10, 50], help="grants in the wallet passes (1,10,50)")
    args = parser.parse_args()
    table = f"billow-bench-credits-{uuid.uuid4().hex[:8]}"
    local = start_local()
    pool = None
    try:
        local.create_table(table)
        point_at(table, local.endpoint)
        add_tenant(TENANT, "Bench", KEY)
        status, priced = call("POST", "/credits/prices", {"effective_from": "2020-01-01", "costs": {ACTION: 1}})
        assert status == 201, priced
        pool = Pool(max(args.processes), table, local.endpoint, local.process.pid)
        cores = os.cpu_count()
        print(
            f"credits consume on DynamoDB Local through the API handler: {args.seconds:g}s per pass, "
            f"{cores} cores shared by DynamoDB Local and the consuming processes"
        )
        pool.run("warm-up", "warm", [wallet()], WARM_UP)  # DynamoDB Local's JIT: not reported
        print("-- one hot wallet (one grant), N processes consuming from it at once")
        for n in args.processes:
            contact_id = wallet()
            hot = pool.run(f"1 wallet, {plural(n, 'process')}", f"hot{n}", [contact_id] * n, args.seconds)
            report(hot)
            _, credits = call("GET", f"/contacts/{contact_id}/credits")
            assert credits["balance"]["total"] == GRANT_CREDITS - hot.booked, credits  # each consume taken once
        print("-- one wallet per process (one grant each)")
        for n in args.processes:
            contacts = [wallet() for _ in range(n)]
            report(pool.run(f"{plural(n, 'wallet')}, {plural(n, 'process')}", f"spread{n}", contacts, args.seconds))
        print("-- one process on a wallet of G grants (item sizes by DynamoDB's rules)")
        client = local.client()
        for g in args.grants:
            contact_id = wallet(g)
            report(pool.run(f"1 wallet of {plural(g, 'grant')}, 1 process", f"grants{g}", [contact_id], args.seconds))
            size = sizes(client, table, contact_id)
            print(
                f"  wallet item {size.wallet:,} bytes, ledger entry {size.entry:,} bytes: on AWS {size.aws_wru} WRU "
                f"per consume (wallet {size.wallet_wru} + entry {size.entry_wru} transactional, + {size.index_wru} "
                f"listing index; {size.aws_wru + size.index_wru} if the index copy is doubled too, as Local charges "
                f"it); the wallet item's 1,000 WRU/s allow at most {1000 // size.wallet_wru:,} consumes/s"
            )
    finally:
        if pool is not None:
            pool.stop()
        local.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
