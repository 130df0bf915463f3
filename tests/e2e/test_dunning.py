"""Dunning end to end on the local stack (docs/dunning.md), over HTTP as a tenant's staff and their
customers' cards would drive it: localstripe declines the card, the payment.failed event opens a
case, the state machine CDK synthesizes runs it in moto's interpreter, and each test contact's
clock, advanced one day at a time, is the only thing that moves it on: retries on the scheduled
days (their PaymentIntents visible in localstripe), reminders on theirs, the grace period, the
services Not Effective on the right day and cancelled after the deactivation period; a working card
saved on day 4 pays at the next retry, ends the case and brings the services back (saved as a
second card, only once it is made the default); an excluded
classification is never deactivated; a debt under the threshold is reminded but not deactivated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from billow.local import stack

from tests.stripe_support import DECLINES_AT_CHARGE, VISA, confirm_setup, intents_of
from tests.support import HttpClient, advance_clock, bus_events, eventually, local_stack, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_dunning"
TENANT = "dunco"
DAY0 = date(2025, 3, 3)
MONTHLY = {
    "price": "31.00",
    "currency": "USD",
    "cycle": "month",
    "billing_model": "advance",
    "features": ["reports"],
    "limits": {"seats": 5},
}
POLICY = {
    "retry_days": [1, 3, 5, 7],
    "reminder_days": [0, 6],
    "grace_days": 2,
    "deactivation_threshold": {"USD": "10.00"},
    "cancel_after_days": 5,
    "excluded_from_deactivation": ["vip"],
    "excluded_from_cancellation": [],
    "cancel_with_fees": False,
}


@pytest.fixture(scope="module")
def local() -> Iterator[stack.LocalStack]:
    with local_stack("billow-e2e-dunning", TENANT, KEY) as running:
        yield running


@pytest.fixture(scope="module")
def api(local: stack.LocalStack) -> HttpClient:
    client = HttpClient(local.url, KEY)
    changed = client.patch("/settings/dunning", POLICY)
    assert changed.status == 200, changed.body
    return client


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    with bus_events() as seen:
        yield seen


def declining_customer(api: HttpClient, local: stack.LocalStack, **contact: Any) -> str:
    """A contact on a test clock at DAY0 who saved a card that is declined at charge time."""
    made = api.post("/contacts", {"name": "Dee Clined", "email": "dee@example.com", **contact})
    assert made.status == 201, made.body
    contact_id = str(made.body["id"])
    clock = api.post(f"/contacts/{contact_id}/test-clock", {"frozen_time": f"{DAY0}T10:00:00Z"})
    assert clock.status == 201, clock.body
    save_card(api, local, contact_id, DECLINES_AT_CHARGE)
    return contact_id


def save_card(api: HttpClient, local: stack.LocalStack, contact_id: str, card: str, *, default: bool = True) -> str:
    """Save `card` (its id answered); made the contact's default unless `default` is False."""
    assert local.stripe is not None
    setup = api.post(f"/contacts/{contact_id}/payment-methods/setup")
    assert setup.status == 201, setup.body
    confirm_setup(local.stripe, setup.body["setup_id"], card)
    saved = api.post(f"/contacts/{contact_id}/payment-methods", {"setup_id": setup.body["setup_id"]})
    assert saved.status == 201, saved.body
    if default and not saved.body["default"]:
        make_default(api, contact_id, str(saved.body["id"]))
    return str(saved.body["id"])


def make_default(api: HttpClient, contact_id: str, method_id: str) -> None:
    chosen = api.post(f"/contacts/{contact_id}/payment-methods/{method_id}/default")
    assert chosen.status == 200, chosen.body


def order(api: HttpClient, contact_id: str, terms: dict[str, Any] = MONTHLY) -> tuple[str, str]:
    """(the first invoice's id, "<subscription id>/<service id>") of an order billed at once."""
    product = make_product(api, terms)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact_id, "items": [item]})
    assert placed.status == 201, placed.body
    (invoice,) = placed.body["invoices"]
    ordered = placed.body["order"]["services"][0]
    return str(invoice["id"]), f"{ordered['subscription_id']}/{ordered['service_id']}"


