"""The OpenAPI document (docs/openapi.json), made exact in this one place.

Powertools generates the paths, parameters and request bodies from the routes. What it cannot know
is added here from what each route is:
- its operation id (the handler's name) and tag (the handler's module: catalog, contacts...), so a
  generated client reads `catalog.create_product`;
- its success statuses, declared on the handler with `@answers(...)` under its route decorator
  (`@answers(201)`, `@answers(201, 202, 200)`...); a handler that declares none answers 200,
  and one that returns a `Response` or a tuple (so could set another status) must declare them;
- its error statuses, all in the one error shape (`Error`): 401 (the authorizer), 429 (API
  Gateway's throttle) and 422 (path and query parameters are validated, unknown query parameters
  refused) on every route, 400/413/415 on a route that reads a body, 404 on a route that names an
  id (path, query or body), 409 on a route that acts on stored data, 503 on a route that reads
  storage.

`make openapi` writes the document, and a unit test fails when the committed one is stale. The
document is built on demand, never when the handler is imported: what only it needs (Powertools'
OpenAPI models) is imported then, and its own models are built then (`defer_build`).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import Route
from pydantic import BaseModel, ConfigDict, Field

TITLE, VERSION = "Billow API", "0.1.0"

_STATUSES = "__billow_statuses__"
Handler = TypeVar("Handler", bound=Callable[..., Any])


def answers(*statuses: int) -> Callable[[Handler], Handler]:
    """Declare the 2xx statuses a route's handler answers (put it under the route decorator); the
    OpenAPI document lists exactly these. A create answers 201 (a replay of its `Idempotency-Key`
    too, marked `Idempotent-Replayed`); one idempotent on a `reference` 201 or 200 for a replay; an
    action 201 executed, 202 scheduled or 200 a replay. The handler itself is returned unchanged."""
    if not statuses or any(not 200 <= s < 300 for s in statuses):
        raise ValueError(f"success statuses are 2xx: {statuses}")

    def declare(handler: Handler) -> Handler:
        setattr(handler, _STATUSES, tuple(statuses))
        return handler

    return declare


PURE_ROUTES = frozenset({("POST", "/billing/preview")})
"""Routes that read and write no stored data: no 404, 409 or 503."""
PAYING_ROUTES = frozenset(
    {("POST", "/contacts/<contact_id>/credits/consume"), ("POST", "/contacts/<contact_id>/credits/top-ups")}
)
"""Routes that answer 402: credits that cannot cover a consumption, a top-up whose charge failed."""


class FieldProblem(BaseModel):
    model_config = ConfigDict(title="FieldProblem", defer_build=True)
    field: str = Field(description='the input at fault, as a path: "terms[0].price", "contact_id", "body"')
    reason: str


class Error(BaseModel):
    """Every 4xx and 5xx the API answers."""

    model_config = ConfigDict(title="Error", extra="allow", defer_build=True)
    error: str = Field(description="a stable, machine-readable code: messages may change, codes may not")
    message: str = Field(description="for people")
    fields: list[FieldProblem] = Field(description="each input at fault (possibly none)")
    current_state: str | None = Field(default=None, description="an illegal transition: the service's state")
    rule: str | None = Field(default=None, description="the business rule that refused the request")


_ERROR_DESCRIPTIONS = {
    400: "Malformed body (not JSON, not UTF-8, nested too deeply)",
    401: "Missing or invalid API key",
    402: "Not enough credits (credits.insufficient), or the top-up's charge failed (credits.top_up_failed)",
    404: "No such entity for this tenant and mode",
    409: "The entity's state or a business rule refuses the request, or it changed concurrently",
    413: "Body too large",
    415: "Unsupported content type (send application/json)",
    429: "Too many requests (API Gateway's rate limit on AWS): retry later",
    422: "Invalid input: the fields at fault are named",
    503: "Storage is busy: retry the same request",
}
_SUCCESS_DESCRIPTIONS = {200: "OK", 201: "Created", 202: "Accepted: it takes effect later"}


def success_statuses(route: Route) -> tuple[int, ...]:
    """The 2xx a route answers: those its handler declares with `answers`, else 200."""
    declared: tuple[int, ...] | None = getattr(route.func, _STATUSES, None)
    if declared is not None:
        return declared
    returns = typing.get_type_hints(route.func).get("return")
    if returns is Response or typing.get_origin(returns) in (Response, tuple):
        raise TypeError(f"{route.method} {route.path}: declare the statuses it answers with @answers(...)")
    return (200,)


def _names_an_id(schema: Any, components: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether a request body schema has a property naming an entity (`..._id`), at any depth."""
    if isinstance(schema, list):
        return any(_names_an_id(s, components, seen) for s in schema)
    if not isinstance(schema, dict):
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return name not in seen and _names_an_id(components.get(name, {}), components, seen | {name})
    if any(name.endswith("_id") for name in schema.get("properties", {})):
        return True
    return any(_names_an_id(value, components, seen) for value in schema.values())


