"""Races over HTTP against the local gateway, whose worker processes serve requests at once as
separate warm Lambda containers would: many copies of one request, many different requests on one
subscription, and many settings changes at once. Every answer is a clean one (never a 5xx), every
acknowledged change is in the final state, and nothing happens twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import (
    SETTINGS_CHANGES,
    HttpClient,
    Reply,
    local_api,
    make_contact,
    make_product,
    saved_method_records,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_races"
ADVANCE = {"price": "30.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-races", "races", KEY) as client:
        yield client


def at_once(calls: list[Callable[[], Reply]]) -> list[Reply]:
    """Send every request at the same time, each from its own HTTP client thread."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def subscribed(api: HttpClient) -> tuple[str, str, str]:
    """A contact on a test clock with one monthly in-advance service: (contact, subscription, service)."""
    product, contact = make_product(api, ADVANCE), make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"}).status == 201
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    placed = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert placed.status == 201, placed.body
    service = placed.body["order"]["services"][0]
    return contact["id"], service["subscription_id"], service["service_id"]


def test_one_action_sent_20_times_at_once_with_one_key_happens_once(api: HttpClient) -> None:
    contact, subscription, service = subscribed(api)
    path = f"/subscriptions/{subscription}/services/{service}/cancel"
    replies = at_once([lambda: api.post(path, {}, headers={"Idempotency-Key": "cancel-once"})] * 20)

    outcomes = Counter((r.status, r.body.get("error")) for r in replies)
    assert set(outcomes) <= {(201, None), (200, None), (409, "idempotency.in_progress")}, outcomes
    assert outcomes[(201, None)] == 1  # the first; every other 2xx is its replay
    done = [r.body for r in replies if r.status in (200, 201)]
    assert {(b["action"]["id"], b["action"]["status"]) for b in done} == {(done[0]["action"]["id"], "executed")}
    assert all(b["replayed"] for b in done if b is not next(r.body for r in replies if r.status == 201))

    log = api.get(f"/subscriptions/{subscription}/actions").body["actions"]
    assert [(a["action"], a["status"]) for a in log] == [("cancel", "executed")]
    (state,) = [s["state"] for s in api.get(f"/subscriptions/{subscription}").body["services"]]
    assert state == "cancelled"
    kinds = Counter(i["kind"] for i in api.get(f"/contacts/{contact}/invoices").body["items"])
    assert kinds == {"invoice": 1, "credit_note": 1}


def test_20_different_actions_at_once_on_one_subscription_lose_nothing(api: HttpClient) -> None:
    contact, subscription, _ = subscribed(api)
    saved_method_records(contact, [f"pm_{day}" for day in range(1, 21)], "races")
    path = f"/subscriptions/{subscription}/payment-method"

    def schedule(day: int) -> Callable[[], Reply]:
        return lambda: api.post(path, {"payment_method": f"pm_{day}", "in_days": day})

    replies = at_once([schedule(day) for day in range(1, 21)])

    assert all(r.status in (202, 409) for r in replies), [(r.status, r.body) for r in replies]
    losers = [r.body for r in replies if r.status == 409]
    assert all(b["error"] == "resource.concurrent_modification" and b["message"] for b in losers)
    accepted = {r.body["action"]["id"]: r.body["action"]["parameters"] for r in replies if r.status == 202}
    assert accepted, "no request got through"
    pending = api.get(f"/subscriptions/{subscription}").body["pending_actions"]
    assert {a["id"]: a["parameters"] for a in pending} == accepted  # every 2xx is pending, nothing else
    log = api.get(f"/subscriptions/{subscription}/actions").body["actions"]
    assert {a["id"]: a["status"] for a in log} == dict.fromkeys(accepted, "scheduled")


def test_one_billing_day_change_sent_8_times_at_once_bills_nothing_twice(api: HttpClient) -> None:
    contact, subscription, _ = subscribed(api)
    path = f"/subscriptions/{subscription}/billing-day"
    replies = at_once([lambda: api.post(path, {"billing_day": 20})] * 8)

    outcomes = Counter((r.status, r.body.get("error")) for r in replies)
    assert outcomes[(201, None)] == 1, outcomes  # the others find the day set, or lose the write
    assert set(outcomes) <= {(201, None), (409, "billing_day.unchanged"), (409, "resource.concurrent_modification")}
    assert api.get(f"/subscriptions/{subscription}").body["billing_day"] == 20
    # January is charged once; its credit and the new cycle's first days wait for 20 January
    invoices = api.get(f"/contacts/{contact}/invoices").body["items"]
    assert [i["total"]["amount"] for i in invoices] == ["30.00"]


@pytest.mark.parametrize("round_", range(2))
def test_6_settings_changes_at_once_all_survive(api: HttpClient, round_: int) -> None:
    changes = [
        {name: value + round_ if isinstance(value, int) else value}
        for c in SETTINGS_CHANGES
        for name, value in c.items()
    ]
    replies = at_once([lambda change=change: api.patch("/settings/subscriptions", change) for change in changes])
    assert [r.status for r in replies] == [200] * len(changes), [r.body for r in replies]
    stored: dict[str, Any] = api.get("/settings").body["subscriptions"]
    assert {name: stored[name] for c in changes for name in c} == {k: v for c in changes for k, v in c.items()}


def test_one_reference_sent_with_15_refused_bodies_and_one_valid_at_once_places_the_valid_order(
    api: HttpClient,
) -> None:
    """While the request holding a reference executes, another body with it is told to retry (409
    `idempotency.in_progress`), never that the reference is taken; a refused holder releases it."""
    contact, good, gone = make_contact(api), make_product(api, ADVANCE), make_product(api, ADVANCE, name="Old")
    assert api.post(f"/products/{gone['id']}/archive").status == 200

    def order(product: dict[str, Any]) -> Callable[[], Reply]:
        items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
        return lambda: api.post("/orders", {"contact_id": contact["id"], "items": items, "reference": "po-race"})

    replies = at_once([order(gone)] * 8 + [order(good)] + [order(gone)] * 7)
    valid, refused = replies[8], replies[:8] + replies[9:]

    in_progress = (409, "idempotency.in_progress")
    assert (valid.status, valid.body.get("error")) in {(201, None), in_progress}, valid.body
    outcomes = Counter((r.status, r.body.get("error")) for r in refused)
    assert set(outcomes) <= {(409, "catalog.product_archived"), in_progress, (422, "idempotency.key_reused")}, outcomes
    if outcomes[(422, "idempotency.key_reused")]:  # only once the valid order holds the reference
        assert valid.status == 201
    retry = order(good)()
    for _ in range(20):  # a holder still executing (another request racing the retry) answers shortly
        if retry.status != 409:
            break
        retry = order(good)()
    assert retry.status in (200, 201), retry.body
    assert retry.status == (200 if valid.status == 201 else 201)
    invoiced = [i["subscription_id"] for i in api.get(f"/contacts/{contact['id']}/invoices").body["items"]]
    assert invoiced == [retry.body["order"]["services"][0]["subscription_id"]]  # one order, billed once
