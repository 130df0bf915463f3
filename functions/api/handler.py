"""The REST API: one Powertools resolver with request validation (so the OpenAPI document is
generated), routers per concern, and the one place where errors become HTTP responses."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.errors import (
    ConcurrentModification,
    Conflict,
    DomainError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RuleViolation,
    TemporaryFailure,
)
from billow.services.inputs import field_path
from runtime import logger, metrics, tracer

from api import actions, billing, catalog, contacts, orders, settings

app = APIGatewayRestResolver(enable_validation=True)


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


app.use(middlewares=[refuse_unknown_query_parameters])
app.include_router(catalog.router)
app.include_router(contacts.router)
app.include_router(orders.router)
app.include_router(billing.router)
app.include_router(settings.router)
app.include_router(actions.router)


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None, **extra: str
) -> Response[Any]:
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    if fields:
        body["fields"] = fields
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


@app.exception_handler(RequestValidationError)
def invalid_request(error: RequestValidationError) -> Response[Any]:
    fields = []
    for problem in error.errors():
        if problem.get("type") == "json_invalid":
            return error_response(
                400,
                "malformed_json",
                "the request body is not valid JSON",
                [{"field": "body", "reason": str(problem.get("msg", "invalid JSON"))}],
            )
        reason = "unknown field" if problem.get("type") == "extra_forbidden" else str(problem.get("msg"))
        fields.append({"field": field_path(tuple(problem.get("loc", ()))), "reason": reason})
    names = ", ".join(f["field"] for f in fields)
    return error_response(422, "validation_error", f"invalid request: {names}", fields)


_STATUS = ((NotFound, 404), (ConcurrentModification, 409), (Conflict, 409), (InvalidInput, 422))


@app.exception_handler(DomainError)
def domain_error(error: DomainError) -> Response[Any]:
    status = next((code for kind, code in _STATUS if isinstance(error, kind)), 422)
    fields = [{"field": error.field, "reason": error.message}] if error.field else None
    extra: dict[str, str] = {}
    if isinstance(error, IllegalTransition):
        extra = {"current_state": error.current_state, "rule": error.rule}
    elif isinstance(error, RuleViolation):
        extra = {"rule": error.rule}
    return error_response(status, error.code, error.message, fields, **extra)


@app.exception_handler(TemporaryFailure)
def temporary_failure(error: TemporaryFailure) -> Response[Any]:
    return error_response(503, "temporarily_unavailable", "storage is busy; retry shortly")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # billing payloads carry personal data
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