def the_case(api: HttpClient, contact_id: str) -> dict[str, Any]:
    (case,) = eventually(lambda: api.get(f"/contacts/{contact_id}/dunning-cases").body["items"])
    return dict(case)


def settled(api: HttpClient, case_id: str, day: date) -> dict[str, Any]:
    """The case once its flow took every step due on the contact's `day`: its last decision, on
    that day, was to wait (until a later day, or an event), or it ended."""

    def check() -> dict[str, Any] | None:
        case = api.get(f"/dunning-cases/{case_id}").body
        waits = case["decided_on"] == day.isoformat() and (case["due"] is None or case["due"] > day.isoformat())
        done = case["status"] == "ended" or waits
        return dict(case) if done else None

    case = eventually(check, 120)
    if not case:
        now = api.get(f"/dunning-cases/{case_id}").body
        raise AssertionError(
            f"not settled on {day}: decided_on {now['decided_on']}, due {now['due']}, {now['status']}, "
            f"last steps {now['history'][-3:]}"
        )
    return case


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def to_day(api: HttpClient, contact_id: str, case_id: str, n: int) -> dict[str, Any]:
    advance_clock(api, contact_id, f"{day(n)}T10:00:00Z")
    return settled(api, case_id, day(n))


def service_state(api: HttpClient, service: str) -> str:
    """The state of `service` ("<subscription id>/<service id>")."""
    subscription_id, service_id = service.split("/")
    services = api.get(f"/subscriptions/{subscription_id}").body["services"]
    return str(next(s["state"] for s in services if s["id"] == service_id))


def of_type(events: list[dict[str, Any]], kind: str, contact_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and e["contact_id"] == contact_id]


def steps(case: dict[str, Any], kind: str) -> list[str]:
    return [s["on"] for s in case["history"] if s["kind"] == kind]


