"""Test helpers: an API client that speaks to the handlers either in-process (same events the local
gateway builds) or over HTTP, and a table per test on DynamoDB Local or moto."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billow.local import clocks, gateway, stack


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class HttpClient:
    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url, self.key = base_url, key

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        key: str | bool | None = True,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        return self.send(method, path, self.headers(key, headers), data)

    def send(self, method: str, path: str, headers: dict[str, str], data: bytes | None) -> Reply:
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Reply(response.status, json.loads(response.read() or b"null"), dict(response.headers.items()))
        except urllib.error.HTTPError as error:
            return Reply(error.code, json.loads(error.read() or b"null"), dict(error.headers.items()))

    def headers(self, key: str | bool | None, extra: dict[str, str] | None) -> dict[str, str]:
        """JSON content type, the API key (the client's own when `key` is True, none when None) and `extra`."""
        secret = self.key if key is True else key
        auth = {"Authorization": f"Bearer {secret}"} if isinstance(secret, str) and secret else {}
        return {"Content-Type": "application/json", **auth, **(extra or {})}

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PATCH", path, body, **kw)


class InProcessClient(HttpClient):
    """Same events as the local gateway, no sockets: for fast unit tests over moto."""

    def __init__(self, key: str | None) -> None:
        super().__init__("", key)

    def send(self, method: str, path: str, headers: dict[str, str], data: bytes | None) -> Reply:
        from billow.local.lambda_runtime import invoke

        context = gateway.authorize(method, path, headers)
        if context is None:
            return Reply(401, gateway.UNAUTHORIZED_BODY)
        text = None if data is None else data.decode()
        result = invoke("api.handler.lambda_handler", gateway.api_gateway_event(method, path, headers, text, context))
        headers = {
            **(result.get("headers") or {}),
            **{k: ", ".join(v) for k, v in (result.get("multiValueHeaders") or {}).items()},
        }
        return Reply(int(result["statusCode"]), json.loads(result["body"] or "null"), headers)


_POSTER = """
import json, sys, urllib.error, urllib.request
url, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].encode()
request = urllib.request.Request(url, data=body, method="POST", headers=headers)
print("ready", flush=True)
sys.stdin.readline()  # go
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        print(json.dumps([response.status, json.loads(response.read())]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, json.loads(error.read())]))
"""


def post_from_processes(client: HttpClient, requests: list[tuple[str, Any, dict[str, str]]]) -> list[Reply]:
    """POST each (path, body, extra headers) from its own process (as separate clients would),
    all released together once every process is ready (no guess of how long starting takes);
    their replies in order."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _POSTER,
                client.base_url + path,
                json.dumps(client.headers(True, extra)),
                json.dumps(body),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for path, body, extra in requests
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    replies = [json.loads(p.communicate(timeout=90)[0]) for p in processes]
    return [Reply(status, body) for status, body in replies]


PRELOADED = (
    "tests.support",
    "billow.storage.repository",
    "billow.services.billing",
    "billow.services.collection",
    "billow.services.credits.consume",
    "billow.services.usage.ingest",
    "billow.gateways.stripe",
    "billow.local.stack",
)
"""Modules the fork server imports once, before it forks each process: a process starts in
milliseconds, not the ~0.8 s of CPU a spawned interpreter spends importing them again."""


def separate_processes() -> Any:
    """A multiprocessing context whose processes are separate interpreters with nothing of the
    test's state (as separate Lambda containers): forked from a fork server that has only imported
    `PRELOADED` (no thread, no connection, no configured table), never from the test process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED))
    return context


