"""Top-up and low-balance routes (docs/credits.md, "Top-ups", "Refunding a top-up", "Low balance
and auto top-up"): an area of their own, since a top-up is an invoice charged on the rail and these
routes import billing and collection, which the consume and balance routes never need."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.credits import LowBalance
from billow.domain.errors import PaymentRequired
from billow.gateways.rails import charging_gateway
from billow.services.credits import low_balance, top_up_refunds, top_ups
from billow.services.views import ledger_entry, money
from runtime import clock, numbers, secrets, store

from api.context import created, current_tenant
from api.openapi import answers
from api.schemas import Id, LowBalanceBody, RefundTopUpBody, TopUpBody

router = APIGatewayRouter()


def _top_up(state: top_ups.TopUpState) -> dict[str, Any]:
    invoice, top_up, attempt = state.invoice, state.top_up, state.attempt
    return {
        "id": invoice.id,
        "contact_id": invoice.contact_id,
        "status": state.status.value,
        "pack": top_up.pack_id,
        "credits": top_up.credits,
        "amount": money(invoice.total),
        "request_id": top_up.request_id,
        "auto": top_up.auto,
        "confirm": "client" if top_up.on_session else "off_session",
        "invoice_id": invoice.id,
        "invoice_status": invoice.status.value,
        "payment": None
        if attempt is None
        else {
            "attempt_id": attempt.id,
            "status": attempt.status.value,
            "decline_code": attempt.decline_code,
            "reason": attempt.reason,
            "rail_ref": attempt.charge_ref,
            "client_secret": state.client_secret,
        },
        "grant": None if state.grant is None else ledger_entry(state.grant),
        "failure": invoice.status_reason if state.status is top_ups.TopUpStatus.FAILED else None,
        "credit_note_id": state.credit_note_id,
    }


@router.post(
    "/contacts/<contact_id>/credits/top-ups",
    summary="Buy a credit pack, charged at once to the saved card: 201 granted, 202 settling, 402 declined",
)
@answers(201, 200, 202)
def buy_top_up(contact_id: Annotated[Id, Path()], body: TopUpBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    gateway = charging_gateway(secrets, ctx.tenant_id, ctx.mode)
    state = top_ups.buy_top_up(
        store, gateway, ctx, clock, numbers, contact_id, body.pack, body.request_id, on_session=body.confirm == "client"
    )
    return _top_up_answer(state)


def _top_up_answer(state: top_ups.TopUpState) -> Response[dict[str, Any]]:
    if state.status is top_ups.TopUpStatus.FAILED:
        taken = state.invoice.unapplied
        outcome = (
            "nothing was charged or granted"
            if taken.is_zero
            else f"no credits were granted; the {taken} its charge took is the contact's credit (refundable)"
        )
        raise PaymentRequired(
            f"top-up {state.invoice.id} failed ({state.invoice.status_reason}): {outcome}; "
            "a new purchase needs a new request_id",
            code="credits.top_up_failed",
        )
    if state.status is top_ups.TopUpStatus.PENDING:  # settling: 202, a replay too (not done yet)
        headers = {"Idempotent-Replayed": "true"} if state.replayed else None
        return Response(
            status_code=202, content_type=content_types.APPLICATION_JSON, body=_top_up(state), headers=headers
        )
    return created(_top_up(state), 201, replay=state.replayed)


@router.get("/contacts/<contact_id>/credits/top-ups/<top_up_id>", summary="A top-up: its payment and its credits")
def get_top_up(contact_id: Annotated[Id, Path()], top_up_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    gateway = charging_gateway(secrets, ctx.tenant_id, ctx.mode)
    return _top_up(top_ups.get_top_up(store, ctx, clock, numbers, contact_id, top_up_id, gateway))


@router.post(
    "/contacts/<contact_id>/credits/top-ups/<top_up_id>/refund",
    summary="Refund a top-up: what is left of its credits removed, that share of its price back to its card (once)",
)
def refund_top_up(
    contact_id: Annotated[Id, Path()], top_up_id: Annotated[Id, Path()], body: RefundTopUpBody | None = None
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    gateway = charging_gateway(secrets, ctx.tenant_id, ctx.mode)
    done = top_up_refunds.refund_top_up(store, gateway, ctx, clock, numbers, contact_id, top_up_id)
    refunded = done.refunded
    return {
        "top_up_id": done.invoice.id,
        "credits_removed": 0 if done.entry is None else done.entry.credits,
        "entry": None if done.entry is None else ledger_entry(done.entry),
        "credit_note_id": None if refunded is None else refunded.credit_note.id,
        "refund": None
        if refunded is None
        else {
            "id": refunded.refund.id,
            "status": refunded.refund.status.value,
            "amount": money(refunded.refund.amount),
            "payment_id": refunded.refund.payment_id,
            "rail_ref": refunded.refund.rail_ref,
        },
    }


def _low(low: LowBalance | None) -> dict[str, Any]:
    return {
        "threshold": None if low is None else low.threshold,
        "top_up_pack": None if low is None else low.top_up_pack,
    }


@router.get("/contacts/<contact_id>/credits/low-balance", summary="The low-balance threshold and auto top-up")
def get_low_balance(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _low(low_balance.low_balance_of(store, ctx, contact_id))


@router.put(
    "/contacts/<contact_id>/credits/low-balance",
    summary="Set the low-balance threshold (credits.low_balance once per crossing) and the pack auto top-up buys",
)
def set_low_balance(contact_id: Annotated[Id, Path()], body: LowBalanceBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    wallet = low_balance.set_low_balance(store, ctx, clock, contact_id, body.model_dump())
    return _low(wallet.low_balance)


@router.delete("/contacts/<contact_id>/credits/low-balance", summary="Stop watching the balance (and auto top-up)")
def remove_low_balance(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _low(low_balance.set_low_balance(store, ctx, clock, contact_id, None).low_balance)
