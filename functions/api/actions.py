"""Subscription action routes: one route per action, the action log, and cancelling, rescheduling
or previewing actions. Every action is immediate (no `on`) or scheduled (`on`, or `in_days`);
`Idempotency-Key` makes a retried request answer with the first one's record."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.actions import MAX_DAYS_SCHEDULED, ActionKind, Days, NoParams
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.auto_renew import AUTO_RENEW, AutoRenew
from billow.domain.actions.bill_ahead import BILL_AHEAD, MAX_CYCLES_AHEAD, AheadAsked
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE, ChangeAsked
from billow.domain.actions.change_billing_day import CHANGE_BILLING_DAY, NewBillingDay
from billow.domain.actions.change_payment_method import CHANGE_PAYMENT_METHOD, PaymentMethod
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.actions.extend_term import EXTEND_TERM
from billow.domain.actions.extend_trial import EXTEND_TRIAL
from billow.domain.actions.pause import PAUSE
from billow.domain.actions.regret import REGRET
from billow.domain.actions.renew import RENEW
from billow.domain.actions.resume import RESUME
from billow.domain.actions.set_grace_period import SET_GRACE_PERIOD
from billow.domain.errors import InvalidInput, NotFound
from billow.services import actions, views
from billow.services.actions import ActionRequest, ActionResult
from pydantic import Field
from runtime import clock, numbers, store

from api import presenters
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import BillingDay, Body, Cursor, Id, Limit

router = APIGatewayRouter()
MAX_DAYS = 3660
SUB = "/subscriptions/<subscription_id>"
SVC = SUB + "/services/<service_id>"


class When(Body):
    on: BillingDay | None = Field(default=None, description="the day it takes effect (default: today, immediately)")
    in_days: int | None = Field(default=None, ge=0, le=MAX_DAYS_SCHEDULED, description="or: this many days from today")
    reason: str | None = Field(
        default=None, min_length=1, max_length=200, description="why (the business may require one of a list)"
    )


class PauseBody(When):
    days: int | None = Field(default=None, ge=1, le=MAX_DAYS, description="resume automatically after this many days")


class ChangeBody(When):
    product_id: Id | None = Field(default=None, description="another product (a tier path may restrict which)")
    terms_id: Id | None = Field(default=None, description="other price terms, of the same cycle and currency")
    quantity: int | None = Field(default=None, ge=1, le=100_000)


class AutoRenewBody(When):
    auto_renew: bool


class DaysBody(When):
    days: int = Field(ge=1, le=MAX_DAYS)


class BillingDayBody(When):
    billing_day: int = Field(ge=0, le=31, description="day of month 1-31; a weekday 0 (Monday)-6 for weekly cycles")


class PaymentMethodBody(When):
    payment_method: str | None = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="a method the contact saved, or null: the contact's default pays the subscription",
    )


class BillAheadBody(When):
    cycles: int | None = Field(default=None, ge=1, le=MAX_CYCLES_AHEAD, description="the next N billing dates")
    until: BillingDay | None = Field(default=None, description="every billing date up to and including this day")


class RescheduleBody(Body):
    on: BillingDay


SubscriptionId = Annotated[Id, Path()]
ServiceId = Annotated[Id, Path()]


def _request(kind: ActionKind[Any, Any], service_id: str | None, body: When, params: object = None) -> ActionRequest:
    return ActionRequest(
        kind=kind, service_id=service_id, on=body.on, in_days=body.in_days, reason=body.reason, params=params
    )


an_action = answers(201, 202, 200)
"""An action's handler answers 201 (executed now), 202 (scheduled) or 200 (a replay of its key): `_respond`."""


def _respond(result: ActionResult) -> Response[dict[str, Any]]:
    body = {
        "action": presenters.action(result.action),
        "subscription": presenters.subscription(result.subscription, result.today),
        "today": result.today.isoformat(),
        "invoices": [presenters.invoice(i) for i in result.invoices],
        "replayed": result.replayed,
    }
    status = 202 if result.action.status.value == "scheduled" else 201  # a replay answers 200: `created`
    return created(body, status, replay=result.replayed)


def _act(subscription_id: str, body: When, request: ActionRequest) -> Response[dict[str, Any]]:
    event = router.current_event
    ctx = current_tenant(event)
    # A refused action is logged and its key replays the refusal (`actions.request_action`); one
    # scheduled but not executed is resumed by its retry: only invalid requests release the key.
    with idempotent(event, ctx, body, released=(InvalidInput, NotFound)) as ids:
        result = actions.request_action(
            store, ctx, subscription_id, request, clock=clock, numbers=numbers, new_id=ids.new_id, keyed=ids.keyed
        )
    return _respond(result)


def _service_route(path: str, kind: ActionKind[NoParams, Any], summary: str) -> None:
    """POST /subscriptions/{id}/services/{service_id}/<path> for an action that takes only a day."""

    def handler(subscription_id: SubscriptionId, service_id: ServiceId, body: When) -> Response[dict[str, Any]]:
        return _act(subscription_id, body, _request(kind, service_id, body))

    handler.__name__ = f"{kind.name}_service"
    router.post(f"{SVC}/{path}", summary=summary)(an_action(handler))


