"""The calling tenant, as the authorizer established it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from billow.domain.errors import DomainError, InvalidInput
from billow.services.context import TenantContext, keyed_ids, new_id
from billow.services.idempotency import RETENTION, bound_key, claim_key, fingerprint
from billow.services.tenants import tenant_context
from pydantic import BaseModel
from runtime import clock, store


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


@dataclass(frozen=True, slots=True)
class RequestIds:
    """The ids a create makes: random, or derived from the request's idempotency key."""

    new_id: Callable[[str], str]
    keyed: bool = False
    replay: bool = False
    """The key was claimed by an earlier request with the same body: answer as a replay."""
    request: str | None = None
    """The fingerprint the key is bound to (`request_fingerprint`), when there is a key."""


def request_fingerprint(event: APIGatewayProxyEvent, body: BaseModel | None) -> str:
    """The request an idempotency key is bound to: method, path and validated body."""
    return fingerprint(event.http_method, event.path, None if body is None else body.model_dump(mode="json"))


_KEY = re.compile(r"[\x21-\x7e]{1,255}")
"""An Idempotency-Key: 1 to 255 printable ASCII characters, no space (as Stripe takes them)."""


def _check_key(given: str) -> None:
    if not _KEY.fullmatch(given):
        raise InvalidInput(
            "Idempotency-Key is 1 to 255 printable ASCII characters (0x21-0x7E: letters, digits, "
            "punctuation; no spaces, control or non-ASCII characters), e.g. a UUID",
            field="Idempotency-Key",
            code="idempotency.key_invalid",
        )


@contextmanager
def idempotent(
    event: APIGatewayProxyEvent,
    ctx: TenantContext,
    body: BaseModel | None,
    *,
    reference: tuple[str, str] | None = None,
    header: bool = True,
    released: tuple[type[DomainError], ...] = (DomainError,),
) -> Iterator[RequestIds]:
    """Run the request under its idempotency key (`billow.services.idempotency.bound_key`): the
    `Idempotency-Key` header (unless `header` is False), or with `reference` = (scope, value) a
    body field acting as one. The ids are derived from the key when there is one. A request refused
    with an error of the `released` kinds wrote nothing and releases a key it claimed, so the
    corrected request may use it again; another refusal is the request's answer and keeps it."""
    if reference is not None:
        scope, key, field, retention = f"{ctx.mode}:{reference[0]}", reference[1], "reference", None
    else:
        given = event.headers.get("Idempotency-Key") or event.headers.get("idempotency-key") if header else None
        if not given:
            yield RequestIds(new_id)
            return
        _check_key(given)
        scope, key, field, retention = f"{ctx.mode}:Idempotency-Key", given, "Idempotency-Key", RETENTION
    request = request_fingerprint(event, body)
    claimed = claim_key(
        store, ctx.tenant_id, scope=scope, key=key, request=request, field=field, clock=clock, retention=retention
    )
    with bound_key(store, ctx.tenant_id, claimed, clock=clock, released=released):
        ids = keyed_ids(f"{ctx.tenant_id}:{claimed.claim.nonce}", key)
        yield RequestIds(ids, keyed=True, replay=claimed.seen, request=request)


def created(body: dict[str, Any], status: int, *, replay: bool) -> Response[dict[str, Any]]:
    """A create's answer. A replay answers 200 (nothing was created now) with the first result's body
    and says so in the `Idempotent-Replayed` header (as Stripe does), on every route alike."""
    headers = {"Idempotent-Replayed": "true"} if replay else None
    code = 200 if replay else status
    return Response(status_code=code, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)
