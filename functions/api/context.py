"""The calling tenant, as the authorizer established it."""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from billow.domain.errors import InvalidInput
from billow.services.context import TenantContext, keyed_ids, new_id
from billow.services.tenants import tenant_context
from runtime import store


def authorized(event: APIGatewayProxyEvent) -> tuple[str, str]:
    """(tenant id, key mode) as the authorizer established them."""
    authorizer = event.request_context.authorizer
    tenant_id = authorizer.get("tenantId")
    mode = authorizer.get("mode")
    if not tenant_id or mode not in ("test", "live"):
        # Never reached behind API Gateway (the authorizer rejects first); a guard, not the gate.
        raise UnauthorizedError("missing or invalid API key")
    return str(tenant_id), str(mode)


def current_tenant(event: APIGatewayProxyEvent) -> TenantContext:
    """The calling tenant with its settings (one read)."""
    return tenant_context(store, *authorized(event))


def ids_for_request(event: APIGatewayProxyEvent, ctx: TenantContext, route: str) -> Callable[[str], str]:
    """Random ids, or ids derived from the `Idempotency-Key` header so a retried create is a no-op."""
    key = event.headers.get("Idempotency-Key") or event.headers.get("idempotency-key")
    if not key:
        return new_id
    if len(key) > 255:
        raise InvalidInput("Idempotency-Key is at most 255 characters", field="Idempotency-Key")
    return keyed_ids(f"{ctx.tenant_id}:{route}", key)
