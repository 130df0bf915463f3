"""A new kind of action is one module (plus its route, when the API offers it): the kinds below are
defined and registered here, in this file alone, then requested through the use case and read back
from the log as stored in the table and as the API shows it (moto table). One is a system action:
only Billow itself requests it, naming the rule that made it act, as dunning's will."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import pytest
from billow.domain.actions import (
    Action,
    ActionStatus,
    Asked,
    Requester,
    ServiceKind,
    SubscriptionKind,
    kind_named,
    kinds,
    register,
    unregister,
)
from billow.domain.effects import Effect
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.policy import SubscriptionPolicy
from billow.domain.subscriptions import Service, Subscription
from billow.local.lambda_runtime import handler
from billow.local.stack import add_tenant
from billow.services.actions import ActionRequest, ActionResult, action_log, request_action
from billow.services.billing import InvoiceNumbers
from billow.services.context import SystemClock
from billow.services.tenants import tenant_context
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_action_kinds"


@dataclass(frozen=True, slots=True)
class Label:
    label: str | None = None
    until: date | None = None


class Note(ServiceKind[Label, Label]):
    """Notes a label on a service: checked, executed, logged; it changes nothing else."""

    name = "note_for_test"
    asks = holds = Label

    def check(self, asked: Asked[Label], action: Action) -> Action:
        label = self.needed(asked.params.label, "label")
        if label == "forbidden":
            raise RuleViolation("that label is not allowed", rule="note.forbidden")
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        return service, f"noted {self.params(effect.action).label}"


@dataclass(frozen=True, slots=True)
class Ruled:
    rule_name: str | None = None


class Flag(SubscriptionKind[Ruled, Ruled]):
    """A system action: Billow flags the subscription's payment method when a rule of its own says so."""

    name = "flag_for_test"
    asks = holds = Ruled
    requesters = frozenset({Requester.SYSTEM})
    not_requested = "only Billow flags a subscription"

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        rule = self.params(effect.action).rule_name
        return replace(effect.subscription, payment_method="flagged"), f"flagged under rule {rule}"


NOTE, FLAG = Note(), Flag()


@pytest.fixture
def registered(moto_table: str) -> Iterator[InProcessClient]:
    # The API's schema lists the kinds registered when it is imported: import it before these.
    handler("api.handler.complete_app")()
    register(NOTE)
    register(FLAG)
    add_tenant("tenant-k", "Tenant K", KEY)
    yield InProcessClient(KEY)
    unregister(NOTE)
    unregister(FLAG)


def subscribed(api: InProcessClient) -> dict[str, Any]:
    product = make_product(api, {"price": "31.00", "currency": "USD", "cycle": "month", "billing_model": "advance"})
    contact = make_contact(api)
    items = [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]
    reply = api.post("/orders", {"contact_id": contact["id"], "items": items})
    assert reply.status == 201, reply.body
    subscription_id = reply.body["invoices"][0]["subscription_id"]
    return dict(api.get(f"/subscriptions/{subscription_id}").body)


_counter = iter(range(10_000))


def act(subscription_id: str, request: ActionRequest) -> ActionResult:
    store = DynamoStore()
    ctx = tenant_context(store, "tenant-k", "test")
    return request_action(
        store,
        ctx,
        subscription_id,
        request,
        clock=SystemClock(),
        numbers=InvoiceNumbers(store),
        new_id=lambda prefix: f"{prefix}_k{next(_counter)}",
    )


def logged(subscription_id: str) -> list[Action]:
    store = DynamoStore()
    return action_log(store, tenant_context(store, "tenant-k", "test"), subscription_id, limit=50, cursor=None).items


def test_a_kind_defined_in_a_test_is_requested_executed_stored_and_shown(registered: InProcessClient) -> None:
    subscription = subscribed(registered)
    service_id = subscription["services"][0]["id"]
    until = date(2030, 1, 31)

    result = act(subscription["id"], ActionRequest(NOTE, service_id, params=Label("vip", until)))

    assert (result.action.status, result.action.outcome) == (ActionStatus.EXECUTED, "noted vip")
    assert result.subscription.services[0].state.value == subscription["services"][0]["state"]
    (record,) = [a for a in logged(subscription["id"]) if a.kind is NOTE]  # read back from the table
    assert (record.id, record.params, record.outcome) == (result.action.id, Label("vip", until), "noted vip")
    shown = registered.get(f"/subscriptions/{subscription['id']}/actions").body["actions"]
    (note,) = [a for a in shown if a["action"] == "note_for_test"]
    assert note["parameters"] == {"label": "vip", "until": "2030-01-31"}
    assert (note["status"], note["service_id"], note["requested_by"]) == ("executed", service_id, "back_office")


