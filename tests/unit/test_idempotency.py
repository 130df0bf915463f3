"""An idempotency key (an `Idempotency-Key` header, an order's or a manual payment's `reference`)
is bound to the request it was first sent with: the same request again is answered with the first
result, marked as a replay; another request with the key is refused with 422
`idempotency.key_reused`, naming the key (moto table, through the API handler)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billow.local.stack import add_tenant
from billow.services.idempotency import RETENTION, claim_key, fingerprint
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, Reply, make_contact, make_product

KEY = "bk_test_idempotency"
_ORDERS: dict[int | str, dict[str, Any]] = {}
"""What one test ordered once, for the creates that need an order."""
ADVANCE = {"price": "100.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-i", "Tenant I", KEY)
    _ORDERS.clear()
    yield InProcessClient(KEY)


def keyed(key: str) -> dict[str, Any]:
    return {"headers": {"Idempotency-Key": key}}


def placed(api: InProcessClient) -> dict[str, Any]:
    product, contact = make_product(api, ADVANCE), make_contact(api)
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    reply = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert reply.status == 201, reply.body
    return dict(reply.body)


# Each keyed create: (send it with a body and a key, the first answer's status, another body).
Send = Callable[[InProcessClient, dict[str, Any], str], Reply]


def _product(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    return api.post("/products", {"name": "Pro", "terms": [ADVANCE], **body}, **keyed(key))


def _terms(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    listed = api.get("/products").body["items"]
    product = listed[0]["id"] if listed else make_product(api, ADVANCE)["id"]
    return api.post(f"/products/{product}/terms", {**ADVANCE, "cycle": "year", **body}, **keyed(key))


def _terms_version(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    if "version" not in _ORDERS:
        _ORDERS["version"] = make_product(api, ADVANCE)
    product = _ORDERS["version"]
    path = f"/products/{product['id']}/terms/{product['terms'][0]['id']}"
    return api.patch(path, {"price": "110.00", **body}, **keyed(key))


def _contact(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    return api.post("/contacts", {"name": "Ann", "email": "ann@example.com", **body}, **keyed(key))


def _placed(api: InProcessClient) -> dict[str, Any]:
    if id(api) not in _ORDERS:
        _ORDERS[id(api)] = placed(api)
    return _ORDERS[id(api)]


def _first_service(api: InProcessClient) -> tuple[str, str]:
    order = _placed(api)["order"]
    service = order["services"][0]
    return service["subscription_id"], service["service_id"]


def _action(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    subscription_id, service_id = _first_service(api)
    return api.post(f"/subscriptions/{subscription_id}/services/{service_id}/pause", {"days": 3, **body}, **keyed(key))


def _order(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    if -id(api) not in _ORDERS:
        _ORDERS[-id(api)] = {"product": make_product(api, ADVANCE), "contact": make_contact(api)}
    product, contact = _ORDERS[-id(api)]["product"], _ORDERS[-id(api)]["contact"]
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    return api.post("/orders", {"contact_id": contact["id"], "items": items, "reference": key, **body})


def _payment(api: InProcessClient, body: dict[str, Any], key: str) -> Reply:
    (invoice,) = _placed(api)["invoices"]
    payment = {"amount": "10.00", "currency": "USD", "method": "bank_transfer", "received_on": invoice["issue_date"]}
    return api.post(f"/invoices/{invoice['id']}/payments", {**payment, "reference": key, **body})


CREATES: list[tuple[Send, int, dict[str, Any], str]] = [
    (_product, 201, {"description": "another"}, "Idempotency-Key"),
    (_terms, 201, {"price": "120.00"}, "Idempotency-Key"),
    (_terms_version, 201, {"price": "111.00"}, "Idempotency-Key"),
    (_contact, 201, {"email": "bob@example.com"}, "Idempotency-Key"),
    (_action, 201, {"days": 4}, "Idempotency-Key"),
    (_order, 201, {"start_date": "2031-01-01"}, "reference"),
    (_payment, 201, {"amount": "11.00"}, "reference"),
]


@pytest.mark.parametrize(("send", "status", "other", "field"), CREATES, ids=lambda v: getattr(v, "__name__", ""))
def test_the_same_request_replays_and_another_body_is_refused_naming_the_key(
    api: InProcessClient, send: Send, status: int, other: dict[str, Any], field: str
) -> None:
    first = send(api, {}, "key-7f3a")
    assert first.status == status, first.body
    again = send(api, {}, "key-7f3a")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.status in (status, 200) and again.body.get("id") == first.body.get("id")
    if "replayed" in again.body:
        assert again.body["replayed"] is True
    reused = send(api, other, "key-7f3a")
    assert (reused.status, reused.body["error"]) == (422, "idempotency.key_reused"), reused.body
    assert reused.body["fields"][0]["field"] == field and "key-7f3a" in reused.body["message"]
    assert "Idempotent-Replayed" not in first.headers


def test_a_key_sent_to_another_route_is_refused(api: InProcessClient) -> None:
    assert _contact(api, {}, "key-one").status == 201
    reused = _product(api, {}, "key-one")
    assert (reused.status, reused.body["error"]) == (422, "idempotency.key_reused")
    assert len(api.get("/products").body["items"]) == 0


def test_a_request_refused_as_invalid_leaves_its_key_free_for_the_corrected_request(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    wrong = api.post("/products/prod_nope/terms", {**ADVANCE, "cycle": "year"}, **keyed("terms-key"))
    assert wrong.status == 404
    right = api.post(f"/products/{product['id']}/terms", {**ADVANCE, "cycle": "year"}, **keyed("terms-key"))
    assert right.status == 201, right.body


class At:
    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


def test_a_key_is_kept_for_24_hours_then_may_be_used_for_a_new_request(moto_table: str) -> None:
    store, clock = DynamoStore(), At(datetime(2026, 3, 1, 9, tzinfo=UTC))
    first, other = fingerprint("POST", "/contacts", {"name": "Ann"}), fingerprint("POST", "/contacts", {"name": "Bob"})

    def claim(request: str) -> Any:
        return claim_key(store, "t1", scope="k", key="key-1", request=request, field="Idempotency-Key", clock=clock)

    made = claim(first)
    assert not made.seen and made.claim.expires_at == clock.at + RETENTION
    clock.at += RETENTION - timedelta(seconds=1)
    assert claim(first).seen and claim(first).claim.nonce == made.claim.nonce
    with pytest.raises(Exception, match="first used with another request"):
        claim(other)
    clock.at += timedelta(seconds=2)  # expired (DynamoDB's TTL may not have deleted it yet)
    again = claim(other)
    assert not again.seen and again.claim.nonce != made.claim.nonce  # new ids for the new request


class Crash(BaseException):
    """The process dies (not an error the handler could catch)."""


def test_a_crash_after_the_key_is_claimed_neither_blocks_the_key_nor_creates_twice(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DynamoStore.add_contact

    def dies(self: DynamoStore, tenant_id: str, contact: Any) -> None:
        monkeypatch.setattr(DynamoStore, "add_contact", original)
        raise Crash

    monkeypatch.setattr(DynamoStore, "add_contact", dies)
    with pytest.raises(Crash):
        _contact(api, {}, "crash-key")
    retry = _contact(api, {}, "crash-key")
    assert retry.status == 200, retry.body  # a retry of a claimed key answers as a replay
    again = _contact(api, {}, "crash-key")
    assert again.body == retry.body and again.headers.get("Idempotent-Replayed") == "true"
    assert [c["id"] for c in api.get("/contacts").body["items"]] == [retry.body["id"]]


def test_an_action_crashed_between_scheduling_and_executing_is_executed_once_by_its_retry(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billow.services import actions

    subscription_id, service_id = _first_service(api)
    contact_id = _placed(api)["order"]["contact_id"]
    calls = {"n": 0}
    original = actions.bill_loaded

    def dies_after_scheduling(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the first brought it up to date; the second would execute it
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(actions, "bill_loaded", dies_after_scheduling)
    path = f"/subscriptions/{subscription_id}/services/{service_id}/cancel"
    with pytest.raises(Crash):
        api.post(path, {}, **keyed("cancel-crash"))
    monkeypatch.setattr(actions, "bill_loaded", original)
    (pending,) = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
    assert pending["status"] == "scheduled"

    retry = api.post(path, {}, **keyed("cancel-crash"))
    assert (retry.status, retry.body["action"]["status"], retry.body["replayed"]) == (200, "executed", True)
    assert retry.body["action"]["id"] == pending["id"]
    log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
    assert [(a["id"], a["status"]) for a in log] == [(pending["id"], "executed")]
    kinds = sorted(i["kind"] for i in api.get(f"/contacts/{contact_id}/invoices").body["items"])
    assert kinds == ["credit_note", "invoice"]  # credited once


def test_a_refused_order_leaves_its_reference_free_for_the_corrected_order(api: InProcessClient) -> None:
    contact, good, gone = make_contact(api), make_product(api, ADVANCE), make_product(api, ADVANCE, name="Old")
    assert api.post(f"/products/{gone['id']}/archive").status == 200

    def order(product: dict[str, Any]) -> Reply:
        items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
        return api.post("/orders", {"contact_id": contact["id"], "items": items, "reference": "po-123"})

    refused = order(gone)
    assert (refused.status, refused.body["error"]) == (409, "catalog.product_archived"), refused.body
    corrected = order(good)
    assert corrected.status == 201, corrected.body
    assert corrected.body["order"]["reference"] == "po-123"
    again = order(gone)  # now the reference is bound to the order placed
    assert (again.status, again.body["error"]) == (422, "idempotency.key_reused"), again.body


def test_refused_terms_leave_their_key_free_for_the_corrected_request(api: InProcessClient) -> None:
    product = make_product(api, ADVANCE)
    assert api.post(f"/products/{product['id']}/archive").status == 200
    path, terms = f"/products/{product['id']}/terms", {**ADVANCE, "cycle": "year"}
    refused = api.post(path, terms, **keyed("terms-409"))
    assert (refused.status, refused.body["error"]) == (409, "catalog.product_archived"), refused.body
    assert api.post(f"/products/{product['id']}/unarchive").status == 200
    corrected = api.post(path, {**terms, "price": "90.00"}, **keyed("terms-409"))
    assert corrected.status == 201, corrected.body


def _while_placing(api: InProcessClient, monkeypatch: pytest.MonkeyPatch, during: Callable[[], Reply]) -> list[Reply]:
    """Run `during` while an order is being placed (after its reference is claimed, before it is
    stored), as another request would arrive from another container; its replies are returned."""
    from billow.services import ordering

    original, replies = ordering.place_order, []

    def place_order(*args: Any, **kwargs: Any) -> Any:
        replies.append(during())
        return original(*args, **kwargs)

    monkeypatch.setattr(ordering, "place_order", place_order)
    return replies


def test_a_reference_held_by_an_executing_request_answers_in_progress_then_key_reused(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _order(api, {}, "po-9")  # makes the product and the contact before the patch
    assert first.status == 201
    other_body = {"start_date": "2031-01-01"}
    during = _while_placing(api, monkeypatch, lambda: _order(api, other_body, "po-10"))
    placed = _order(api, {}, "po-10")
    monkeypatch.undo()
    assert placed.status == 201, placed.body
    (busy,) = during
    assert (busy.status, busy.body["error"]) == (409, "idempotency.in_progress"), busy.body
    assert busy.body["fields"][0]["field"] == "reference"
    after = _order(api, other_body, "po-10")  # the holder has answered: the reference is bound
    assert (after.status, after.body["error"]) == (422, "idempotency.key_reused"), after.body


def test_a_reference_held_by_a_request_then_refused_is_free_for_the_next(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _order(api, {}, "po-1").status == 201
    bad = {"items": [{"product_id": "prod_none", "terms_id": "terms_none"}]}
    during = _while_placing(api, monkeypatch, lambda: _order(api, {}, "po-2"))
    refused = _order(api, bad, "po-2")
    monkeypatch.undo()
    assert (refused.status, refused.body["error"]) == (404, "resource.not_found"), refused.body
    assert (during[0].status, during[0].body["error"]) == (409, "idempotency.in_progress"), during[0].body
    retry = _order(api, {}, "po-2")
    assert retry.status == 201, retry.body


def test_a_retry_of_a_refused_holder_reaching_an_order_another_body_placed_is_refused_not_answered_it(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of tests/e2e/test_races.py, its steps in order: a refused body claims a reference
    and the same body arrives again (a retry: it runs too); the holder is refused and frees the
    reference; another body claims it and places its order; only then the retry looks the reference
    up. It finds an order its own body did not place: 422 `idempotency.key_reused`, not that order."""
    from api import context
    from billow.services import ordering

    contact, good, gone = make_contact(api), make_product(api, ADVANCE), make_product(api, ADVANCE, name="Old")
    assert api.post(f"/products/{gone['id']}/archive").status == 200

    def order(product: dict[str, Any]) -> Reply:
        items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
        return api.post("/orders", {"contact_id": contact["id"], "items": items, "reference": "po-race"})

    claims, steps = [], []
    claim_key_, place_order = context.claim_key, ordering.place_order

    def recorded(*args: Any, **kwargs: Any) -> Any:
        claims.append(claim_key_(*args, **kwargs))
        return claims[-1]

    def placing(*args: Any, **kwargs: Any) -> Any:
        if steps:
            steps.pop(0)()
        return place_order(*args, **kwargs)

    def holder_stops() -> None:
        raise Crash  # the holder of the reference is still executing (in another container)

    replies: dict[str, Reply] = {}

    def holder_refused_then_valid_body_placed() -> None:
        holder = claims[0]
        assert claims[1].seen and claims[1].claim.nonce == holder.claim.nonce  # the retry runs under its claim
        DynamoStore().release_idempotency_key("tenant-i", holder.claim)  # the holder refused: reference freed
        replies["valid"] = order(good)

    monkeypatch.setattr(context, "claim_key", recorded)
    monkeypatch.setattr(ordering, "place_order", placing)
    steps.append(holder_stops)
    with pytest.raises(Crash):
        order(gone)
    steps.append(holder_refused_then_valid_body_placed)
    retry = order(gone)
    monkeypatch.undo()

    assert replies["valid"].status == 201, replies["valid"].body
    assert (retry.status, retry.body.get("error")) == (422, "idempotency.key_reused"), retry.body
    assert retry.body["fields"][0]["field"] == "reference" and "po-race" in retry.body["message"]
    again = order(good)  # the valid body's retry is still answered its order
    assert again.status == 200 and again.body["order"]["id"] == replies["valid"].body["order"]["id"]


