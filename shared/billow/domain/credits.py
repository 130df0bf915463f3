"""Credits: an in-app currency a contact spends on a tenant's billable actions (pure; docs/credits.md).

**Credits are whole numbers** (Python `int`, never a float or a Decimal). An action costs a
non-negative integer number of credits (0 = free); a consumption of `quantity` actions costs
cost * quantity. Whole credits make every split exact: a consumption spread over three grants has no
rounding question, a grant's remainder is an integer, and the ledger always adds up. A tenant that
wants finer prices makes its credit smaller (1 credit = a hundredth of what it shows).

The price list (`CreditPriceList`) is versioned: each `PriceListVersion` applies from its
`effective_from` day (the contact's day) until the next one; `cost_of(action, on)` answers the cost
in force that day. An action the version does not list is refused (`credits.unknown_action`).

A contact's `Wallet` holds grants (`Grant`), each with what is left of it (`Holding.remaining`):

- **included**: the plan's credits for one billing cycle (`period`); they expire at the cycle's end
  (`expires_at`, the period's end at midnight in the contact's zone): what is left is gone, never
  rolled over (`included_grant` builds one).
- **purchased**: bought (a top-up); they roll over, with an optional expiry; a refund of the
  top-up removes what is left of it.
- **promotional**: granted by staff, always with an expiry.

A grant counts from `granted_at` (inclusive) until `expires_at` (exclusive): half-open, so a grant
expiring on 1 June is gone from the first instant of 1 June.

**Burn order** (`burn_order`): a consumption takes credits from the live grants in this order:

1. included first (the soonest expiring first, should there be several);
2. then promotional, the soonest expiring first;
3. then purchased, the oldest (`granted_at`) first.

Ties within a kind are broken by `granted_at`, then by the grant's id, so the order is total and
the same on every retry. A grant past its expiry (or not yet granted) never burns, whether or not
its expiry has been booked yet.

**Overdraft**: a tenant may let a contact go up to `overdraft_limit` credits below zero; the part of
a consumption no grant covers is then owed (`Wallet.overdrawn`), to be invoiced at the cycle's end
(`settle_overdraft` books that invoice). New grants do not repay it: it is invoiced, and the next
cycle's credits are the next cycle's. The balance (what is left of the live grants - what is owed)
never goes below -overdraft_limit. Without enough credits (and overdraft), `consume` refuses the
whole consumption (`credits.insufficient`, a 402) and changes nothing: all or nothing.

**The ledger**: every change is an immutable `LedgerEntry` (grant, consumption, expiry, refund,
overdraft invoiced), and each operation answers the entries it made and the new wallet
(`Change`). An entry's id is derived from its cause (`crd_grant_<grant id>`, `crd_use_<the caller's
request id>`, `crd_exp_<grant id>`, `crd_ref_<grant id>`, `crd_od_<invoice id>`), so a retry of
the same grant, consumption, expiry or refund produces the same id: storage's idempotency key.
One consumption is one entry, naming how many credits came from which grant (`parts`) and how many
went overdrawn. In credits, always: balance = granted - consumed - expired - refunded + invoiced
overdraft (`Wallet.booked`), which is the live balance once expiries are booked (`expire`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo

from billow.domain.calendar import Period, local_date
from billow.domain.errors import Conflict, InvalidInput, NotFound, PaymentRequired, RuleViolation
from billow.domain.money import Money

MAX_CREDITS = 10**15
"""The most credits one grant, one action's cost or one consumption may hold."""
MAX_QUANTITY = 10**9
"""The most actions one consumption may count."""
ACTION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
"""A grant's id, a request id, a source or an invoice reference."""


class GrantKind(StrEnum):
    INCLUDED = "included"
    PROMOTIONAL = "promotional"
    PURCHASED = "purchased"


class EntryKind(StrEnum):
    GRANT = "grant"
    CONSUMPTION = "consumption"
    EXPIRY = "expiry"
    REFUND = "refund"
    OVERDRAFT_INVOICED = "overdraft_invoiced"
    LOW_BALANCE = "low_balance"
    """Not a movement (0 credits): the balance fell below the contact's low-balance threshold."""


