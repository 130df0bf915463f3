"""Saved payment methods over HTTP on the local stack with localstripe: a card saved through a
SetupIntent confirmed as Stripe.js would, listed, made default, removed (detached in localstripe);
tenants, modes and contacts kept apart; bad input refused with a coded 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billow.local import stack
from billow.local.stripe import LocalStripe

from tests.stripe_support import DECLINES_AT_CHARGE, VISA, confirm_setup, stripe_client
from tests.support import HttpClient, make_contact, make_product, post_from_processes

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY, OTHER_KEY, LIVE_KEY = "bk_test_pm", "bk_test_pm_other", "bk_live_pm"


@pytest.fixture(scope="module")
def local() -> Iterator[stack.LocalStack]:
    running = stack.start(schedule=False, table_name="billow-e2e-pm")
    try:
        stack.add_tenant("pm", "Cards Ltd", KEY)
        stack.add_tenant("pm", "Cards Ltd", LIVE_KEY, mode="live")
        stack.add_tenant("pm-other", "Other Ltd", OTHER_KEY)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(local: stack.LocalStack) -> HttpClient:
    return HttpClient(local.url, KEY)


def _fake(local: stack.LocalStack) -> LocalStripe:
    assert local.stripe is not None
    return local.stripe


def save_card(api: HttpClient, local: stack.LocalStack, contact_id: str, card: str = VISA) -> dict[str, Any]:
    setup = api.post(f"/contacts/{contact_id}/payment-methods/setup")
    assert setup.status == 201, setup.body
    assert setup.body["client_secret"].startswith(setup.body["setup_id"])
    confirm_setup(_fake(local), setup.body["setup_id"], card)  # the customer, in Stripe.js
    saved = api.post(f"/contacts/{contact_id}/payment-methods", {"setup_id": setup.body["setup_id"]})
    assert saved.status == 201, saved.body
    return dict(saved.body)


def test_save_list_default_and_remove(api: HttpClient, local: stack.LocalStack) -> None:
    contact = make_contact(api)
    first = save_card(api, local, contact["id"])
    assert (first["brand"], first["last4"], first["default"]) == ("visa", "4242", True)  # the first is the default
    replay = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": first["setup_id"]})
    assert replay.status == 200 and replay.body["id"] == first["id"]  # idempotent on the setup
    second = save_card(api, local, contact["id"], DECLINES_AT_CHARGE)
    assert second["default"] is False and second["last4"] == "0341"

    customer = api.get(f"/contacts/{contact['id']}").body
    assert customer["default_payment_method"] == first["id"]
    assert customer["gateway_customer_ref"].startswith("cus_")  # made once, on first need
    listed = api.get(f"/contacts/{contact['id']}/payment-methods").body
    assert {m["id"] for m in listed["items"]} == {first["id"], second["id"]}

    made_default = api.post(f"/contacts/{contact['id']}/payment-methods/{second['id']}/default")
    assert made_default.status == 200 and made_default.body["default"] is True
    removed = api.delete(f"/contacts/{contact['id']}/payment-methods/{second['id']}")
    assert removed.status == 200 and removed.body["removed_at"]
    assert api.get(f"/contacts/{contact['id']}").body["default_payment_method"] is None  # the default cleared
    assert [m["id"] for m in api.get(f"/contacts/{contact['id']}/payment-methods").body["items"]] == [first["id"]]
    on_stripe = stripe_client(_fake(local)).v1.payment_methods.list(
        {"customer": customer["gateway_customer_ref"], "type": "card"}
    )
    assert [m.id for m in on_stripe.data] == [first["id"]]  # detached in localstripe
    assert api.delete(f"/contacts/{contact['id']}/payment-methods/{second['id']}").status == 200  # a retry


def test_a_removed_card_stays_detached_when_its_setup_is_recorded_again(
    api: HttpClient, local: stack.LocalStack
) -> None:
    """Posting a removed card's setup again (or its setup_intent.succeeded arriving late) is refused
    and must not attach the card to the customer again: it could be charged on the rail."""
    contact = make_contact(api)
    saved = save_card(api, local, contact["id"])
    assert api.delete(f"/contacts/{contact['id']}/payment-methods/{saved['id']}").status == 200
    rail = stripe_client(_fake(local))
    assert rail.v1.payment_methods.retrieve(saved["id"]).customer is None  # detached
    again = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": saved["setup_id"]})
    assert (again.status, again.body["error"]) == (409, "payment_method.removed")
    assert rail.v1.payment_methods.retrieve(saved["id"]).customer is None  # still detached
    customer = api.get(f"/contacts/{contact['id']}").body["gateway_customer_ref"]
    assert rail.v1.payment_methods.list({"customer": customer, "type": "card"}).data == []


def test_a_subscription_names_only_a_saved_method(api: HttpClient, local: stack.LocalStack) -> None:
    contact = make_contact(api)
    card = save_card(api, local, contact["id"])
    product = make_product(api)
    order = api.post(
        "/orders",
        {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]},
    )
    assert order.status == 201, order.body
    subscription = order.body["order"]["services"][0]["subscription_id"]
    path = f"/subscriptions/{subscription}/payment-method"
    refused = api.post(path, {"payment_method": "pm_card_visa"})  # a card, but not one this contact saved
    assert (refused.status, refused.body["error"]) == (409, "payment_method.not_saved")
    named = api.post(path, {"payment_method": card["id"]})
    assert named.status == 201 and named.body["subscription"]["payment_method"] == card["id"]


def test_tenants_modes_and_contacts_are_kept_apart(api: HttpClient, local: stack.LocalStack) -> None:
    contact = make_contact(api)
    card = save_card(api, local, contact["id"])
    other_tenant = HttpClient(local.url, OTHER_KEY)
    live = HttpClient(local.url, LIVE_KEY)
    for client in (other_tenant, live):
        assert client.get(f"/contacts/{contact['id']}/payment-methods").status == 404
        assert client.delete(f"/contacts/{contact['id']}/payment-methods/{card['id']}").status == 404
    # another contact of the same tenant cannot record this contact's setup, nor name its card
    stranger = make_contact(api, "Bob Stranger")
    stolen = api.post(f"/contacts/{stranger['id']}/payment-methods", {"setup_id": card["setup_id"]})
    assert (stolen.status, stolen.body["error"]) == (404, "payment_method.setup_not_found")
    api.post(f"/contacts/{stranger['id']}/payment-methods/setup")  # now it has a customer of its own
    stolen = api.post(f"/contacts/{stranger['id']}/payment-methods", {"setup_id": card["setup_id"]})
    assert (stolen.status, stolen.body["error"]) == (404, "payment_method.setup_not_found")
    not_its = api.post(f"/contacts/{stranger['id']}/payment-methods/{card['id']}/default")
    assert (not_its.status, not_its.body["error"]) == (404, "payment_method.not_found")
    assert api.get(f"/contacts/{contact['id']}/payment-methods").body["items"][0]["id"] == card["id"]


def test_setup_refuses_unknown_fields_and_the_list_pages_like_every_list(
    api: HttpClient, local: stack.LocalStack
) -> None:
    contact = make_contact(api)
    unknown = api.post(f"/contacts/{contact['id']}/payment-methods/setup", {"x": 1})
    assert (unknown.status, unknown.body["error"]) == (422, "request.validation_failed"), unknown.body
    assert api.post(f"/contacts/{contact['id']}/payment-methods/setup").status == 201  # no body is fine
    cards = sorted(save_card(api, local, contact["id"])["id"] for _ in range(3))
    seen, cursor = [], None
    for _ in range(3):
        page = api.get(f"/contacts/{contact['id']}/payment-methods?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200, page.body
        seen += [m["id"] for m in page.body["items"]]
        cursor = page.body["cursor"]
        if cursor is None:
            break
    assert seen == cards  # in id order, each once, the last page without a cursor


def test_bad_input_is_a_coded_4xx(api: HttpClient, local: stack.LocalStack) -> None:
    contact = make_contact(api)
    setup = api.post(f"/contacts/{contact['id']}/payment-methods/setup").body
    unconfirmed = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": setup["setup_id"]})
    assert (unconfirmed.status, unconfirmed.body["error"]) == (409, "payment_method.setup_incomplete")
    assert api.post(f"/contacts/{contact['id']}/payment-methods", {}).status == 422
    unknown = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": "seti_nowhere"})
    assert (unknown.status, unknown.body["error"]) == (404, "payment_method.setup_not_found")
    bad = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": "no spaces allowed"})
    assert bad.status == 422 and bad.body["fields"]
    missing = api.post("/contacts/con_missing/payment-methods/setup")
    assert (missing.status, missing.body["error"]) == (404, "resource.not_found")
    gone = api.delete(f"/contacts/{contact['id']}/payment-methods/pm_nope")
    assert (gone.status, gone.body["error"]) == (404, "payment_method.not_found")


def test_one_setup_recorded_from_six_processes_at_once_is_saved_once(api: HttpClient, local: stack.LocalStack) -> None:
    for has_default in (False, True):  # the first card (it becomes the default), then a second one
        contact = make_contact(api)
        first = save_card(api, local, contact["id"]) if has_default else None
        setup = api.post(f"/contacts/{contact['id']}/payment-methods/setup").body
        _fake(local).confirm_setup(setup["setup_id"])
        path = f"/contacts/{contact['id']}/payment-methods"
        replies = post_from_processes(api, [(path, {"setup_id": setup["setup_id"]}, {})] * 6)
        assert sorted(r.status for r in replies) == [200, 200, 200, 200, 200, 201], [r.body for r in replies]
        assert len({r.body["id"] for r in replies}) == 1
        listed = api.get(path).body
        saved = replies[0].body["id"]
        assert [m["id"] for m in listed["items"] if m["id"] != (first or {}).get("id")] == [saved]
        assert listed["default_payment_method"] == (first["id"] if first else saved)


def test_a_setup_replayed_with_its_idempotency_key_answers_the_same_setup(
    api: HttpClient, local: stack.LocalStack
) -> None:
    """localstripe ignores idempotency keys (real Stripe forgets them after 24 h): the replay must
    find the setup Billow recorded, not start another with a new client secret."""
    contact = make_contact(api)
    path = f"/contacts/{contact['id']}/payment-methods/setup"
    first = api.post(path, headers={"Idempotency-Key": "setup-once"})
    assert first.status == 201, first.body
    again = api.post(path, headers={"Idempotency-Key": "setup-once"})
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (200, "true"), again.body
    assert again.body == first.body
    twins = post_from_processes(api, [(path, {}, {"Idempotency-Key": "setup-twins"})] * 4)
    assert {r.status for r in twins} <= {200, 201} and len({r.body["client_secret"] for r in twins}) == 1, [
        r.body for r in twins
    ]
    assert twins[0].body["setup_id"] != first.body["setup_id"]  # another key: another setup
    confirm_setup(_fake(local), first.body["setup_id"])  # the replayed answer is the setup that saves the card
    saved = api.post(f"/contacts/{contact['id']}/payment-methods", {"setup_id": again.body["setup_id"]})
    assert saved.status == 201, saved.body


def _subscription_of(api: HttpClient, contact_id: str) -> str:
    product = make_product(api)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    order = api.post("/orders", {"contact_id": contact_id, "items": [item]})
    assert order.status == 201, order.body
    return str(order.body["order"]["services"][0]["subscription_id"])


def test_a_subscription_goes_back_to_the_default_by_null_and_when_its_method_is_removed(
    api: HttpClient, local: stack.LocalStack
) -> None:
    contact = make_contact(api)
    default, own = save_card(api, local, contact["id"]), save_card(api, local, contact["id"])
    subscription = _subscription_of(api, contact["id"])
    path = f"/subscriptions/{subscription}/payment-method"
    assert api.post(path, {"payment_method": own["id"]}).body["subscription"]["payment_method"] == own["id"]
    back = api.post(path, {"payment_method": None})
    assert back.status == 201, back.body
    assert back.body["subscription"]["payment_method"] is None  # the contact's default pays it
    assert api.post(path, {}).status == 422  # null is said, not left out

    assert api.post(path, {"payment_method": own["id"]}).status == 201
    other = _subscription_of(api, contact["id"])
    removed = api.delete(f"/contacts/{contact['id']}/payment-methods/{own['id']}")
    assert removed.status == 200, removed.body
    shown = api.get(f"/subscriptions/{subscription}").body
    assert shown["payment_method"] is None  # no stale reference to a removed card
    assert api.get(f"/contacts/{contact['id']}").body["default_payment_method"] == default["id"]
    logged = api.get(f"/subscriptions/{subscription}/actions").body["actions"]
    (followed,) = [a for a in logged if a["action"] == "change_payment_method" and a["requested_by"] == "system"]
    assert followed["status"] == "executed" and own["id"] in followed["reason"], followed
    assert api.get(f"/subscriptions/{other}").body["payment_method"] is None  # never named it: untouched
