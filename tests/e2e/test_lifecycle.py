"""Subscription actions over HTTP on the local stack, with time travel: each action's effect on
the service's state, on the action log and on the next invoice.

Every contact starts on a test clock at 1 January 2025 with a monthly in-advance product at 31.00
(in January a day costs exactly 1.00)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import HttpClient, advance_clock, local_api, make_contact, make_product, saved_method_records

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_lifecycle"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture(scope="module")
def api() -> Iterator[HttpClient]:
    with local_api("billow-e2e-lifecycle", "life", KEY) as client:
        yield client


class Customer:
    """One contact on its own test clock with one subscribed service."""

    def __init__(self, api: HttpClient, terms: dict[str, Any] | None = None, start: str = "2025-01-01") -> None:
        self.api = api
        self.product = make_product(api, {**MONTHLY, **(terms or {})})
        self.contact = make_contact(api)
        clock = api.post(f"/contacts/{self.contact['id']}/test-clock", {"frozen_time": f"{start}T10:00:00Z"})
        assert clock.status == 201, clock.body
        item = {"product_id": self.product["id"], "terms_id": self.product["terms"][0]["id"]}
        placed = api.post("/orders", {"contact_id": self.contact["id"], "items": [item]})
        assert placed.status == 201, placed.body
        ordered = placed.body["order"]["services"][0]
        self.subscription_id, self.service_id = ordered["subscription_id"], ordered["service_id"]

    def advance(self, day: str) -> None:
        advance_clock(self.api, self.contact["id"], f"{day}T10:00:00Z")

    def act(self, action: str, body: dict[str, Any] | None = None) -> Any:
        return self.api.post(f"/subscriptions/{self.subscription_id}/services/{self.service_id}/{action}", body or {})

    @property
    def service(self) -> dict[str, Any]:
        return dict(self.api.get(f"/subscriptions/{self.subscription_id}").body["services"][0])

    def log(self) -> list[tuple[str, str, str]]:
        actions = self.api.get(f"/subscriptions/{self.subscription_id}/actions").body["actions"]
        return [(a["action"], a["status"], a["on"]) for a in actions]

    def invoices(self) -> list[dict[str, Any]]:
        return list(self.api.get(f"/contacts/{self.contact['id']}/invoices").body["items"])

    def lines(self, invoice: dict[str, Any]) -> list[tuple[str, str]]:
        full = self.api.get(f"/invoices/{invoice['id']}").body
        return [(line["kind"], line["amount"]["amount"]) for line in full["lines"]]


def test_pause_on_the_10th_for_10_days_is_credited_on_the_next_invoice(api: HttpClient) -> None:
    ann = Customer(api)
    scheduled = ann.act("pause", {"on": "2025-01-10", "days": 10, "reason": "holiday"})
    assert scheduled.status == 202 and scheduled.body["action"]["status"] == "scheduled"
    assert ann.log() == [("pause", "scheduled", "2025-01-10")]

    ann.advance("2025-01-12")
    assert ann.service["state"] == "paused"
    assert ann.log() == [("pause", "executed", "2025-01-10"), ("resume", "scheduled", "2025-01-20")]

    ann.advance("2025-02-01")
    assert ann.service["state"] == "effective"
    assert ("resume", "executed", "2025-01-20") in ann.log()
    _, february = ann.invoices()
    assert february["billing_date"] == "2025-02-01"
    # the 10 paused days credited (the days after the resume stay invoiced), February in full
    assert ann.lines(february) == [("credit", "-10.00"), ("recurring", "31.00")]
    assert february["total"]["amount"] == "21.00"


def test_regret_inside_the_regret_period_is_a_full_credit_note_and_outside_it_is_refused(api: HttpClient) -> None:
    ann = Customer(api, {"setup_fee": "5.00"})
    ann.advance("2025-01-05")
    regret = ann.act("regret", {"reason": "changed my mind"})
    assert regret.status == 201, regret.body
    assert regret.body["action"]["status"] == "executed" and ann.service["state"] == "regretted"
    (note,) = regret.body["invoices"]
    assert note["kind"] == "credit_note" and note["total"]["amount"] == "-36.00"
    assert api.get(f"/subscriptions/{ann.subscription_id}").body["state"] == "churned"

    bob = Customer(api)
    bob.advance("2025-01-20")
    late = bob.act("regret")
    assert late.status == 409 and late.body["error"] == "regret.period"
    assert bob.log()[-1][:2] == ("regret", "rejected")
    rejected = api.get(f"/subscriptions/{bob.subscription_id}/actions").body["actions"][-1]
    assert rejected["rule"] == "regret.period" and "ended on 2025-01-15" in rejected["outcome"]


def test_a_downgrade_is_scheduled_for_the_cycle_end_and_the_new_price_billed_after(api: HttpClient) -> None:
    ann = Customer(api)
    basic = make_product(api, {**MONTHLY, "price": "10.00"}, name="Basic")
    ann.advance("2025-01-20")
    change = {"product_id": basic["id"], "terms_id": basic["terms"][0]["id"]}
    preview = api.post(f"/subscriptions/{ann.subscription_id}/services/{ann.service_id}/change/preview", change)
    assert preview.status == 200 and preview.body["action"]["on"] == "2025-02-01"
    assert [i["total"]["amount"] for i in preview.body["invoices"]] == ["10.00", "10.00"]

    downgrade = ann.act("change", change)
    assert downgrade.status == 202, downgrade.body
    assert downgrade.body["action"]["on"] == "2025-02-01" and downgrade.body["action"]["parameters"]["upgrade"] is False
    pending = api.get(f"/subscriptions/{ann.subscription_id}").body["pending_actions"]
    assert [(a["action"], a["on"]) for a in pending] == [("change", "2025-02-01")]

    ann.advance("2025-03-01")
    assert ("change", "executed", "2025-02-01") in ann.log()
    assert ann.service["product_name"] == "Basic"
    assert [i["total"]["amount"] for i in ann.invoices()] == ["31.00", "10.00", "10.00"]


def test_an_upgrade_mid_cycle_credits_the_old_price_and_charges_the_new(api: HttpClient) -> None:
    ann = Customer(api)
    enterprise = make_product(api, {**MONTHLY, "price": "62.00"}, name="Enterprise")
    ann.advance("2025-01-11")
    upgrade = ann.act("change", {"product_id": enterprise["id"], "terms_id": enterprise["terms"][0]["id"]})
    assert upgrade.status == 201 and upgrade.body["action"]["parameters"]["upgrade"] is True
    ann.advance("2025-02-01")
    february = ann.invoices()[-1]
    assert ann.lines(february) == [("credit", "-21.00"), ("prorated", "42.00"), ("recurring", "62.00")]


def _with_quarterly_terms(api: HttpClient, ann: Customer, price: str, currency: str = "USD") -> dict[str, Any]:
    terms = {"price": price, "currency": currency, "cycle": "quarter", "billing_model": "advance"}
    added = api.post(f"/products/{ann.product['id']}/terms", terms)
    assert added.status == 201, added.body
    return {"terms_id": added.body["id"]}


def test_an_upgrade_to_quarterly_terms_moves_the_service_to_a_quarterly_subscription(api: HttpClient) -> None:
    ann = Customer(api)
    quarterly = _with_quarterly_terms(api, ann, "99.00")  # 396.00 a year against 372.00: an upgrade
    ann.advance("2025-01-16")
    service = f"/subscriptions/{ann.subscription_id}/services/{ann.service_id}"
    preview = api.post(f"{service}/change/preview", quarterly)
    assert preview.status == 200 and preview.body["action"]["on"] == "2025-01-16"
    assert preview.body["action"]["status"] == "executed"  # it would take effect now
    # the credit on this subscription; the first quarter on one the move creates (no id until then)
    assert [(i["subscription_id"], i["total"]["amount"]) for i in preview.body["invoices"]] == [
        (ann.subscription_id, "-16.00"),
        (None, "99.00"),
    ]

    moved = ann.act("change", {**quarterly, "reason": "pays quarterly now"})
    assert moved.status == 201, moved.body
    action = moved.body["action"]
    assert action["parameters"]["upgrade"] is True and action["moved_to"] not in (None, ann.subscription_id)
    # 16-31 January credited on the monthly subscription, the first quarter billed on the new one
    assert sorted((i["subscription_id"], i["total"]["amount"]) for i in moved.body["invoices"]) == sorted(
        [(ann.subscription_id, "-16.00"), (action["moved_to"], "99.00")]
    )
    old = api.get(f"/subscriptions/{ann.subscription_id}").body
    assert old["services"] == [] and old["state"] == "churned"
    new = api.get(f"/subscriptions/{action['moved_to']}").body
    assert (new["cycle"], new["billing_day"], new["state"]) == ("quarter", 16, "active")
    (joined,) = new["services"]
    assert (joined["id"], joined["terms"]["id"], joined["state"]) == (
        ann.service_id,
        quarterly["terms_id"],
        "effective",
    )
    for subscription_id in (ann.subscription_id, action["moved_to"]):
        log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
        assert [(a["action"], a["status"], a["moved_to"]) for a in log] == [("change", "executed", action["moved_to"])]

    ann.advance("2025-04-16")
    totals = [(i["billing_date"], i["total"]["amount"]) for i in ann.invoices()]
    assert totals == [
        ("2025-01-01", "31.00"),
        ("2025-01-16", "-16.00"),
        ("2025-01-16", "99.00"),
        ("2025-04-16", "99.00"),
    ]


def test_a_downgrade_to_quarterly_terms_moves_the_service_at_the_cycle_end(api: HttpClient) -> None:
    ann = Customer(api)
    quarterly = _with_quarterly_terms(api, ann, "90.00")  # 360.00 a year: a downgrade
    ann.advance("2025-01-20")
    scheduled = ann.act("change", quarterly)
    assert scheduled.status == 202 and scheduled.body["action"]["on"] == "2025-02-01"
    ann.advance("2025-02-01")
    (record,) = api.get(f"/subscriptions/{ann.subscription_id}/actions").body["actions"]
    assert (record["status"], record["on"]) == ("executed", "2025-02-01") and record["moved_to"]
    # Moved before February was billed: nothing to credit, the quarter billed from 1 February.
    totals = [(i["subscription_id"], i["total"]["amount"]) for i in ann.invoices()]
    assert totals == [(ann.subscription_id, "31.00"), (record["moved_to"], "90.00")]


def test_a_change_of_currency_is_refused_with_the_rule(api: HttpClient) -> None:
    ann = Customer(api)
    euros = _with_quarterly_terms(api, ann, "90.00", "EUR")
    refused = ann.act("change", euros)
    assert refused.status == 409 and refused.body["error"] == "change.currency"
    assert ann.log() == [("change", "rejected", "2025-01-01")]


def test_cancelling_inside_the_contract_period_charges_the_fee(api: HttpClient) -> None:
    ann = Customer(api, {"contract_cycles": 12, "cancellation_fee": "50.00"})
    ann.advance("2025-01-21")
    cancel = ann.act("cancel", {"reason": "moving abroad"})
    # in contract, the business's rule moves a cancellation to the end of the cycle
    assert cancel.status == 202 and cancel.body["action"]["on"] == "2025-02-01"
    ann.advance("2025-02-01")
    assert ann.service["state"] == "cancelled"
    last = ann.invoices()[-1]
    assert ann.lines(last) == [("cancellation_fee", "50.00")]

    # once the business allows immediate cancellation in contract, unused days are credited too
    assert api.patch("/settings/subscriptions", {"cancel_in_contract": "immediate"}).status == 200
    bob = Customer(api, {"contract_cycles": 12, "cancellation_fee": "50.00"})
    bob.advance("2025-01-21")
    now = bob.act("cancel")
    assert now.status == 201
    assert bob.lines(now.body["invoices"][0]) == [("credit", "-11.00"), ("cancellation_fee", "50.00")]
    api.patch("/settings/subscriptions", {"cancel_in_contract": "end_of_cycle"})


def test_the_end_of_a_trial_brings_the_first_paid_invoice(api: HttpClient) -> None:
    ann = Customer(api, {"trial_days": 14})
    ann.advance("2025-01-14")
    assert ann.invoices() == []
    assert ann.service["trial_ends_on"] == "2025-01-15"
    ann.advance("2025-01-15")
    (first,) = ann.invoices()
    assert (first["billing_date"], first["total"]["amount"]) == ("2025-01-15", "31.00")


def test_a_termed_service_without_auto_renew_expires_stops_billing_and_can_be_renewed(api: HttpClient) -> None:
    ann = Customer(api, {"term_cycles": 2, "auto_renew": False})
    ann.advance("2025-05-01")
    assert [i["billing_date"] for i in ann.invoices()] == ["2025-01-01", "2025-02-01"]
    service = ann.service
    assert (service["state"], service["expired"]) == ("not_effective", True)
    assert ann.log() == [("expire", "executed", "2025-03-01")]
    refused = ann.act("activate")
    assert refused.status == 409 and refused.body["error"] == "activation.not_expired"

    renewed = ann.act("renew")
    assert renewed.status == 201 and ann.service["term_end"] == "2025-07-01"
    assert renewed.body["invoices"][0]["period"] == {"start": "2025-05-01", "end": "2025-06-01"}


def test_activation_needs_debts_below_the_threshold(api: HttpClient) -> None:
    ann = Customer(api)
    assert ann.act("deactivate").status == 201
    (unpaid,) = [i for i in ann.invoices() if i["kind"] == "invoice"]
    refused = ann.act("activate")
    assert refused.status == 409 and refused.body["error"] == "activation.debt_threshold"
    payment = {
        "amount": "31.00",
        "currency": "USD",
        "method": "bank_transfer",
        "reference": "w1",
        "received_on": "2025-01-01",
    }
    assert api.post(f"/invoices/{unpaid['id']}/payments", payment).status == 201
    assert ann.act("activate").status == 201 and ann.service["state"] == "effective"
    assert [entry[:2] for entry in ann.log()] == [
        ("deactivate", "executed"),
        ("activate", "rejected"),
        ("activate", "executed"),
    ]


def test_illegal_requests_are_refused_with_the_state_and_rule_and_logged(api: HttpClient) -> None:
    ann = Customer(api)
    resume = ann.act("resume")
    assert resume.status == 409 and resume.body["error"] == "lifecycle.illegal_transition"
    assert resume.body["message"] == "cannot resume a effective service: only paused services can be resumed"
    assert ann.log() == [("resume", "rejected", "2025-01-01")]
    bad = ann.act("pause", {"days": 0})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "days"
    past = ann.act("cancel", {"on": "2024-12-31"})
    assert past.status == 422 and past.body["fields"][0]["field"] == "on"


def test_pending_actions_can_be_rescheduled_or_cancelled(api: HttpClient) -> None:
    ann = Customer(api)
    pause = ann.act("pause", {"in_days": 5, "days": 3}).body["action"]
    assert pause["on"] == "2025-01-06"
    path = f"/subscriptions/{ann.subscription_id}/actions/{pause['id']}"
    moved = api.patch(path, {"on": "2025-01-08"})
    assert moved.status == 200 and moved.body["on"] == "2025-01-08"
    assert api.delete(path).status == 200
    assert api.delete(path).status == 404
    ann.advance("2025-01-10")
    assert ann.service["state"] == "effective"
    assert ann.log() == [("pause", "cancelled", "2025-01-08")]


def test_subscription_actions_and_settings(api: HttpClient) -> None:
    ann = Customer(api)
    base = f"/subscriptions/{ann.subscription_id}"
    grace = api.post(f"{base}/grace-period", {"days": 10})
    assert grace.status == 201 and grace.body["subscription"]["grace_until"] == "2025-01-11"
    assert api.post(f"{base}/grace-period", {"days": 90}).body["error"] == "grace.days"
    saved_method_records(ann.contact["id"], ["pm_saved_visa"], "life")
    method = api.post(f"{base}/payment-method", {"payment_method": "pm_saved_visa"})
    assert method.body["subscription"]["payment_method"] == "pm_saved_visa"
    day = api.post(f"{base}/billing-day", {"billing_day": 15})
    assert day.status == 201 and day.body["subscription"]["billing_day"] == 15
    assert api.post(f"{base}/billing-day", {"billing_day": 15}).body["error"] == "billing_day.unchanged"
    # changed on its first day: on the 15th January's old charge is credited with the new cycle's
    # first days, 1-14 January, and its first full cycle (no day is invoiced twice meanwhile)
    ann.advance("2025-01-15")
    *_, cycle = ann.invoices()
    assert (cycle["billing_date"], ann.lines(cycle)) == (
        "2025-01-15",
        [("credit", "-31.00"), ("prorated", "14.00"), ("recurring", "31.00")],
    )
    settings = api.get("/settings").body["subscriptions"]
    assert settings["regret_days"] == 14 and settings["downgrade"] == "end_of_cycle"
    bad = api.patch("/settings/subscriptions", {"tier_paths": [["prod_nope"]]})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "tier_paths"


def test_term_and_trial_actions_move_the_dates_billing_follows(api: HttpClient) -> None:
    # opting out of auto-renewal, then extending the term by 10 days: expiry on 11 March
    ann = Customer(api, {"term_cycles": 2})
    assert ann.act("auto-renew", {"auto_renew": False}).status == 201
    assert ann.act("extend-term", {"days": 10}).body["subscription"]["services"][0]["term_end"] == "2025-03-11"
    ann.advance("2025-04-01")
    assert ann.service["state"] == "not_effective"
    last = ann.invoices()[-1]
    assert (last["period"]["start"], last["period"]["end"]) == ("2025-03-01", "2025-03-11")
    assert [entry[0] for entry in ann.log()] == ["auto_renew", "extend_term", "expire"]

    # extending a trial once moves the first invoice; a second extension is refused
    bob = Customer(api, {"trial_days": 14})
    assert bob.act("extend-trial", {"days": 7}).status == 201
    assert bob.act("extend-trial", {"days": 7}).body["error"] == "trial.extend_once"
    bob.advance("2025-01-22")
    assert [i["billing_date"] for i in bob.invoices()] == ["2025-01-22"]

    # a manual resume restarts billing on its day
    cat = Customer(api)
    cat.act("pause", {"on": "2025-01-05"})
    cat.advance("2025-01-25")
    resumed = cat.act("resume")
    assert resumed.status == 201 and cat.service["state"] == "effective"
    cat.advance("2025-02-01")
    assert cat.lines(cat.invoices()[-1]) == [("credit", "-20.00"), ("recurring", "31.00")]