def test_a_claim_is_in_progress_while_its_request_may_run_then_bound(moto_table: str) -> None:
    from billow.services.idempotency import EXECUTING_AT_MOST, bound_key

    store, clock = DynamoStore(), At(datetime(2026, 3, 1, 9, tzinfo=UTC))
    first, other = fingerprint("POST", "/contacts", {"name": "Ann"}), fingerprint("POST", "/contacts", {"name": "Bob"})

    def claim(request: str) -> Any:
        return claim_key(store, "t1", scope="k", key="key-1", request=request, field="Idempotency-Key", clock=clock)

    made = claim(first)  # its request crashes: the claim is never marked done
    assert not made.claim.done
    clock.at += EXECUTING_AT_MOST - timedelta(seconds=1)
    with pytest.raises(Exception, match="still being executed") as busy:
        claim(other)
    assert getattr(busy.value, "code", None) == "idempotency.in_progress"
    clock.at += timedelta(seconds=2)  # it cannot be running any more
    with pytest.raises(Exception, match="first used with another request"):
        claim(other)
    kw: dict[str, Any] = {"scope": "k", "field": "Idempotency-Key", "clock": clock}
    with bound_key(store, "t1", claim_key(store, "t1", key="key-2", request=first, **kw), clock=clock):
        pass  # answered at once
    with pytest.raises(Exception, match="first used with another request"):
        claim_key(store, "t1", key="key-2", request=other, **kw)
