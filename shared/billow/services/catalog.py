"""Catalog use cases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel, Product
from billow.domain.errors import Conflict, InvalidInput, NotFound
from billow.domain.money import Money
from billow.domain.rules import Alignment
from billow.services.context import TenantContext
from billow.services.ports import Store


@dataclass(frozen=True, slots=True)
class PriceTermsInput:
    price: Decimal
    currency: str
    cycle: Cycle
    billing_model: BillingModel
    pricing_model: PricingModel = PricingModel.FLAT
    setup_fee: Decimal | None = None
    trial_days: int = 0
    alignment: Alignment | None = None
    meter: str | None = None
    term_cycles: int | None = None
    auto_renew: bool = True
    contract_cycles: int | None = None
    cancellation_fee: Decimal | None = None


def _build_terms(terms_id: str, product_id: str, spec: PriceTermsInput, field: str) -> PriceTerms:
    try:
        price = Money.parse(spec.price, spec.currency, field=f"{field}.price")
        fee = None if spec.setup_fee is None else Money.parse(spec.setup_fee, spec.currency, field=f"{field}.setup_fee")
        cancellation_fee = None
        if spec.cancellation_fee is not None:
            cancellation_fee = Money.parse(spec.cancellation_fee, spec.currency, field=f"{field}.cancellation_fee")
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
            meter=spec.meter,
            term_cycles=spec.term_cycles,
            auto_renew=spec.auto_renew,
            contract_cycles=spec.contract_cycles,
            cancellation_fee=cancellation_fee,
        )
    except InvalidInput as error:
        raise error.under(field) from None


def create_product(
    store: Store,
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
        store.add_product(ctx.tenant_id, product)
    except Conflict:
        # Ids derived from an idempotency key: this is a retry, answer with the first result.
        existing = store.get_product(ctx.tenant_id, product_id)
        if existing is None:
            raise
        return existing
    return product


def add_price_terms(
    store: Store, ctx: TenantContext, product_id: str, spec: PriceTermsInput, new_id: Callable[[str], str]
) -> PriceTerms:
    product = get_product(store, ctx, product_id)
    terms = _build_terms(new_id("terms"), product.id, spec, "body")
    try:
        store.add_terms(ctx.tenant_id, terms)
    except Conflict:
        # Ids derived from an idempotency key: this is a retry, answer with the first result.
        existing = get_product(store, ctx, product_id).terms_by_id(terms.id)
        if existing is None:
            raise
        return existing
    return terms


def get_product(store: Store, ctx: TenantContext, product_id: str) -> Product:
    product = store.get_product(ctx.tenant_id, product_id)
    if product is None:
        raise NotFound(f"no product {product_id}", field="product_id")
    return product


def list_products(store: Store, ctx: TenantContext) -> list[Product]:
    return store.list_products(ctx.tenant_id)
