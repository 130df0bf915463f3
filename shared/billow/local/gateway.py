"""A small HTTP server that does what API Gateway does in front of Billow's handlers: run the
REQUEST authorizer, put its context on the event, and invoke the API handler with an API Gateway
REST (v1) proxy event.

Requests are served concurrently the way Lambda serves them: by several worker processes (warm
containers), each importing the handlers itself and handling one request at a time, with no
handler state shared between them. The HTTP side only reads requests (refusing bodies over
`MAX_BODY_BYTES` with a 413, after reading them, so the client hears it) and writes answers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import forkserver, resource_tracker
from multiprocessing.pool import Pool
from typing import Any
from urllib.parse import parse_qs, urlsplit

from billow.domain.errors import error_body
from billow.local.lambda_runtime import handler, invoke, prepare_environment
from billow.storage.models import configure

STAGE = "local"
UNAUTHORIZED_BODY = error_body("auth.unauthorized", "missing or invalid API key")
"""As API Gateway answers it (its UNAUTHORIZED gateway response, set in infra/)."""
MAX_BODY_BYTES = 1_000_000
DRAIN_LIMIT_BYTES = 64_000_000
"""A body over the limit is still read (and dropped) up to this size, so the client, which sends
it all before reading the answer, gets the 413 instead of a reset connection."""
DEFAULT_WORKERS = 4
LISTEN_BACKLOG = 128
"""Connections the listening socket queues while every handler thread is busy (a burst of 100)."""
REQUEST_TIMEOUT_SECONDS = 900.0  # Lambda's own limit
HANDLERS = ("authorizer.handler.lambda_handler", "api.handler.lambda_handler", "webhooks.handler.lambda_handler")
UNAUTHORIZED_ROUTES = (("POST", "/webhooks/stripe/", "webhooks.handler.lambda_handler"),)
"""Method, path prefix and handler of the routes outside the API-key authorizer (each on a
function of its own, as infra/ builds them): Stripe signs its webhooks instead."""
_ENV_PREFIXES = ("AWS_", "BILLOW_", "POWERTOOLS_")

Answer = tuple[int, dict[str, str], bytes]
"""Status, headers and body of an HTTP answer."""
Target = Callable[[str, str, dict[str, str], "str | None"], "Answer | None"]


def _multi(pairs: dict[str, list[str]]) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    if not pairs:
        return None, None
    return {k: v[-1] for k, v in pairs.items()}, pairs


def api_gateway_event(
    method: str, raw_path: str, headers: dict[str, str], body: str | None, authorizer: dict[str, Any] | None
) -> dict[str, Any]:
    split = urlsplit(raw_path)
    query, multi_query = _multi(parse_qs(split.query, keep_blank_values=True))
    request_id = str(uuid.uuid4())
    return {
        "resource": split.path,
        "path": split.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {
            "requestId": request_id,
            "stage": STAGE,
            "httpMethod": method,
            "path": f"/{STAGE}{split.path}",
            "resourcePath": split.path,
            "accountId": "000000000000",
            "apiId": "billowlocal",
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": authorizer,
        },
    }


def authorizer_event(method: str, raw_path: str, headers: dict[str, str]) -> dict[str, Any]:
    path = urlsplit(raw_path).path
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:us-east-1:000000000000:billowlocal/{STAGE}/{method}{path}",
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "queryStringParameters": {},
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": {
            "stage": STAGE,
            "httpMethod": method,
            "path": path,
            "accountId": "000000000000",
            "apiId": "billowlocal",
            "requestId": str(uuid.uuid4()),
        },
    }


def authorize(method: str, raw_path: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """The authorizer's context, or None when it denies (API Gateway then answers 401)."""
    try:
        policy = invoke("authorizer.handler.lambda_handler", authorizer_event(method, raw_path, headers))
    except Exception as error:
        if str(error) == "Unauthorized":
            return None
        raise
    statement = policy["policyDocument"]["Statement"][0]
    if statement["Effect"] != "Allow":
        return None
    return {"principalId": policy["principalId"], **policy.get("context", {})}


def _json(status: int, payload: dict[str, Any]) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(payload, separators=(",", ":")).encode()


def handle(method: str, raw_path: str, headers: dict[str, str], body: str | None) -> Answer | None:
    """One request, as API Gateway and Lambda run it: the authorizer, then the API handler (or, on
    a route outside the authorizer, that route's handler alone). None when a function failed (the
    gateway answers 502, as API Gateway does)."""
    path = urlsplit(raw_path).path
    unauthorized = next((h for m, prefix, h in UNAUTHORIZED_ROUTES if m == method and path.startswith(prefix)), None)
    if unauthorized is not None and path.count("/") == 3:
        return _answer(lambda: invoke(unauthorized, api_gateway_event(method, raw_path, headers, body, None)))
    return _answer(lambda: _authorized(method, raw_path, headers, body))


def _authorized(method: str, raw_path: str, headers: dict[str, str], body: str | None) -> dict[str, Any] | Answer:
    context = authorize(method, raw_path, headers)
    if context is None:
        return _json(401, UNAUTHORIZED_BODY)
    result: dict[str, Any] = invoke(
        "api.handler.lambda_handler", api_gateway_event(method, raw_path, headers, body, context)
    )
    return result


