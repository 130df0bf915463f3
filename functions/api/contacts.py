"""Contact routes, with each contact's subscriptions, invoices and test clock."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.contacts import Address
from billow.services import contacts, invoices, time_travel
from billow.services.contacts import contact_today
from billow.services.context import TenantContext
from runtime import clock, numbers, store

from api import presenters
from api.context import current_tenant, ids_for_request
from api.openapi import Created
from api.schemas import AdvanceClockBody, ContactBody, Id, TestClockBody

router = APIGatewayRouter()


@router.post("/contacts", summary="Create a contact (subscriber)")
def create_contact(body: ContactBody) -> Created:
    ctx = current_tenant(router.current_event)
    address = None if body.billing_address is None else Address(**body.billing_address.model_dump())
    limit = (
        None
        if body.credit_limit is None
        else contacts.CreditLimitInput(body.credit_limit.amount, body.credit_limit.currency)
    )
    contact = contacts.create_contact(
        store,
        ctx,
        name=body.name,
        email=body.email,
        billing_address=address,
        classification=body.classification,
        credit_limit=limit,
        preferred_payment_method=None if body.preferred_payment_method is None else body.preferred_payment_method.value,
        clock=clock,
        new_id=ids_for_request(router.current_event, ctx, "contacts"),
    )
    return presenters.contact(contact), 201


@router.get("/contacts", summary="List contacts, oldest first")
def list_contacts(
    limit: Annotated[int, Query(ge=1, le=100)] = 50, cursor: Annotated[str | None, Query(max_length=2000)] = None
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    page = contacts.list_contacts(store, ctx, limit=limit, cursor=cursor)
    return {"items": [presenters.contact(c) for c in page.items], "cursor": page.cursor}


@router.get("/contacts/<contact_id>", summary="Get a contact")
def get_contact(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.contact(contacts.get_contact(store, ctx, contact_id))


@router.get("/contacts/<contact_id>/subscriptions", summary="The contact's subscriptions")
def contact_subscriptions(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    contacts.get_contact(store, ctx, contact_id)
    subscriptions = store.subscriptions_of(ctx.tenant_id, contact_id)
    return {"items": [presenters.subscription(s) for s in subscriptions]}


@router.get("/contacts/<contact_id>/invoices", summary="The contact's invoices, oldest first")
def contact_invoices(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    return contact_invoices_response(current_tenant(router.current_event), contact_id)


def contact_invoices_response(ctx: TenantContext, contact_id: str) -> dict[str, Any]:
    """Invoices shown with their status on the contact's own clock (overdue is relative to it)."""
    found = invoices.invoices_of_contact(store, ctx, contact_id)
    today = contact_today(store, ctx, contact_id, clock)
    return {"items": [presenters.invoice(i, today) for i in found]}


@router.post("/contacts/<contact_id>/test-clock", summary="Attach a test clock (test mode only)")
def create_test_clock(contact_id: Annotated[Id, Path()], body: TestClockBody) -> Created:
    ctx = current_tenant(router.current_event)
    return presenters.clock(contacts.create_test_clock(store, ctx, contact_id, body.frozen_time)), 201


@router.get("/contacts/<contact_id>/test-clock", summary="Read a contact's test clock")
def get_test_clock(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.clock(contacts.get_test_clock(store, ctx, contact_id))


@router.post(
    "/contacts/<contact_id>/test-clock/advance",
    summary="Move the test clock forward and run everything that became due",
)
def advance_test_clock(contact_id: Annotated[Id, Path()], body: AdvanceClockBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    result = time_travel.advance_test_clock(store, ctx, contact_id, body.to, numbers)
    return {
        "clock": presenters.clock(result.clock),
        "invoices_created": [presenters.invoice(i, result.today) for i in result.invoices],
    }
