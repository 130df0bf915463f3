"""The product catalog: products and the price terms they can be ordered on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction

from billow.domain.calendar import Cycle
from billow.domain.entitlements import check_grants
from billow.domain.errors import Conflict, InvalidInput, NotFound
from billow.domain.money import Money
from billow.domain.pricing import UsagePrice
from billow.domain.rules import Alignment

MAX_TRIAL_DAYS = 366
MAX_TERM_CYCLES = 120


class BillingModel(StrEnum):
    ADVANCE = "advance"  # pre-bill: a period is invoiced on its first day
    ARREARS = "arrears"  # post-bill: a period is invoiced on the day after its last
    NONE = "none"  # no billing: never invoiced (no recurring, usage or setup fee); usage still recorded


class PricingModel(StrEnum):
    FLAT = "flat"  # one price per period; quantity must be 1
    PER_UNIT = "per_unit"  # price per unit (seat) per period, times the ordered quantity


@dataclass(frozen=True, slots=True)
class PriceTerms:
    """How a product is billed in one currency. Immutable once ordered: orders copy it."""

    id: str
    product_id: str
    price: Money
    cycle: Cycle
    billing_model: BillingModel
    pricing_model: PricingModel = PricingModel.FLAT
    setup_fee: Money | None = None
    trial_days: int = 0
    """Days at the start of a service that are not charged."""
    alignment: Alignment | None = None
    """Overrides the business's alignment for services added to an existing subscription."""
    usage: UsagePrice | None = None
    """How the service's usage is priced, rated for each billed period (always in arrears), if the
    service is metered (docs/billing.md, "Usage pricing"); in the terms' currency. With a `price`
    too, the terms are a hybrid: the fixed price per period plus the usage."""
    term_cycles: int | None = None
    """Termed period: the service runs this many cycles from its first charged day, then renews
    (`auto_renew`) or expires (stops billing; it can be renewed). None: open-ended."""
    auto_renew: bool = True
    """Whether a termed service renews for another term at its end (the contact can opt in or out)."""
    contract_cycles: int | None = None
    """Contract period: cycles from the first charged day during which cancelling follows the
    business's in-contract rule and costs `cancellation_fee`."""
    cancellation_fee: Money | None = None
    """Charged when the service is cancelled inside its contract period."""
    included_credits: int = 0
    """Credits the plan includes each billing cycle (docs/credits.md, "Included credits"): granted
    to the contact's wallet for each period the service is effective in, gone at the period's end."""
    features: tuple[str, ...] = ()
    """Features its effective services grant (docs/credits.md, "Entitlements")."""
    limits: tuple[tuple[str, int], ...] = ()
    """Limits its effective services grant, by name (seats, projects, storage_gb...)."""
    prepaid_credits: int = 0
    """Payment-driven (docs/credits.md, "Payment-driven services"): each billing period of a service
    on these terms is paid with this many credits from the contact's wallet, taken on the period's
    first day, instead of invoiced; a period the wallet cannot pay makes the service not effective
    until a top-up pays it. 0: invoiced as usual."""

    def __post_init__(self) -> None:
        features, limits = check_grants(self.features, dict(self.limits))
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "limits", limits)
        if not isinstance(self.included_credits, int) or not 0 <= self.included_credits <= 10**15:
            raise InvalidInput(
                "included_credits is a whole number of credits from 0 to 10^15", field="included_credits"
            )
        if not isinstance(self.prepaid_credits, int) or not 0 <= self.prepaid_credits <= 10**15:
            raise InvalidInput("prepaid_credits is a whole number of credits from 0 to 10^15", field="prepaid_credits")
        if self.prepaid_credits:
            fees = {"price": self.price, "setup_fee": self.setup_fee, "cancellation_fee": self.cancellation_fee}
            charged = [name for name, fee in fees.items() if fee is not None and not fee.is_zero]
            if (
                charged
                or self.usage is not None
                or self.billing_model is not BillingModel.ADVANCE
                or self.included_credits
            ):
                raise InvalidInput(
                    "terms paid from the wallet (prepaid_credits) are billed in advance, charge no money and "
                    "include no credits (they would pay for themselves): price 0, no setup or cancellation fee, "
                    "no usage price, no included_credits",
                    field="prepaid_credits",
                    code="catalog.prepaid_terms",
                )
        if not 0 <= self.trial_days <= MAX_TRIAL_DAYS:
            raise InvalidInput(f"trial_days is 0 to {MAX_TRIAL_DAYS}", field="trial_days")
        for name in ("term_cycles", "contract_cycles"):
            cycles = getattr(self, name)
            if cycles is not None and not 1 <= cycles <= MAX_TERM_CYCLES:
                raise InvalidInput(f"{name} is 1 to {MAX_TERM_CYCLES}", field=name)
        if self.cancellation_fee is not None:
            if self.cancellation_fee.currency != self.price.currency:
                raise InvalidInput("cancellation_fee must be in the price's currency", field="cancellation_fee")
            if self.cancellation_fee.is_negative:
                raise InvalidInput("cancellation_fee must not be negative", field="cancellation_fee")
            if self.contract_cycles is None:
                raise InvalidInput("a cancellation fee needs a contract period", field="cancellation_fee")
        if self.price.is_negative:
            raise InvalidInput("price must not be negative", field="price")
        if self.billing_model is BillingModel.NONE:
            for name in ("price", "setup_fee", "cancellation_fee"):
                amount = getattr(self, name)
                if amount is not None and not amount.is_zero:
                    raise InvalidInput(
                        f"a service that is never invoiced (billing_model none) has no {name}",
                        field=name,
                        code="catalog.no_billing_charge",
                    )
        if self.setup_fee is not None:
            if self.setup_fee.currency != self.price.currency:
                raise InvalidInput("setup_fee must be in the price's currency", field="setup_fee")
            if self.setup_fee.is_negative:
                raise InvalidInput("setup_fee must not be negative", field="setup_fee")

    @property
    def currency(self) -> str:
        return self.price.currency

    @property
    def meter(self) -> str | None:
        """The usage meter rated for each billed period: a service is metered when it is not None."""
        return None if self.usage is None else self.usage.meter

    def check_quantity(self, quantity: int) -> None:
        if quantity < 1:
            raise InvalidInput("quantity must be at least 1", field="quantity")
        if self.pricing_model is PricingModel.FLAT and quantity != 1:
            raise InvalidInput("flat-priced terms are ordered with quantity 1", field="quantity")

    def period_price(self, quantity: int) -> Money:
        """Price of one full billing period for `quantity` units."""
        return self.price.times(quantity)

    def yearly_rate(self, quantity: int) -> Fraction:
        """The recurring charge over an average year (365.25 days), in minor units: what compares
        price terms of different cycles (a change from monthly to yearly is an upgrade or not)."""
        per_year = Fraction(1461, 28) if self.cycle is Cycle.WEEK else Fraction(12, self.cycle.months)
        return self.period_price(quantity).minor * per_year


