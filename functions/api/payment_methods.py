"""A contact's saved payment methods: start saving a card (a SetupIntent for Stripe.js), record it
once the customer confirmed it, list, choose the default, remove (docs/payments.md)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.gateways.rails import payment_gateway
from billow.services import payment_methods
from billow.services.context import TenantContext
from billow.services.gateway import PaymentGateway
from billow.services.inputs import Body
from runtime import clock, secrets, store

from api import presenters
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import Cursor, Id, Limit

router = APIGatewayRouter()


class StartSetupBody(Body):
    """Nothing to give (the body may be left out): an unknown field is refused like on every route."""


class SetupBody(Body):
    """The setup the customer confirmed with Stripe.js (the `setup_id` the setup route answered)."""

    setup_id: Id


def _gateway(ctx: TenantContext) -> PaymentGateway:
    return payment_gateway(secrets, ctx.tenant_id, ctx.mode)


@router.post(
    "/contacts/<contact_id>/payment-methods/setup",
    summary="Start saving a card: a setup whose client secret Stripe.js confirms with the customer",
)
@answers(201)
def start_setup(contact_id: Annotated[Id, Path()], body: StartSetupBody | None = None) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    with idempotent(router.current_event, ctx, None) as ids:  # `body` has nothing to compare
        setup = payment_methods.start_setup(
            store, ctx, contact_id, _gateway(ctx), clock, request_id=ids.new_id("setup"), keyed=ids.keyed
        )
    return created({"setup_id": setup.ref, "client_secret": setup.client_secret}, 201, replay=ids.replay)


@router.post(
    "/contacts/<contact_id>/payment-methods",
    summary="Record the card a confirmed setup saved (idempotent on the setup: 200 when recorded before)",
)
@answers(201, 200)
def record_setup(contact_id: Annotated[Id, Path()], body: SetupBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    method, new = payment_methods.save_from_setup(store, ctx.scope, contact_id, body.setup_id, _gateway(ctx), clock)
    contact = store.get_contact(ctx.scope, contact_id)
    default = None if contact is None else contact.default_method_ref
    return created(presenters.payment_method(method, default), 201, replay=not new)


@router.get("/contacts/<contact_id>/payment-methods", summary="The contact's saved payment methods and its default")
def list_methods(contact_id: Annotated[Id, Path()], limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    contact, page = payment_methods.list_methods(store, ctx, contact_id, limit=limit, cursor=cursor)
    default = contact.default_method_ref
    items = [presenters.payment_method(m, default) for m in page.items]
    return {"items": items, "cursor": page.cursor, "default_payment_method": default}


@router.post(
    "/contacts/<contact_id>/payment-methods/<method_id>/default",
    summary="Make a saved method the contact's default (what pays subscriptions that name none)",
)
def set_default(contact_id: Annotated[Id, Path()], method_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    contact = payment_methods.set_default(store, ctx, contact_id, method_id)
    method = payment_methods.saved_method(store, ctx.scope, contact_id, method_id)
    return presenters.payment_method(method, contact.default_method_ref)


@router.delete(
    "/contacts/<contact_id>/payment-methods/<method_id>",
    summary="Remove a saved method: detached on the rail; removing the default clears it",
)
def remove_method(contact_id: Annotated[Id, Path()], method_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    removed = payment_methods.remove_method(store, ctx, contact_id, method_id, _gateway(ctx), clock)
    return presenters.payment_method(removed, None)
