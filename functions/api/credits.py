"""Credit and entitlement routes (docs/credits.md): the tenant's credit price list; per contact its
credits (consume, staff grants, the balance, the breakdown per action, the ledger) and what it is
entitled to now. Top-ups and the low-balance threshold are their own area (`api.top_ups`): they
bill (a top-up is an invoice), which consuming and reading credits never import."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.credits import ActionUsage, Balance, CreditPriceList, Holding, LedgerEntry, Wallet
from billow.services.credits import consume, grants, prices, views
from billow.services.entitlements import entitlements_of
from billow.services.views import ledger_entry
from runtime import clock, store

from api.context import created, current_tenant
from api.openapi import answers
from api.schemas import ConsumeBody, CreditPricesBody, Cursor, GrantBody, Id

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


@router.get("/contacts/<contact_id>/credits/ledger", summary="The contact's credit ledger, oldest first (paged)")
def credit_ledger(contact_id: Annotated[Id, Path()], limit: PageSize = 100, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    page = views.ledger_page(store, ctx, contact_id, limit, cursor)
    return {"items": [ledger_entry(e) for e in page.items], "cursor": page.cursor}