@dataclass(frozen=True, slots=True)
class Product:
    """A product with all its price terms, archived ones included. Price terms are never changed:
    editing them adds a new version (new id) and archives the old one (`replacements`), so a
    subscription keeps the terms it was ordered on. `version` counts changes of the product item
    (name, description, archiving, new versions of terms); every change is conditioned on it."""

    id: str
    name: str
    description: str = ""
    terms: tuple[PriceTerms, ...] = field(default_factory=tuple)
    archived: bool = False
    archived_terms: frozenset[str] = frozenset()
    replacements: tuple[tuple[str, str], ...] = ()
    """(old terms id, the id of the version that replaced it), oldest first."""
    version: int = 0

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidInput("name must not be blank", field="name")

    def terms_by_id(self, terms_id: str) -> PriceTerms | None:
        return next((t for t in self.terms if t.id == terms_id), None)

    def replaced_by(self, terms_id: str) -> str | None:
        return next((new for old, new in self.replacements if old == terms_id), None)

    def with_terms(self, terms: PriceTerms) -> Product:
        if terms.product_id != self.id:
            raise ValueError("price terms belong to another product")
        return replace(self, terms=(*self.terms, terms))

    def orderable_terms(self, terms_id: str, field: str = "terms_id") -> PriceTerms:
        """The price terms a new order or a change may use: neither the product nor the terms
        archived (409 `catalog.product_archived` / `catalog.terms_archived`)."""
        terms = self.terms_by_id(terms_id)
        if terms is None:
            raise NotFound(f"product {self.id} has no price terms {terms_id}", field=field)
        if self.archived:
            raise Conflict(
                f"product {self.id} is archived: it cannot be ordered or changed to",
                field=field,
                code="catalog.product_archived",
            )
        if terms_id in self.archived_terms:
            newer = self.replaced_by(terms_id)
            hint = f"; its current version is {self.current_version(terms_id)}" if newer else ""
            raise Conflict(
                f"price terms {terms_id} are archived: they cannot be ordered or changed to{hint}",
                field=field,
                code="catalog.terms_archived",
            )
        return terms

    def current_version(self, terms_id: str) -> str:
        """The newest version of some price terms (following replacements)."""
        seen = {terms_id}
        while (newer := self.replaced_by(terms_id)) is not None and newer not in seen:
            seen.add(newer)
            terms_id = newer
        return terms_id

    def editable_terms(self, terms_id: str) -> PriceTerms:
        """Terms that may be versioned or archived: present and not archived already."""
        terms = self.terms_by_id(terms_id)
        if terms is None:
            raise NotFound(f"product {self.id} has no price terms {terms_id}", field="terms_id")
        if terms_id in self.archived_terms:
            raise Conflict(
                f"price terms {terms_id} are archived; edit their current version {self.current_version(terms_id)}",
                field="terms_id",
                code="catalog.terms_archived",
            )
        return terms

    def with_new_version(self, old: PriceTerms, new: PriceTerms) -> Product:
        """`new` replaces `old` for new orders; `old` is archived (subscriptions on it keep it)."""
        return replace(
            self.with_terms(new),
            archived_terms=self.archived_terms | {old.id},
            replacements=(*self.replacements, (old.id, new.id)),
        )
