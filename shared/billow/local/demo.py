"""Demo data for `make run`, loaded through the public API exactly as a user would."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

DEMO_TENANT = "demo"
DEMO_KEY = "bk_test_demo_local_only"


def call(url: str, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _ok(result: tuple[int, Any]) -> Any:
    status, body = result
    if status >= 400:
        raise RuntimeError(f"demo data failed: {status} {body}")
    return body


def load(url: str, key: str = DEMO_KEY) -> dict[str, Any]:
    """Three products, three contacts, their orders; one contact on a test clock, advanced a quarter."""
    starter = _ok(
        call(
            url,
            "POST",
            "/products",
            key,
            {
                "name": "Starter",
                "description": "For small teams",
                "terms": [
                    {
                        "price": "29.00",
                        "currency": "USD",
                        "cycle": "month",
                        "billing_model": "advance",
                        "setup_fee": "49.00",
                    }
                ],
            },
        )
    )
    team = _ok(
        call(
            url,
            "POST",
            "/products",
            key,
            {
                "name": "Team seats",
                "description": "Per seat, billed at month end",
                "terms": [
                    {
                        "price": "12.00",
                        "currency": "USD",
                        "cycle": "month",
                        "billing_model": "arrears",
                        "pricing_model": "per_unit",
                    }
                ],
            },
        )
    )
    tokyo = _ok(
        call(
            url,
            "POST",
            "/products",
            key,
            {"name": "Tokyo annual", "terms": [{"price": "36000", "currency": "JPY", "cycle": "year"}]},
        )
    )

    ada = _ok(
        call(
            url,
            "POST",
            "/contacts",
            key,
            {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "billing_address": {"line1": "12 St James's Square", "city": "London", "country": "GB"},
            },
        )
    )
    grace = _ok(call(url, "POST", "/contacts", key, {"name": "Grace Hopper", "email": "grace@example.com"}))
    kenji = _ok(call(url, "POST", "/contacts", key, {"name": "Kenji Sato", "email": "kenji@example.jp"}))

    _ok(
        call(
            url,
            "POST",
            "/orders",
            key,
            {
                "contact_id": ada["id"],
                "reference": "demo-ada",
                "items": [{"product_id": starter["id"], "terms_id": starter["terms"][0]["id"]}],
            },
        )
    )
    # Grace is on a test clock started on 31 January: advancing it shows month-end billing days.
    _ok(
        call(
            url,
            "POST",
            f"/contacts/{grace['id']}/test-clock",
            key,
            {"frozen_time": datetime(2026, 1, 31, 9, tzinfo=UTC).isoformat()},
        )
    )
    _ok(
        call(
            url,
            "POST",
            "/orders",
            key,
            {
                "contact_id": grace["id"],
                "reference": "demo-grace",
                "items": [
                    {"product_id": team["id"], "terms_id": team["terms"][0]["id"], "quantity": 5},
                    {"product_id": starter["id"], "terms_id": starter["terms"][0]["id"]},
                ],
            },
        )
    )
    _ok(
        call(
            url,
            "POST",
            f"/contacts/{grace['id']}/test-clock/advance",
            key,
            {"to": datetime(2026, 4, 30, 9, tzinfo=UTC).isoformat()},
        )
    )
    _ok(
        call(
            url,
            "POST",
            "/orders",
            key,
            {
                "contact_id": kenji["id"],
                "reference": "demo-kenji",
                "items": [{"product_id": tokyo["id"], "terms_id": tokyo["terms"][0]["id"]}],
            },
        )
    )
    return {"ada": ada["id"], "grace": grace["id"], "kenji": kenji["id"]}
