"""Forged listing cursors, on the real DynamoDB (moto accepts start keys DynamoDB refuses): every
one is a 422 naming the cursor, never a 5xx from DynamoDB's own refusal."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact

pytestmark = pytest.mark.integration

KEY = "bk_test_cursor_tenant"
LISTING = "cursor-tenant#CONTACT"


@pytest.fixture
def api(local_table: str) -> Iterator[InProcessClient]:
    add_tenant("cursor-tenant", "Cursor Tenant", KEY)
    yield InProcessClient(KEY)


def encode(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, ensure_ascii=False).encode("utf-8", "surrogatepass")).decode()


def start_key(pk: Any = "T#cursor-tenant#C#con_1", sk: Any = "CONTACT", listing_sk: Any = "2025#con_1") -> Any:
    return {"PK": {"S": pk}, "SK": {"S": sk}, "GSI3PK": {"S": LISTING}, "GSI3SK": {"S": listing_sk}}


FORGED = {
    "empty key values": start_key("", "", ""),
    "an empty sort key": start_key(sk=""),
    "an empty index sort key": start_key(listing_sk=""),
    "a number for a string": {**start_key(), "SK": {"N": "1"}},
    "two types at once": {**start_key(), "PK": {"S": "T#x", "N": "1"}},
    "a key too long for DynamoDB": start_key(listing_sk="€" * 350),  # 1,050 bytes
    "a lone surrogate": start_key(sk="\ud800"),
    "a missing key": {k: v for k, v in start_key().items() if k != "SK"},
}


@pytest.mark.parametrize("name", list(FORGED))
def test_a_forged_cursor_is_a_422_not_a_dynamodb_refusal(api: InProcessClient, name: str) -> None:
    make_contact(api, "C1")
    reply = api.get(f"/contacts?limit=1&cursor={encode(FORGED[name])}")
    assert reply.status == 422, reply.body
    assert reply.body["error"] == "cursor.invalid"
    assert reply.body["fields"][0]["field"] == "cursor"


@pytest.mark.parametrize("raw", ["W1tbW1tbW1tbW1tbW1tbW1tb" * 300, "A" * 5000, base64.b64encode(b"\xff\xfe").decode()])
def test_a_cursor_that_is_no_json_key_at_all_is_a_422(api: InProcessClient, raw: str) -> None:
    reply = api.get(f"/contacts?limit=1&cursor={raw}")
    assert reply.status == 422, reply.body
    assert reply.body["fields"][0]["field"] == "cursor"


def test_a_well_formed_cursor_of_this_listing_still_pages(api: InProcessClient) -> None:
    for name in ("C1", "C2", "C3"):
        make_contact(api, name)
    first = api.get("/contacts?limit=2").body
    rest = api.get(f"/contacts?limit=2&cursor={first['cursor']}").body
    assert sorted(c["name"] for c in first["items"] + rest["items"]) == ["C1", "C2", "C3"]