_service_route("activate", ACTIVATE, "Activate a draft or not-effective service (activation rules apply)")
_service_route("deactivate", DEACTIVATE, "Deactivate a service; billed days after it are credited")
_service_route("resume", RESUME, "Resume a paused service; billing restarts that day")
_service_route("regret", REGRET, "Regret a service inside the regret period: a full credit")
_service_route("cancel", CANCEL, "Cancel a service (the contract rules may move it to the cycle end)")
_service_route("renew", RENEW, "Renew an expired service for one more termed period")


@router.post(
    SVC + "/pause",
    summary="Pause a service, for N days or until resumed",
)
@an_action
def pause(subscription_id: SubscriptionId, service_id: ServiceId, body: PauseBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(PAUSE, service_id, body, Days(body.days)))


def _change_request(service_id: str, body: ChangeBody) -> ActionRequest:
    return _request(CHANGE, service_id, body, ChangeAsked(body.product_id, body.terms_id, body.quantity))


@router.post(
    SVC + "/change",
    summary="Change a service's product, price terms or quantity (upgrade or downgrade timing rules apply)",
)
@an_action
def change(subscription_id: SubscriptionId, service_id: ServiceId, body: ChangeBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _change_request(service_id, body))


@router.post(
    SVC + "/change/preview",
    summary="Preview a change: when it would take effect and the next invoices with it (nothing is saved)",
)
def preview_change(subscription_id: SubscriptionId, service_id: ServiceId, body: ChangeBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    preview = actions.preview_action(store, ctx, subscription_id, _change_request(service_id, body), clock=clock)
    terms_days = ctx.settings.payment_terms_days
    return {
        "action": presenters.action(preview.action),
        "invoices": [views.draft(d, terms_days, preview.new_ids) for d in preview.invoices],
    }


@router.post(
    SVC + "/auto-renew",
    summary="Opt a termed service in or out of auto-renewal",
)
@an_action
def auto_renew(subscription_id: SubscriptionId, service_id: ServiceId, body: AutoRenewBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(AUTO_RENEW, service_id, body, AutoRenew(body.auto_renew)))


@router.post(
    SVC + "/extend-term",
    summary="Postpone the end of the termed period by N days",
)
@an_action
def extend_term(subscription_id: SubscriptionId, service_id: ServiceId, body: DaysBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(EXTEND_TERM, service_id, body, Days(body.days)))


@router.post(
    SVC + "/extend-trial",
    summary="Extend a trial by N days (back office, once)",
)
@an_action
def extend_trial(subscription_id: SubscriptionId, service_id: ServiceId, body: DaysBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(EXTEND_TRIAL, service_id, body, Days(body.days)))


@router.post(SUB + "/billing-day", summary="Change the billing day (anniversary billing only)")
@an_action
def change_billing_day(subscription_id: SubscriptionId, body: BillingDayBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(CHANGE_BILLING_DAY, None, body, NewBillingDay(body.billing_day)))


@router.post(
    SUB + "/grace-period",
    summary="Set a grace period of N days (no deactivation before its end)",
)
@an_action
def set_grace_period(subscription_id: SubscriptionId, body: DaysBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(SET_GRACE_PERIOD, None, body, Days(body.days)))


@router.post(SUB + "/payment-method", summary="Set the payment method that pays this subscription")
@an_action
def change_payment_method(subscription_id: SubscriptionId, body: PaymentMethodBody) -> Response[dict[str, Any]]:
    return _act(
        subscription_id,
        body,
        _request(CHANGE_PAYMENT_METHOD, None, body, PaymentMethod(body.payment_method)),
    )


@router.post(
    SUB + "/bill-ahead",
    summary="Bill upcoming cycles now (N cycles or up to a date); repeating it the same day bills nothing more",
)
@an_action
def bill_ahead(subscription_id: SubscriptionId, body: BillAheadBody) -> Response[dict[str, Any]]:
    return _act(subscription_id, body, _request(BILL_AHEAD, None, body, AheadAsked(body.cycles, body.until)))


@router.get(
    SUB + "/actions",
    summary="The action log: executed, scheduled, cancelled and rejected actions",
)
def list_actions(subscription_id: SubscriptionId, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    log = actions.action_log(store, ctx, subscription_id, limit=limit, cursor=cursor)
    return {
        "subscription_id": subscription_id,
        "actions": [presenters.action(a) for a in log.items],
        "cursor": log.cursor,
    }


@router.delete(SUB + "/actions/<action_id>", summary="Cancel a pending action")
def cancel_action(subscription_id: SubscriptionId, action_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.action(actions.cancel_action(store, ctx, subscription_id, action_id, clock))


@router.patch(SUB + "/actions/<action_id>", summary="Reschedule a pending action")
def reschedule_action(
    subscription_id: SubscriptionId, action_id: Annotated[Id, Path()], body: RescheduleBody
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.action(actions.reschedule_action(store, ctx, subscription_id, action_id, body.on, clock))
