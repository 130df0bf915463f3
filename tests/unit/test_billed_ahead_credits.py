"""Stopping a service whose periods were billed ahead (issue 10, point 13): each billed period is
credited on its own line with its own period, a credit note is dated the day it is issued, and a
period already invoiced is never invoiced again (a restart does not charge it a second time).

120.00 a month from 1 May 2025; May has 31 days."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from billow.domain.actions import Action, ServiceChange
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.bill_ahead import BILL_AHEAD, Ahead
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE, Changed
from billow.domain.actions.change_billing_day import CHANGE_BILLING_DAY, NewBillingDay
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.actions.pause import PAUSE
from billow.domain.actions.regret import REGRET
from billow.domain.actions.resume import RESUME
from billow.domain.calendar import Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms
from billow.local.stack import add_tenant

from tests.support import InProcessClient, advance_clock, make_contact, make_product
from tests.unit.test_actions import D, Run, subscribe, terms

KEY = "bk_test_billed_ahead"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-ahead", "Tenant Ahead", KEY)
    yield InProcessClient(KEY)


def test_a_three_day_pause_after_billing_two_cycles_ahead_credits_three_days(api: InProcessClient) -> None:
    product = make_product(api, {"price": "120.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2025-05-01T10:00:00Z"})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    ordered = api.post("/orders", {"contact_id": contact["id"], "items": [item]}).body["order"]["services"][0]
    subscription, service = ordered["subscription_id"], ordered["service_id"]

    def advance(day: str) -> None:
        advance_clock(api, contact["id"], f"{day}T10:00:00Z")

    advance("2025-05-10")
    assert api.post(f"/subscriptions/{subscription}/bill-ahead", {"cycles": 2}).status == 201
    paused = api.post(f"/subscriptions/{subscription}/services/{service}/pause", {"days": 3})
    assert paused.status == 201, paused.body
    assert paused.body["invoices"] == []  # nothing is billed ahead but charges
    advance("2025-08-02")

    invoices: list[dict[str, Any]] = []
    for listed in api.get(f"/contacts/{contact['id']}/invoices").body["items"]:
        full = api.get(f"/invoices/{listed['id']}").body
        lines = [(x["kind"], x["period"]["start"], x["period"]["end"], x["amount"]["amount"]) for x in full["lines"]]
        invoices.append({**full, "lines": lines})
    invoices.sort(key=lambda i: (i["billing_date"], i["issue_date"]))
    # (by billing date) each month invoiced once; the pause credited on one line with its
    # three days, on a credit note issued and dated on the next billing day
    assert [(i["kind"], i["billing_date"], i["issue_date"], i["lines"]) for i in invoices] == [
        ("invoice", "2025-05-01", "2025-05-01", [("recurring", "2025-05-01", "2025-06-01", "120.00")]),
        ("invoice", "2025-06-01", "2025-05-10", [("recurring", "2025-06-01", "2025-07-01", "120.00")]),
        ("credit_note", "2025-06-01", "2025-06-01", [("credit", "2025-05-10", "2025-05-13", "-11.61")]),
        ("invoice", "2025-07-01", "2025-05-10", [("recurring", "2025-07-01", "2025-08-01", "120.00")]),
        ("invoice", "2025-08-01", "2025-08-01", [("recurring", "2025-08-01", "2025-09-01", "120.00")]),
    ]


def billed_ahead() -> Run:
    """120.00 a month from 1 May, billed ahead through July on 10 May."""
    run = Run(subscribe(D(2025, 5, 1), terms("120.00"))).to(D(2025, 5, 1))
    ahead = Action("ahead", BILL_AHEAD, D(2025, 5, 10), requested_on=D(2025, 5, 10), params=Ahead(D(2025, 7, 2)))
    run.subscription = replace(run.subscription, actions=(ahead,))
    return run.to(D(2025, 5, 10))


def charges(run: Run) -> list[Period]:
    lines = [line for i in run.invoices for line in i.lines if line.kind in ("recurring", "prorated")]
    return [line.period for line in lines if line.period is not None]


def credits(run: Run) -> list[tuple[Period | None, str, date, date]]:
    return [
        (line.period, line.amount.amount_str(), i.billing_date, i.issue_date)
        for i in run.invoices
        for line in i.lines
        if line.kind == "credit"
    ]


def test_a_deactivation_and_an_activation_before_its_credit_is_issued_credit_the_days_between() -> None:
    run = billed_ahead().request(DEACTIVATE, D(2025, 5, 20)).to(D(2025, 5, 20))
    run.request(ACTIVATE, D(2025, 5, 25)).to(D(2025, 8, 1))
    assert credits(run) == [(Period(D(2025, 5, 20), D(2025, 5, 25)), "-19.35", D(2025, 6, 1), D(2025, 6, 1))]
    assert charges(run) == [Period(D(2025, m, 1), D(2025, m + 1, 1)) for m in (5, 6, 7, 8)]


def test_a_cancellation_credits_each_billed_period_on_its_own_line_the_same_day() -> None:
    run = billed_ahead().request(CANCEL, D(2025, 5, 20)).to(D(2025, 9, 1))
    assert credits(run) == [
        (Period(D(2025, 5, 20), D(2025, 6, 1)), "-46.45", D(2025, 5, 20), D(2025, 5, 20)),
        (Period(D(2025, 6, 1), D(2025, 7, 1)), "-120.00", D(2025, 5, 20), D(2025, 5, 20)),
        (Period(D(2025, 7, 1), D(2025, 8, 1)), "-120.00", D(2025, 5, 20), D(2025, 5, 20)),
    ]
    assert len(run.invoices) == 4  # May, June, July, the credit note


def test_an_upgrade_adjusts_each_billed_period_on_the_next_invoice_and_invoices_none_again() -> None:
    run = billed_ahead()
    change = ServiceChange("p1", "Pro", terms("240.00"), 1)
    upgrade = Action("up", CHANGE, D(2025, 5, 20), D(2025, 5, 20), service_id=run.service.id, params=Changed(change))
    run.subscription = replace(run.subscription, actions=(upgrade,))
    run.to(D(2025, 8, 1))
    assert [i.billing_date for i in run.invoices] == [D(2025, m, 1) for m in (5, 6, 7, 6, 8)]
    adjusted = run.invoices[3]
    assert adjusted.issue_date == D(2025, 6, 1)
    assert [(x.kind, x.period, x.amount.amount_str()) for x in adjusted.lines] == [
        ("credit", Period(D(2025, 5, 20), D(2025, 6, 1)), "-46.45"),
        ("credit", Period(D(2025, 6, 1), D(2025, 7, 1)), "-120.00"),
        ("credit", Period(D(2025, 7, 1), D(2025, 8, 1)), "-120.00"),
        ("prorated", Period(D(2025, 5, 20), D(2025, 6, 1)), "92.90"),
        ("recurring", Period(D(2025, 6, 1), D(2025, 7, 1)), "240.00"),
        ("recurring", Period(D(2025, 7, 1), D(2025, 8, 1)), "240.00"),
    ]
    assert run.invoices[4].total.amount_str() == "240.00"  # August at the new price, July not again


# -- regressions the lifecycle state machine found ---------------------------------------------------
def arrears(price: str) -> PriceTerms:
    return replace(terms(price), billing_model=BillingModel.ARREARS)


def lines(run: Run) -> list[list[tuple[str, Period | None, str]]]:
    return [[(x.kind, x.period, x.amount.amount_str()) for x in i.lines] for i in run.invoices]


def test_a_regret_of_days_whose_charge_is_still_pending_drops_the_charge_instead_of_crediting_it() -> None:
    # In arrears, a pause on 2 Jan charges 1 Jan on the February invoice; a regret the same day
    # leaves nothing to charge: no document charges 1 Jan and credits it again.
    run = Run(subscribe(D(2024, 1, 1), arrears("5.00"))).to(D(2024, 1, 2))
    run.request(PAUSE, D(2024, 1, 2)).request(REGRET, D(2024, 1, 2)).to(D(2024, 4, 1))
    assert lines(run) == []


def test_a_pause_after_a_resume_in_the_middle_of_an_invoiced_period_cuts_the_pending_charge() -> None:
    # Resumed on 29 Feb (one day, charged on the March invoice), paused again on 1 March: the
    # pending charge of 29 Feb stays, then a regret that day leaves it uncharged, not charged
    # and credited on one invoice.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 1))
    run.request(PAUSE, D(2024, 1, 1)).to(D(2024, 2, 29))
    run.request(RESUME, D(2024, 2, 29)).to(D(2024, 2, 29))
    run.request(PAUSE, D(2024, 3, 1)).request(REGRET, D(2024, 3, 1)).to(D(2024, 5, 1))
    assert lines(run) == [
        [("recurring", Period(D(2024, 1, 1), D(2024, 2, 1)), "5.00")],
        [("credit", Period(D(2024, 1, 1), D(2024, 2, 1)), "-5.00")],
    ]


@pytest.mark.parametrize("model", [BillingModel.ADVANCE, BillingModel.ARREARS])
def test_a_service_paused_and_resumed_the_same_day_is_billed_as_if_never_paused(model: BillingModel) -> None:
    # 5.00 a month: 12 days (1.94) and 4 days (0.65) rounded apart would make 2.59; one stretch
    # of 16 days, as if it never stopped, is 2.58 — one line rounded once.
    run = Run(subscribe(D(2024, 1, 1), arrears("5.00") if model is BillingModel.ARREARS else terms("5.00"))).to(
        D(2024, 1, 13)
    )
    run.request(PAUSE, D(2024, 1, 13)).request(RESUME, D(2024, 1, 13)).to(D(2024, 1, 13))
    run.request(CANCEL, D(2024, 1, 17)).to(D(2024, 3, 1))
    assert sum(i.total.minor for i in run.invoices) == 258
    assert all(len([x for x in i.lines if x.kind != "credit"]) <= 1 for i in run.invoices)


def test_a_deactivation_undone_the_same_day_leaves_the_whole_stretch_to_a_regret() -> None:
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 2))
    run.request(DEACTIVATE, D(2024, 1, 2)).request(ACTIVATE, D(2024, 1, 2))
    run.request(REGRET, D(2024, 1, 2)).to(D(2024, 3, 1))
    assert sum(i.total.minor for i in run.invoices) == 0


def test_a_deactivation_while_paused_keeps_the_pause_for_the_activation_to_trim() -> None:
    # February invoiced, paused on 1 Feb, deactivated on 2 Feb (already stopped), activated on
    # 2 Feb: one day credited on the March invoice, February not charged again beside it.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 2, 1))
    run.request(PAUSE, D(2024, 2, 1)).request(DEACTIVATE, D(2024, 2, 2))
    run.request(ACTIVATE, D(2024, 2, 2)).to(D(2024, 3, 1))
    assert lines(run)[1:] == [
        [("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "5.00")],
        [
            ("credit", Period(D(2024, 2, 1), D(2024, 2, 2)), "-0.17"),
            ("recurring", Period(D(2024, 3, 1), D(2024, 4, 1)), "5.00"),
        ],
    ]


def test_a_change_undone_before_its_invoice_leaves_the_period_as_it_was_invoiced() -> None:
    # January invoiced at 5.00; changed to two units and back to one on 1 January: the February
    # invoice neither credits January at 5.00 nor charges it at 5.00 again.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 1))
    for quantity in (2, 1):
        change = ServiceChange("p1", "Pro", run.service.terms, quantity)
        run.request(CHANGE, D(2024, 1, 1), change=change).to(D(2024, 1, 1))
    run.to(D(2024, 2, 1))
    assert lines(run) == [
        [("recurring", Period(D(2024, 1, 1), D(2024, 2, 1)), "5.00")],
        [("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "5.00")],
    ]


def test_a_change_back_a_day_later_trims_the_pending_credit_to_the_day_between() -> None:
    # Two units on 1 January, one again on 2 January: January at one unit is credited for 1 January
    # only, beside that day at two units; no day credited and charged again at one price.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 1))
    for day, quantity in ((1, 2), (2, 1)):
        change = ServiceChange("p1", "Pro", run.service.terms, quantity)
        run.request(CHANGE, D(2024, 1, day), change=change).to(D(2024, 1, day))
    run.to(D(2024, 2, 1))
    assert lines(run)[1] == [
        ("credit", Period(D(2024, 1, 1), D(2024, 1, 2)), "-0.16"),
        ("prorated", Period(D(2024, 1, 1), D(2024, 1, 2)), "0.32"),
        ("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "5.00"),
    ]


def test_a_service_moving_away_takes_no_credit_of_an_earlier_change_past_the_move() -> None:
    # Two units on 1 January (January at one unit credited on the February invoice), then moved to
    # quarterly terms the same day: the old subscription credits January on the day of the move,
    # not a month after the quarterly subscription charged it.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 1))
    change = ServiceChange("p1", "Pro", run.service.terms, 2)
    run.request(CHANGE, D(2024, 1, 1), change=change).to(D(2024, 1, 1))
    quarterly = replace(terms("5.00"), cycle=Cycle.QUARTER)
    run.request(CHANGE, D(2024, 1, 1), change=ServiceChange("p1", "Pro", quarterly, 1)).to(D(2024, 3, 1))
    assert [(i.billing_date, i.issue_date, lines) for i, lines in zip(run.invoices, lines(run), strict=True)] == [
        (D(2024, 1, 1), D(2024, 1, 1), [("recurring", Period(D(2024, 1, 1), D(2024, 2, 1)), "5.00")]),
        (D(2024, 1, 1), D(2024, 1, 1), [("credit", Period(D(2024, 1, 1), D(2024, 2, 1)), "-5.00")]),
    ]


def test_a_one_day_pause_after_a_change_and_billing_ahead_charges_the_rest_of_the_cut_period_once() -> None:
    # Two units from 1 January (January at two units still pending), billed ahead through February,
    # paused on 2 January for one day: January's pending charge is cut to 1 January, February's
    # invoiced charge is credited. The resume on 3 January charges 3-31 January on that invoice and
    # drops February's credit: February is not credited and invoiced again on one document.
    run = Run(subscribe(D(2024, 1, 1), terms("5.00"))).to(D(2024, 1, 1))
    run.request(CHANGE, D(2024, 1, 1), change=ServiceChange("p1", "Pro", run.service.terms, 2))
    run.to(D(2024, 1, 1))
    ahead = Action("ahead", BILL_AHEAD, D(2024, 1, 1), requested_on=D(2024, 1, 1), params=Ahead(D(2024, 2, 2)))
    run.subscription = replace(run.subscription, actions=(ahead,))
    run.to(D(2024, 1, 1)).request(PAUSE, D(2024, 1, 2), days=1).to(D(2024, 3, 1))
    assert lines(run) == [
        [("recurring", Period(D(2024, 1, 1), D(2024, 2, 1)), "5.00")],
        [("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "10.00")],
        [
            ("credit", Period(D(2024, 1, 1), D(2024, 2, 1)), "-5.00"),
            ("prorated", Period(D(2024, 1, 1), D(2024, 1, 2)), "0.32"),
            ("prorated", Period(D(2024, 1, 3), D(2024, 2, 1)), "9.35"),
        ],
        [("recurring", Period(D(2024, 3, 1), D(2024, 4, 1)), "10.00")],
    ]


def test_a_billing_day_change_while_billed_ahead_credits_the_old_cycle_the_day_the_new_one_is_invoiced() -> None:
    # Billed ahead through February from 3 January; the billing day moved to the 1st that day: the
    # new cycle's first invoice (1 February) goes out ahead today, so the old cycle's credit goes
    # out today too, not on 1 February while 3 January - 1 February stands charged twice.
    run = Run(subscribe(D(2024, 1, 3), terms("5.00"))).to(D(2024, 1, 3))
    ahead = Action("ahead", BILL_AHEAD, D(2024, 1, 3), requested_on=D(2024, 1, 3), params=Ahead(D(2024, 2, 4)))
    run.subscription = replace(run.subscription, actions=(ahead,))
    day = Action("day", CHANGE_BILLING_DAY, D(2024, 1, 3), requested_on=D(2024, 1, 3), params=NewBillingDay(1))
    run.to(D(2024, 1, 3))
    run.subscription = replace(run.subscription, actions=(day,))
    run.to(D(2024, 1, 3))
    assert [(i.billing_date, i.issue_date, lines) for i, lines in zip(run.invoices, lines(run), strict=True)][2:] == [
        (
            D(2024, 1, 3),
            D(2024, 1, 3),
            [
                ("credit", Period(D(2024, 1, 3), D(2024, 2, 3)), "-5.00"),
                ("credit", Period(D(2024, 2, 3), D(2024, 3, 3)), "-5.00"),
            ],
        ),
        (
            D(2024, 2, 1),
            D(2024, 1, 3),
            [
                ("prorated", Period(D(2024, 1, 3), D(2024, 2, 1)), "4.68"),
                ("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "5.00"),
            ],
        ),
    ]


def test_billing_ahead_after_a_billing_day_change_takes_the_old_cycles_credit_onto_its_invoice() -> None:
    # Charged 17 January - 17 February; the billing day moved to the 1st on 17 January (the old
    # period's credit waits for the new cycle's first invoice); billed ahead through February on
    # 18 January: that invoice charges 17 January - 1 February again, so it carries the credit of
    # the old period too, instead of leaving those days charged twice until 1 February.
    run = Run(subscribe(D(2024, 1, 17), terms("5.00"))).to(D(2024, 1, 17))
    day = Action("day", CHANGE_BILLING_DAY, D(2024, 1, 17), requested_on=D(2024, 1, 17), params=NewBillingDay(1))
    run.subscription = replace(run.subscription, actions=(day,))
    run.to(D(2024, 1, 17))
    ahead = Action("ahead", BILL_AHEAD, D(2024, 1, 18), requested_on=D(2024, 1, 17), params=Ahead(D(2024, 2, 1)))
    run.subscription = replace(run.subscription, actions=(ahead,))
    run.to(D(2024, 1, 18))
    assert [(i.issue_date, lines) for i, lines in zip(run.invoices, lines(run), strict=True)] == [
        (D(2024, 1, 17), [("recurring", Period(D(2024, 1, 17), D(2024, 2, 17)), "5.00")]),
        (
            D(2024, 1, 18),
            [
                ("credit", Period(D(2024, 1, 17), D(2024, 2, 17)), "-5.00"),
                ("prorated", Period(D(2024, 1, 17), D(2024, 2, 1)), "2.42"),
                ("recurring", Period(D(2024, 2, 1), D(2024, 3, 1)), "5.00"),
            ],
        ),
    ]
    assert run.subscription.adjustments == ()


def test_billing_ahead_after_a_cancellation_is_refused_with_its_rule(api: InProcessClient) -> None:
    product = make_product(api, {"price": "120.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    ordered = api.post("/orders", {"contact_id": contact["id"], "items": [item]}).body["order"]["services"][0]
    subscription, service = ordered["subscription_id"], ordered["service_id"]
    assert api.post(f"/subscriptions/{subscription}/services/{service}/cancel", {}).status == 201
    refused = api.post(f"/subscriptions/{subscription}/bill-ahead", {"cycles": 2})
    assert refused.status == 409, refused.body
    assert refused.body["error"] == "bill_ahead.nothing_billable"


def _moved(run: Run, until: date, *, one_day_at_a_time: bool) -> Run:
    if not one_day_at_a_time:
        return run.to(until)
    day = run.invoices[-1].issue_date
    while day <= until:
        run.to(day)
        day = date.fromordinal(day.toordinal() + 1)
    return run


@pytest.mark.parametrize("one_day_at_a_time", [False, True])
def test_billing_ahead_while_paused_bills_the_day_the_service_resumes_however_the_clock_moves(
    one_day_at_a_time: bool,
) -> None:
    # Billed ahead through July on 10 May, paused 10-13 May, then billed ahead through August on
    # 11 May: August is invoiced the day the service resumes, whether the clock then moves to
    # 2 September at once or one day at a time.
    run = billed_ahead().request(PAUSE, D(2025, 5, 10), days=3).to(D(2025, 5, 11))
    ahead = Action("more", BILL_AHEAD, D(2025, 5, 11), requested_on=D(2025, 5, 11), params=Ahead(D(2025, 8, 2)))
    run.subscription = replace(run.subscription, actions=(*run.subscription.actions, ahead))
    _moved(run.to(D(2025, 5, 11)), D(2025, 9, 2), one_day_at_a_time=one_day_at_a_time)
    august = [i for i in run.invoices if i.billing_date == D(2025, 8, 1)]
    assert [i.issue_date for i in august] == [D(2025, 5, 13)]


def test_an_upgrade_then_a_pause_after_billing_ahead_gives_the_same_documents_however_the_clock_moves() -> None:
    def scenario(one_day_at_a_time: bool) -> list[tuple[date, date, list[tuple[str, Period | None, str]]]]:
        run = billed_ahead().to(D(2025, 5, 15))
        run.request(CHANGE, D(2025, 5, 15), change=ServiceChange("p1", "Pro", run.service.terms, 2))
        run.to(D(2025, 5, 20)).request(PAUSE, D(2025, 5, 20), days=4)
        _moved(run, D(2025, 8, 2), one_day_at_a_time=one_day_at_a_time)
        return [(i.billing_date, i.issue_date, x) for i, x in zip(run.invoices, lines(run), strict=True)]

    at_once = scenario(False)
    assert at_once == scenario(True)
    # each period charged once net, July never on a second invoice of its own
    july = [
        (b, x)
        for b, _, x in at_once
        if any(k == "recurring" and p == Period(D(2025, 7, 1), D(2025, 8, 1)) for k, p, _ in x)
    ]
    assert [b for b, _ in july] == [D(2025, 7, 1), D(2025, 7, 1)]
    assert [k for k, p, _ in july[1][1] if p == Period(D(2025, 7, 1), D(2025, 8, 1))] == ["credit", "recurring"]
