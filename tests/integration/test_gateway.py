"""The local gateway behaves like API Gateway when a function fails: 502, and it keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
from billow.local import gateway
from billow.local.dynamodb import free_port

from tests.support import HttpClient

pytestmark = pytest.mark.integration


def test_a_function_error_is_a_502_and_the_next_request_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_invoke(name: str, event: dict[str, Any]) -> Any:
        calls.append(name)
        if name.startswith("authorizer"):
            return {
                "principalId": "t",
                "policyDocument": {"Statement": [{"Effect": "Allow"}]},
                "context": {"tenantId": "t", "mode": "test"},
            }
        if len(calls) == 2:
            raise RuntimeError("function crashed")
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok": true}'}

    monkeypatch.setattr(gateway, "invoke", fake_invoke)
    server = gateway.serve(free_port())
    try:
        client = HttpClient(f"http://127.0.0.1:{server.server_address[1]}", "any-key")
        failed = client.get("/products")
        assert failed.status == 502
        assert failed.body == {"error": "service.internal_error", "message": "internal server error", "fields": []}
        assert client.get("/products").body == {"ok": True}
    finally:
        server.shutdown()
        server.server_close()
