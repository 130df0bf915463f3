"""Credit and entitlement routes (docs/credits.md): the tenant's credit price list; per contact its
credits (consume, staff grants, the balance, the breakdown per action, the ledger) and what it is
entitled to now."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.credits import ActionUsage, Balance, CreditPriceList, Holding, LedgerEntry, LowBalance, Wallet
from billow.domain.errors import PaymentRequired
from billow.gateways.rails import charging_gateway
from billow.services.credits import consume, grants, low_balance, prices, top_up_refunds, top_ups, views
from billow.services.entitlements import entitlements_of
from billow.services.views import ledger_entry, money
from runtime import clock, numbers, secrets, store

from api.context import created, current_tenant
from api.openapi import answers
from api.schemas import (
    ConsumeBody,
    CreditPricesBody,
    Cursor,
    GrantBody,
    Id,
    LowBalanceBody,
    RefundTopUpBody,
    TopUpBody,
)

router = APIGatewayRouter()

PageSize = Annotated[int, Query(ge=1, le=views.MAX_PAGE, description="most entries on one page")]


def _prices(p: CreditPriceList) -> dict[str, Any]:
    return {
        "versions": [
            {
                "effective_from": v.effective_from.isoformat(),
                "costs": dict(v.costs),
                "packs": {
                    i: {"credits": k.credits, "price": k.price.amount_str(), "currency": k.price.currency}
                    for i, k in v.packs.items()
                },
            }
            for v in p.versions
        ]
    }


def _balance(b: Balance) -> dict[str, Any]:
    return {
        "total": b.total,
        "included": b.included,
        "promotional": b.promotional,
        "purchased": b.purchased,
        "overdrawn": b.overdrawn,
    }


def _holding(h: Holding) -> dict[str, Any]:
    g = h.grant
    return {
        "id": g.id,
        "kind": g.kind.value,
        "credits": g.credits,
        "remaining": h.remaining,
        "granted_at": g.granted_at.isoformat(),
        "expires_at": None if g.expires_at is None else g.expires_at.isoformat(),
        "source": g.source,
    }


def _booked(entry: LedgerEntry, wallet: Wallet, replayed: bool) -> Response[dict[str, Any]]:
    """A consumption's or grant's answer: the entry booked and the balance after it (201; a retry 200)."""
    answer = {"entry": ledger_entry(entry), "balance": _balance(wallet.balance(entry.at))}
    return created(answer, 201, replay=replayed)


def _usage(u: ActionUsage) -> dict[str, Any]:
    return {
        "action": u.action,
        "consumptions": u.consumptions,
        "quantity": u.quantity,
        "credits": u.credits,
        "by_kind": {kind.value: n for kind, n in sorted(u.by_kind.items())},
        "overdrawn": u.overdrawn,
    }


@router.get("/credits/prices", summary="The credit price list: each version's cost per billable action")
def get_prices() -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _prices(prices.price_list(store, ctx))


@router.post(
    "/credits/prices",
    summary="Add a version of the credit price list from a day (after the last version's): cost per action",
)
@answers(201)
def add_prices(body: CreditPricesBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    changed = prices.add_price_version(store, ctx, clock, body.effective_from, dict(body.costs), body.packs)
    return created(_prices(changed), 201, replay=False)


@router.post(
    "/contacts/<contact_id>/credits/consume",
    summary="Spend credits on a billable action: all or nothing (402 credits.insufficient), once per request_id",
)
@answers(201, 200)
def consume_credits(contact_id: Annotated[Id, Path()], body: ConsumeBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    done = consume.consume_credits(store, ctx, clock, contact_id, body.action, body.quantity, body.request_id)
    return _booked(done.entry, done.wallet, done.replayed)


@router.post(
    "/contacts/<contact_id>/credits/grants",
    summary="Give the contact promotional or purchased credits (once per grant id)",
)
@answers(201, 200)
def give_credits(contact_id: Annotated[Id, Path()], body: GrantBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    raw = body.model_dump()
    done = grants.give_credits(store, ctx, clock, contact_id, raw, source=f"staff:{ctx.mode}")
    return _booked(done.entry, done.wallet, done.replayed)


@router.get(
    "/contacts/<contact_id>/credits",
    summary="The contact's credit balance by grant kind, and its live grants in burn order",
)
def get_credits(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    found = views.credits_of(store, ctx, clock, contact_id)
    return {
        "contact_id": contact_id,
        "at": found.at.isoformat(),
        "balance": _balance(found.balance),
        "grants": [_holding(h) for h in found.holdings],
    }


@router.get(
    "/contacts/<contact_id>/credits/breakdown",
    summary="Per billable action, what the contact's consumptions of a period used (default: this month)",
)
def credit_breakdown(
    contact_id: Annotated[Id, Path()],
    start: Annotated[date | None, Query(alias="from", description="first day (default: the month's first)")] = None,
    end: Annotated[
        date | None, Query(alias="to", description="the day after the last (default: next month's first)")
    ] = None,
) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    period, rows = views.usage_breakdown(store, ctx, clock, contact_id, start, end)
    return {
        "contact_id": contact_id,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "actions": [_usage(u) for u in rows],
    }


@router.get(
    "/contacts/<contact_id>/entitlements",
    summary="What the contact may use now: the features and limits its effective services grant (one query)",
)
def get_entitlements(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    found = entitlements_of(store, ctx, clock, contact_id)
    return {
        "contact_id": contact_id,
        "features": sorted(found.features),
        "limits": dict(found.limits),
        "granted_by": [
            {
                "subscription_id": g.subscription_id,
                "service_id": g.service_id,
                "product_id": g.product_id,
                "terms_id": g.terms_id,
                "features": list(g.features),
                "limits": dict(g.limits),
            }
            for g in found.granted_by
        ],
    }


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


@router.get("/contacts/<contact_id>/credits/ledger", summary="The contact's credit ledger, oldest first (paged)")
def credit_ledger(contact_id: Annotated[Id, Path()], limit: PageSize = 100, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    page = views.ledger_page(store, ctx, contact_id, limit, cursor)
    return {"items": [ledger_entry(e) for e in page.items], "cursor": page.cursor}
