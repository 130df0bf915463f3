"""The tenant's credit price list (docs/credits.md, "The price list"): read it, and add a version
from a day (a price change never rewrites a day already priced)."""

from __future__ import annotations

from datetime import date
from typing import Any

from billow.domain.calendar import local_date, tenant_zone
from billow.domain.credits import MAX_CREDITS, CreditPack, CreditPriceList
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.services.context import Clock, TenantContext
from billow.services.ports import CreditStore

MAX_PRICE_LIST_BYTES = 300_000
"""What the price list's one item may hold of versions and actions (DynamoDB's item limit is 400 KB)."""


def price_list(store: CreditStore, ctx: TenantContext) -> CreditPriceList:
    return store.get_credit_prices(ctx.tenant_id)[0]


PACK_FIELDS = frozenset({"credits", "price", "currency"})


def _packs(raw: Any) -> dict[str, CreditPack]:
    """`{"pack_500": {"credits": 500, "price": "10.00", "currency": "USD"}}`: the price parsed
    exactly from its string in the currency's exponent (docs/credits.md, "Top-ups")."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(
            "packs maps each pack's id to its credits, price and currency", field="packs", code="credits.pack"
        )
    packs: dict[str, CreditPack] = {}
    for pack_id, spec in raw.items():
        where = f"packs.{pack_id}"
        if not isinstance(spec, dict) or not set(spec) <= PACK_FIELDS:
            raise InvalidInput(
                'a pack is {"credits": 500, "price": "10.00", "currency": "USD"}', field=where, code="credits.pack"
            )
        price, currency = spec.get("price"), spec.get("currency")
        if not isinstance(price, str) or not isinstance(currency, str):
            raise InvalidInput(
                'a pack\'s price is a decimal string and its currency an ISO 4217 code ("10.00", "USD")',
                field=f"{where}.price",
                code="credits.pack",
            )
        try:
            money = Money.parse(price, currency, field=f"{where}.price", currency_field=f"{where}.currency")
        except InvalidInput as bad:
            raise InvalidInput(bad.message, field=bad.field, code="credits.pack") from None
        packs[pack_id] = CreditPack(pack_id, spec.get("credits"), money)  # type: ignore[arg-type]  # checked there
    return packs


def add_price_version(
    store: CreditStore, ctx: TenantContext, clock: Clock, effective_from: date, costs: Any, packs: Any = None
) -> CreditPriceList:
    """The list with a new version from `effective_from` (422 `credits.price_change_date` unless
    after the last version's day and, for a change, after the tenant's today: a price in force on a
    day that may have been used is never rewritten): `costs` maps each billable action to its whole
    cost in credits (0 = free); an action not listed cannot be consumed from that day. Written
    conditioned on the version read (a concurrent change makes this one fail with 409, to be sent
    again). `packs`: the credit packs for sale from that day (`_packs`), none when left out."""
    if not isinstance(costs, dict) or not costs:
        raise InvalidInput("costs maps each billable action to its cost in credits", field="costs", code="credits.cost")
    for action, cost in costs.items():
        if not isinstance(cost, int) or isinstance(cost, bool) or not 0 <= cost <= MAX_CREDITS:
            raise InvalidInput(
                f"the cost of '{action}' is a whole number of credits from 0 to {MAX_CREDITS}",
                field=f"costs.{action}",
                code="credits.cost",
            )
    current, version = store.get_credit_prices(ctx.tenant_id)
    today = local_date(clock.now(), tenant_zone(ctx.settings.timezone))
    if current.versions and effective_from <= today:
        raise InvalidInput(
            f"a price change applies from a day after today ({today.isoformat()}): days up to today may be priced",
            field="effective_from",
            code="credits.price_change_date",
        )
    changed = current.changed(effective_from, costs, _packs(packs))
    size = sum(16 + sum(len(a) + 8 for a in v.costs) + sum(len(p) + 60 for p in v.packs) for v in changed.versions)
    if size > MAX_PRICE_LIST_BYTES:
        raise InvalidInput(
            f"the price list would hold about {size:,} bytes, over the {MAX_PRICE_LIST_BYTES:,} one item keeps: "
            "fewer actions a version",
            field="costs",
            code="credits.price_list_full",
        )
    store.save_credit_prices(ctx.tenant_id, changed, version)
    return changed
