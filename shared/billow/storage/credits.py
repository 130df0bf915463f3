"""Credits in the table: a contact's wallet, its ledger, and the tenant's credit price list
(docs/credits.md, docs/data-model.md).

- The **wallet** is ONE item in the contact's partition (`WALLET`), versioned: its grants with
  what is left of each, and what is owed. Every change of it is written conditioned on the version
  it was read at, in ONE TransactWriteItems with the ledger entries the change booked.
- A **ledger entry** is one item in the contact's ledger partition (`T#<s>#C#<c>#L`, off the
  contact's own, so "everything of a contact" stays small), keyed by the entry's id (derived from
  its cause: `crd_use_<request id>`...), put only if absent: the same consumption, grant, expiry or
  refund is booked once, whatever retries and races. It is listed in time order through GSI3
  (`GSI3PK` = the ledger partition, `GSI3SK` = `<at, UTC>#<entry id>`).
- The **price list** is one item in the tenant's catalog partition (`CREDITPRICES`), versioned.

Nothing in this module decides anything: the rules are `billow.domain.credits`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from billow.domain.calendar import Period
from billow.domain.credits import (
    CreditPack,
    CreditPriceList,
    EntryKind,
    Grant,
    GrantKind,
    Holding,
    LedgerEntry,
    LowBalance,
    Part,
    PriceListVersion,
    Wallet,
)
from billow.domain.errors import ConcurrentModification, TemporaryFailure
from billow.domain.money import Money
from billow.services.ports import DuplicateEntry, StoredWallet
from billow.storage.models import BillowItem, connection

WALLET_SK = "WALLET"
CREDIT_PRICES_SK = "CREDITPRICES"
ENTRY_PREFIX = "E#"
WALLET_KIND, ENTRY_KIND, PRICES_KIND = "wallet", "credit_entry", "credit_prices"
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}


def ledger_pk(contact_pk: str) -> str:
    """A contact's ledger partition: `T#<s>#C#<c>#L`."""
    return f"{contact_pk}#L"


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


# -- codec ----------------------------------------------------------------------------------------------
def _grant_out(g: Grant) -> dict[str, Any]:
    return {
        "id": g.id,
        "kind": g.kind.value,
        "credits": g.credits,
        "granted_at": g.granted_at.isoformat(),
        "expires_at": None if g.expires_at is None else g.expires_at.isoformat(),
        "period": None if g.period is None else [g.period.start.isoformat(), g.period.end.isoformat()],
        "source": g.source,
    }


def _grant_in(d: dict[str, Any]) -> Grant:
    period = d.get("period")
    return Grant(
        d["id"],
        GrantKind(d["kind"]),
        int(d["credits"]),
        datetime.fromisoformat(d["granted_at"]),
        None if d.get("expires_at") is None else datetime.fromisoformat(d["expires_at"]),
        None if period is None else Period(date.fromisoformat(period[0]), date.fromisoformat(period[1])),
        d.get("source", ""),
    )


def wallet_out(w: Wallet) -> dict[str, Any]:
    return {
        "holdings": [
            {"grant": _grant_out(h.grant), "remaining": h.remaining, **({"refunded": True} if h.refunded else {})}
            for h in w.holdings
        ],
        "overdrawn": w.overdrawn,
        **({"low_balance": _low_out(w.low_balance)} if w.low_balance is not None else {}),
        **({"below": True} if w.below else {}),
        **({"paid_through": {k: d.isoformat() for k, d in w.paid_through.items()}} if w.paid_through else {}),
    }


def _low_out(low: LowBalance) -> dict[str, Any]:
    return {"threshold": low.threshold, "top_up_pack": low.top_up_pack}


def _low_in(d: dict[str, Any] | None) -> LowBalance | None:
    return None if d is None else LowBalance(int(d["threshold"]), d.get("top_up_pack"))


