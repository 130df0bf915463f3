"""Access on payment through the API handler (moto table): an order's services kept draft until its
first invoice is paid, activated by the invoice.paid consumer (delivered here as its SQS queue
would), and lapsed on the contact's clock when the invoice stays unpaid (docs/payments.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.gateways.invoke import handler_of
from billow.local.events import sqs_target
from billow.local.stack import add_tenant

from tests.support import InProcessClient, advance_clock, make_contact, make_product

KEY = "bk_test_access_on_payment"
TENANT = "tenant-aop"
MONTHLY = {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}
WEEKLY = {"price": "7.00", "currency": "USD", "cycle": "week", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant(TENANT, "Tenant AOP", KEY)
    yield InProcessClient(KEY)


def deliver_paid(invoice: dict[str, Any]) -> None:
    """The `invoice.paid` event of `invoice`, delivered to the activation function as its queue
    would deliver it (a reported failure raises)."""
    detail = {
        "id": f"evt_{invoice['id']}_paid",
        "type": "invoice.paid",
        "version": 1,
        "tenant_id": TENANT,
        "mode": "test",
        "contact_id": invoice["contact_id"],
        "data": {"invoice_id": invoice["id"]},
    }
    sqs_target(handler_of("activation"))(
        {"source": "billow", "detail-type": "billow.invoice.paid", "detail": detail, "time": "2024-01-01T00:00:00Z"}
    )


class Customer:
    """A contact on a test clock who orders one product."""

    def __init__(self, api: InProcessClient, terms: dict[str, Any], frozen_time: str = "2024-01-10T09:00:00Z") -> None:
        self.api = api
        self.product = make_product(api, terms)
        self.id = make_contact(api)["id"]
        assert api.post(f"/contacts/{self.id}/test-clock", {"frozen_time": frozen_time}).status == 201

    def order(self, **choice: Any) -> dict[str, Any]:
        item = {"product_id": self.product["id"], "terms_id": self.product["terms"][0]["id"]}
        placed = self.api.post("/orders", {"contact_id": self.id, "items": [item], **choice})
        assert placed.status == 201, placed.body
        return dict(placed.body)

    def service(self) -> dict[str, Any]:
        (subscription,) = self.api.get(f"/contacts/{self.id}/subscriptions").body["items"]
        (service,) = subscription["services"]
        return dict(service)

    def subscription_id(self) -> str:
        (subscription,) = self.api.get(f"/contacts/{self.id}/subscriptions").body["items"]
        return str(subscription["id"])

    def invoices(self) -> list[dict[str, Any]]:
        return list(self.api.get(f"/contacts/{self.id}/invoices").body["items"])

    def pay(self, invoice: dict[str, Any], on: str, reference: str = "bank-1") -> Any:
        body = {**invoice["total"], "method": "bank_transfer", "reference": reference, "received_on": on}
        return self.api.post(f"/invoices/{invoice['id']}/payments", body)

    def actions(self) -> list[dict[str, Any]]:
        return list(self.api.get(f"/subscriptions/{self.subscription_id()}/actions").body["actions"])


def test_the_settings_are_validated_and_kept(api: InProcessClient) -> None:
    refused = api.patch("/settings/subscriptions", {"unpaid_order_lapse_days": 0})
    assert refused.status == 422 and refused.body["fields"], refused.body
    changed = api.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7})
    assert changed.status == 200, changed.body
    shown = api.get("/settings").body["subscriptions"]
    assert (shown["activate_on_payment"], shown["unpaid_order_lapse_days"]) == (True, 7)


def test_services_stay_draft_until_the_first_invoice_is_paid_then_bill_on_unshifted(api: InProcessClient) -> None:
    ann = Customer(api, MONTHLY)
    placed = ann.order(activate_on_payment=True)
    (invoice,) = placed["invoices"]
    # The first invoice bills the period from the order day, exactly as without activation on payment.
    assert invoice["period"] == {"start": "2024-01-10", "end": "2024-02-10"}
    assert invoice["total"]["amount"] == "31.00" and invoice["lapses_on"] == "2024-01-24"
    service = ann.service()
    assert (service["state"], service["lapses_on"]) == ("draft", "2024-01-24")

    advance_clock(api, ann.id, "2024-01-15T09:00:00Z")
    assert ann.service()["state"] == "draft"  # its start date passed: still waiting for the payment
    deliver_paid(invoice)  # an event for an unpaid invoice (a stale or forged one) activates nothing
    assert ann.service()["state"] == "draft"

    assert ann.pay(invoice, "2024-01-15").status == 201
    deliver_paid(invoice)
    service = ann.service()
    assert (service["state"], service["state_since"], service["lapses_on"]) == ("effective", "2024-01-15", None)
    assert service["start_date"] == "2024-01-10" and service["billed_through"] == "2024-02-10"
    (logged,) = [a for a in ann.actions() if a["action"] == "activate_on_payment"]
    assert (logged["status"], logged["requested_by"], logged["on"]) == ("executed", "system", "2024-01-15")
    assert logged["parameters"] == {"invoice_id": invoice["id"]}
    assert api.get(f"/invoices/{invoice['id']}").body["lapses_on"] is None

    # Billing goes on from where the first invoice ended: no period moved, no day billed twice.
    advance_clock(api, ann.id, "2024-02-10T09:00:00Z")
    assert [(i["period"]["start"], i["period"]["end"], i["total"]["amount"]) for i in ann.invoices()] == [
        ("2024-01-10", "2024-02-10", "31.00"),
        ("2024-02-10", "2024-03-10", "31.00"),
    ]
    # The lapse day passed long ago: a paid order never lapses.
    assert ann.service()["state"] == "effective"


def test_nothing_more_is_billed_while_waiting_and_days_without_access_are_not_charged(api: InProcessClient) -> None:
    assert api.patch("/settings/subscriptions", {"unpaid_order_lapse_days": 20}).status == 200
    bob = Customer(api, WEEKLY)  # ordered Wednesday 10 January: weekly billing days are Wednesdays
    (invoice,) = bob.order(activate_on_payment=True)["invoices"]
    advance_clock(api, bob.id, "2024-01-24T09:00:00Z")  # two billing days pass unpaid
    assert [i["id"] for i in bob.invoices()] == [invoice["id"]]
    assert bob.pay(invoice, "2024-01-24").status == 201
    deliver_paid(invoice)
    assert bob.service()["state"] == "effective"
    advance_clock(api, bob.id, "2024-01-31T09:00:00Z")
    # Billing restarts on the day of access: 17-24 January (no access) is never charged.
    assert [(i["period"]["start"], i["period"]["end"]) for i in bob.invoices()] == [
        ("2024-01-10", "2024-01-17"),
        ("2024-01-24", "2024-01-31"),
        ("2024-01-31", "2024-02-07"),
    ]


def test_an_unpaid_order_lapses_on_its_day_on_the_contacts_clock(api: InProcessClient) -> None:
    assert api.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7}).status
    cid = Customer(api, MONTHLY)
    (invoice,) = cid.order()["invoices"]  # the business's setting applies: the order gave no choice
    assert invoice["lapses_on"] == "2024-01-17"
    advance_clock(api, cid.id, "2024-01-16T09:00:00Z")
    assert cid.service()["state"] == "draft"
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "open"

    advance_clock(api, cid.id, "2024-01-17T09:00:00Z")
    voided = api.get(f"/invoices/{invoice['id']}").body
    assert (voided["status"], voided["status_on"], voided["amount_due"]["amount"]) == ("void", "2024-01-17", "0.00")
    assert voided["status_reason"] == "unpaid: its order lapsed on 2024-01-17"
    service = cid.service()
    assert (service["state"], service["state_since"], service["end_date"]) == ("cancelled", "2024-01-17", "2024-01-10")
    (lapse,) = [a for a in cid.actions() if a["action"] == "lapse"]
    assert (lapse["status"], lapse["requested_by"], lapse["parameters"]) == (
        "executed",
        "system",
        {"invoice_id": invoice["id"]},
    )

    # Nothing more is billed, and a payment after the lapse does not bring the service back.
    advance_clock(api, cid.id, "2024-03-20T09:00:00Z")
    assert [i["id"] for i in cid.invoices()] == [invoice["id"]]
    late = cid.pay(invoice, "2024-03-20")
    assert (late.status, late.body["error"]) == (409, "payment.invoice_not_open")
    deliver_paid(invoice)
    assert cid.service()["state"] == "cancelled"


def test_an_orders_first_invoice_is_never_held_for_review_so_it_can_be_paid_before_the_lapse(
    api: InProcessClient,
) -> None:
    """With a review window longer than the lapse (10 days, 7), the first invoice of an order waiting
    for payment is issued at once, due before the lapse, and paid (it was a draft until the lapse
    voided it: the customer never had an invoice to pay). Other invoices keep the review window."""
    assert api.patch("/settings/profile", {"invoice_review_days": 10}).status == 200
    on = api.patch("/settings/subscriptions", {"activate_on_payment": True, "unpaid_order_lapse_days": 7})
    assert on.status == 200, on.body
    cid = Customer(api, MONTHLY)
    (invoice,) = cid.order()["invoices"]
    assert (invoice["status"], invoice["due_date"], invoice["lapses_on"]) == ("open", "2024-01-16", "2024-01-17")
    assert invoice["number"]
    advance_clock(api, cid.id, "2024-01-16T09:00:00Z")
    assert cid.pay(invoice, "2024-01-16").status == 201
    deliver_paid(invoice)
    assert cid.service()["state"] == "effective"
    advance_clock(api, cid.id, "2024-02-10T09:00:00Z")  # the next cycle's invoice: held for review as usual
    renewal = [i for i in cid.invoices() if i["id"] != invoice["id"]]
    assert [i["status"] for i in renewal] == ["draft"]


def test_an_order_may_choose_otherwise_and_only_orders_invoiced_at_once_wait(api: InProcessClient) -> None:
    assert api.patch("/settings/subscriptions", {"activate_on_payment": True}).status == 200
    dee = Customer(api, MONTHLY)
    (invoice,) = dee.order(activate_on_payment=False)["invoices"]
    assert (dee.service()["state"], invoice["lapses_on"]) == ("effective", None)
    trial = Customer(api, {**MONTHLY, "trial_days": 14})
    assert trial.order()["invoices"] == []
    assert trial.service()["state"] == "effective"  # in its trial: nothing invoiced to wait for


def test_a_paid_invoice_whose_event_was_lost_is_activated_by_the_next_advance(api: InProcessClient) -> None:
    eve = Customer(api, MONTHLY)
    (invoice,) = eve.order(activate_on_payment=True)["invoices"]
    assert eve.pay(invoice, "2024-01-10").status == 201  # no invoice.paid delivered (dead-lettered)
    assert eve.service()["state"] == "draft"
    advance_clock(api, eve.id, "2024-01-13T09:00:00Z")
    service = eve.service()
    assert (service["state"], service["state_since"]) == ("effective", "2024-01-13")
    deliver_paid(invoice)  # delivered late after all: nothing more happens
    assert [a["action"] for a in eve.actions()].count("activate_on_payment") == 1


def test_an_order_whose_invoice_staff_voided_still_lapses_on_its_day(api: InProcessClient) -> None:
    fay = Customer(api, MONTHLY)
    (invoice,) = fay.order(activate_on_payment=True)["invoices"]
    voided = api.post(f"/invoices/{invoice['id']}/void", {"reason": "wrong plan"})
    assert voided.status == 200, voided.body
    advance_clock(api, fay.id, "2024-01-24T09:00:00Z")
    assert fay.service()["state"] == "cancelled"
    kept = api.get(f"/invoices/{invoice['id']}").body
    assert (kept["status"], kept["status_reason"], kept["lapses_on"]) == ("void", "wrong plan", None)


def test_a_free_first_invoice_is_paid_at_once_and_activates(api: InProcessClient) -> None:
    gus = Customer(api, {**MONTHLY, "price": "0.00"})
    (invoice,) = gus.order(activate_on_payment=True)["invoices"]
    assert invoice["status"] == "paid"  # nothing to pay: issued paid, and published as invoice.paid
    deliver_paid(invoice)
    assert gus.service()["state"] == "effective"


def test_a_partly_paid_first_invoice_does_not_lapse_its_services_wait_for_the_rest(api: InProcessClient) -> None:
    hal = Customer(api, MONTHLY)
    (invoice,) = hal.order(activate_on_payment=True)["invoices"]
    part = {
        "amount": "10.00",
        "currency": "USD",
        "method": "bank_transfer",
        "reference": "part",
        "received_on": "2024-01-10",
    }
    assert api.post(f"/invoices/{invoice['id']}/payments", part).status == 201
    advance_clock(api, hal.id, "2024-01-30T09:00:00Z")  # past its lapse day (24 January)
    assert hal.service()["state"] == "draft"
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "overdue"
    rest = {**part, "amount": "21.00", "reference": "rest", "received_on": "2024-01-30"}
    assert api.post(f"/invoices/{invoice['id']}/payments", rest).status == 201
    deliver_paid(invoice)
    assert (hal.service()["state"], hal.service()["state_since"]) == ("effective", "2024-01-30")


def test_a_service_joining_a_subscription_waits_on_its_prorated_first_invoice(api: InProcessClient) -> None:
    ivy = Customer(api, MONTHLY, frozen_time="2024-01-01T09:00:00Z")
    ivy.order()  # effective from 1 January: the subscription bills on the 1st
    addon = make_product(api, {**MONTHLY, "price": "62.00"})
    advance_clock(api, ivy.id, "2024-01-11T09:00:00Z")
    item = {"product_id": addon["id"], "terms_id": addon["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": ivy.id, "items": [item], "activate_on_payment": True})
    (invoice,) = placed.body["invoices"]
    # Prorated from the order day to the subscription's billing day, as without access on payment.
    assert (invoice["period"], invoice["total"]["amount"]) == ({"start": "2024-01-11", "end": "2024-02-01"}, "42.00")
    (subscription,) = api.get(f"/contacts/{ivy.id}/subscriptions").body["items"]
    states = {s["product_id"]: s["state"] for s in subscription["services"]}
    assert states == {ivy.product["id"]: "effective", addon["id"]: "draft"}
    assert ivy.pay(invoice, "2024-01-11").status == 201
    deliver_paid(invoice)
    advance_clock(api, ivy.id, "2024-02-01T09:00:00Z")
    february = ivy.invoices()[-1]
    assert february["period"] == {"start": "2024-02-01", "end": "2024-03-01"}
    assert february["total"]["amount"] == "93.00"  # both services, full months: nothing twice, nothing shifted
