"""`POST /contacts/{id}/credits/consume`: spend credits on a billable action, all or nothing, once
per request id (docs/credits.md, "Consuming").

The cost is the price list's on the contact's day; the consumption is booked by `change_wallet`
(the wallet and one ledger entry in one transaction). A retry with the same request id answers the
entry booked the first time (`replayed`), even once the balance could no longer cover it; the same
id with another action or quantity is refused (422 `idempotency.key_reused`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billow.domain.credits import (
    MAX_QUANTITY,
    EntryKind,
    LedgerEntry,
    Wallet,
    check_action,
    check_request_id,
    consume,
    entry_id,
)
from billow.domain.errors import InvalidInput, NotFound
from billow.services.contacts import contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.credits.wallet import WalletPorts, change_wallet_now
from billow.services.idempotency import key_reused


@dataclass(frozen=True, slots=True)
class Consumed:
    entry: LedgerEntry
    wallet: Wallet
    replayed: bool


def _quantity(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_QUANTITY:
        raise InvalidInput(
            f"quantity is a whole number from 1 to {MAX_QUANTITY}", field="quantity", code="credits.quantity"
        )
    return value


RESERVED = ("prepaid_",)
"""Request ids of Billow's own consumptions (a payment-driven service's periods)."""


def _request_id(value: Any) -> str:
    return check_request_id(value, "consumption", reserved=RESERVED)


def consume_credits(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, action: Any, quantity: Any, request_id: Any
) -> Consumed:
    action = check_action(action)
    quantity = _quantity(quantity)
    request_id = _request_id(request_id)
    own = entry_id(EntryKind.CONSUMPTION, request_id)
    time = contact_time(store, ctx, contact_id, clock)
    prices, _ = store.get_credit_prices(ctx.tenant_id)
    try:
        cost = prices.cost_of(action, time.today)
    except InvalidInput:
        done = store.get_credit_entry(ctx.scope, contact_id, own)
        if done is None:
            get_contact(store, ctx, contact_id)  # 404 before 422 for a contact that does not exist
            raise
        # a retry after the action's price was withdrawn: what was booked stands
        return _replayed(store, ctx, contact_id, done, action, quantity, request_id)

    applied = change_wallet_now(
        store,
        ctx,
        contact_id,
        clock,
        own,
        lambda wallet, now: consume(
            wallet, cost, quantity, now, request_id=request_id, overdraft_limit=ctx.settings.credit_overdraft
        ),
        first=time,
    )
    entry = applied.entry
    if entry is None:
        raise NotFound(f"consumption {request_id} is not booked", field="request_id")  # cannot happen
    if applied.replayed and (entry.action, entry.quantity) != (action, quantity):
        raise key_reused("request_id", request_id)
    return Consumed(entry, applied.wallet, applied.replayed)


def _replayed(
    store: WalletPorts,
    ctx: TenantContext,
    contact_id: str,
    entry: LedgerEntry,
    action: str,
    quantity: int,
    request_id: str,
) -> Consumed:
    if (entry.action, entry.quantity) != (action, quantity):
        raise key_reused("request_id", request_id)
    return Consumed(entry, store.get_wallet(ctx.scope, contact_id).wallet, replayed=True)