_BURN_RANK = {GrantKind.INCLUDED: 0, GrantKind.PROMOTIONAL: 1, GrantKind.PURCHASED: 2}


def _aware(instant: datetime, name: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _credits(value: object, name: str, *, code: str) -> int:
    """A whole, non-negative number of credits up to MAX_CREDITS (a bool is not a number)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CREDITS:
        raise InvalidInput(f"{name} is a whole number of credits from 0 to {MAX_CREDITS}", field=name, code=code)
    return value


def check_request_id(value: object, what: str, *, reserved: tuple[str, ...] = ()) -> str:
    """A caller's request id (`credits.request_id`): 1 to 128 of A-Z a-z 0-9 . _ : -, and none of
    the `reserved` prefixes Billow's own requests of that kind use."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidInput(
            f"request_id is the caller's id of this {what}, 1 to 128 of A-Z a-z 0-9 . _ : -",
            field="request_id",
            code="credits.request_id",
        )
    if value.startswith(reserved):
        raise InvalidInput(
            f"request ids starting {' or '.join(reserved)} are Billow's own",
            field="request_id",
            code="credits.request_id",
        )
    return value


LINE_KIND = "credits"
"""The kind of an invoice line billing credits: a top-up's pack, overdrawn credits."""


def _reference(value: str, name: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidInput(f"{name} is 1 to 128 of A-Z a-z 0-9 . _ : -", field=name, code="credits.reference")
    return value


# -- the price list -----------------------------------------------------------------------------------
def check_action(action: str, name: str = "action") -> str:
    if not isinstance(action, str) or not ACTION_PATTERN.match(action):
        raise InvalidInput(
            f"an action name is 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit): {action!r}",
            field=name,
            code="credits.action_name",
        )
    return action


@dataclass(frozen=True, slots=True)
class ActionCost:
    """What one action costs, and the price list version it comes from."""

    action: str
    credits: int
    effective_from: date


MAX_PACKS = 50
"""Credit packs one price list version may sell."""


@dataclass(frozen=True, slots=True)
class CreditPack:
    """Credits sold together at a price: a top-up buys one (docs/credits.md, "Top-ups")."""

    id: str
    credits: int
    price: Money

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ACTION_PATTERN.match(self.id):
            raise InvalidInput(
                f"a pack id is 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit): {self.id!r}",
                field=f"packs.{self.id}",
                code="credits.pack",
            )
        if _credits(self.credits, f"packs.{self.id}.credits", code="credits.pack") < 1:
            raise InvalidInput("a pack sells at least 1 credit", field=f"packs.{self.id}.credits", code="credits.pack")
        if self.price.minor <= 0:
            raise InvalidInput("a pack has a price above zero", field=f"packs.{self.id}.price", code="credits.pack")


@dataclass(frozen=True, slots=True)
class PriceListVersion:
    """The credit cost of each billable action, and the credit packs for sale, from
    `effective_from` (the contact's day) on."""

    effective_from: date
    costs: Mapping[str, int]
    packs: Mapping[str, CreditPack] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = {
            check_action(a, f"costs.{a}"): _credits(c, f"costs.{a}", code="credits.cost") for a, c in self.costs.items()
        }
        object.__setattr__(self, "costs", MappingProxyType(dict(sorted(checked.items()))))
        if len(self.packs) > MAX_PACKS:
            raise InvalidInput(f"a version sells at most {MAX_PACKS} packs", field="packs", code="credits.pack")
        for pack_id, pack in self.packs.items():
            if pack.id != pack_id:
                raise InvalidInput(
                    f"pack '{pack_id}' is named {pack.id}", field=f"packs.{pack_id}", code="credits.pack"
                )
        object.__setattr__(self, "packs", MappingProxyType(dict(sorted(self.packs.items()))))


@dataclass(frozen=True, slots=True)
class CreditPriceList:
    """A tenant's credit prices, version after version (ascending `effective_from`, no two on a day)."""

    versions: tuple[PriceListVersion, ...] = ()

    def __post_init__(self) -> None:
        days = [v.effective_from for v in self.versions]
        if any(b <= a for a, b in pairwise(days)):
            raise InvalidInput(
                "price list versions apply from strictly increasing days",
                field="effective_from",
                code="credits.price_change_date",
            )

    def changed(
        self, effective_from: date, costs: Mapping[str, int], packs: Mapping[str, CreditPack] | None = None
    ) -> CreditPriceList:
        """The list with a new version from `effective_from`, which must be after the last one's day:
        a price in force on a day, once used, is never rewritten."""
        last = self.versions[-1].effective_from if self.versions else None
        if last is not None and effective_from <= last:
            raise InvalidInput(
                f"a price change applies after the last one (from {last.isoformat()})",
                field="effective_from",
                code="credits.price_change_date",
            )
        return CreditPriceList((*self.versions, PriceListVersion(effective_from, costs, packs or {})))

    def version_on(self, on: date) -> PriceListVersion | None:
        found = None
        for version in self.versions:
            if version.effective_from > on:
                break
            found = version
        return found

    def cost_of(self, action: str, on: date) -> ActionCost:
        """What `action` costs on day `on`; an action not priced that day is refused."""
        version = self.version_on(on)
        if version is None or action not in version.costs:
            raise InvalidInput(
                f"'{action}' is not a billable action on {on.isoformat()}",
                field="action",
                code="credits.unknown_action",
            )
        return ActionCost(action, version.costs[action], version.effective_from)

    def pack_on(self, pack_id: str, on: date) -> CreditPack:
        """The pack `pack_id` as sold on day `on`; a pack not for sale that day is refused."""
        version = self.version_on(on)
        if version is None or pack_id not in version.packs:
            raise InvalidInput(
                f"'{pack_id}' is not a credit pack for sale on {on.isoformat()}",
                field="pack",
                code="credits.unknown_pack",
            )
        return version.packs[pack_id]


# -- grants and the wallet ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    kind: GrantKind
    credits: int
    granted_at: datetime
    expires_at: datetime | None = None
    """Exclusive: the grant no longer counts from this instant. Required for included and
    promotional grants; optional for purchased ones (None: never)."""
    period: Period | None = None
    """The billing cycle an included grant belongs to (only included grants have one)."""
    source: str = ""
    """What granted it: the subscription's service and cycle, the top-up's order, the staff member."""

    def __post_init__(self) -> None:
        _reference(self.id, "grant_id")
        try:
            object.__setattr__(self, "kind", GrantKind(self.kind))
        except ValueError:
            kinds = ", ".join(GrantKind)
            raise InvalidInput(f"a grant is one of {kinds}", field="kind", code="credits.grant_kind") from None
        _credits(self.credits, "credits", code="credits.amount")
        _aware(self.granted_at, "granted_at")
        if self.expires_at is not None:
            _aware(self.expires_at, "expires_at")
            if self.expires_at <= self.granted_at:
                raise InvalidInput("a grant expires after it is granted", field="expires_at", code="credits.expiry")
        elif self.kind is not GrantKind.PURCHASED:
            raise InvalidInput(f"{self.kind} credits have an expiry", field="expires_at", code="credits.expiry")
        if (self.period is not None) != (self.kind is GrantKind.INCLUDED):
            raise InvalidInput(
                "included credits, and only they, belong to a billing cycle", field="period", code="credits.period"
            )

    def live(self, now: datetime) -> bool:
        """Counts at `now`: granted, and not yet expired (half-open)."""
        return self.granted_at <= now and (self.expires_at is None or now < self.expires_at)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def included_grant(
    *, id: str, credits: int, period: Period, zone: ZoneInfo, granted_at: datetime, source: str
) -> Grant:
    """The plan's credits for the billing cycle `period`: they expire when the cycle ends (midnight
    starting `period.end` in the contact's zone), so nothing is left to roll over."""
    expires = datetime.combine(period.end, time(0), zone)
    return Grant(id, GrantKind.INCLUDED, credits, granted_at, expires, period, source)


@dataclass(frozen=True, slots=True)
class Holding:
    """A grant in a wallet and what is left of it."""

    grant: Grant
    remaining: int
    refunded: bool = False


def _burn_key(holding: Holding) -> tuple[int, datetime, datetime, str]:
    """Kind first; included and promotional by soonest expiry, purchased by age; then by
    `granted_at`, then by id."""
    grant = holding.grant
    first = grant.granted_at if grant.kind is GrantKind.PURCHASED or grant.expires_at is None else grant.expires_at
    return (_BURN_RANK[grant.kind], first, grant.granted_at, grant.id)


@dataclass(frozen=True, slots=True)
class Balance:
    """What a contact may spend now, by grant kind; `total` is net of what is owed."""

    included: int
    promotional: int
    purchased: int
    overdrawn: int

    @property
    def total(self) -> int:
        return self.included + self.promotional + self.purchased - self.overdrawn


@dataclass(frozen=True, slots=True)
class LowBalance:
    """A contact's low-balance threshold (credits): the balance falling below it is booked once
    (a `low_balance` entry, the event `credits.low_balance`), and buys `top_up_pack` when one is
    named (auto top-up)."""

    threshold: int
    top_up_pack: str | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.threshold, int)
            or isinstance(self.threshold, bool)
            or not 1 <= self.threshold <= MAX_CREDITS
        ):
            raise InvalidInput(
                f"threshold is a whole number of credits from 1 to {MAX_CREDITS}",
                field="threshold",
                code="credits.threshold",
            )
        if self.top_up_pack is not None and (
            not isinstance(self.top_up_pack, str) or not ACTION_PATTERN.match(self.top_up_pack)
        ):
            raise InvalidInput(
                "top_up_pack names a credit pack of the price list", field="top_up_pack", code="credits.unknown_pack"
            )


