"""Contact routes, with each contact's subscriptions, invoices and test clock."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

import runtime
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.contacts import Address, ClockStatus, TestClock
from billow.services import contacts, invoices, time_travel
from billow.services.contacts import contact_today
from billow.services.context import TenantContext
from billow.services.invoices import InvoiceFilter
from billow.services.usage import allowances
from runtime import clock, invoker, store

from api import presenters
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import (
    AddressBody,
    AdvanceClockBody,
    AllowanceBody,
    ContactBody,
    ContactPatchBody,
    Cursor,
    Id,
    InvoiceKind,
    InvoiceStatus,
    Limit,
    TestClockBody,
)

router = APIGatewayRouter()


def _address(body: AddressBody | None) -> Address | None:
    return None if body is None else Address(**body.model_dump())


@router.post("/contacts", summary="Create a contact (subscriber)")
@answers(201, 200)
def create_contact(body: ContactBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    method = None if body.preferred_payment_method is None else body.preferred_payment_method.value
    with idempotent(router.current_event, ctx, body) as ids:
        contact = contacts.create_contact(
            store,
            ctx,
            name=body.name,
            email=body.email,
            billing_address=_address(body.billing_address),
            classification=body.classification,
            credit_limit=body.credit_limit,
            preferred_payment_method=method,
            clock=clock,
            new_id=ids.new_id,
            collection=body.collection,
            dunning_excluded=body.dunning_excluded,
        )
    return created(presenters.contact(contact), 201, replay=ids.replay)


@router.get("/contacts", summary="List contacts, oldest first")
def list_contacts(limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    page = contacts.list_contacts(store, ctx, limit=limit, cursor=cursor)
    return {"items": [presenters.contact(c) for c in page.items], "cursor": page.cursor}


@router.get("/contacts/<contact_id>", summary="Get a contact")
def get_contact(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.contact(contacts.get_contact(store, ctx, contact_id))


_CONTACT_REQUIRED = {"name", "email", "dunning_excluded"}  # a `null` for these changes nothing


@router.patch("/contacts/<contact_id>", summary="Change a contact's details")
def update_contact(contact_id: Annotated[Id, Path()], body: ContactPatchBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in _CONTACT_REQUIRED:
            continue
        if name == "billing_address":
            value = _address(value)
        elif name in ("preferred_payment_method", "collection") and value is not None:
            value = value.value
        changes[name] = value
    contact = contacts.update_contact(store, ctx, contact_id, changes)
    if "dunning_excluded" in changes:  # its cases decide again now: excluded, or chased (opened) again
        from billow.services.dunning_cases import exclusion_changed

        exclusion_changed(store, ctx, contact_id, contact.dunning_excluded, lambda: runtime.flows, clock)
    return presenters.contact(contact)


@router.post(
    "/contacts/<contact_id>/archive",
    summary="Archive a contact whose services have all ended; it takes no new orders",
)
def archive_contact(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.contact(contacts.set_contact_archived(store, ctx, contact_id, True))


@router.post("/contacts/<contact_id>/unarchive", summary="Let an archived contact order again")
def unarchive_contact(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.contact(contacts.set_contact_archived(store, ctx, contact_id, False))


Meter = Annotated[
    str,
    # Checked by the use case (1 to 64 characters of a-z, 0-9 and _), which answers the documented
    # `usage.invalid_meter` rather than the schema's generic refusal.
    Path(description="the meter (of a usage price): 1 to 64 characters of a-z, 0-9 and _"),
]


@router.put(
    "/contacts/<contact_id>/allowances/<meter>",
    summary="Give the contact its own allowance on a meter (replaces the price terms' for its services on it)",
)
def set_allowance(contact_id: Annotated[Id, Path()], meter: Meter, body: AllowanceBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    raw = body.model_dump(exclude_none=True)
    return presenters.contact(allowances.set_allowance(store, ctx, contact_id, meter, raw))


@router.delete(
    "/contacts/<contact_id>/allowances/<meter>",
    summary="Drop the contact's own allowance on a meter (its services are held to their terms' again)",
)
def remove_allowance(contact_id: Annotated[Id, Path()], meter: Meter) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.contact(allowances.remove_allowance(store, ctx, contact_id, meter))


Include = Annotated[
    Literal["next_billing_date"] | None,
    Query(
        description="next_billing_date: show each subscription's next billing date, as its own GET does "
        "(it runs the billing engine ahead for every subscription of the page, so it is left out unless asked)"
    ),
]


@router.get("/contacts/<contact_id>/subscriptions", summary="The contact's subscriptions, in id order")
def contact_subscriptions(
    contact_id: Annotated[Id, Path()], limit: Limit = 50, cursor: Cursor = None, include: Include = None
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    contacts.get_contact(store, ctx, contact_id)
    page = store.subscriptions_page(ctx.scope, contact_id, limit, cursor)
    today = contact_today(store, ctx, contact_id, clock)
    upcoming = include == "next_billing_date"
    items = [presenters.subscription(s, today, next_billing_date=upcoming) for s in page.items]
    return {"items": items, "cursor": page.cursor}


InvoiceStatusFilter = Annotated[
    InvoiceStatus | None,
    Query(description="stored status: overdue from the day after the due date, on the contact's clock"),
]
IssuedFrom = Annotated[date | None, Query(description="issued on or after this day")]
IssuedBefore = Annotated[date | None, Query(description="issued before this day")]


@router.get(
    "/contacts/<contact_id>/invoices", summary="The contact's invoices, oldest first (as /invoices?contact_id=)"
)
def contact_invoices(
    contact_id: Annotated[Id, Path()],
    status: InvoiceStatusFilter = None,
    kind: Annotated[InvoiceKind | None, Query()] = None,
    issued_from: IssuedFrom = None,
    issued_before: IssuedBefore = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    filters = InvoiceFilter(status, contact_id, kind, issued_from, issued_before)
    return invoice_page(current_tenant(router.current_event), filters, limit, cursor)


def invoice_page(ctx: TenantContext, filters: InvoiceFilter, limit: int, cursor: str | None) -> dict[str, Any]:
    page = invoices.list_invoices(store, ctx, filters, limit=limit, cursor=cursor)
    return {"items": [presenters.invoice(i) for i in page.items], "cursor": page.cursor}


@router.post("/contacts/<contact_id>/test-clock", summary="Attach a test clock (test mode only)")
@answers(201)
def create_test_clock(contact_id: Annotated[Id, Path()], body: TestClockBody) -> tuple[dict[str, Any], int]:
    ctx = current_tenant(router.current_event)
    return clock_response(ctx, contacts.create_test_clock(store, ctx, contact_id, body.frozen_time)), 201


@router.get("/contacts/<contact_id>/test-clock", summary="Read a contact's test clock: `ready` or `advancing`")
def get_test_clock(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return clock_response(ctx, contacts.get_test_clock(store, ctx, contact_id))


def clock_response(ctx: TenantContext, test_clock: TestClock) -> dict[str, Any]:
    ready = test_clock.status is ClockStatus.READY
    return presenters.clock(test_clock, time_travel.advance_limit(store, ctx, test_clock) if ready else None)


@router.post(
    "/contacts/<contact_id>/test-clock/advance",
    summary="Move the test clock forward; what became due is billed in the background (poll until `ready`)",
)
@answers(202)
def advance_test_clock(contact_id: Annotated[Id, Path()], body: AdvanceClockBody) -> tuple[dict[str, Any], int]:
    ctx = current_tenant(router.current_event)
    return presenters.clock(time_travel.request_advance(store, ctx, contact_id, body.to, invoker)), 202
