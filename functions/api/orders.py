"""Ordering, subscription and invoice routes."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.errors import NotFound
from billow.domain.invoices import Invoice
from billow.services import invoices, ordering, views
from billow.services.contacts import contact_today
from billow.services.context import TenantContext
from billow.services.invoices import InvoiceFilter, ManualPaymentInput
from billow.services.ordering import OrderItemInput
from runtime import clock, new_id, numbers, store

from api import presenters
from api.contacts import InvoiceStatusFilter, IssuedBefore, IssuedFrom, invoice_page
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import Cursor, Id, InvoiceKind, Limit, ManualPaymentBody, OrderBody, QuoteBody

router = APIGatewayRouter()


def _items(body: OrderBody | QuoteBody) -> list[OrderItemInput]:
    return [OrderItemInput(i.product_id, i.terms_id, i.quantity) for i in body.items]


@router.post("/orders/quote", summary="Quote an order: the first invoice of each subscription it touches")
def quote_order(body: QuoteBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    quote = ordering.quote(store, ctx, body.contact_id, _items(body), body.start_date, clock, new_id)
    return {
        "contact_id": quote.contact_id,
        "start_date": quote.start_date.isoformat(),
        "invoices": [views.draft(d, quote.payment_terms_days, quote.new_ids) for d in quote.invoices],
    }


@router.post("/orders", summary="Place an order (idempotent on `reference`)")
@answers(201, 200)
def place_order(body: OrderBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    reference = None if body.reference is None else (f"order:{body.contact_id}", body.reference)
    with idempotent(router.current_event, ctx, body, reference=reference, header=False) as ids:
        placed = ordering.place_order(
            store,
            ctx,
            body.contact_id,
            _items(body),
            body.start_date,
            body.reference,
            clock,
            new_id,
            numbers,
            activate_on_payment=body.activate_on_payment,
            request=ids.request,
        )
    answer = {
        "order": presenters.order(placed.order),
        "invoices": [presenters.invoice(i) for i in placed.invoices],
        "replayed": placed.replayed,
    }
    return created(answer, 201, replay=placed.replayed)


@router.get("/orders/<order_id>", summary="Get an order")
def get_order(order_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    order = store.get_order(ctx.scope, order_id)
    if order is None:
        raise NotFound(f"no order {order_id}", field="order_id")
    return presenters.order(order)


@router.get("/subscriptions/<subscription_id>", summary="Get a subscription and its services")
def get_subscription(subscription_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    subscription = store.get_subscription(ctx.scope, subscription_id)
    if subscription is None:
        raise NotFound(f"no subscription {subscription_id}", field="subscription_id")
    return presenters.subscription(subscription, contact_today(store, ctx, subscription.contact_id, clock))


@router.get("/invoices", summary="The business's invoices, oldest first (issue day, then id), filtered")
def list_invoices(
    contact_id: Annotated[Id | None, Query()] = None,
    status: InvoiceStatusFilter = None,
    kind: Annotated[InvoiceKind | None, Query()] = None,
    issued_from: IssuedFrom = None,
    issued_before: IssuedBefore = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    filters = InvoiceFilter(status, contact_id, kind, issued_from, issued_before)
    return invoice_page(current_tenant(router.current_event), filters, limit, cursor)


@router.get("/invoices/<invoice_id>", summary="Get an invoice with its lines and payments")
def get_invoice(invoice_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    invoice = invoices.get_invoice(store, ctx, invoice_id)
    return {
        **presenters.invoice(invoice),
        "payments": _payments(ctx, invoice),
    }


@router.get("/invoices/<invoice_id>/payments", summary="An invoice's payments, oldest first (an empty list when none)")
def list_payments(invoice_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    invoice = invoices.get_invoice(store, ctx, invoice_id)
    return {"invoice_id": invoice.id, "items": _payments(ctx, invoice)}


def _payments(ctx: TenantContext, invoice: Invoice) -> list[dict[str, Any]]:
    paid = sorted(invoices.payments_of_invoice(store, ctx, invoice), key=lambda p: (p.recorded_at, p.id))
    return [presenters.payment(p) for p in paid]


@router.post(
    "/invoices/<invoice_id>/payments",
    summary="Record a manual payment (bank transfer confirmed by staff); idempotent on `reference`",
)
@answers(201, 200)
def record_payment(invoice_id: Annotated[Id, Path()], body: ManualPaymentBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    spec = ManualPaymentInput(body.amount, body.currency, body.method, body.reference, body.received_on)
    with idempotent(router.current_event, ctx, body, reference=(f"payment:{invoice_id}", body.reference)):
        result = invoices.record_manual_payment(store, ctx, invoice_id, spec, clock)
    answer = {
        "invoice": presenters.invoice(result.invoice),
        "payment": presenters.payment(result.payment),
        "replayed": result.replayed,
    }
    return created(answer, 201, replay=result.replayed)