@dataclass(frozen=True, slots=True)
class Wallet:
    holdings: tuple[Holding, ...] = ()
    overdrawn: int = 0
    """Credits consumed beyond the grants (within the overdraft), to be invoiced."""
    low_balance: LowBalance | None = None
    """The contact's low-balance threshold and auto top-up (None: not watched)."""
    below: bool = False
    """The balance fell below the threshold and that was booked: not booked again until the
    balance is back at or above it (once per crossing)."""
    paid_through: Mapping[str, date] = field(default_factory=dict)
    """Payment-driven services: per `<service>/<terms>`, the day their paid periods end
    (exclusive), kept with the balance so a period overlapping a paid one (a billing day changed)
    is never paid twice (`pay_period`)."""

    def holding(self, grant_id: str) -> Holding:
        for holding in self.holdings:
            if holding.grant.id == grant_id:
                return holding
        raise NotFound(f"no credit grant '{grant_id}' in this wallet", field="grant_id", code="credits.unknown_grant")

    @property
    def live_grants(self) -> int:
        """Grants with credits left (what the wallet's one item must keep bounded)."""
        return sum(1 for h in self.holdings if h.remaining)

    def burn_order(self, now: datetime) -> list[Holding]:
        """The grants a consumption at `now` takes from, in the order it takes them."""
        return sorted((h for h in self.holdings if h.remaining and h.grant.live(now)), key=_burn_key)

    def balance(self, now: datetime) -> Balance:
        """What is left of the grants live at `now`, by kind, and what is owed."""
        by_kind = dict.fromkeys(GrantKind, 0)
        for holding in self.holdings:
            if holding.grant.live(now):
                by_kind[holding.grant.kind] += holding.remaining
        return Balance(
            by_kind[GrantKind.INCLUDED], by_kind[GrantKind.PROMOTIONAL], by_kind[GrantKind.PURCHASED], self.overdrawn
        )

    @property
    def booked(self) -> int:
        """The ledger's balance: what is left of every grant, live or not yet booked as expired,
        minus what is owed (equal to `balance(now).total` once `expire(now)` has run)."""
        return sum(h.remaining for h in self.holdings) - self.overdrawn

    def _with(self, holding: Holding) -> Wallet:
        return replace(self, holdings=tuple(holding if h.grant.id == holding.grant.id else h for h in self.holdings))


