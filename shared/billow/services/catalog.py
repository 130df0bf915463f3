"""Catalog use cases."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel, Product
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, NotFound
from billow.domain.money import Money
from billow.domain.pricing import parse_usage_price, usage_price_json
from billow.domain.rules import Alignment
from billow.services.context import TenantContext, edit_versioned
from billow.services.ports import CatalogPorts, CatalogStore, Page

MAX_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class PriceTermsInput:
    price: str
    currency: str
    cycle: Cycle
    billing_model: BillingModel
    pricing_model: PricingModel = PricingModel.FLAT
    setup_fee: str | None = None
    trial_days: int = 0
    alignment: Alignment | None = None
    usage: Mapping[str, Any] | None = None
    """The usage price's JSON (docs/billing.md, "Usage pricing"), parsed in the terms' currency."""
    term_cycles: int | None = None
    auto_renew: bool = True
    contract_cycles: int | None = None
    cancellation_fee: str | None = None
    included_credits: int = 0
    features: Sequence[str] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    prepaid_credits: int = 0


def _build_terms(terms_id: str, product_id: str, spec: PriceTermsInput, field: str = "") -> PriceTerms:
    """Terms from their input; errors name the field as the request nests it (`field` is where the
    terms are in the body: "terms[0]" when a product is created with them, "" when they are the body)."""

    def at(name: str) -> str:
        return f"{field}.{name}" if field else name

    try:
        price = Money.parse(spec.price, spec.currency, field=at("price"))
        fee = None if spec.setup_fee is None else Money.parse(spec.setup_fee, spec.currency, field=at("setup_fee"))
        cancellation_fee = None
        if spec.cancellation_fee is not None:
            cancellation_fee = Money.parse(spec.cancellation_fee, spec.currency, field=at("cancellation_fee"))
        usage = None if spec.usage is None else parse_usage_price(spec.usage, spec.currency, field=at("usage"))
        return PriceTerms(
            terms_id,
            product_id,
            price,
            spec.cycle,
            spec.billing_model,
            spec.pricing_model,
            fee,
            trial_days=spec.trial_days,
            alignment=spec.alignment,
            usage=usage,
            term_cycles=spec.term_cycles,
            auto_renew=spec.auto_renew,
            contract_cycles=spec.contract_cycles,
            cancellation_fee=cancellation_fee,
            included_credits=spec.included_credits,
            features=tuple(spec.features),
            limits=tuple(spec.limits.items()),
            prepaid_credits=spec.prepaid_credits,
        )
    except InvalidInput as error:
        raise error.under(field) from None


def create_product(
    store: CatalogPorts,
    ctx: TenantContext,
    *,
    name: str,
    description: str,
    terms: Sequence[PriceTermsInput],
    new_id: Callable[[str], str],
) -> Product:
    product_id = new_id("prod")
    built = tuple(_build_terms(new_id("terms"), product_id, spec, f"terms[{i}]") for i, spec in enumerate(terms))
    product = Product(product_id, name, description, built)
    try:
        work = store.unit_of_work(f"product {product.id}")
        work.add_product(ctx.tenant_id, product)
        work.commit()
    except Conflict:
        # Ids derived from an idempotency key: this is a retry, answer with the first result.
        existing = store.get_product(ctx.tenant_id, product_id)
        if existing is None:
            raise
        return existing
    return product


def add_price_terms(
    store: CatalogPorts, ctx: TenantContext, product_id: str, spec: PriceTermsInput, new_id: Callable[[str], str]
) -> PriceTerms:
    terms_id = new_id("terms")
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        product = get_product(store, ctx, product_id)
        existing = product.terms_by_id(terms_id)
        if existing is not None:
            return existing  # ids derived from an idempotency key: a retry answers with the first result
        _check_not_archived(product)
        terms = _build_terms(terms_id, product.id, spec)
        try:
            _save_product(store, ctx.tenant_id, product.with_terms(terms), terms)
        except ConcurrentModification:
            continue  # the product changed (or the terms were just added): look again
        return terms
    raise ConcurrentModification(f"product {product_id} kept changing; try again")


def _check_not_archived(product: Product) -> None:
    if product.archived:
        raise Conflict(
            f"product {product.id} is archived; unarchive it to change it",
            field="product_id",
            code="catalog.product_archived",
        )


def _save_product(
    store: CatalogPorts, tenant_id: str, product: Product, new_terms: PriceTerms | None = None
) -> Product:
    """The changed product, only if still at its version, with new price terms when given."""
    work = store.unit_of_work(f"product {product.id}")
    saved = work.save_product(tenant_id, product, new_terms)
    work.commit()
    return saved


def _change_product(
    store: CatalogPorts, ctx: TenantContext, product_id: str, change: Callable[[Product], Product | None]
) -> Product:
    return edit_versioned(
        lambda: get_product(store, ctx, product_id),
        lambda product: _save_product(store, ctx.tenant_id, product),
        change,
        f"product {product_id}",
    )


def update_product(
    store: CatalogPorts, ctx: TenantContext, product_id: str, *, name: str | None, description: str | None
) -> Product:
    """Rename or redescribe a product. Subscriptions keep the name they were ordered under on
    their services; new orders and invoices of new orders use the new one."""

    def change(product: Product) -> Product | None:
        _check_not_archived(product)
        changed = replace(
            product,
            name=product.name if name is None else name,
            description=product.description if description is None else description,
        )
        return None if changed == product else changed

    return _change_product(store, ctx, product_id, change)


def set_product_archived(store: CatalogPorts, ctx: TenantContext, product_id: str, archived: bool) -> Product:
    """Archive (or unarchive) a product: an archived product cannot be ordered or changed to; the
    services already on it keep billing. Repeating it changes nothing."""
    return _change_product(
        store,
        ctx,
        product_id,
        lambda product: None if product.archived == archived else replace(product, archived=archived),
    )


def archive_terms(store: CatalogPorts, ctx: TenantContext, product_id: str, terms_id: str) -> Product:
    """Archive price terms: no new order or change may use them; services on them keep them."""

    def change(product: Product) -> Product | None:
        if product.terms_by_id(terms_id) is None:
            raise NotFound(f"product {product_id} has no price terms {terms_id}", field="terms_id")
        if terms_id in product.archived_terms:
            return None
        return replace(product, archived_terms=product.archived_terms | {terms_id})

    return _change_product(store, ctx, product_id, change)


def _input_of(terms: PriceTerms) -> PriceTermsInput:
    def amount(m: Money | None) -> str | None:
        return None if m is None else m.amount_str()

    return PriceTermsInput(
        terms.price.amount_str(),
        terms.currency,
        terms.cycle,
        terms.billing_model,
        terms.pricing_model,
        amount(terms.setup_fee),
        terms.trial_days,
        terms.alignment,
        None if terms.usage is None else usage_price_json(terms.usage),
        terms.term_cycles,
        terms.auto_renew,
        terms.contract_cycles,
        amount(terms.cancellation_fee),
        terms.included_credits,
        terms.features,
        dict(terms.limits),
        terms.prepaid_credits,
    )


def new_terms_version(
    store: CatalogPorts,
    ctx: TenantContext,
    product_id: str,
    terms_id: str,
    changes: dict[str, Any],
    new_id: Callable[[str], str],
) -> PriceTerms:
    """Edit price terms: they are immutable, so the edit is a new version (a new id) that new
    orders use, and the old terms are archived; every subscription keeps the terms it has.
    With an `Idempotency-Key` a retry answers with the version the first attempt made; without
    one, a repeat finds the terms archived (409 `catalog.terms_archived`, naming the newer version)."""
    unknown = set(changes) - {f.name for f in fields(PriceTermsInput)}
    if unknown:
        raise InvalidInput("not a price-terms field", field=sorted(unknown)[0])
    version_id = new_id("terms")
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        product = get_product(store, ctx, product_id)
        if product.replaced_by(terms_id) == version_id:
            made = product.terms_by_id(version_id)
            if made is not None:
                return made
        _check_not_archived(product)
        old = product.editable_terms(terms_id)
        new = _build_terms(version_id, product.id, replace(_input_of(old), **changes))
        try:
            _save_product(store, ctx.tenant_id, product.with_new_version(old, new), new)
        except ConcurrentModification:
            continue
        return new
    raise ConcurrentModification(f"product {product_id} kept changing; try again")


def get_product(store: CatalogStore, ctx: TenantContext, product_id: str) -> Product:
    product = store.get_product(ctx.tenant_id, product_id)
    if product is None:
        raise NotFound(f"no product {product_id}", field="product_id")
    return product


def list_products(store: CatalogStore, ctx: TenantContext, *, limit: int, cursor: str | None) -> Page[Product]:
    return store.products_page(ctx.tenant_id, limit, cursor)
