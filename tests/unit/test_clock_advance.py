"""A test-clock advance over the API: 202 and `advancing` at once, the billing off the request
path (here: delivered by the test, as Lambda would), `ready` when done; one advance at a time;
bounded by two intervals of the contact's shortest cycle (moto table)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from billow.gateways.invoke import handler_of
from billow.local.lambda_runtime import invoke
from billow.local.stack import add_tenant

from tests.support import InProcessClient, RecordingInvoker, make_contact, make_product

KEY = "bk_test_clock_advance"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-c", "Tenant C", KEY)
    yield InProcessClient(KEY)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> RecordingInvoker:
    """The API's async invoker, recording instead of running: advances stay under way."""
    invoker = RecordingInvoker()
    monkeypatch.setattr("api.contacts.invoker", invoker)
    return invoker


def on_clock(api: InProcessClient, cycle: str, frozen_time: str) -> dict:
    product = make_product(api, {"price": "10.00", "currency": "USD", "cycle": cycle, "billing_model": "advance"})
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": frozen_time}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    return contact


def test_an_advance_answers_at_once_and_bills_off_the_request_path(
    api: InProcessClient, held: RecordingInvoker
) -> None:
    contact = on_clock(api, "month", "2024-01-31T10:00:00Z")
    clock_path = f"/contacts/{contact['id']}/test-clock"

    reply = api.post(f"{clock_path}/advance", {"to": "2024-03-31T10:00:00Z"})

    assert reply.status == 202, reply.body
    assert reply.body["status"] == "advancing" and reply.body["frozen_time"] == "2024-03-31T10:00:00+00:00"
    assert api.get(clock_path).body["status"] == "advancing"
    assert len(api.get(f"/contacts/{contact['id']}/invoices").body["items"]) == 1  # nothing billed yet
    # One advance at a time: another one is refused while this one runs; asking again for the
    # same one resumes it (hands it to the function again).
    other = api.post(f"{clock_path}/advance", {"to": "2024-02-15T10:00:00Z"})
    assert other.status == 409 and other.body["error"] == "test_clock.advancing", other.body
    again = api.post(f"{clock_path}/advance", {"to": "2024-03-31T10:00:00Z"})
    assert again.status == 202 and len(held.events) == 2

    for concern, event in held.events:  # delivered twice: the second finds nothing left to do
        invoke(handler_of(concern), event)

    ready = api.get(clock_path).body
    assert ready["status"] == "ready" and ready["advance_limit"] == "2024-05-31T10:00:00+00:00"
    invoices = api.get(f"/contacts/{contact['id']}/invoices").body["items"]
    assert [i["billing_date"] for i in invoices] == ["2024-01-31", "2024-02-29", "2024-03-31"]


def test_one_advance_reaches_at_most_two_intervals_of_the_shortest_cycle(
    api: InProcessClient, held: RecordingInvoker
) -> None:
    contact = on_clock(api, "week", "2024-03-04T08:00:00Z")
    clock_path = f"/contacts/{contact['id']}/test-clock"
    assert api.get(clock_path).body["advance_limit"] == "2024-03-18T08:00:00+00:00"

    far = api.post(f"{clock_path}/advance", {"to": "2300-01-01T00:00:00Z"})

    assert far.status == 422 and far.body["error"] == "test_clock.advance_too_far", far.body
    assert far.body["fields"][0]["field"] == "to" and "2024-03-18T08:00:00+00:00" in far.body["message"]
    assert api.get(clock_path).body["frozen_time"] == "2024-03-04T08:00:00+00:00" and held.events == []
    assert api.post(f"{clock_path}/advance", {"to": "2024-03-18T08:00:00Z"}).status == 202


def test_a_contact_without_subscriptions_advances_two_years_at_most(api: InProcessClient) -> None:
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-02-29T00:00:00Z"}).status == 201
    assert api.get(f"/contacts/{contact['id']}/test-clock").body["advance_limit"] == "2026-02-28T00:00:00+00:00"
    far = api.post(f"/contacts/{contact['id']}/test-clock/advance", {"to": "2026-03-01T00:00:00Z"})
    assert far.status == 422 and far.body["error"] == "test_clock.advance_too_far"


def test_a_clock_time_noted_in_one_invocation_stamps_nothing_of_the_next(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A container runs invocations one after another in one context: a test-clock time noted by
    # an earlier request must not be there when the next one writes.
    from datetime import UTC, datetime

    from billow.storage import repository

    repository._CLOCK_TIMES.set({"T#elsewhere#TEST#C#con_1": datetime(2020, 1, 1, tzinfo=UTC)})
    seen: list[dict[str, datetime]] = []
    settings_read = repository.DynamoStore.get_settings

    def noting(self: repository.DynamoStore, tenant_id: str) -> object:
        seen.append(dict(repository._CLOCK_TIMES.get({})))
        return settings_read(self, tenant_id)

    monkeypatch.setattr(repository.DynamoStore, "get_settings", noting)
    assert api.get("/settings").status == 200
    assert seen and all(times == {} for times in seen)
