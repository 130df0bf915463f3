"""A small HTTP server that does what API Gateway does in front of Billow's handlers: run the
REQUEST authorizer, put its context on the event, and invoke the API handler with an API Gateway
REST (v1) proxy event. Requests are handled one at a time, like one warm Lambda container."""

from __future__ import annotations

import json
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from billow.domain.errors import error_body
from billow.local.lambda_runtime import invoke

STAGE = "local"
UNAUTHORIZED_BODY = error_body("auth.unauthorized", "missing or invalid API key")
"""As API Gateway answers it (its UNAUTHORIZED gateway response, set in infra/)."""
MAX_BODY_BYTES = 1_000_000


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


class _Handler(BaseHTTPRequestHandler):
    server_version = "BillowLocal/1"
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json(413, error_body("request.too_large", f"bodies are at most {MAX_BODY_BYTES} bytes"))
            return
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        try:
            body = raw.decode("utf-8") if raw else None
        except UnicodeDecodeError:
            self._json(400, error_body("request.not_utf8", "the body is not UTF-8 text"))
            return
        try:
            with self.lock:
                context = authorize(self.command, self.path, headers)
                if context is None:
                    self._json(401, UNAUTHORIZED_BODY)
                    return
                event = api_gateway_event(self.command, self.path, headers, body, context)
                result = invoke("api.handler.lambda_handler", event)
        except Exception:
            traceback.print_exc()
            self._json(502, error_body("service.internal_error", "internal server error"))
            return
        out_headers = dict(result.get("headers") or {})
        for name, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[name] = ", ".join(values)
        self._send(int(result["statusCode"]), (result.get("body") or "").encode(), out_headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def serve(port: int, *, verbose: bool = False) -> ThreadingHTTPServer:
    """Start serving on 127.0.0.1:`port` in a background thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.verbose = verbose  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="billow-gateway", daemon=True).start()
    return server
