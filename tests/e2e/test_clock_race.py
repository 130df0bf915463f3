"""Two advances of one contact's test clock at once over HTTP, from two separate processes (as two
clients would): one is accepted and the other refused cleanly, or both are accepted and end
consistent; either way no period is billed twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support import (
    HttpClient,
    advance_clock,
    local_api,
    make_contact,
    make_product,
    post_from_processes,
    wait_until_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_clock_race"


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-e2e-clock-race", "race", KEY) as client:
        yield client


def advance_at_once(api: HttpClient, contact_id: str, targets: list[str]) -> list[tuple[int, dict]]:
    """POST each advance from its own process, all released at the same instant."""
    path = f"/contacts/{contact_id}/test-clock/advance"
    return [(r.status, r.body) for r in post_from_processes(api, [(path, {"to": to}, {}) for to in targets])]


def contact_on_clock(api: HttpClient) -> str:
    product = make_product(api, {"price": "7.00", "currency": "USD", "cycle": "week", "billing_model": "advance"})
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-03-04T08:00:00Z"}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    return str(contact["id"])


def billed_periods(api: HttpClient, contact_id: str) -> list[tuple[str, str]]:
    periods = [
        (i["period"]["start"], i["period"]["end"]) for i in api.get(f"/contacts/{contact_id}/invoices").body["items"]
    ]
    assert [p for p, n in Counter(periods).items() if n > 1] == [], "a period was billed twice"
    return sorted(periods)


@pytest.mark.parametrize(
    "targets",
    [
        ["2024-03-11T08:00:00Z", "2024-03-18T08:00:00Z"],  # different days: one wins, one is refused
        ["2024-03-18T08:00:00Z", "2024-03-18T08:00:00Z"],  # the same advance twice: both end as one
    ],
)
def test_two_advances_of_one_clock_at_once(api: HttpClient, targets: list[str]) -> None:
    contact_id = contact_on_clock(api)

    replies = advance_at_once(api, contact_id, targets)

    accepted = [to for to, (status, _) in zip(targets, replies, strict=True) if status == 202]
    refused = [(to, body) for to, (status, body) in zip(targets, replies, strict=True) if status != 202]
    assert accepted, replies
    # Refused while the other runs (advancing), or after it finished when it went further (backwards).
    assert all(
        body["error"] == "test_clock.advancing" or (body["error"] == "test_clock.backwards" and to < max(accepted))
        for to, body in refused
    ), replies
    assert all(status in (202, 409) for status, _ in replies), replies
    clock = wait_until_ready(api, contact_id)
    # The clock stands where an accepted advance took it (the later one, if both were accepted).
    assert clock["frozen_time"] == max(accepted).replace("Z", "+00:00")
    weeks = {"2024-03-11T08:00:00Z": 2, "2024-03-18T08:00:00Z": 3}[max(accepted)]
    periods = billed_periods(api, contact_id)
    assert len(periods) == weeks  # the week ordered, then one per billing day crossed

    # And the clock goes on from there, billing nothing twice
    advance_clock(api, contact_id, "2024-03-25T08:00:00Z")
    assert len(billed_periods(api, contact_id)) == 4
