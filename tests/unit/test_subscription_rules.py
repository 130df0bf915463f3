"""The business's subscription rules, through the API in-process (moto): each refusal is a 4xx that
names the rule, and each setting can be read back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local.stack import add_tenant

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_rules"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("rules", "Rules Tenant", KEY)
    yield InProcessClient(KEY)


def order(api: InProcessClient, contact: dict[str, Any], *products: dict[str, Any]) -> Any:
    items = [{"product_id": p["id"], "terms_id": p["terms"][0]["id"]} for p in products]
    return api.post("/orders", {"contact_id": contact["id"], "items": items})


def first_service(placed: Any) -> tuple[str, str]:
    ordered = placed.body["order"]["services"][0]
    return ordered["subscription_id"], ordered["service_id"]


def test_trial_once_per_contact_and_once_per_service(api: InProcessClient) -> None:
    trial = {**MONTHLY, "trial_days": 14}
    one, two = make_product(api, trial, name="One"), make_product(api, trial, name="Two")
    assert api.patch("/settings/subscriptions", {"trial_limit": "once_per_contact"}).status == 200
    ann = make_contact(api)
    assert order(api, ann, one).body["invoices"] == []  # in trial
    second = order(api, ann, two)  # no second trial: charged from today, aligned to the first's billing day
    assert [line["kind"] for i in second.body["invoices"] for line in i["lines"]] == ["prorated"]

    api.patch("/settings/subscriptions", {"trial_limit": "once_per_service"})
    bob = make_contact(api)
    assert order(api, bob, one).body["invoices"] == []
    assert order(api, bob, two).body["invoices"] == []  # another service: its own trial


def test_dependency_rules_and_service_restrictions(api: InProcessClient) -> None:
    base, addon, rival = (make_product(api, MONTHLY, name=n) for n in ("Base", "Addon", "Rival"))
    rules = {"requires": {addon["id"]: [base["id"]]}, "excludes": [[base["id"], rival["id"]]]}
    assert api.patch("/settings/subscriptions", {**rules, "max_services": {"starter": 2}}).status == 200

    ann = make_contact(api)
    alone = order(api, ann, addon)
    assert alone.status == 409 and alone.body["error"] == "dependency.requires"
    assert order(api, ann, base, addon).status == 201
    clash = order(api, ann, rival)
    assert clash.status == 409 and clash.body["error"] == "dependency.excludes"

    starter = api.post("/contacts", {"name": "Sam", "email": "sam@example.com", "classification": "starter"}).body
    assert order(api, starter, base, addon).status == 201
    third = order(api, starter, make_product(api, MONTHLY, name="Extra"))
    assert third.status == 409 and third.body["error"] == "contact.max_services"


def test_tier_paths_decide_which_changes_are_allowed(api: InProcessClient) -> None:
    basic, pro, other = (
        make_product(api, {**MONTHLY, "price": p}, name=n) for p, n in (("10", "B"), ("31", "P"), ("5", "O"))
    )
    api.patch("/settings/subscriptions", {"tier_paths": [[basic["id"], pro["id"]]], "upgrade": "immediate"})
    ann = make_contact(api)
    subscription_id, service_id = first_service(order(api, ann, basic))
    path = f"/subscriptions/{subscription_id}/services/{service_id}/change"
    off = api.post(path, {"product_id": other["id"], "terms_id": other["terms"][0]["id"]})
    assert off.status == 409 and off.body["error"] == "change.tier_path"
    up = api.post(path, {"product_id": pro["id"], "terms_id": pro["terms"][0]["id"]})
    assert up.status == 201 and up.body["action"]["parameters"]["upgrade"] is True
    same = api.post(path, {"product_id": pro["id"], "terms_id": pro["terms"][0]["id"]})
    assert same.status == 422 and same.body["fields"][0]["field"] == "terms_id"


def test_reasons_pause_limits_and_credit_limit(api: InProcessClient) -> None:
    product = make_product(api, MONTHLY)
    api.patch(
        "/settings/subscriptions",
        {"reasons": {"pause": ["holiday", "illness"]}, "pause_max_times": 1, "pause_max_days": 20},
    )
    contact = api.post(
        "/contacts", {"name": "Ann", "email": "a@example.com", "credit_limit": {"USD": "10.00", "EUR": "0.00"}}
    ).body
    subscription_id, service_id = first_service(order(api, contact, product))
    pause = f"/subscriptions/{subscription_id}/services/{service_id}/pause"
    assert api.post(pause, {"days": 5}).body["error"] == "reason.not_allowed"
    assert api.post(pause, {"days": 5, "reason": "boredom"}).body["error"] == "reason.not_allowed"
    assert api.post(pause, {"days": 30, "reason": "holiday"}).body["error"] == "pause.max_days"
    assert api.post(pause, {"days": 5, "reason": "holiday", "in_days": 3}).status == 202
    again = api.post(pause, {"days": 5, "reason": "illness", "in_days": 20})
    assert again.status == 409 and again.body["error"] == "pause.max_times"

    # the contact owes 31.00 with a credit limit of 10.00: no activation until paid
    api.patch("/settings/subscriptions", {"debt_threshold": {"USD": "100.00"}})
    assert api.post(f"/subscriptions/{subscription_id}/services/{service_id}/deactivate", {}).status == 201
    refused = api.post(f"/subscriptions/{subscription_id}/services/{service_id}/activate", {})
    assert refused.status == 409 and refused.body["error"] == "activation.credit_limit"
    log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
    assert sorted(a["rule"] for a in log if a["status"] == "rejected") == [
        "activation.credit_limit",
        "pause.max_days",
        "pause.max_times",
        "reason.not_allowed",
        "reason.not_allowed",
    ]


def test_settings_are_validated_and_read_back(api: InProcessClient) -> None:
    bad = api.patch("/settings/subscriptions", {"grace_min_days": 40, "grace_max_days": 30})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "grace_min_days"
    unknown = api.patch("/settings/subscriptions", {"refund_everything": True})
    assert unknown.status == 422 and unknown.body["fields"][0]["field"] == "refund_everything"
    assert api.patch("/settings/subscriptions", {"regret_days": 30, "downgrade": "immediate"}).status == 200
    read = api.get("/settings").body["subscriptions"]
    assert (read["regret_days"], read["downgrade"], read["upgrade"]) == (30, "immediate", "immediate")


def test_a_retried_refusal_is_refused_again_not_answered_as_done(api: InProcessClient) -> None:
    product = make_product(api, MONTHLY)
    subscription_id, service_id = first_service(order(api, make_contact(api), product))
    resume = f"/subscriptions/{subscription_id}/services/{service_id}/resume"
    key = {"Idempotency-Key": "resume-1"}
    first = api.post(resume, {}, headers=key)
    again = api.post(resume, {}, headers=key)
    assert (first.status, again.status) == (409, 409)
    assert again.body == first.body
    assert first.body["error"] == "lifecycle.illegal_transition"
    log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
    assert [(a["action"], a["status"]) for a in log] == [("resume", "rejected")]


def frozen_customer(api: InProcessClient, product: dict[str, Any]) -> tuple[str, str]:
    """A contact on a test clock frozen at 2027-01-01 with one service of `product`, ordered that day."""
    contact = make_contact(api)
    clock = api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2027-01-01T12:00:00Z"})
    assert clock.status == 201, clock.body
    return first_service(order(api, contact, product))


def test_a_late_regret_says_when_the_regret_period_ended(api: InProcessClient) -> None:
    subscription_id, service_id = frozen_customer(api, make_product(api, MONTHLY))
    late = api.post(f"/subscriptions/{subscription_id}/services/{service_id}/regret", {"on": "2027-01-20"})
    assert late.status == 409 and late.body["error"] == "regret.period"
    # the period counts from the start (2027-01-01): 14 days, ended on the 15th
    assert "ended on 2027-01-15" in late.body["message"] and "started (2027-01-15)" not in late.body["message"]


def test_an_action_the_state_forbids_is_an_illegal_transition_before_any_rule(api: InProcessClient) -> None:
    api.patch("/settings/subscriptions", {"reasons": {"pause": ["holiday"]}})
    subscription_id, service_id = frozen_customer(api, make_product(api, MONTHLY))
    base = f"/subscriptions/{subscription_id}/services/{service_id}"
    assert api.post(f"{base}/cancel", {}).status == 201
    # past the regret period and without the reason a pause needs: the state refuses them first
    regret = api.post(f"{base}/regret", {"on": "2027-01-20"})
    pause = api.post(f"{base}/pause", {"days": 3})
    for refused in (regret, pause):
        assert refused.status == 409 and refused.body["error"] == "lifecycle.illegal_transition", refused.body
        assert "cancelled service" in refused.body["message"] and "cancel it" not in refused.body["message"]
    log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
    assert [a["rule"] for a in log if a["status"] == "rejected"] == ["lifecycle.illegal_transition"] * 2