# -- the ledger ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    """Credits one consumption took from one grant."""

    grant_id: str
    kind: GrantKind
    credits: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One immutable change of a wallet. `credits` is its size (never negative): added by a grant
    and an invoiced overdraft, taken by the others."""

    id: str
    kind: EntryKind
    at: datetime
    credits: int
    grant_id: str | None = None
    """The grant given, expired or refunded."""
    grant_kind: GrantKind | None = None
    action: str | None = None
    quantity: int = 0
    unit_cost: int = 0
    parts: tuple[Part, ...] = ()
    """Of a consumption: the credits taken from each grant, in burn order."""
    overdrawn: int = 0
    """Of a consumption: the credits no grant covered (owed); of an invoiced overdraft: those settled."""
    reference: str = ""
    """The cause outside the wallet: the grant's source, the consumption's request id, the invoice."""
    expires_at: datetime | None = None
    """Of a grant: when it expires (None: never)."""
    balance: int | None = None
    """Of a low-balance entry: the balance after the change that took it below the threshold."""
    low_balance: LowBalance | None = None
    """Of a low-balance entry: the threshold crossed, and the pack an auto top-up buys."""

    @property
    def delta(self) -> int:
        """Its effect on the booked balance."""
        if self.kind in (EntryKind.GRANT, EntryKind.OVERDRAFT_INVOICED):
            return self.credits
        if self.kind is EntryKind.LOW_BALANCE:
            return 0
        return -self.credits


_ENTRY_PREFIX = {
    EntryKind.GRANT: "crd_grant_",
    EntryKind.CONSUMPTION: "crd_use_",
    EntryKind.EXPIRY: "crd_exp_",
    EntryKind.REFUND: "crd_ref_",
    EntryKind.OVERDRAFT_INVOICED: "crd_od_",
    EntryKind.LOW_BALANCE: "crd_low_",
}


TOP_UP_GRANT_PREFIX = "topup_"


def top_up_grant_id(invoice_id: str) -> str:
    """The purchased grant a top-up's invoice buys: one per invoice."""
    return TOP_UP_GRANT_PREFIX + invoice_id.removeprefix("inv_")


