"""The local gateway behaves like API Gateway in front of Lambda: a function error is a 502 and the
next request is served; requests run at once in separate worker processes (one request at a time
each); a burst of connections is queued, not reset; an oversized body gets a readable 413."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from billow.local import gateway
from billow.local.dynamodb import free_port

from tests.support import HttpClient

pytestmark = pytest.mark.integration

_served = 0


def crash_first(method: str, path: str, headers: dict[str, str], body: str | None) -> gateway.Answer | None:
    """A function that fails on its first request (in its worker process) and then answers."""
    global _served
    _served += 1
    if _served == 1:
        return None
    return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


def slow_pid(method: str, path: str, headers: dict[str, str], body: str | None) -> gateway.Answer | None:
    """Takes 0.5 s and names the process that ran it, and when."""
    started = time.time()
    time.sleep(0.5)
    answer = {"pid": os.getpid(), "from": started, "to": time.time()}
    return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def fast(method: str, path: str, headers: dict[str, str], body: str | None) -> gateway.Answer | None:
    return 200, {"Content-Type": "application/json"}, b"{}"


def serve(target: gateway.Target, workers: int) -> Iterator[HttpClient]:
    server = gateway.serve(free_port(), workers=workers, target=target)
    try:
        yield HttpClient(f"http://127.0.0.1:{server.server_address[1]}", "any-key")
    finally:
        server.stop()


def test_a_function_error_is_a_502_and_the_next_request_is_served() -> None:
    for client in serve(crash_first, workers=1):
        failed = client.get("/products")
        assert failed.status == 502
        assert failed.body == {"error": "service.internal_error", "message": "internal server error", "fields": []}
        assert client.get("/products").body == {"ok": True}


def test_requests_run_at_once_in_separate_worker_processes_and_stop_with_the_gateway() -> None:
    server = gateway.serve(free_port(), workers=4, target=slow_pid)
    client = HttpClient(f"http://127.0.0.1:{server.server_address[1]}", "any-key")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: client.get("/x"), range(8)))
    pids = {r.body["pid"] for r in replies}
    workers = [p.pid for p in server.pool._pool]  # type: ignore[attr-defined]
    server.stop()
    assert all(r.status == 200 for r in replies)
    assert len(pids) == 4 and os.getpid() not in pids  # four processes, none of them the gateway's
    assert most_at_once([(r.body["from"], r.body["to"]) for r in replies]) >= 2  # at once
    for pid in pids:  # each worker one request at a time
        assert most_at_once([(r.body["from"], r.body["to"]) for r in replies if r.body["pid"] == pid]) == 1
    for pid in workers:  # no worker outlives the gateway
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_burst_of_100_connections_is_queued_not_reset() -> None:
    for client in serve(fast, workers=4):
        port = int(client.base_url.rsplit(":", 1)[1])
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(100)]
        for s in sockets:  # every connection was accepted or queued; each still gets its answer
            s.sendall(b"GET /x HTTP/1.0\r\n\r\n")
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(lambda s: s.makefile("rb").readline(), sockets))
        for s in sockets:
            s.close()
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers), answers[:3]


def test_a_10_mb_body_gets_a_readable_413() -> None:
    for client in serve(fast, workers=1):
        reply = client.request("POST", "/products", raw=b"x" * 10_000_000)
        assert reply.status == 413
        assert reply.body["error"] == "request.too_large" and reply.body["fields"] == []
        assert f"at most {gateway.MAX_BODY_BYTES} bytes" in reply.body["message"]
