"""The low-balance threshold and auto top-up of a contact's wallet (docs/credits.md, "Low balance
and auto top-up").

The threshold lives in the wallet item, so every change of the wallet sees it in the same
transaction: the change that leaves the balance below it books a `low_balance` entry (the event
`credits.low_balance`) and marks the wallet `below`; no other is booked until the balance is back
at or above the threshold (once per crossing, `billow.domain.credits.watched`). With a pack named,
the consumer of that event buys it (`top_up_on_low_balance`): a top-up whose request id is derived
from the entry, so a redelivered event, or two consumers at once, buy it once; a declined one
stays declined (no storm: the next purchase waits for the next crossing)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from billow.domain.credits import Change, LowBalance, Wallet, watch
from billow.domain.errors import Conflict, InvalidInput, NotFound, RuleViolation
from billow.services.billing import InvoiceNumbers
from billow.services.contacts import contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.credits.top_ups import AUTO_PREFIX, TopUpPorts, TopUpState, buy_top_up, invoice_id_of
from billow.services.credits.wallet import WalletPorts, change_wallet_now
from billow.services.gateway import PaymentGateway

CANNOT_BUY = frozenset(
    {"credits.unknown_pack", "credits.no_payment_method", "contact.archived", "credits.too_many_grants"}
)
"""Refusals of an auto top-up that a redelivery would meet again: logged, not retried."""
log = logging.getLogger(__name__)


def set_low_balance(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, raw: dict[str, Any] | None
) -> Wallet:
    """Set the contact's threshold `{"threshold": 100, "top_up_pack": "pack_500" | null}`, or remove
    it (None). A balance already below a new threshold is booked at once (and buys the pack)."""
    get_contact(store, ctx, contact_id)  # 404 before anything else
    low = None
    if raw is not None:
        low = LowBalance(raw.get("threshold"), raw.get("top_up_pack"))  # type: ignore[arg-type]  # checked there
    time = contact_time(store, ctx, contact_id, clock)
    if low is not None and low.top_up_pack is not None:
        try:
            store.get_credit_prices(ctx.tenant_id)[0].pack_on(low.top_up_pack, time.today)  # for sale today
        except InvalidInput as unknown:
            raise InvalidInput(unknown.message, field="top_up_pack", code=unknown.code) from None

    def operation(wallet: Wallet, now: datetime) -> Change:
        return watch(wallet, low)

    return change_wallet_now(store, ctx, contact_id, clock, "", operation, first=time).wallet


def low_balance_of(store: WalletPorts, ctx: TenantContext, contact_id: str) -> LowBalance | None:
    stored = store.get_wallet(ctx.scope, contact_id)
    if stored.version == 0 and store.get_contact(ctx.scope, contact_id) is None:
        raise NotFound(f"no contact {contact_id}", field="contact_id")
    return stored.wallet.low_balance


def top_up_on_low_balance(
    store: TopUpPorts,
    gateway: PaymentGateway | None,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    contact_id: str,
    entry_id: str,
) -> TopUpState | None:
    """The consumer of `credits.low_balance`: buy the contact's auto top-up pack for the crossing
    booked as `entry_id`, once (its request id is `auto_<entry id>`). Nothing when the contact has
    no auto top-up (any more) or the entry is not a low-balance one."""
    entry = store.get_credit_entry(ctx.scope, contact_id, entry_id)
    if entry is None or entry.low_balance is None:
        raise NotFound(f"no low-balance entry {entry_id} for contact {contact_id}", field="entry_id")
    bought = store.get_invoice(ctx.scope, invoice_id_of(contact_id, AUTO_PREFIX + entry_id))
    if bought is not None and bought.top_up is not None:
        pack_id: str | None = bought.top_up.pack_id  # a redelivery: that purchase, whatever is set now
    else:
        low = store.get_wallet(ctx.scope, contact_id).wallet.low_balance
        pack_id = None if low is None else low.top_up_pack
    if pack_id is None or gateway is None:
        return None  # turned off since (or never on), or no rail to charge: a low-balance event only
    try:
        return buy_top_up(store, gateway, ctx, clock, numbers, contact_id, pack_id, AUTO_PREFIX + entry_id, auto=True)
    except (InvalidInput, Conflict, RuleViolation) as refused:
        if refused.code in CANNOT_BUY:
            # Nothing to buy: the pack is no longer for sale, no saved card, an archived contact. The
            # event said the balance is low; this is logged (the collector's outcome), not retried.
            log.warning(
                "auto top-up not bought",
                extra={"contact_id": contact_id, "entry_id": entry_id, "code": refused.code, "why": refused.message},
            )
            return None
        raise