def is_top_up_grant(grant_id: str | None) -> bool:
    return grant_id is not None and grant_id.startswith(TOP_UP_GRANT_PREFIX)


def entry_id(kind: EntryKind, cause: str) -> str:
    """An entry's id, from its cause: the grant's id (grant, expiry, refund), the caller's request id
    (consumption), the invoice's id (overdraft invoiced). The same cause, the same id."""
    return _ENTRY_PREFIX[kind] + cause


@dataclass(frozen=True, slots=True)
class Change:
    """What an operation did: the new wallet and the entries it booked (none: nothing changed)."""

    wallet: Wallet
    entries: tuple[LedgerEntry, ...] = ()


class InsufficientCredits(PaymentRequired):
    """A consumption the live credits (and the overdraft still open) cannot cover (402)."""

    def __init__(self, needed: int, balance: Balance, available: int) -> None:
        super().__init__(
            f"this needs {needed} credits; the balance is {balance.total}"
            + (f" and {available} can be spent with the overdraft" if available != max(balance.total, 0) else ""),
            code="credits.insufficient",
        )
        self.needed = needed
        self.balance = balance
        self.available = available
        self.wallet_version: int = 0
        """The stored wallet's version that could not cover it (set by the use case that read it)."""


# -- the operations -----------------------------------------------------------------------------------
def grant(wallet: Wallet, given: Grant) -> Change:
    """Adds a grant. The same grant again (whenever it is sent) changes nothing (a retry); another
    grant under its id is refused (`credits.grant_exists`)."""
    for holding in wallet.holdings:
        if holding.grant.id == given.id:
            if replace(holding.grant, granted_at=given.granted_at) == given:  # a retry, a moment later
                return Change(wallet)
            raise Conflict(
                f"credit grant '{given.id}' exists and differs", field="grant_id", code="credits.grant_exists"
            )
    entry = LedgerEntry(
        entry_id(EntryKind.GRANT, given.id),
        EntryKind.GRANT,
        given.granted_at,
        given.credits,
        grant_id=given.id,
        grant_kind=given.kind,
        reference=given.source,
        expires_at=given.expires_at,
    )
    return Change(replace(wallet, holdings=(*wallet.holdings, Holding(given, given.credits))), (entry,))


