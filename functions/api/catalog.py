"""Catalog routes: products and their price terms."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.services import catalog
from runtime import store

from api import presenters
from api.context import created, current_tenant, idempotent
from api.openapi import answers
from api.schemas import Cursor, Id, Limit, PriceTermsBody, PriceTermsPatchBody, ProductBody, ProductPatchBody

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
        body.usage,
        body.term_cycles,
        body.auto_renew,
        body.contract_cycles,
        body.cancellation_fee,
        body.included_credits,
        body.features,
        body.limits,
        body.prepaid_credits,
    )


@router.post("/products", summary="Create a product with its price terms")
@answers(201, 200)
def create_product(body: ProductBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    with idempotent(router.current_event, ctx, body) as ids:
        product = catalog.create_product(
            store,
            ctx,
            name=body.name,
            description=body.description,
            terms=[_terms_input(t) for t in body.terms],
            new_id=ids.new_id,
        )
    return created(presenters.product(product), 201, replay=ids.replay)


@router.get("/products", summary="List the catalog (archived products included, marked), in id order")
def list_products(limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    page = catalog.list_products(store, ctx, limit=limit, cursor=cursor)
    return {"items": [presenters.product(p) for p in page.items], "cursor": page.cursor}


@router.get("/products/<product_id>", summary="Get a product")
def get_product(product_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.product(catalog.get_product(store, ctx, product_id))


ProductId = Annotated[Id, Path()]
TermsId = Annotated[Id, Path()]


@router.patch("/products/<product_id>", summary="Change a product's name or description")
def update_product(product_id: ProductId, body: ProductPatchBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    product = catalog.update_product(
        store, ctx, product_id, name=changes.get("name"), description=changes.get("description")
    )
    return presenters.product(product)


@router.post(
    "/products/<product_id>/archive",
    summary="Archive a product: it cannot be ordered or changed to; its subscriptions keep billing",
)
def archive_product(product_id: ProductId) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.product(catalog.set_product_archived(store, ctx, product_id, True))


@router.post("/products/<product_id>/unarchive", summary="Make an archived product orderable again")
def unarchive_product(product_id: ProductId) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.product(catalog.set_product_archived(store, ctx, product_id, False))


_TERMS_CLEARABLE = {"setup_fee", "alignment", "usage", "term_cycles", "contract_cycles", "cancellation_fee"}


@router.patch(
    "/products/<product_id>/terms/<terms_id>",
    summary="Edit price terms: makes a new version (new id) for new orders and archives these; "
    "subscriptions keep the terms they have",
)
@answers(201, 200)
def new_terms_version(product_id: ProductId, terms_id: TermsId, body: PriceTermsPatchBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in _TERMS_CLEARABLE
    }
    with idempotent(router.current_event, ctx, body) as ids:
        terms = catalog.new_terms_version(store, ctx, product_id, terms_id, changes, ids.new_id)
    return created(presenters.terms(terms), 201, replay=ids.replay)


@router.post(
    "/products/<product_id>/terms/<terms_id>/archive",
    summary="Archive price terms: no new order or change may use them; subscriptions keep them",
)
def archive_terms(product_id: ProductId, terms_id: TermsId) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return presenters.product(catalog.archive_terms(store, ctx, product_id, terms_id))


@router.post("/products/<product_id>/terms", summary="Add price terms to a product")
@answers(201, 200)
def add_terms(product_id: Annotated[Id, Path()], body: PriceTermsBody) -> Response[dict[str, Any]]:
    ctx = current_tenant(router.current_event)
    with idempotent(router.current_event, ctx, body) as ids:
        terms = catalog.add_price_terms(store, ctx, product_id, _terms_input(body), ids.new_id)
    return created(presenters.terms(terms), 201, replay=ids.replay)