def in_processes(target: Callable[..., None], each: list[tuple[Any, ...]], *, meet: int) -> list[Any]:
    """Run `target(*args, go, out, met)` for each `args` in its own process (spawned: as separate
    Lambda containers), all released by `go` together; `met` is a barrier of `meet` parties they may
    wait at (to hold each other at one step). What each put on `out`, in the order they came."""
    spawn = separate_processes()
    go, out, met = spawn.Event(), spawn.Queue(), spawn.Barrier(meet)
    processes = [spawn.Process(target=target, args=(*args, go, out, met)) for args in each]
    for process in processes:
        process.start()
    go.set()
    results = [out.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    return results


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


MONTHLY_ARREARS_USD = {"price": "30.00", "currency": "USD", "cycle": "month", "billing_model": "arrears"}


def make_product(client: HttpClient, terms: dict[str, Any] | None = None, name: str = "Pro") -> dict[str, Any]:
    reply = client.post("/products", {"name": name, "terms": [terms or MONTHLY_ARREARS_USD]})
    assert reply.status == 201, reply.body
    return dict(reply.body)


def make_contact(client: HttpClient, name: str = "Ann Example") -> dict[str, Any]:
    reply = client.post("/contacts", {"name": name, "email": "ann@example.com"})
    assert reply.status == 201, reply.body
    return dict(reply.body)


def as_call(client: HttpClient) -> clocks.Call:
    def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        reply = client.request(method, path, body)
        return reply.status, reply.body

    return call


def wait_until_ready(client: HttpClient, contact_id: str) -> dict[str, Any]:
    """The contact's test clock, once what its last advance made due is billed."""
    return clocks.wait_until_ready(as_call(client), contact_id)


def advance_clock(client: HttpClient, contact_id: str, to: str) -> dict[str, Any]:
    """Advance the contact's test clock to `to` (several bounded advances if need be) and wait
    until it is ready: what became due is billed by then."""
    return clocks.advance_clock(as_call(client), contact_id, to)


def run_local_stack(*options: str, cwd: Path, own_group: bool = False) -> subprocess.Popen[str]:
    """`python -m billow.local` (what `make run` runs) in a child process run from `cwd`, its
    output piped; with `own_group` in a process group of its own, as `make run` in a terminal."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [sys.executable, "-m", "billow.local", *options],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": f"{root / 'shared'}:{root / 'functions'}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,
    )


def banner(process: subprocess.Popen[str], timeout: float = 120) -> str:
    """What the local stack printed until it is ready ("Press Ctrl-C"), stopped, or `timeout` passed."""
    output = ""
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while "Press Ctrl-C" not in output and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output += line
    return output


@contextmanager
def local_stack(table: str, tenant: str, key: str) -> Iterator[stack.LocalStack]:
    """The local stack on its own table with one test-mode tenant (localstripe's webhooks sent to
    its endpoint), for one e2e module."""
    local = stack.start(schedule=False, table_name=table)
    try:
        stack.add_tenant(tenant, f"{tenant.title()} Tenant", key)
        local.register_stripe_webhook(tenant)
        yield local
    finally:
        local.stop()


@contextmanager
def local_api(table: str, tenant: str, key: str) -> Iterator[HttpClient]:
    """`local_stack`'s API, called with `key`."""
    with local_stack(table, tenant, key) as local:
        yield HttpClient(local.url, key)


@contextmanager
def bus_events() -> Iterator[list[dict[str, Any]]]:
    """Every event the local bus delivers meanwhile (its `detail`)."""
    from billow.local.events import local_bus

    seen: list[dict[str, Any]] = []
    unsubscribe = local_bus().subscribe(None, lambda event: seen.append(event["detail"]))
    try:
        yield seen
    finally:
        unsubscribe()


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`check()` once it is truthy, or its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


SETTINGS_CHANGES: list[dict[str, Any]] = [
    {"regret_days": 21},
    {"pause_max_times": 7},
    {"pause_max_days": 45},
    {"max_trial_extension_days": 20},
    {"downgrade": "immediate"},
    {"cancel_in_contract": "immediate"},
]
"""Six changes of different subscription rules, none of them the default: made at once by the race tests."""


class RecordingInvoker:
    """An `AsyncInvoker` that only records what it was asked to invoke: the test delivers the
    events itself (or not, to hold an advance under way)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def invoke_async(self, concern: str, event: dict[str, Any]) -> None:
        self.events.append((concern, event))


def saved_method_records(contact_id: str, method_ids: list[str], tenant: str, mode: str = "test") -> None:
    """Record saved payment methods for a contact straight in the table (as a confirmed setup
    would): for tests of actions naming a method, which need one the contact saved, not a card."""
    from datetime import UTC, datetime

    from billow.domain.payment_methods import SavedPaymentMethod
    from billow.services.context import Scope
    from billow.storage.repository import DynamoStore

    work = DynamoStore().unit_of_work("saved methods")
    for method_id in method_ids:
        saved = SavedPaymentMethod(
            method_id,
            contact_id,
            "stripe",
            "cus_test",
            "seti_test",
            "card",
            "visa",
            "4242",
            12,
            2034,
            datetime.now(UTC),
        )
        work.save_payment_method(Scope(tenant, mode), saved)
    work.commit()


def dunning_case_record(contact_id: str, tenant: str, mode: str = "test") -> str:
    """Store an open dunning case for a contact straight in the table (as the flow opens one), for
    tests of the case routes; its id."""
    from datetime import date

    from billow.domain.dunning import DunningCase, DunningPolicy
    from billow.services.context import Scope
    from billow.services.ports import StoredCase
    from billow.storage.repository import DynamoStore

    case = DunningCase.open(contact_id, "USD", 1, DunningPolicy(), date(2024, 1, 25))
    work = DynamoStore().unit_of_work("dunning case")
    work.save_case(Scope(tenant, mode), StoredCase(case), 0)
    work.commit()
    return case.id


MOTO_TABLE = "billow-unit"


def new_moto_table() -> str:
    """(Re)create the moto table `MOTO_TABLE`, empty, with the models pointed at it (inside
    `mock_aws`). A property test on moto starts each example on a new one: moto copies every table
    on each transaction (to roll back) and reads a partition's items by scanning the table, so the
    items earlier examples left make each later step slower, and examples share nothing anyway."""
    import boto3
    from billow.storage.models import configure
    from billow.storage.table import create_table_request

    client = boto3.client("dynamodb", region_name="us-east-1")
    if MOTO_TABLE in client.list_tables()["TableNames"]:
        client.delete_table(TableName=MOTO_TABLE)
    client.create_table(**create_table_request(MOTO_TABLE))
    configure(table_name=MOTO_TABLE, endpoint="", region="us-east-1")
    return MOTO_TABLE
