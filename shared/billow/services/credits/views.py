"""What a contact's credits look like: the balance by grant kind with its live grants, the
breakdown per action of a period (the "credits & usage" tab), and the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

from billow.domain.calendar import Period, tenant_zone
from billow.domain.credits import ActionUsage, Balance, Holding, LedgerEntry, breakdown, expire
from billow.domain.errors import InvalidInput
from billow.services.contacts import contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.credits import included
from billow.services.credits.wallet import WalletPorts, with_due
from billow.services.ports import Page

MAX_BREAKDOWN_DAYS = 366


@dataclass(frozen=True, slots=True)
class Credits:
    balance: Balance
    holdings: tuple[Holding, ...]
    """The live grants with something left, in burn order."""
    at: datetime


def credits_of(store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str) -> Credits:
    """The balance at the contact's now (expired grants no longer count, booked or not)."""
    stored = store.get_wallet(ctx.scope, contact_id)
    if stored.version == 0:
        get_contact(store, ctx, contact_id)
    time = contact_time(store, ctx, contact_id, clock)
    now = time.now
    # what the next use of the wallet books: the expiries due and this cycle's included credits
    wallet = with_due(expire(stored.wallet, now), included.due(store, ctx, contact_id, time), now).wallet
    return Credits(wallet.balance(now), tuple(wallet.burn_order(now)), now)


def usage_breakdown(
    store: WalletPorts, ctx: TenantContext, clock: Clock, contact_id: str, start: date | None, end: date | None
) -> tuple[Period, tuple[ActionUsage, ...]]:
    """Per action, the consumptions of the days [start, end) (the contact's days; default: the
    calendar month of its today)."""
    get_contact(store, ctx, contact_id)
    today = contact_time(store, ctx, contact_id, clock).today
    for name, day in (("from", start), ("to", end)):
        if day is not None and not 1971 <= day.year <= 9998:
            raise InvalidInput(f"{name} is a day of the years 1971 to 9998", field=name, code="credits.period")
    if start is None:
        start = today.replace(day=1)
    if end is None:
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    if not start < end or (end - start).days > MAX_BREAKDOWN_DAYS:
        raise InvalidInput(
            f"the period is from a day to a later one, at most {MAX_BREAKDOWN_DAYS} days",
            field="to",
            code="credits.period",
        )
    zone = tenant_zone(ctx.settings.timezone)
    period = Period(start, end)
    first, after = datetime.combine(start, time(0), zone), datetime.combine(end, time(0), zone)
    return period, breakdown(store.credit_ledger(ctx.scope, contact_id, first, after), period, zone)


MAX_PAGE = 1000


def ledger_page(
    store: WalletPorts, ctx: TenantContext, contact_id: str, limit: int, cursor: str | None
) -> Page[LedgerEntry]:
    """The contact's ledger, oldest first, a page at a time."""
    get_contact(store, ctx, contact_id)
    return store.credit_ledger_page(ctx.scope, contact_id, limit, cursor)