def consume(
    wallet: Wallet,
    cost: ActionCost,
    quantity: int,
    now: datetime,
    *,
    request_id: str,
    overdraft_limit: int = 0,
) -> Change:
    """Consumes `quantity` actions at `cost` each: one entry naming what came from which grant, in
    burn order, and what went overdrawn. All or nothing: when the live grants and the overdraft still
    open cannot cover it, `InsufficientCredits` (402 `credits.insufficient`, with the balance) and
    the wallet is unchanged. A free action books an entry of 0 credits (the breakdown counts it)."""
    _aware(now, "now")
    _reference(request_id, "request_id")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(
            f"quantity is a whole number from 1 to {MAX_QUANTITY}", field="quantity", code="credits.quantity"
        )
    _credits(overdraft_limit, "overdraft_limit", code="credits.overdraft_limit")
    needed = cost.credits * quantity
    if needed > MAX_CREDITS:
        raise InvalidInput(
            f"one consumption costs at most {MAX_CREDITS} credits", field="quantity", code="credits.quantity"
        )
    order = wallet.burn_order(now)
    live = sum(h.remaining for h in order)
    # the balance after it never below -overdraft_limit (a contact already owing more than a
    # lowered limit spends nothing more, not even its own grants)
    available = max(live + overdraft_limit - wallet.overdrawn, 0)
    if needed > available:
        raise InsufficientCredits(needed, wallet.balance(now), available)
    parts: list[Part] = []
    left = needed
    for holding in order:
        if not left:
            break
        taken = min(left, holding.remaining)
        parts.append(Part(holding.grant.id, holding.grant.kind, taken))
        wallet = wallet._with(replace(holding, remaining=holding.remaining - taken))
        left -= taken
    wallet = replace(wallet, overdrawn=wallet.overdrawn + left)
    entry = LedgerEntry(
        entry_id(EntryKind.CONSUMPTION, request_id),
        EntryKind.CONSUMPTION,
        now,
        needed,
        action=cost.action,
        quantity=quantity,
        unit_cost=cost.credits,
        parts=tuple(parts),
        overdrawn=left,
        reference=request_id,
    )
    return Change(wallet, (entry,))


def expire(wallet: Wallet, now: datetime) -> Change:
    """Books the expiry of what is left of every grant past its expiry at `now` (included: their
    cycle's end), one entry per grant. Idempotent: an expired grant has nothing left to expire."""
    _aware(now, "now")
    entries = []
    for holding in sorted(wallet.holdings, key=lambda h: (h.grant.expires_at or now, h.grant.id)):
        grant_ = holding.grant
        if holding.remaining and grant_.expired(now):
            assert grant_.expires_at is not None
            entries.append(
                LedgerEntry(
                    entry_id(EntryKind.EXPIRY, grant_.id),
                    EntryKind.EXPIRY,
                    grant_.expires_at,
                    holding.remaining,
                    grant_id=grant_.id,
                    grant_kind=grant_.kind,
                    reference=grant_.source,
                )
            )
            wallet = wallet._with(replace(holding, remaining=0))
    return Change(wallet, tuple(entries))


def refund(wallet: Wallet, grant_id: str, now: datetime, *, reference: str) -> Change:
    """A purchased grant's top-up is refunded: what is left of it is removed (never more; a fully
    spent one books a refund of 0 credits). A second refund of it changes nothing."""
    _aware(now, "now")
    _reference(reference, "reference")
    holding = wallet.holding(grant_id)
    if holding.grant.kind is not GrantKind.PURCHASED:
        raise RuleViolation(
            f"only purchased credits are refunded; '{grant_id}' is {holding.grant.kind}",
            rule="credits.not_purchased",
            field="grant_id",
        )
    if holding.refunded:
        return Change(wallet)
    entry = LedgerEntry(
        entry_id(EntryKind.REFUND, grant_id),
        EntryKind.REFUND,
        now,
        holding.remaining,
        grant_id=grant_id,
        grant_kind=GrantKind.PURCHASED,
        reference=reference,
    )
    return Change(wallet._with(replace(holding, remaining=0, refunded=True)), (entry,))


def settle_overdraft(wallet: Wallet, now: datetime, *, invoice_id: str) -> Change:
    """What is owed was invoiced (at the cycle's end): the wallet owes nothing more."""
    _aware(now, "now")
    _reference(invoice_id, "invoice_id")
    if not wallet.overdrawn:
        return Change(wallet)
    entry = LedgerEntry(
        entry_id(EntryKind.OVERDRAFT_INVOICED, invoice_id),
        EntryKind.OVERDRAFT_INVOICED,
        now,
        wallet.overdrawn,
        overdrawn=wallet.overdrawn,
        reference=invoice_id,
    )
    return Change(replace(wallet, overdrawn=0), (entry,))


