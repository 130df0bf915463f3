"""Forged cursors, on the real DynamoDB (moto accepts key conditions and start keys DynamoDB
refuses): every one is a 422 `listing.invalid_cursor` naming the cursor, never a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from billow.domain.errors import InvalidInput
from billow.local.stack import add_tenant
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, make_contact

pytestmark = pytest.mark.integration

KEY = "bk_test_cursor_tenant"


@pytest.fixture
def api(local_table: str) -> Iterator[InProcessClient]:
    add_tenant("cursor-tenant", "Cursor Tenant", KEY)
    yield InProcessClient(KEY)


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")).decode()


def forged_from(real: str) -> dict[str, str]:
    """Cursors made from a real one of the listing (its listing digest kept), each changed one way."""
    decoded = json.loads(base64.urlsafe_b64decode(real))
    return {
        "an empty position": encode({**decoded, "after": ""}),
        "a control character": encode({**decoded, "after": "2025\x00#con"}),
        "a lone surrogate": encode({**decoded, "after": "\ud800"}),
        "a position too long": encode({**decoded, "after": "€" * 350}),
        "a number for a position": encode({**decoded, "after": 1}),
        "no listing": encode({"after": decoded["after"]}),
        "the old start-key form with empty keys": encode(
            {"PK": {"S": ""}, "SK": {"S": ""}, "GSI3PK": {"S": "cursor-tenant#CONTACT"}, "GSI3SK": {"S": ""}}
        ),
        "JSON nested deeper than Python recurses": base64.urlsafe_b64encode(b"[" * 1400 + b"]" * 1400).decode()[:2000],
        "not base64": "%%%",
        "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    }


def test_a_forged_listing_cursor_is_a_422_not_a_dynamodb_refusal(api: InProcessClient) -> None:
    for name in ("C1", "C2", "C3"):
        make_contact(api, name)
    real = api.get("/contacts?limit=1").body["cursor"]
    assert real
    for name, cursor in forged_from(real).items():
        reply = api.get(f"/contacts?limit=1&cursor={cursor}")
        assert reply.status == 422, (name, reply.body)
        assert (reply.body["error"], reply.body["fields"][0]["field"]) == ("listing.invalid_cursor", "cursor"), name
    rest = api.get(f"/contacts?limit=5&cursor={real}").body["items"]
    assert len(rest) == 2  # the real cursor still pages


def start_key(pk: Any, sk: Any, index_sk: Any) -> str:
    return encode({"PK": {"S": pk}, "SK": {"S": sk}, "GSI1PK": {"S": "DUE#000"}, "GSI1SK": {"S": index_sk}})


@pytest.mark.parametrize(
    "cursor",
    [
        start_key("", "", ""),
        start_key("T#t#C#c", "SUB#s", ""),
        start_key("T#t#C#c", "SUB#s", "€" * 350),  # longer than DynamoDB takes for a key
        start_key("T#t#C#c", "\ud800", "2025-01-01#t#c#s"),
        start_key("T#t#C#c", "SUB#s", "2025-01-02#t#c#s"),  # after the query's as_of
        start_key("T#t#C#c", "SUB#s", "x"),
        encode({"PK": {"S": "T#t", "N": "1"}, "SK": {"S": "x"}, "GSI1PK": {"S": "DUE#000"}, "GSI1SK": {"S": "x"}}),
    ],
)
def test_a_forged_due_index_cursor_is_refused_before_dynamodb(local_table: str, cursor: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        DynamoStore().due_page(date(2025, 1, 1), 0, 10, cursor)
    assert caught.value.code == "listing.invalid_cursor"
