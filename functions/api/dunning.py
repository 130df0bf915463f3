"""Dunning case routes (docs/dunning.md, "The case over the API"): a contact's cases, one case, and
an operator's pause, resume and end, each idempotent (repeating it answers the case as it stands)."""

from __future__ import annotations

from typing import Annotated, Any

import runtime
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.services import dunning_cases
from billow.services.dunning_cases import OperatorStep
from pydantic import Field
from runtime import clock, store

from api import presenters
from api.context import current_tenant
from api.schemas import Body, Id, Reason

router = APIGatewayRouter()


class CaseStepBody(Body):
    """No field is required: an empty object (or no body at all) does."""

    reason: Reason | None = Field(default=None, description="why (kept as the step's outcome in the case's history)")


@router.get(
    "/contacts/<contact_id>/dunning-cases", summary="The contact's dunning cases, every currency's, newest first"
)
def contact_dunning_cases(contact_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    excluded, cases = dunning_cases.cases_of(store, ctx, contact_id)
    return {"contact_id": contact_id, "items": [presenters.dunning_case(c, excluded=excluded) for c in cases]}


@router.get(
    "/dunning-cases/<case_id>",
    summary="A dunning case: its status, last step, next decision day, policy, history and what it owes now",
)
def get_dunning_case(case_id: Annotated[Id, Path()]) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    stored = dunning_cases.get_case(store, ctx, case_id)
    return presenters.case_now(stored, dunning_cases.case_now(store, ctx, stored, clock))


def _operate(case_id: str, step: OperatorStep, body: CaseStepBody | None) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    reason = None if body is None else body.reason
    stored = dunning_cases.operate(store, lambda: runtime.flows, ctx, case_id, step, reason, clock)
    return presenters.case_now(stored, dunning_cases.case_now(store, ctx, stored, clock))


@router.post(
    "/dunning-cases/<case_id>/pause",
    summary="Pause a dunning case: no retry, reminder, deactivation or cancellation until resumed (it still "
    "ends once nothing is owed); pausing a paused case answers it",
)
def pause_dunning_case(case_id: Annotated[Id, Path()], body: CaseStepBody | None = None) -> dict[str, Any]:
    return _operate(case_id, OperatorStep.PAUSE, body)


@router.post(
    "/dunning-cases/<case_id>/resume",
    summary="Resume a paused dunning case: what fell due meanwhile is decided at once; resuming a case not "
    "paused answers it",
)
def resume_dunning_case(case_id: Annotated[Id, Path()], body: CaseStepBody | None = None) -> dict[str, Any]:
    return _operate(case_id, OperatorStep.RESUME, body)


@router.post(
    "/dunning-cases/<case_id>/end",
    summary="End a dunning case without payment: it stops chasing and reactivates nothing (services it "
    "deactivated stay so until reactivated by hand); ending an ended case answers it",
)
def end_dunning_case(case_id: Annotated[Id, Path()], body: CaseStepBody | None = None) -> dict[str, Any]:
    return _operate(case_id, OperatorStep.END, body)