def test_a_new_kind_scheduled_waits_in_the_subscription_with_its_parameters(registered: InProcessClient) -> None:
    subscription = subscribed(registered)
    service_id = subscription["services"][0]["id"]

    result = act(subscription["id"], ActionRequest(NOTE, service_id, in_days=3, params=Label("later")))

    assert result.action.status is ActionStatus.SCHEDULED
    pending = registered.get(f"/subscriptions/{subscription['id']}").body["pending_actions"]
    assert [(a["action"], a["on"], a["parameters"]) for a in pending] == [
        ("note_for_test", result.action.on.isoformat(), {"label": "later"})
    ]


def test_a_new_kinds_checks_refuse_and_a_refusal_is_logged_with_its_rule(registered: InProcessClient) -> None:
    subscription = subscribed(registered)
    service_id = subscription["services"][0]["id"]

    with pytest.raises(InvalidInput, match="a note_for_test action needs label"):
        act(subscription["id"], ActionRequest(NOTE, service_id))
    with pytest.raises(InvalidInput, match="leave service_id out"):
        act(subscription["id"], ActionRequest(FLAG, service_id, by=Requester.SYSTEM))
    with pytest.raises(RuleViolation, match="not allowed"):
        act(subscription["id"], ActionRequest(NOTE, service_id, params=Label("forbidden")))

    (refused,) = [a for a in logged(subscription["id"]) if a.kind is NOTE]
    assert (refused.status, refused.rule, refused.outcome) == (
        ActionStatus.REJECTED,
        "note.forbidden",
        "that label is not allowed",
    )


def test_a_system_action_is_refused_to_users_and_taken_from_billow_with_its_rule(registered: InProcessClient) -> None:
    subscription = subscribed(registered)

    for by in (Requester.BACK_OFFICE, Requester.CONTACT):
        with pytest.raises(InvalidInput, match="only Billow flags a subscription"):
            act(subscription["id"], ActionRequest(FLAG, by=by, params=Ruled("dunning.test")))
    result = act(subscription["id"], ActionRequest(FLAG, by=Requester.SYSTEM, params=Ruled("dunning.test")))

    assert result.subscription.payment_method == "flagged"
    shown = registered.get(f"/subscriptions/{subscription['id']}/actions").body["actions"]
    assert [(a["action"], a["requested_by"], a["outcome"], a["parameters"]) for a in shown] == [
        ("flag_for_test", "system", "flagged under rule dunning.test", {"rule_name": "dunning.test"})
    ]


def test_the_registry_knows_every_kind_by_name_and_the_business_may_require_reasons_for_a_new_one(
    registered: InProcessClient,
) -> None:
    assert kind_named("note_for_test") is NOTE
    assert {"pause", "change", "expire", "note_for_test"} <= {kind.name for kind in kinds()}
    policy = SubscriptionPolicy.from_json({"reasons": {"note_for_test": ["audit"]}})
    with pytest.raises(RuleViolation, match="needs one of these reasons: audit"):
        policy.check_reason(NOTE, "whim")
    with pytest.raises(ValueError, match="no action 'nothing'"):
        SubscriptionPolicy.from_json({"reasons": {"nothing": ["x"]}})


def test_two_kinds_cannot_share_a_name_nor_hide_a_field_of_the_record() -> None:
    class Again(Note):
        pass

    @dataclass(frozen=True, slots=True)
    class Clashing:
        status: str | None = None

    class Clash(Note):
        name = "clash_for_test"
        asks = holds = Clashing

    kinds()  # every module of the package registered
    with pytest.raises(ValueError, match="two kinds of action are named pause"):
        register(type("Pause2", (Again,), {"name": "pause"})())
    with pytest.raises(ValueError, match="clash with the record's fields"):
        register(Clash())


def test_a_kind_crosses_processes_and_copies_as_the_one_registered(registered: InProcessClient) -> None:
    from billow.domain.actions.pause import PAUSE

    action = Action("a1", PAUSE, date(2025, 1, 1), date(2025, 1, 1), "svc_1", params=PAUSE.holds(3))
    assert pickle.loads(pickle.dumps(action)).kind is PAUSE  # noqa: S301 (our own bytes)
    assert copy.deepcopy(action) == action
    assert pickle.loads(pickle.dumps(NOTE)) is NOTE  # noqa: S301
