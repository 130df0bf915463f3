"""A stand-in for the dunning function (functions/dunning), for tests of the state machine alone:
each case's decisions are scripted, everything else follows the flow's contract (docs/dunning.md
"The flow"): every task returns the next decision; `park` keeps the token only while no wake came
since the decision (its `wake_seq`), otherwise resumes at once; a wake bumps `wake_seq` and resumes
the stored token. It resumes through the real gateway (`flows_from_env`), so the local moto server
sees what it would from the real function.

Routed in-process by billow.local.stepfunctions as `HANDLER`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from billow.gateways.flows import flows_from_env

HANDLER = "tests.dunning_flow_support.lambda_handler"


@dataclass
class Case:
    script: list[str]
    """The decisions to return, in order (then `wait`)."""
    wake_seq: int = 0
    token: str | None = None
    tokens: list[str] = field(default_factory=list)
    """Every token a `park` was given, in order."""
    tasks: list[str] = field(default_factory=list)
    """Every task invoked, in order."""


CASES: dict[str, Case] = {}
_LOCK = threading.Lock()


def _decision(event: dict[str, Any], case: Case) -> dict[str, Any]:
    action = case.script.pop(0) if case.script else "wait"
    return {
        "tenant_id": event["tenant_id"],
        "mode": event["mode"],
        "case_id": event["case_id"],
        "action": action,
        "due": None,
        "wake_seq": case.wake_seq,
    }


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    task = event["task"]
    resume_now: str | None = None
    with _LOCK:
        case = CASES[event["case_id"]]
        case.tasks.append(task)
        if task != "park":
            return _decision(event, case)
        case.tokens.append(event["token"])
        if event["wake_seq"] == case.wake_seq:
            case.token = event["token"]
        else:  # a wake came between the decision and the park
            resume_now = event["token"]
    if resume_now is not None:
        flows_from_env().resume(resume_now)
    return {}


def wake(case_id: str) -> bool | None:
    """What a wake does: bump `wake_seq`, take the token, resume it (None: nothing was parked)."""
    with _LOCK:
        case = CASES[case_id]
        case.wake_seq += 1
        token, case.token = case.token, None
    return None if token is None else flows_from_env().resume(token)
