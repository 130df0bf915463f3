"""The local stack driven over HTTP only, as a user would."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billow.local import stack

from tests.support import (
    HttpClient,
    Reply,
    advance_clock,
    banner,
    local_api,
    make_contact,
    make_product,
    run_local_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_e2e"


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-e2e", "e2e", KEY) as client:
        yield client


def test_three_billing_cycles_by_time_travel_then_nothing_twice(api: HttpClient) -> None:
    # Given a monthly in-arrears product and a contact on a test clock at 31 January 2024
    product = make_product(api, {"price": "30.00", "currency": "USD", "cycle": "month", "billing_model": "arrears"})
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-01-31T10:00:00Z"}).status == 201
    placed = api.post(
        "/orders",
        {
            "contact_id": contact["id"],
            "reference": "e2e-order",
            "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}],
        },
    )
    assert placed.status == 201 and placed.body["invoices"] == []

    # When the clock crosses three billing days (29 Feb, 31 Mar, 30 Apr)
    advanced = advance_clock(api, contact["id"], "2024-05-01T10:00:00Z")
    assert advanced["frozen_time"] == "2024-05-01T10:00:00+00:00" and advanced["status"] == "ready"

    # Then there are exactly three invoices with the right periods and amounts
    invoices = api.get(f"/contacts/{contact['id']}/invoices").body["items"]
    assert [(i["period"]["start"], i["period"]["end"], i["billing_date"], i["total"]["amount"]) for i in invoices] == [
        ("2024-01-31", "2024-02-29", "2024-02-29", "30.00"),
        ("2024-02-29", "2024-03-31", "2024-03-31", "30.00"),
        ("2024-03-31", "2024-04-30", "2024-04-30", "30.00"),
    ]
    assert len({i["number"] for i in invoices}) == 3

    # And advancing again to the same instant creates nothing new
    advance_clock(api, contact["id"], "2024-05-01T10:00:00Z")
    assert len(api.get(f"/invoices?contact_id={contact['id']}").body["items"]) == 3

    # And the subscription shows where it stands (a listing shows the next billing date when asked)
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions?include=next_billing_date").body["items"]
    assert subscription["next_billing_date"] == "2024-05-31"
    assert api.get(f"/subscriptions/{subscription['id']}").body["next_billing_date"] == "2024-05-31"
    assert subscription["billing_day"] == 31


def test_another_contacts_clock_is_untouched(api: HttpClient) -> None:
    product = make_product(api, {"price": "10.00", "currency": "EUR", "cycle": "week", "billing_model": "advance"})
    mover, stayer = make_contact(api, "Mover"), make_contact(api, "Stayer")
    for contact in (mover, stayer):
        api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2024-03-04T08:00:00Z"})
        api.post(
            "/orders",
            {
                "contact_id": contact["id"],
                "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}],
            },
        )
    advance_clock(api, mover["id"], "2024-03-25T08:00:00Z")
    assert len(api.get(f"/contacts/{mover['id']}/invoices").body["items"]) == 4
    assert len(api.get(f"/contacts/{stayer['id']}/invoices").body["items"]) == 1


def test_a_manual_payment_over_http(api: HttpClient) -> None:
    product = make_product(api, {"price": "1500", "currency": "JPY", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    (invoice,) = api.post(
        "/orders",
        {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]},
    ).body["invoices"]
    assert invoice["total"] == {"amount": "1500", "currency": "JPY"}
    paid = api.post(
        f"/invoices/{invoice['id']}/payments",
        {"amount": "1500", "currency": "JPY", "reference": "TRF-1", "received_on": invoice["issue_date"]},
    )
    assert paid.status == 201
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "paid"


def test_make_run_prints_a_curl_that_returns_data_and_where_events_are_written(tmp_path: Path) -> None:
    port = stack.dynamodb.free_port()
    # run where `make run` would be: the events file is written beneath it
    process = run_local_stack("--port", str(port), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        output = banner(process)
        match = re.search(r"^\s*(curl -s -H .*/products)$", output, re.MULTILINE)
        assert match, output
        # Run the printed line through a shell exactly as a user pasting it would.
        result = subprocess.run(  # noqa: S602
            match.group(1), shell=True, capture_output=True, text=True, timeout=30, check=True
        )
        assert '"name": "Starter"' in result.stdout or '"name":"Starter"' in result.stdout

        # localstripe runs beside it on loopback, and the demo contacts pay as the demo promises
        stripe_url = re.search(r"^localstripe .*: (http://127\.0\.0\.1:\d+)$", output, re.MULTILINE)
        assert stripe_url, output
        demo = HttpClient(f"http://127.0.0.1:{port}", "bk_test_demo_local_only")
        people = {c["name"]: c for c in demo.get("/contacts").body["items"]}
        cards = {
            name: [m["last4"] for m in demo.get(f"/contacts/{c['id']}/payment-methods").body["items"]]
            for name, c in people.items()
        }
        assert cards == {"Ada Lovelace": ["4242"], "Grace Hopper": ["0341"], "Kenji Sato": []}
        assert people["Kenji Sato"]["preferred_payment_method"] == "bank_transfer"
        assert people["Kenji Sato"]["collection"] == "manual"  # never charged, never payment.failed
        assert people["Ada Lovelace"]["default_payment_method"]

        # Grace's declined card: the banner names her dunning case and a curl that shows it, under
        # the demo's policy (a threshold, so a deactivation can be seen)
        dunning = re.search(r"^\s*(curl -s -H .*/dunning-cases/\S+)$", output, re.MULTILINE)
        assert dunning, output
        shown = subprocess.run(  # noqa: S602
            dunning.group(1), shell=True, capture_output=True, text=True, timeout=30, check=True
        )
        case = json.loads(shown.stdout)
        assert case["contact_id"] == people["Grace Hopper"]["id"], case
        assert case["policy"]["deactivation_threshold"] == {"USD": "50.00"}

        # Ada's API calls: the banner's view-bill curl shows the usage so far, rated (1,500 calls, sent
        # twice, counted once: Stripe's graduated tiers give 140.00)
        upcoming = re.search(r"^\s*(curl -s -H .*/upcoming)$", output, re.MULTILINE)
        assert upcoming, output
        shown = subprocess.run(  # noqa: S602
            upcoming.group(1), shell=True, capture_output=True, text=True, timeout=30, check=True
        )
        usage_lines = [
            line
            for invoice in json.loads(shown.stdout)["invoices"]
            for line in invoice["lines"]
            if line["kind"] == "usage"
        ]
        assert [line["amount"]["amount"] for line in usage_lines][:1] == ["140.00"], usage_lines

        # Ada's credits and entitlements: the banner's curls show 880 included left and a promotional
        # 200 (24 AI reports at 5), and what her Starter plan grants
        for path, check in (
            ("/credits", lambda body: body["balance"]["included"] == 880 and body["balance"]["promotional"] == 200),
            ("/entitlements", lambda body: body["features"] == ["api", "exports"] and body["limits"] == {"seats": 5}),
        ):
            found = re.search(rf"^\s*(curl -s -H .*{path})$", output, re.MULTILINE)
            assert found, output
            shown = subprocess.run(  # noqa: S602
                found.group(1), shell=True, capture_output=True, text=True, timeout=30, check=True
            )
            assert check(json.loads(shown.stdout)), shown.stdout

        # The events file it names receives an order's event whole, its data included
        watched = re.search(r"tail -f (\S+)$", output, re.MULTILINE)
        assert watched, output
        events_file = tmp_path / watched.group(1)
        api = HttpClient(f"http://127.0.0.1:{port}", "bk_test_demo_local_only")
        product = make_product(api, {"price": "12.34", "currency": "EUR", "cycle": "month", "billing_model": "advance"})
        contact = make_contact(api)
        item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
        placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
        (invoice,) = placed.body["invoices"]
        issued = None
        while issued is None and time.monotonic() < deadline + 60:
            events = [json.loads(line) for line in events_file.read_text().splitlines()]
            issued = next((e for e in events if e["detail"]["data"].get("invoice_id") == invoice["id"]), None)
            time.sleep(0.2)
        assert issued is not None, events_file.read_text()[-2000:]
        assert issued["detail-type"] == "billow.invoice.issued" and issued["source"] == "billow"
        assert issued["detail"]["contact_id"] == contact["id"] and issued["detail"]["mode"] == "test"
        assert issued["detail"]["data"]["total"] == {"amount": "12.34", "currency": "EUR"}
        kenji_failed = [
            e
            for e in events
            if e["detail-type"] == "billow.payment.failed" and e["detail"]["contact_id"] == people["Kenji Sato"]["id"]
        ]
        assert kenji_failed == []  # a transfer payer's invoice is not a failed card payment
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # leave nothing running (its JVM dies with it)
            process.kill()
            process.wait()
            raise
    assert process.returncode == 0


def order_on_a_clock(api: HttpClient, price: str, frozen_time: str) -> tuple[dict[str, Any], Reply]:
    """A monthly in-advance product ordered by a new contact whose test clock is at `frozen_time`."""
    product = make_product(api, {"price": price, "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": frozen_time})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    return contact, api.post("/orders", {"contact_id": contact["id"], "items": [item]})


def test_dry_run_view_bill_and_billing_cycles_ahead_over_http(api: HttpClient) -> None:
    # The dry run answers without any stored data, and refuses bad input naming the field
    request = {
        "terms": {"cycle": "month", "billing_model": "advance", "price": "30.00", "currency": "USD"},
        "start": "2024-01-31",
        "as_of": "2024-02-29",
    }
    preview = api.post("/billing/preview", request)
    assert preview.status == 200
    lines = [line for invoice in preview.body["invoices"] for line in invoice["lines"]]
    assert [(x["period"]["start"], x["period"]["end"], x["amount"]["amount"]) for x in lines] == [
        ("2024-01-31", "2024-02-29", "30.00"),
        ("2024-02-29", "2024-03-31", "30.00"),
    ]
    bad = api.post("/billing/preview", {**request, "terms": {**request["terms"], "price": "-1"}})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "terms.price"

    # Given a monthly in-advance subscription on a test clock at 31 January 2024
    contact, placed = order_on_a_clock(api, "30.00", "2024-01-31T10:00:00Z")
    subscription_id = placed.body["order"]["services"][0]["subscription_id"]

    # The view bill shows the next three invoices, exactly as the dry run bills them
    upcoming = api.get(f"/subscriptions/{subscription_id}/upcoming")
    assert upcoming.status == 200
    assert [
        (i["billing_date"], i["period"]["start"], i["period"]["end"], i["total"]["amount"])
        for i in upcoming.body["invoices"]
    ] == [
        ("2024-02-29", "2024-02-29", "2024-03-31", "30.00"),
        ("2024-03-31", "2024-03-31", "2024-04-30", "30.00"),
        ("2024-04-30", "2024-04-30", "2024-05-31", "30.00"),
    ]

    # Billing two cycles ahead issues those invoices today, once
    ahead = api.post(f"/subscriptions/{subscription_id}/bill-ahead", {"cycles": 2})
    assert ahead.status == 201 and ahead.body["action"]["status"] == "executed"
    assert [(i["period"]["start"], i["issue_date"], i["due_date"]) for i in ahead.body["invoices"]] == [
        ("2024-02-29", "2024-01-31", "2024-02-14"),
        ("2024-03-31", "2024-01-31", "2024-02-14"),
    ]
    assert api.post(f"/subscriptions/{subscription_id}/bill-ahead", {"cycles": 2}).body["invoices"] == []
    after = api.get(f"/subscriptions/{subscription_id}/upcoming?count=1").body["invoices"]
    assert [i["billing_date"] for i in after] == ["2024-04-30"]
    both = api.post(f"/subscriptions/{subscription_id}/bill-ahead", {"cycles": 1, "until": "2024-06-01"})
    assert both.status == 422 and both.body["fields"][0]["field"] == "cycles"

    # Time travel past those days bills nothing twice
    advance_clock(api, contact["id"], "2024-04-01T10:00:00Z")
    invoices = api.get(f"/contacts/{contact['id']}/invoices").body["items"]
    assert [i["period"]["start"] for i in invoices] == ["2024-01-31", "2024-02-29", "2024-03-31"]


def test_a_business_switches_to_period_billing_with_a_threshold_and_new_orders_follow(api: HttpClient) -> None:
    # Refused rules name the field and change nothing
    bad = api.patch("/settings/billing", {"threshold_day": 40})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "threshold_day"
    assert api.get("/settings").body["billing"]["calendar"] == "anniversary"

    # Period billing on the 1st with a threshold on the 15th
    changed = api.patch("/settings/billing", {"calendar": "period", "period_day": 1, "threshold_day": 15})
    assert changed.status == 200
    assert (
        changed.body["billing"] | {"calendar": "period", "period_day": 1, "threshold_day": 15}
        == changed.body["billing"]
    )

    contact, placed = order_on_a_clock(api, "31.00", "2025-01-20T10:00:00Z")
    # Ordered after the threshold: the first invoice runs to the billing day plus one full month
    (invoice,) = placed.body["invoices"]
    assert [(x["period"]["start"], x["period"]["end"], x["amount"]["amount"]) for x in invoice["lines"]] == [
        ("2025-01-20", "2025-02-01", "12.00"),
        ("2025-02-01", "2025-03-01", "31.00"),
    ]
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    assert subscription["billing_day"] == 1

    # Back to the defaults for the other tests of this module
    api.patch("/settings/billing", {"calendar": "anniversary", "threshold_day": None})


def test_errors_over_http_are_in_the_one_shape(api: HttpClient) -> None:
    shape = {"error", "message", "fields"}
    unknown = api.get("/no-such-route")
    assert unknown.status == 404 and set(unknown.body) == shape and unknown.body["error"] == "route.not_found"
    wrong = api.request("PATCH", "/contacts", {})
    assert wrong.status == 405 and wrong.body["error"] == "route.method_not_allowed"
    assert wrong.headers["Allow"] == "GET, POST"
    media = api.post("/contacts", raw=b"<contact/>", headers={"Content-Type": "application/xml"})
    assert media.status == 415 and set(media.body) == shape and media.body["error"] == "request.unsupported_media_type"
    anonymous = api.get("/contacts", key=None)
    assert anonymous.status == 401
    assert anonymous.body == {"error": "auth.unauthorized", "message": "missing or invalid API key", "fields": []}