def wallet_in(d: dict[str, Any]) -> Wallet:
    return Wallet(
        tuple(
            Holding(_grant_in(h["grant"]), int(h["remaining"]), bool(h.get("refunded", False))) for h in d["holdings"]
        ),
        int(d.get("overdrawn", 0)),
        _low_in(d.get("low_balance")),
        bool(d.get("below", False)),
        {k: date.fromisoformat(v) for k, v in (d.get("paid_through") or {}).items()},
    )


def entry_out(e: LedgerEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind.value,
        "at": e.at.isoformat(),
        "credits": e.credits,
        "grant_id": e.grant_id,
        "grant_kind": None if e.grant_kind is None else e.grant_kind.value,
        "action": e.action,
        "quantity": e.quantity,
        "unit_cost": e.unit_cost,
        "parts": [{"grant_id": p.grant_id, "kind": p.kind.value, "credits": p.credits} for p in e.parts],
        "overdrawn": e.overdrawn,
        "reference": e.reference,
        **({"expires_at": e.expires_at.isoformat()} if e.expires_at is not None else {}),
        **({"balance": e.balance} if e.balance is not None else {}),
        **({"low_balance": _low_out(e.low_balance)} if e.low_balance is not None else {}),
    }


def entry_in(d: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        d["id"],
        EntryKind(d["kind"]),
        datetime.fromisoformat(d["at"]),
        int(d["credits"]),
        grant_id=d.get("grant_id"),
        grant_kind=None if d.get("grant_kind") is None else GrantKind(d["grant_kind"]),
        action=d.get("action"),
        quantity=int(d.get("quantity", 0)),
        unit_cost=int(d.get("unit_cost", 0)),
        parts=tuple(Part(p["grant_id"], GrantKind(p["kind"]), int(p["credits"])) for p in d.get("parts", ())),
        overdrawn=int(d.get("overdrawn", 0)),
        reference=d.get("reference", ""),
        expires_at=None if d.get("expires_at") is None else datetime.fromisoformat(d["expires_at"]),
        balance=None if d.get("balance") is None else int(d["balance"]),
        low_balance=_low_in(d.get("low_balance")),
    )


def _pack_out(p: CreditPack) -> dict[str, Any]:
    return {"credits": p.credits, "price": p.price.minor, "currency": p.price.currency}


def prices_out(p: CreditPriceList) -> dict[str, Any]:
    return {
        "versions": [
            {
                "effective_from": v.effective_from.isoformat(),
                "costs": dict(v.costs),
                **({"packs": {i: _pack_out(k) for i, k in v.packs.items()}} if v.packs else {}),
            }
            for v in p.versions
        ]
    }


def prices_in(d: dict[str, Any]) -> CreditPriceList:
    return CreditPriceList(
        tuple(
            PriceListVersion(
                date.fromisoformat(v["effective_from"]),
                {a: int(c) for a, c in v["costs"].items()},
                {
                    i: CreditPack(i, int(k["credits"]), Money(int(k["price"]), k["currency"]))
                    for i, k in v.get("packs", {}).items()
                },
            )
            for v in d.get("versions", ())
        )
    )


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


# -- reads and writes -----------------------------------------------------------------------------------
def _get(pk: str, sk: str) -> BillowItem | None:
    try:
        return BillowItem.get(pk, sk, consistent_read=True)
    except BillowItem.DoesNotExist:
        return None


def get_wallet(contact_pk: str) -> StoredWallet:
    item = _get(contact_pk, WALLET_SK)
    if item is None:
        return StoredWallet(Wallet(), 0)
    return StoredWallet(wallet_in(json.loads(item.data or "{}")), int(item.version or 0))


def get_entry(contact_pk: str, entry_id: str) -> LedgerEntry | None:
    item = _get(ledger_pk(contact_pk), ENTRY_PREFIX + entry_id)
    return None if item is None else entry_in(json.loads(item.data or "{}"))


