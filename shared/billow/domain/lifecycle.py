"""The one table of what a service may do in each state, and the states subscriptions and
subscribers derive from their services (CRM.COM Subscriptions manual, "States").

Service states: Draft (ordered, not yet active), Effective (in use, billed or in trial), Not
Effective (deactivated: debt, credit limit, or expiry), Paused (at the contact's request, for a
while), Cancelled and Regretted (both final: the contact must subscribe again).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from billow.domain.errors import IllegalTransition
from billow.domain.rules import ServiceState


class StateAction(StrEnum):
    """Actions that move a service from one state to another. Other actions (change of price
    terms or quantity, auto-renew, grace period, billing day...) keep the state and have their
    own rules."""

    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    REGRET = "regret"
    RENEW = "renew"


S, A = ServiceState, StateAction

TRANSITIONS: dict[tuple[ServiceState, StateAction], ServiceState] = {
    (S.DRAFT, A.ACTIVATE): S.EFFECTIVE,
    (S.DRAFT, A.CANCEL): S.CANCELLED,
    (S.DRAFT, A.REGRET): S.REGRETTED,
    (S.EFFECTIVE, A.DEACTIVATE): S.NOT_EFFECTIVE,
    (S.EFFECTIVE, A.PAUSE): S.PAUSED,
    (S.EFFECTIVE, A.CANCEL): S.CANCELLED,
    (S.EFFECTIVE, A.REGRET): S.REGRETTED,
    (S.NOT_EFFECTIVE, A.ACTIVATE): S.EFFECTIVE,
    (S.NOT_EFFECTIVE, A.RENEW): S.EFFECTIVE,
    (S.NOT_EFFECTIVE, A.CANCEL): S.CANCELLED,
    (S.NOT_EFFECTIVE, A.REGRET): S.REGRETTED,
    (S.PAUSED, A.RESUME): S.EFFECTIVE,
    (S.PAUSED, A.DEACTIVATE): S.NOT_EFFECTIVE,
    (S.PAUSED, A.CANCEL): S.CANCELLED,
    (S.PAUSED, A.REGRET): S.REGRETTED,
}
"""(state, action) -> the state after it. A pair that is not here is illegal."""

RULES: dict[StateAction, str] = {
    A.ACTIVATE: "only draft or not effective services can be activated",
    A.DEACTIVATE: "only effective or paused services can be deactivated",
    A.PAUSE: "only effective services can be paused",
    A.RESUME: "only paused services can be resumed",
    A.CANCEL: "cancelled and regretted services are final",
    A.REGRET: "cancelled and regretted services are final",
    A.RENEW: "only expired (not effective) services can be renewed",
}

FINAL_RULE = RULES[A.CANCEL]
CHANGE_RULE = "only effective or draft services can be changed"

FINAL_STATES = frozenset({S.CANCELLED, S.REGRETTED})
ACTIVE_STATES = frozenset({S.EFFECTIVE, S.PAUSED})


def next_state(state: ServiceState, action: StateAction) -> ServiceState:
    """The state `action` moves a service in `state` to, or IllegalTransition naming both."""
    after = TRANSITIONS.get((state, action))
    if after is None:
        raise IllegalTransition(
            f"cannot {action.value} a {state.value.replace('_', ' ')} service: {RULES[action]}",
            current_state=state.value,
        )
    return after


class DerivedState(StrEnum):
    """Of a subscription, or of a subscriber across all their subscriptions."""

    ACTIVE = "active"  # at least one service effective or paused
    INACTIVE = "inactive"  # none active, but some not final (draft, not effective)
    CHURNED = "churned"  # every service cancelled or regretted


def derived_state(states: Iterable[ServiceState]) -> DerivedState:
    seen = set(states)
    if seen & ACTIVE_STATES:
        return DerivedState.ACTIVE
    if seen and seen <= FINAL_STATES:
        return DerivedState.CHURNED
    return DerivedState.INACTIVE
