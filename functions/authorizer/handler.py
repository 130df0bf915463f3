"""API Gateway REQUEST authorizer: a per-tenant API key in the `Authorization: Bearer` header (or
`x-api-key`) resolves to its tenant, which the API handler reads from the authorizer context.
The local stack calls this same handler before every request."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.services.tenants import authenticate
from runtime import logger, store


def presented_secret(headers: dict[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    auth = lowered.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return lowered.get("x-api-key")


@logger.inject_lambda_context
@event_source(data_class=APIGatewayAuthorizerRequestEvent)
def lambda_handler(event: APIGatewayAuthorizerRequestEvent, context: LambdaContext) -> dict[str, Any]:
    arn = event.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id="anonymous",
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
    )
    key = authenticate(store, presented_secret(event.headers))
    if key is None:
        # API Gateway answers 401 on the literal "Unauthorized"; anything else would be a 500.
        raise Exception("Unauthorized")
    policy.principal_id = f"{key.tenant_id}:{key.name}"
    policy.context = {"tenantId": key.tenant_id, "mode": key.mode}
    policy.allow_all_routes()
    return policy.asdict()
