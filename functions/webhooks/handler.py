"""Stripe's webhooks: `POST /webhooks/stripe/{tenant_id}`, outside the API-key authorizer (Stripe
signs each delivery instead), on a function and role of its own. Receiving is
`billow.services.webhooks.receive`; this maps its outcomes to HTTP in the one error shape:
2xx when the event is applied, a duplicate, or ignored (Stripe stops); 400 when it is refused (bad
signature, stale, not an event); 409/503 when it must be delivered again later."""

from __future__ import annotations

import gc

gc.disable()  # no collection while the function's code is imported: see runtime.imported

from typing import Any

import runtime
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from billow.domain.errors import Conflict, TemporaryFailure, error_body
from billow.gateways.stripe_webhooks import StripeWebhooks
from billow.services import webhooks
from billow.services.context import Scope
from billow.services.gateway import PaymentGateway, WebhookRejected
from runtime import clock, imported, invocation, logger, store

app = APIGatewayRestResolver()
MAX_TENANT_ID = 200


def stripe_gateway(scope: Scope) -> PaymentGateway:
    """The rail the tenant's mode is charged on (`runtime.payment_gateway`, as the collector's): a
    verified event for a tenant with no account on it is retried once one is configured."""
    gateway = runtime.payment_gateway(scope)
    if gateway is None:
        raise TemporaryFailure(f"no Stripe account configured for {scope.tenant_id} ({scope.mode})")
    return gateway


def ports() -> webhooks.WebhookPorts:
    """Built at the first delivery, not at import: the secrets source is chosen by then."""
    return webhooks.WebhookPorts(
        events=store, store=store, secrets=runtime.secrets, verifier=StripeWebhooks(), gateway_for=stripe_gateway
    )


def refused(status: int, message: str, *, code: str) -> Response[Any]:
    return Response(status, content_types.APPLICATION_JSON, error_body(code, message))


def log(message: str, extra: dict[str, Any]) -> None:
    logger.warning(message, extra=extra)


@app.post("/webhooks/stripe/<tenant_id>")
def stripe_webhook(tenant_id: str) -> Response[Any]:
    if len(tenant_id) > MAX_TENANT_ID:
        message = "the Stripe-Signature does not verify with this endpoint's secret"
        return refused(400, message, code="webhook.bad_signature")
    event = app.current_event
    payload = (event.decoded_body or "").encode("utf-8")
    signature = event.headers.get("Stripe-Signature") or event.headers.get("stripe-signature")
    receipt = webhooks.receive(ports(), "stripe", tenant_id, payload, signature, now=clock.now(), log=log)
    logger.info("webhook received", extra={"event_id": receipt.event_id, "outcome": receipt.outcome.value})
    body = {"received": True, "event": receipt.event_id, "outcome": receipt.outcome.value, "reason": receipt.reason}
    return Response(200, content_types.APPLICATION_JSON, body)


@app.exception_handler(WebhookRejected)
def rejected(error: WebhookRejected) -> Response[Any]:
    return refused(400, str(error), code=error.code)


@app.exception_handler(Conflict)
def in_progress(error: Conflict) -> Response[Any]:
    return refused(409, error.message, code=error.code)


@app.exception_handler(TemporaryFailure)
def retry_later(error: TemporaryFailure) -> Response[Any]:
    return refused(503, str(error), code="webhook.retry_later")


@app.not_found
def no_route(_: NotFoundError) -> Response[Any]:
    return refused(404, f"no route {app.current_event.http_method} {app.current_event.path}", code="route.not_found")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    invocation()
    return app.resolve(event, context)


imported()