def _answer(run: Callable[[], dict[str, Any] | Answer]) -> Answer | None:
    """A function's result as HTTP; None when it failed (the gateway answers 502, as API Gateway)."""
    try:
        result = run()
    except Exception:
        traceback.print_exc()
        return None
    if isinstance(result, tuple):
        return result
    out_headers = dict(result.get("headers") or {})
    for name, values in (result.get("multiValueHeaders") or {}).items():
        out_headers[name] = ", ".join(values)
    return int(result["statusCode"]), out_headers, (result.get("body") or "").encode()


def _start_worker(env: dict[str, str]) -> None:
    """A worker process's cold start: the stack's environment, the table, the handlers imported."""
    # Out of the caller's process group (see GROUP_SIGNALS), then SIGTERM as usual again (a pending
    # one, sent to the group before, is dropped): Pool.terminate() stops a busy worker with it.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
    os.environ.update(env)
    configure(
        table_name=env.get("BILLOW_TABLE"), endpoint=env.get("BILLOW_DYNAMODB_ENDPOINT"), region=env.get("AWS_REGION")
    )
    prepare_environment()
    for name in HANDLERS:
        handler(name)
    handler("api.handler.complete_app")()  # the route areas (preloaded by the server process)


def _worker_context() -> Any:
    """Workers are forked from a clean server process that imported the handlers once (cheap to
    start, nothing of this process inherited); `_start_worker` then sets each one up."""
    context = multiprocessing.get_context("forkserver")
    prepare_environment()  # functions/ on the path
    from api.areas import AREAS

    areas = [f"api.{area}" for area in AREAS]
    context.set_forkserver_preload(
        ["billow.local.gateway", "api.handler", *areas, "authorizer.handler", "webhooks.handler"]
    )
    resource_tracker.ensure_running()  # first: starting it unblocks SIGINT and SIGTERM when done
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:  # the fork server and what it forks start with GROUP_SIGNALS blocked (the mask is inherited)
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return context


GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
"""Signals sent to the caller's whole process group (Ctrl-C, `kill -TERM -<pgid>`, `timeout make
run`) reach the gateway's process, which stops its workers: they must not reach the workers or their
fork server themselves. A worker killed directly can die holding the read lock of the pool's task
queue (an idle worker waits on the queue holding it), and Pool.terminate() then waits for that lock
forever; a fork server killed makes the pool take its workers for dead and fail replacing them, so
they never get the pool's order to stop. Either way `make run` hung on SIGTERM. So the fork server
starts with them blocked (it exits by itself when the gateway's process is gone), and each worker
leaves the group. Start the first gateway before another user of the fork server does."""


class Gateway(ThreadingHTTPServer):
    """The HTTP server and its pool of worker processes."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def __init__(self, port: int, *, workers: int, verbose: bool, target: Target) -> None:
        if workers < 1:
            raise ValueError("the gateway needs at least 1 worker")
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        self.verbose = verbose
        self.target = target
        self.pool: Pool = _worker_context().Pool(workers, initializer=_start_worker, initargs=(env,))
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except BaseException:
            self._stop_pool()
            raise

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: str | None) -> Answer | None:
        """Run the request in the next free worker (waiting for one, as API Gateway queues for a
        free container)."""
        return self.pool.apply_async(self.target, (method, raw_path, headers, body)).get(REQUEST_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """Stop accepting, then stop the workers (no process outlives the gateway)."""
        self.shutdown()
        self.server_close()
        self._stop_pool()

    def _stop_pool(self) -> None:
        self.pool.terminate()
        self.pool.join()


class _Handler(BaseHTTPRequestHandler):
    server_version = "BillowLocal/1"
    server: Gateway

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, answer: Answer) -> None:
        status, headers, body = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers of a GET and no body
            self.wfile.write(body)

    def _drain(self, length: int) -> None:
        """Read and drop a refused body, so that the client gets to read the answer."""
        self.close_connection = True
        left = min(length, DRAIN_LIMIT_BYTES)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(_json(400, error_body("request.bad_length", "bad Content-Length")))
            return
        if length > MAX_BODY_BYTES:
            self._drain(length)
            message = f"the body is {length} bytes; bodies are at most {MAX_BODY_BYTES} bytes"
            self._send(_json(413, error_body("request.too_large", message)))
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body = raw.decode("utf-8") if raw else None
        except UnicodeDecodeError:
            self._send(_json(400, error_body("request.not_utf8", "the body is not UTF-8 text")))
            return
        try:
            answer = self.server.dispatch(self.command, self.path, dict(self.headers.items()), body)
        except Exception:  # a worker died or timed out
            traceback.print_exc()
            answer = None
        self._send(answer or _json(502, error_body("service.internal_error", "internal server error")))

    def __getattr__(self, name: str) -> Any:
        # Every method (TRACE, QUERY...) reaches the API, as API Gateway's ANY method does: one it has
        # no route for is a 405 in the error shape, never the HTTP server's own 501 page.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


def serve(port: int, *, workers: int = DEFAULT_WORKERS, verbose: bool = False, target: Target = handle) -> Gateway:
    """Start serving on 127.0.0.1:`port` in a background thread, with `workers` worker processes
    running `target` (a module-level function, imported by name in each worker)."""
    server = Gateway(port, workers=workers, verbose=verbose, target=target)
    threading.Thread(target=server.serve_forever, name="billow-gateway", daemon=True).start()
    return server
