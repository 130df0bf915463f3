"""Catalog routes: products and their price terms."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.services import catalog
from runtime import store

from api import presenters
from api.context import current_tenant, ids_for_request
from api.openapi import Created
from api.schemas import Id, PriceTermsBody, ProductBody

router = APIGatewayRouter()


def _terms_input(body: PriceTermsBody) -> catalog.PriceTermsInput:
    return catalog.PriceTermsInput(
        body.price,
        body.currency,
        body.cycle,
        body.billing_model,
        body.pricing_model,
        body.setup_fee,
        body.trial_days,
        body.alignment,
        body.meter,
        body.term_cycles,
        body.auto_renew,
        body.contract_cycles,
        body.cancellation_fee,
    )


@router.post("/products", summary="Create a product with its price terms")
def create_product(body: ProductBody) -> Created:
    ctx = current_tenant(router.current_event)
    product = catalog.create_product(
        store,
        ctx,
        name=body.name,
        description=body.description,
        terms=[_terms_input(t) for t in body.terms],
        new_id=ids_for_request(router.current_event, ctx, "products"),
    )
    return presenters.product(product), 201


@router.get("/products", summary="List the catalog")
def list_products() -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return {"items": [presenters.product(p) for p in catalog.list_products(store, ctx)]}


@router.get("/products/<product_id>", summary="Get a product")
def get_product(product_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.product(catalog.get_product(store, ctx, product_id))


@router.post("/products/<product_id>/terms", summary="Add price terms to a product")
def add_terms(product_id: Annotated[Id, Path()], body: PriceTermsBody) -> Created:
    ctx = current_tenant(router.current_event)
    ids = ids_for_request(router.current_event, ctx, f"products/{product_id}/terms")
    terms = catalog.add_price_terms(store, ctx, product_id, _terms_input(body), ids)
    return presenters.terms(terms), 201
