"""Input that used to get a 5xx or a wrong answer (issue 10, points 7 to 10), through the real API
handler on moto: a 4xx in the one error shape with a dotted code, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api.bodies import MAX_DEPTH, nesting_depth_exceeds
from billow.local.stack import add_tenant
from billow.storage.models import BillowItem

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_input_tenant"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("input-tenant", "Input Tenant", KEY)
    yield InProcessClient(KEY)


def item_count() -> int:
    return sum(1 for _ in BillowItem.scan())


def refused(reply: object, status: int, code: str, field: str | None = None) -> None:
    body = getattr(reply, "body")
    assert getattr(reply, "status") == status, body
    assert set(body) >= {"error", "message", "fields"} and body["error"] == code, body
    if field is not None:
        assert field in [f["field"] for f in body["fields"]], body


# -- point 7: bodies nested too deep, bodies that are not JSON ----------------------------------------
def nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b"}"


def test_a_body_of_a_thousand_nested_arrays_is_a_400_not_a_crash(api: InProcessClient) -> None:
    before = item_count()
    refused(api.post("/products", raw=b"[" * 1000 + b"]" * 1000), 400, "request.too_deep", "body")
    refused(api.post("/contacts", raw=nested(100_000)), 400, "request.too_deep", "body")
    assert item_count() == before


def test_the_depth_limit_counts_brackets_not_strings() -> None:
    assert not nesting_depth_exceeds("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert nesting_depth_exceeds("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert nesting_depth_exceeds('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1))
    assert not nesting_depth_exceeds('{"name": "' + "[" * 5000 + '\\"[["}')


def test_a_body_within_the_limit_is_validated_as_usual(api: InProcessClient) -> None:
    reply = api.post("/contacts", raw=nested(MAX_DEPTH - 1))
    refused(reply, 422, reply.body["error"], "name")
    assert reply.body["error"] != "request.too_deep"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000,  # unbalanced and deep
        b'{"name": NaN, "email": "a@example.com"}',  # NaN is not JSON
        b'{"name": "Ann", "email": "a@example.com", "classification": ' + b"1" * 5000 + b"}",  # too long an int
    ],
)
def test_what_is_not_json_is_a_400_malformed_body(api: InProcessClient, raw: bytes) -> None:
    before = item_count()
    reply = api.post("/contacts", raw=raw)
    assert reply.status == 400 and set(reply.body) >= {"error", "message", "fields"}, reply.body
    assert item_count() == before


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
    ],
)
def test_a_body_that_is_not_json_is_a_415(api: InProcessClient, content_type: str) -> None:
    before = item_count()
    form = b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\r\n--xyz--\r\n'
    reply = api.post("/products", raw=form, headers={"Content-Type": content_type})
    refused(reply, 415, "request.unsupported_media_type", "body")
    assert item_count() == before


def test_json_with_a_charset_is_json(api: InProcessClient) -> None:
    reply = api.post(
        "/contacts",
        raw=b'{"name": "Ann", "email": "a@example.com"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201, reply.body
