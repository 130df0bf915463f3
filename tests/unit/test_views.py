"""What a new user reads: previews say what would happen and show no ids that will not exist, one
vocabulary for invoices, lines and days, and a service in trial says so (in-process API, moto)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact, make_product
from tests.unit.test_actions import subscribe, terms

KEY = "bk_test_views"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("views", "Views Tenant", KEY)
    yield InProcessClient(KEY)


def customer(api: InProcessClient, product: dict[str, Any], frozen: str = "2027-01-01T12:00:00Z") -> dict[str, Any]:
    """A contact on a test clock with one service of `product`'s first terms; the subscription."""
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": frozen}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
    assert placed.status == 201, placed.body
    subscription_id = placed.body["order"]["services"][0]["subscription_id"]
    return dict(api.get(f"/subscriptions/{subscription_id}").body)


def test_an_immediate_change_previews_as_executed_and_names_each_invoices_subscription(api: InProcessClient) -> None:
    product = make_product(api, MONTHLY)
    quarterly = api.post(f"/products/{product['id']}/terms", {**MONTHLY, "cycle": "quarter", "price": "120.00"})
    dearer = api.post(f"/products/{product['id']}/terms", {**MONTHLY, "price": "40.00"})
    assert quarterly.status == 201 and dearer.status == 201
    subscription = customer(api, product)
    service = f"/subscriptions/{subscription['id']}/services/{subscription['services'][0]['id']}"

    more = api.post(f"{service}/change/preview", {"terms_id": dearer.body["id"]})  # an upgrade: immediate
    assert more.status == 200, more.body
    assert (more.body["action"]["status"], more.body["action"]["on"]) == ("executed", "2027-01-01")
    assert more.body["action"]["outcome"].startswith("changed to")
    assert more.body["invoices"] and {i["subscription_id"] for i in more.body["invoices"]} == {subscription["id"]}

    # moving to a quarterly subscription the contact does not have yet: its invoices name none
    move = api.post(f"{service}/change/preview", {"terms_id": quarterly.body["id"]})
    assert move.status == 200, move.body
    assert move.body["action"]["status"] == "executed"
    assert {i["subscription_id"] for i in move.body["invoices"]} == {subscription["id"], None}
    assert all(i["due_date"] for i in move.body["invoices"])
    # a change for a later day previews as scheduled; nothing was written by any preview
    later = api.post(f"{service}/change/preview", {"terms_id": dearer.body["id"], "on": "2027-01-10"})
    assert (later.body["action"]["status"], later.body["action"]["on"]) == ("scheduled", "2027-01-10")
    assert api.get(f"/subscriptions/{subscription['id']}/actions").body["actions"] == []


def test_upcoming_invoices_carry_the_fields_of_issued_ones(api: InProcessClient) -> None:
    subscription = customer(api, make_product(api, MONTHLY))
    (upcoming,) = api.get(f"/subscriptions/{subscription['id']}/upcoming?count=1").body["invoices"]
    issued = api.get(f"/contacts/{subscription['contact_id']}/invoices").body["items"][0]
    assert upcoming["due_date"] == "2027-02-15"  # issued 2027-02-01, 14 days' payment terms by default
    assert upcoming["subscription_id"] == subscription["id"] and upcoming["kind"] == "invoice"
    assert set(upcoming) <= set(issued) and set(upcoming["lines"][0]) == set(issued["lines"][0])


def test_the_billing_day_is_a_number_as_the_billing_day_action_takes_it(api: InProcessClient) -> None:
    assert customer(api, make_product(api, MONTHLY))["billing_day"] == 1
    weekly = make_product(api, {**MONTHLY, "cycle": "week"}, name="Weekly")
    assert customer(api, weekly)["billing_day"] == 4  # 2027-01-01 is a Friday: 0 is Monday


def test_a_setup_fee_line_has_no_period_in_the_dry_run_as_on_the_invoice(api: InProcessClient) -> None:
    terms_ = {"cycle": "month", "billing_model": "advance", "price": "30.00", "currency": "USD", "setup_fee": "5.00"}
    preview = api.post("/billing/preview", {"terms": terms_, "start": "2027-01-01", "as_of": "2027-01-01"})
    assert preview.status == 200, preview.body
    (invoice,) = preview.body["invoices"]
    fee = next(x for x in invoice["lines"] if x["kind"] == "setup_fee")
    assert fee["period"] is None and fee["amount"] == {"amount": "5.00", "currency": "USD"}
    assert preview.body["total"] == {"amount": "35.00", "currency": "USD"}

    subscription = customer(api, make_product(api, {**MONTHLY, "setup_fee": "5.00"}))
    issued = api.get(f"/contacts/{subscription['contact_id']}/invoices").body["items"][0]
    issued_fee = next(x for x in issued["lines"] if x["kind"] == "setup_fee")
    assert set(issued_fee) == set(fee) and issued_fee["period"] is None


def test_a_service_in_its_trial_says_it_is_trialing(api: InProcessClient) -> None:
    trial = make_product(api, {**MONTHLY, "trial_days": 14})
    (service,) = customer(api, trial)["services"]
    assert (service["state"], service["trial_ends_on"], service["trialing"]) == ("effective", "2027-01-15", True)
    (paid,) = customer(api, make_product(api, MONTHLY, name="No trial"))["services"]
    assert paid["trialing"] is False


@pytest.mark.parametrize(
    ("today", "trialing"),
    [(date(2026, 12, 31), False), (date(2027, 1, 1), True), (date(2027, 1, 14), True), (date(2027, 1, 15), False)],
)
def test_trialing_runs_from_the_start_to_the_day_before_the_trial_ends(today: date, trialing: bool) -> None:
    (service,) = subscribe(date(2027, 1, 1), terms(trial_days=14)).services
    assert service.trialing(today) is trialing
