"""The calling tenant, as the authorizer established it."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from billow.services.context import TenantContext
from billow.services.tenants import tenant_context
from runtime import store


def current_tenant(event: APIGatewayProxyEvent) -> TenantContext:
    authorizer = event.request_context.authorizer
    tenant_id = authorizer.get("tenantId")
    mode = authorizer.get("mode")
    if not tenant_id or mode not in ("test", "live"):
        # Never reached behind API Gateway (the authorizer rejects first); a guard, not the gate.
        raise UnauthorizedError("missing or invalid API key")
    return tenant_context(store, str(tenant_id), str(mode))