def _entry_item(contact_pk: str, entry: LedgerEntry, version: int, position: int) -> BillowItem:
    """`GSI3SK` = `<at>#<wallet version>#<position>#<entry id>`: entries in time order, and those of
    one instant (a frozen test clock) in the order they were booked."""
    pk = ledger_pk(contact_pk)
    return BillowItem(
        pk,
        ENTRY_PREFIX + entry.id,
        kind=ENTRY_KIND,
        data=_dump(entry_out(entry)),
        version=1,
        gsi3pk=pk,
        gsi3sk=f"{_instant(entry.at)}#{version:012d}#{position:02d}#{entry.id}",
    )


def commit_wallet(
    contact_pk: str, wallet: Wallet, version: int, entries: Sequence[LedgerEntry], own: str | None = None
) -> int:
    """The wallet at `version + 1`, only if still at `version` (absent for 0), and each entry only
    if new, in ONE TransactWriteItems. Returns the new version. `DuplicateEntry` when the entry
    `own` (the operation's own: a consumption's, a grant's) is booked already;
    `ConcurrentModification` when the wallet moved or another entry of the change was booked
    meanwhile (read again and retry); `TemporaryFailure` when throttled."""
    if len(entries) > 99:
        raise ValueError("a wallet change books at most 99 entries in its transaction")
    item = BillowItem(contact_pk, WALLET_SK, kind=WALLET_KIND, data=_dump(wallet_out(wallet)), version=version + 1)
    condition = BillowItem.pk.does_not_exist() if version == 0 else BillowItem.version == version
    try:
        with TransactWrite(connection=connection()) as tx:
            for position, entry in enumerate(entries):
                item_of = _entry_item(contact_pk, entry, version + 1, position)
                tx.save(item_of, condition=BillowItem.pk.does_not_exist())
            tx.save(item, condition=condition)
    except TransactWriteError as error:
        reasons = list(error.cancellation_reasons or [])
        codes = {r.code for r in reasons if r is not None}
        for entry, reason in zip(entries, reasons, strict=False):
            if reason is not None and reason.code == "ConditionalCheckFailed" and entry.id == own:
                raise DuplicateEntry(entry.id) from error
        if codes & _THROTTLING or error.cause_response_code in _THROTTLING:
            raise TemporaryFailure("credit wallet: DynamoDB throttled") from error
        if codes & {"ConditionalCheckFailed", "TransactionConflict"}:
            raise ConcurrentModification("credit wallet: changed concurrently, reload and retry") from error
        raise
    return version + 1


def ledger(contact_pk: str, start: datetime | None = None, end: datetime | None = None) -> Iterator[LedgerEntry]:
    """The contact's entries booked at instants in [start, end), in time order (GSI3: eventually
    consistent, an entry booked a moment ago may be missing)."""
    pk = ledger_pk(contact_pk)
    condition: Condition | None = None
    if start is not None and end is not None:
        condition = BillowItem.gsi3sk.between(_instant(start), _instant(end))  # end itself: filtered below
    elif start is not None:
        condition = BillowItem.gsi3sk >= _instant(start)
    elif end is not None:
        condition = BillowItem.gsi3sk < _instant(end)
    for item in BillowItem.listing.query(pk, condition):  # projects every attribute
        entry = entry_in(json.loads(item.data or "{}"))
        if end is not None and entry.at >= end:
            continue
        yield entry


def get_prices(catalog_pk: str) -> tuple[CreditPriceList, int]:
    item = _get(catalog_pk, CREDIT_PRICES_SK)
    if item is None:
        return CreditPriceList(), 0
    return prices_in(json.loads(item.data or "{}")), int(item.version or 0)


def save_prices(catalog_pk: str, prices: CreditPriceList, version: int) -> None:
    """The price list at `version + 1`, only if still at `version` (absent for 0)."""
    item = BillowItem(
        catalog_pk, CREDIT_PRICES_SK, kind=PRICES_KIND, data=_dump(prices_out(prices)), version=version + 1
    )
    condition = BillowItem.pk.does_not_exist() if version == 0 else BillowItem.version == version
    try:
        item.save(condition=condition)
    except PutError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ConcurrentModification("credit price list: changed concurrently, reload and retry") from error
        raise
