"""Billing-engine routes: the dry run and the view bill (billing ahead is an action: api.actions)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.services import billing, views
from billow.services.preview import PreviewInput, preview
from runtime import clock, store

from api.context import authorized, current_tenant
from api.schemas import Id

router = APIGatewayRouter()


@router.post(
    "/billing/preview",
    summary="Dry run: every line a billing run on `as_of` would create for one service (no data is read or written)",
)
def billing_preview(body: PreviewInput) -> dict[str, Any]:
    authorized(router.current_event)  # reads no tenant data, so it needs no settings either
    return preview(body)


@router.get(
    "/subscriptions/<subscription_id>/upcoming",
    summary="View bill: the next invoices of a subscription, as the billing run will create them",
)
def view_bill(
    subscription_id: Annotated[Id, Path()], count: Annotated[int, Query(ge=1, le=billing.MAX_UPCOMING)] = 3
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    bill = billing.view_bill(store, ctx, subscription_id, count, clock=clock)
    terms_days = ctx.settings.payment_terms_days
    return {
        "subscription_id": subscription_id,
        "invoices": [views.draft(d, terms_days, so_far_after=bill.today) for d in bill.invoices],
    }