def pay_period(
    wallet: Wallet, cost: ActionCost, quantity: int, now: datetime, *, request_id: str, paid_for: str, period: Period
) -> Change:
    """A payment-driven service's `period`, paid as a consumption (no overdraft), unless the wallet
    has paid `paid_for` (its service and terms) past the period's start already (a billing day
    changed: the shifted period overlaps a paid one): then nothing. Records the period's end."""
    if wallet.paid_through.get(paid_for, date.min) > period.start:
        return Change(wallet)
    paid = consume(wallet, cost, quantity, now, request_id=request_id)
    through = {**wallet.paid_through, paid_for: period.end}
    return Change(replace(paid.wallet, paid_through=MappingProxyType(through)), paid.entries)


def watch(wallet: Wallet, low_balance: LowBalance | None) -> Change:
    """The contact's low-balance threshold (and auto top-up pack) set, or removed with None. A first
    threshold is watched afresh: a balance already below it is booked at once by `watched`. A
    change of it (or the same again: a retried request) keeps a fall already booked as booked: it
    re-arms only when the balance is at or above the threshold, never by being set again."""
    below = wallet.below and low_balance is not None and wallet.low_balance is not None
    return Change(replace(wallet, low_balance=low_balance, below=below))


def watched(change: Change, now: datetime, *, version: int) -> Change:
    """`change` followed by the low-balance entry when it leaves the balance below the wallet's
    threshold and that was not booked yet (`crd_low_<version>`, the wallet version this change
    writes: one entry per crossing); a balance back at or above the threshold re-arms it."""
    wallet = change.wallet
    threshold = wallet.low_balance
    if threshold is None:
        return change
    total = wallet.balance(now).total
    if total >= threshold.threshold:
        return change if not wallet.below else Change(replace(wallet, below=False), change.entries)
    if wallet.below:
        return change
    if any(e.kind is EntryKind.REFUND for e in change.entries):
        # A refund takes back what was bought: never a crossing that buys it again (auto top-up).
        return Change(replace(wallet, below=True), change.entries)
    entry = LedgerEntry(
        entry_id(EntryKind.LOW_BALANCE, str(version)),
        EntryKind.LOW_BALANCE,
        now,
        0,
        reference=next((e.id for e in reversed(change.entries) if e.kind is not EntryKind.EXPIRY), ""),
        balance=total,
        low_balance=threshold,
    )
    return Change(replace(wallet, below=True), (*change.entries, entry))


# -- the breakdown ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ActionUsage:
    """One action's consumptions in a period: the "credits & usage" tab's row."""

    action: str
    consumptions: int
    quantity: int
    credits: int
    by_kind: Mapping[GrantKind, int] = field(default_factory=dict)
    """Of `credits`, how many came from each kind of grant (the rest was overdrawn)."""
    overdrawn: int = 0


def breakdown(entries: Iterable[LedgerEntry], period: Period, zone: ZoneInfo) -> tuple[ActionUsage, ...]:
    """Per action, what the consumptions on the days of `period` (in the contact's zone) used, by
    action name; free actions are listed with 0 credits."""
    rows: dict[str, ActionUsage] = {}
    for entry in entries:
        if entry.kind is not EntryKind.CONSUMPTION or not period.contains(local_date(entry.at, zone)):
            continue
        assert entry.action is not None
        row = rows.get(entry.action) or ActionUsage(entry.action, 0, 0, 0, {}, 0)
        by_kind = dict(row.by_kind)
        for part in entry.parts:
            by_kind[part.kind] = by_kind.get(part.kind, 0) + part.credits
        rows[entry.action] = ActionUsage(
            entry.action,
            row.consumptions + 1,
            row.quantity + entry.quantity,
            row.credits + entry.credits,
            by_kind,
            row.overdrawn + entry.overdrawn,
        )
    return tuple(rows[a] for a in sorted(rows))