def error_statuses(route: Route, operation: dict[str, Any], components: dict[str, Any]) -> list[int]:
    params = operation.get("parameters", [])
    body = operation.get("requestBody")
    statuses = {401, 422, 429}
    if body is not None:
        statuses |= {400, 413, 415}
    if (route.method, route.path) not in PURE_ROUTES:
        statuses.add(503)
        names_an_id = any(p["in"] == "path" or p["name"].endswith("_id") for p in params) or (
            body is not None and _names_an_id(body, components)
        )
        if names_an_id:
            statuses.add(404)
        if route.method != "GET":
            statuses.add(409)
    if (route.method, route.path) in PAYING_ROUTES:
        statuses.add(402)
    return sorted(statuses)


def _routes(app: APIGatewayRestResolver) -> dict[tuple[str, str], Route]:
    # The resolver's own route table, as its get_openapi_schema reads it (Powertools has no public accessor).
    return {(r.method.lower(), r.openapi_path): r for r in app._static_routes + app._dynamic_routes}


def document(app: APIGatewayRestResolver) -> dict[str, Any]:
    """The OpenAPI document of `app`, with every status each operation answers."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

    generated = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            description="Serverless subscription billing. Every error has the shape `Error`.",
            security_schemes={
                "bearerKey": HTTPBearer(bearerFormat="API key", description="Authorization: Bearer <API key>"),
                "apiKeyHeader": APIKey(in_=APIKeyIn.header, name="x-api-key", description="or the key in x-api-key"),
            },
            security=[{"bearerKey": []}, {"apiKeyHeader": []}],
        )
    )
    schemas = generated["components"]["schemas"]
    error_schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs"))
    schemas["Error"] = error_schema
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

    routes = _routes(app)
    operation_ids: set[str] = set()
    for path, operations in generated["paths"].items():
        for method, operation in operations.items():
            route = routes[(method, path)]
            name = operation["operationId"] = route.func.__name__
            if name in operation_ids:
                raise ValueError(f"{method.upper()} {path}: another route's handler is also named {name}")
            operation_ids.add(name)
            operation["tags"] = [route.func.__module__.rsplit(".", 1)[-1]]
            powertools_success: dict[str, Any] = next(
                (r for code, r in operation["responses"].items() if code.startswith("2")), {"content": {}}
            )
            for media in powertools_success["content"].values():
                media.get("schema", {}).pop("title", None)  # "Return": one name for several statuses
            responses: dict[str, Any] = {}
            for status in sorted(success_statuses(route)):
                responses[str(status)] = {
                    "description": _SUCCESS_DESCRIPTIONS[status],
                    "content": powertools_success["content"],
                }
            for status in error_statuses(route, operation, schemas):
                responses[str(status)] = {"description": _ERROR_DESCRIPTIONS[status], "content": error_content}
            operation["responses"] = responses
    # Powertools' own validation-error schemas are never answered: keep only what the paths use.
    used = _referenced(generated["paths"], schemas)
    generated["components"]["schemas"] = {name: schemas[name] for name in sorted(used)}
    return generated


def _referenced(node: Any, schemas: dict[str, Any], found: set[str] | None = None) -> set[str]:
    """The component schemas `node` refers to, directly or through other components."""
    found = set() if found is None else found
    if isinstance(node, list):
        for item in node:
            _referenced(item, schemas, found)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in found:
                found.add(name)
                _referenced(schemas[name], schemas, found)
        for value in node.values():
            _referenced(value, schemas, found)
    return found


def document_json(app: APIGatewayRestResolver) -> str:
    return json.dumps(document(app), indent=2) + "\n"


def write(app: APIGatewayRestResolver) -> None:
    """`make openapi`: docs/openapi.json, and the route index the handler loads areas by
    (functions/api/routes.json, `api.areas`), from the complete app."""
    from api.areas import INDEX_FILE, route_index_json

    (INDEX_FILE.parents[2] / "docs" / "openapi.json").write_text(document_json(app), encoding="utf-8")
    INDEX_FILE.write_text(route_index_json(app), encoding="utf-8")