def test_a_declining_card_is_retried_reminded_deactivated_and_cancelled_on_its_days(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    assert local.stripe is not None
    contact = declining_customer(api, local)
    invoice, service = order(api, contact)
    case = settled(api, the_case(api, contact)["id"], day(0))
    assert (case["status"], case["opened_on"]) == ("open", day(0).isoformat())
    assert steps(case, "remind") == [day(0).isoformat()]
    assert len(intents_of(local.stripe, invoice)) == 1  # the first charge, declined

    expected_charges = {1: 2, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4, 7: 5, 8: 5}
    for n in range(1, 9):
        case = to_day(api, contact, case["id"], n)
        assert len(intents_of(local.stripe, invoice)) == expected_charges[n], n
        state = service_state(api, service)
        assert state == ("effective" if n < 2 else "not_effective" if n < 7 else "cancelled"), (n, state)

    assert steps(case, "retry") == [day(n).isoformat() for n in (1, 3, 5, 7)]
    assert steps(case, "remind") == [day(0).isoformat(), day(6).isoformat()]
    assert steps(case, "deactivate") == [day(2).isoformat()]
    assert steps(case, "cancel") == [day(7).isoformat()]
    assert case["status"] == "open"  # still owed: it keeps reminding (none left) and waits
    reminders = eventually(
        lambda: (
            of_type(events, "dunning.reminder_due", contact)[1:] and of_type(events, "dunning.reminder_due", contact)
        )
    )
    assert sorted(e["data"]["number"] for e in reminders) == [1, 2]
    assert all(e["data"]["owed"] == {"amount": "31.00", "currency": "USD"} for e in reminders)
    assert all(p.status != "succeeded" for p in intents_of(local.stripe, invoice))


def declined_until_day_4(api: HttpClient, local: stack.LocalStack) -> tuple[str, str, str, dict[str, Any]]:
    """(contact, invoice, service, case) of a declining customer's order, its clock on day 4."""
    contact = declining_customer(api, local)
    invoice, service = order(api, contact)
    case = settled(api, the_case(api, contact)["id"], day(0))
    for n in range(1, 5):
        case = to_day(api, contact, case["id"], n)
    return contact, invoice, service, case


def test_a_working_card_saved_on_day_4_pays_at_once_ends_the_case_and_reactivates(
    api: HttpClient, local: stack.LocalStack, events: list[dict[str, Any]]
) -> None:
    contact, invoice, service, case = declined_until_day_4(api, local)
    assert local.stripe is not None

    def entitled() -> tuple[list[str], dict[str, int]]:
        body = api.get(f"/contacts/{contact}/entitlements").body
        return body["features"], body["limits"]

    assert service_state(api, service) == "not_effective"
    assert entitled() == ([], {})  # dunning's deactivation took the plan's entitlements away
    save_card(api, local, contact, VISA)
    assert eventually(lambda: api.get(f"/invoices/{invoice}").body["status"] == "paid", 60)
    case = settled(api, case["id"], day(4))
    assert case["status"] == "ended"
    assert service_state(api, service) == "effective"
    assert entitled() == (["reports"], {"seats": 5})  # and the re-activation on payment gave them back
    changed = eventually(lambda: len(of_type(events, "entitlements.changed", contact)) >= 3 or None)
    assert changed
    assert [e["data"]["features"] for e in of_type(events, "entitlements.changed", contact)] == [
        ["reports"],  # the order
        [],  # deactivated by the case
        ["reports"],  # re-activated when paid
    ]
    charges = intents_of(local.stripe, invoice)
    assert [p.status for p in charges].count("succeeded") == 1 and len(charges) == 4  # day 0, 1, 3; then the new card
    (ended,) = eventually(lambda: of_type(events, "dunning.case_ended", contact))
    assert ended["data"]["why"] == "paid"
    for n in range(5, 8):  # nothing more happens
        advance_clock(api, contact, f"{day(n)}T10:00:00Z")
    assert len(intents_of(local.stripe, invoice)) == 4
    assert api.get(f"/dunning-cases/{case['id']}").body["history"] == case["history"]


def test_a_second_card_pays_once_made_the_default_and_not_before(api: HttpClient, local: stack.LocalStack) -> None:
    contact, invoice, service, case = declined_until_day_4(api, local)
    assert local.stripe is not None
    card = save_card(api, local, contact, VISA, default=False)  # the declining card stays the default
    case = to_day(api, contact, case["id"], 5)
    # Day 0, 1, 3 and the scheduled day 5, all declined: the saved card is not the one charged, and
    # saving it did not make the declining one be charged again at once.
    assert [p.status for p in intents_of(local.stripe, invoice)].count("succeeded") == 0
    assert len(intents_of(local.stripe, invoice)) == 4 and service_state(api, service) == "not_effective"
    make_default(api, contact, card)
    assert eventually(lambda: api.get(f"/invoices/{invoice}").body["status"] == "paid", 60)
    case = settled(api, case["id"], day(5))
    assert case["status"] == "ended" and service_state(api, service) == "effective"
    charges = intents_of(local.stripe, invoice)
    assert [p.status for p in charges].count("succeeded") == 1 and len(charges) == 5


def test_an_excluded_classification_is_never_deactivated(api: HttpClient, local: stack.LocalStack) -> None:
    contact = declining_customer(api, local, classification="vip")
    _, service = order(api, contact)
    case = settled(api, the_case(api, contact)["id"], day(0))
    for n in range(1, 9):
        case = to_day(api, contact, case["id"], n)
        assert service_state(api, service) == "effective", n
    assert steps(case, "retry") == [day(n).isoformat() for n in (1, 3, 5, 7)]
    assert steps(case, "deactivate") == [] and steps(case, "cancel") == []


def test_a_debt_under_the_threshold_is_reminded_but_not_deactivated(api: HttpClient, local: stack.LocalStack) -> None:
    contact = declining_customer(api, local)
    _, service = order(api, contact, {**MONTHLY, "price": "9.00"})
    case = settled(api, the_case(api, contact)["id"], day(0))
    for n in range(1, 9):
        case = to_day(api, contact, case["id"], n)
        assert service_state(api, service) == "effective", n
    assert steps(case, "remind") == [day(0).isoformat(), day(6).isoformat()]
    assert steps(case, "deactivate") == []
