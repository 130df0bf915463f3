"""Receivables routes: an invoice's status changes (void, uncollectible, finalise), credit notes
applied and refunded, and a contact's balance. Each write is idempotent under an
`Idempotency-Key`, a refund on its bank `reference` (a retry answers as the first attempt did,
`Idempotent-Replayed: true`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import runtime
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.invoices import Invoice, PaymentMethod
from billow.services import invoices, receivables
from billow.services.collection import attempts_covering
from billow.services.context import TenantContext, keyed_ids
from billow.services.receivables import RefundInput
from pydantic import BaseModel
from runtime import clock, numbers, store

from api import presenters
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import ApplyCreditBody, FinalizeBody, Id, RefundBody, UnappliedRefundBody, VoidBody, WriteOffBody

router = APIGatewayRouter()


def _status_change(
    body: BaseModel | None, change: Callable[[TenantContext, bool], Invoice]
) -> Response[dict[str, Any]]:
    """Run one invoice status change under the request's Idempotency-Key; a replay answers the
    invoice as it stands (`Idempotent-Replayed: true`)."""
    ctx = current_tenant(router.current_event)
    with idempotent(router.current_event, ctx, body) as ids:
        invoice = change(ctx, ids.replay)
    return created(presenters.invoice(invoice), 200, replay=ids.replay)


@router.post("/invoices/<invoice_id>/void", summary="Void an open, overdue or draft invoice (its credits go back)")
@answers(200)
def void_invoice(invoice_id: Annotated[Id, Path()], body: VoidBody) -> Response[dict[str, Any]]:
    return _status_change(
        body,
        lambda ctx, replay: receivables.void_invoice(store, ctx, invoice_id, body.reason, clock=clock, replay=replay),
    )


@router.post("/invoices/<invoice_id>/mark-uncollectible", summary="Write off an open or overdue invoice")
@answers(200)
def mark_uncollectible(invoice_id: Annotated[Id, Path()], body: WriteOffBody) -> Response[dict[str, Any]]:
    return _status_change(
        body,
        lambda ctx, replay: receivables.mark_uncollectible(
            store, ctx, invoice_id, body.reason, clock=clock, replay=replay
        ),
    )


@router.post("/invoices/<invoice_id>/finalize", summary="Finalise a draft invoice now: numbered and open")
@answers(200)
def finalize_invoice(invoice_id: Annotated[Id, Path()], body: FinalizeBody | None = None) -> Response[dict[str, Any]]:
    return _status_change(
        body,
        lambda ctx, replay: receivables.finalize_invoice(store, ctx, invoice_id, numbers, clock=clock, replay=replay),
    )


@router.get(
    "/invoices/<invoice_id>/payment-attempts",
    summary="The payment attempts that charge the invoice on the card (its own and whole-debt ones), oldest first",
)
def invoice_payment_attempts(invoice_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    invoice = invoices.get_invoice(store, ctx, invoice_id)
    attempts = attempts_covering(store, ctx.scope, invoice)
    return {"invoice_id": invoice.id, "items": [presenters.payment_attempt(a) for a in attempts]}


@router.get("/credit-notes/<credit_note_id>", summary="Get a credit note with its applications and refunds")
def get_credit_note(credit_note_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    note = receivables.get_credit_note(store, ctx, credit_note_id)
    applications, refunds = receivables.credit_note_records(store, ctx, note)
    return {
        **presenters.invoice(note),
        "applications": [presenters.application(a) for a in applications],
        "refunds": [presenters.refund(r) for r in refunds],
    }


@router.post(
    "/credit-notes/<credit_note_id>/apply",
    summary="Apply a credit note to an open or overdue invoice of the same contact and currency",
)
@answers(201, 200)
def apply_credit_note(credit_note_id: Annotated[Id, Path()], body: ApplyCreditBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    with idempotent(router.current_event, ctx, body) as ids:
        result = receivables.apply_credit_note(
            store, ctx, credit_note_id, body.invoice_id, body.amount, body.currency, clock, ids.new_id
        )
    answer = {
        "credit_note": presenters.invoice(result.credit_note),
        "invoice": presenters.invoice(result.invoice),
        "application": presenters.application(result.application),
        "replayed": result.replayed,
    }
    return created(answer, 201, replay=result.replayed)


@router.post(
    "/credit-notes/<credit_note_id>/refund",
    summary="Refund a credit note to the card payment it credits, or record a manual refund; idempotent on `reference`",
)
@answers(201, 200)
def refund_credit_note(credit_note_id: Annotated[Id, Path()], body: RefundBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    spec = RefundInput(body.amount, body.currency, body.method, body.reference, body.payment_id)
    # The reference is the key (within the credit note's refunds), as a manual payment's is.
    reference = (f"refund:{credit_note_id}", body.reference)
    with idempotent(router.current_event, ctx, body, reference=reference) as ids:
        new_id, gateway = ids.new_id, None
        if body.method is PaymentMethod.CARD:
            # A card refund's id is the reference's alone, not its claim's: a retry after the claim
            # was released (a refusal once the refund was pending) still finds that refund.
            new_id = keyed_ids(f"{ctx.tenant_id}:{ctx.mode}:refund:{credit_note_id}", body.reference)
            gateway = runtime.payment_gateway(ctx.scope)
        result = receivables.refund_credit_note(store, ctx, credit_note_id, spec, clock, new_id, gateway)
    answer = {
        "credit_note": presenters.invoice(result.credit_note),
        "refund": presenters.refund(result.refund),
        "replayed": result.replayed,
    }
    return created(answer, 201, replay=result.replayed)


@router.post(
    "/invoices/<invoice_id>/payments/<payment_id>/refund-unapplied",
    summary="Refund a card payment's unapplied money (what its invoice never took) to its card; idempotent on "
    "`reference`",
)
@answers(201, 200)
def refund_unapplied(
    invoice_id: Annotated[Id, Path()], payment_id: Annotated[Id, Path()], body: UnappliedRefundBody
) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    spec = RefundInput(body.amount, body.currency, PaymentMethod.CARD, body.reference, payment_id)
    with idempotent(router.current_event, ctx, body, reference=(f"refund:{payment_id}", body.reference)):
        # The refund's id is the reference's alone (as a credit note's card refund's).
        new_id = keyed_ids(f"{ctx.tenant_id}:{ctx.mode}:refund-unapplied:{payment_id}", body.reference)
        gateway = runtime.payment_gateway(ctx.scope)
        result = receivables.refund_unapplied_to_card(store, ctx, invoice_id, spec, clock, new_id("ref"), gateway)
    payment = store.get_payment(ctx.scope, result.credit_note.contact_id, invoice_id, payment_id)
    answer = {
        "invoice": presenters.invoice(result.credit_note),
        "payment": None if payment is None else presenters.payment(payment),
        "refund": presenters.refund(result.refund),
        "replayed": result.replayed,
    }
    return created(answer, 201, replay=result.replayed)


@router.get("/contacts/<contact_id>/balance", summary="A contact's outstanding, overdue and credit, per currency")
def contact_balance(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.balance(contact_id, receivables.contact_balance(store, ctx, contact_id))
