"""The REST API: one Powertools resolver with request validation (so the OpenAPI document is
generated), routers per concern, and the one place where errors become HTTP responses."""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

from collections.abc import Iterable, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.errors import (
    ConcurrentModification,
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PaymentRequired,
    TemporaryFailure,
    error_body,
)
from billow.services.gateway import GatewayUnavailable
from billow.services.inputs import validation_code, validation_problems
from runtime import imported, invocation, logger, metrics, tracer

from api.areas import RouteAreas
from api.bodies import BodyTooDeep, JsonRequestValidation, parse_json

app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json)
app._request_validation_middleware = JsonRequestValidation()  # JSON bodies only (api/bodies.py)


def refuse_unknown_query_parameters(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Every route accepts exactly the query parameters it declares: anything else is a 422
    (`request.unknown_parameter`), so a misspelt filter is never silently ignored."""
    route = app.context.get("_route")
    if route is not None and route in (*app._static_routes, *app._dynamic_routes):
        declared = {param.alias for param in route.dependant.query_params}
        given = {
            *(app.current_event.query_string_parameters or {}),
            *(app.current_event.multi_value_query_string_parameters or {}),
        }
        unknown = sorted(given - declared)
        if unknown:
            accepted = ", ".join(sorted(declared)) or "none"
            raise InvalidInput(
                f"unknown query parameter '{unknown[0]}' (this route accepts: {accepted})",
                field=unknown[0],
                code="request.unknown_parameter",
            )
    return next_middleware(app)


def methods_at(path: str) -> list[str]:
    """The methods `path` takes. A path a static route names is that route's alone: a parameter
    does not take it (`/orders/quote` is not `/orders/{order_id}`), as API Gateway routes."""
    static = {route.method for route in app._static_routes if route.rule.match(path)}
    return sorted(static or {route.method for route in app._dynamic_routes if route.rule.match(path)})


def method_not_allowed(path: str, allowed: list[str]) -> Response[Any]:
    method = app.current_event.http_method.upper()
    return error_response(
        405,
        "route.method_not_allowed",
        f"{path} does not take {method}; it takes {', '.join(allowed)}",
        headers={"Allow": ", ".join(allowed)},
    )


def static_paths_are_their_own(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Powertools matches a parameter against a static route's path under another method (GET
    /orders/quote was GET /orders/{order_id} with the id "quote"): refused as `methods_at` says."""
    route, path = app.context.get("_route"), app.current_event.path
    if route is not None and route in app._dynamic_routes and any(r.rule.match(path) for r in app._static_routes):
        return method_not_allowed(path, methods_at(path))
    return next_middleware(app)


app.use(middlewares=[static_paths_are_their_own, refuse_unknown_query_parameters])
areas = RouteAreas.from_index_file(app)
"""The route modules (api.catalog, api.contacts...), each imported when a request first needs it."""


def complete_app() -> APIGatewayRestResolver:
    """The app with every route area loaded: what the OpenAPI document and route-wide tests read."""
    return areas.load_all()


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Iterable[Mapping[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """Every error the API answers, in the one shape (`billow.domain.errors.error_body`)."""
    body = error_body(code, message, fields)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


@app.exception_handler(RequestValidationError)
def invalid_request(error: RequestValidationError) -> Response[Any]:
    problems = error.errors()
    for problem in problems:
        if problem.get("type") == "json_invalid":
            return error_response(
                400,
                "request.malformed_json",
                "the request body is not valid JSON",
                [{"field": "body", "reason": str(problem.get("msg", "invalid JSON"))}],
            )
    fields = validation_problems(problems)
    names = ", ".join(f["field"] for f in fields)
    return error_response(422, validation_code(problems), f"invalid request: {names}", fields)


@app.exception_handler(RequestUnsupportedContentType)
def unsupported_media_type(error: RequestUnsupportedContentType) -> Response[Any]:
    content_type = app.current_event.headers.get("content-type") or "a body without a Content-Type"
    return error_response(
        415,
        "request.unsupported_media_type",
        f"bodies are JSON (Content-Type: application/json, UTF-8), not {content_type[:100]}",
        [{"field": "Content-Type", "reason": "unsupported content type"}],
    )


@app.not_found
def no_route(_: NotFoundError) -> Response[Any]:
    """No route matches: 405 with `Allow` when the path is known under other methods, else 404.
    Powertools answers neither in our shape, so both are decided here against its routes."""
    path = app.current_event.path
    allowed = methods_at(path)
    if allowed:
        return method_not_allowed(path, allowed)
    return error_response(404, "route.not_found", f"no route {path}")


@app.exception_handler(ServiceError)
def service_error(error: ServiceError) -> Response[Any]:
    """Powertools' own HTTP errors (UnauthorizedError from `context.authorized`...), in our shape."""
    code = "auth.unauthorized" if error.status_code == 401 else "request.refused"
    return error_response(error.status_code, code, str(error.msg))


@app.exception_handler(BodyTooDeep)
def body_too_deep(error: BodyTooDeep) -> Response[Any]:
    return error_response(400, "request.too_deep", str(error), [{"field": "body", "reason": str(error)}])


_STATUS = (
    (NotFound, 404),
    (PaymentRequired, 402),
    (ConcurrentModification, 409),
    (Conflict, 409),
    (InvalidInput, 422),
)


@app.exception_handler(DomainError)
def domain_error(error: DomainError) -> Response[Any]:
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 422)
    fields = [{"field": error.field, "reason": error.message}] if error.field else []
    return error_response(status, error.code, error.message, fields)


@app.exception_handler(TemporaryFailure)
def temporary_failure(error: TemporaryFailure) -> Response[Any]:
    return error_response(503, TemporaryFailure.code, "storage is busy; retry shortly")


@app.exception_handler(GatewayUnavailable)
def rail_unavailable(error: GatewayUnavailable) -> Response[Any]:
    return error_response(503, "rail.unavailable", "the payment rail did not answer; retry shortly")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # billing payloads carry personal data
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    invocation()
    areas.load_for(str(event.get("path") or "/"))
    return app.resolve(event, context)


imported()
