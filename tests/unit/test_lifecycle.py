"""The service transition table and the states derived from it."""

from __future__ import annotations

import pytest
from billow.domain.errors import IllegalTransition
from billow.domain.lifecycle import RULES, TRANSITIONS, DerivedState, StateAction, derived_state, next_state
from billow.domain.rules import ServiceState

S, A = ServiceState, StateAction

LEGAL = [
    (S.DRAFT, A.ACTIVATE, S.EFFECTIVE),
    (S.EFFECTIVE, A.PAUSE, S.PAUSED),
    (S.PAUSED, A.RESUME, S.EFFECTIVE),
    (S.EFFECTIVE, A.DEACTIVATE, S.NOT_EFFECTIVE),
    (S.NOT_EFFECTIVE, A.ACTIVATE, S.EFFECTIVE),
    (S.NOT_EFFECTIVE, A.RENEW, S.EFFECTIVE),
    (S.EFFECTIVE, A.CANCEL, S.CANCELLED),
    (S.EFFECTIVE, A.REGRET, S.REGRETTED),
]


@pytest.mark.parametrize(("state", "action", "after"), LEGAL)
def test_legal_transitions(state: ServiceState, action: StateAction, after: ServiceState) -> None:
    assert next_state(state, action) is after


@pytest.mark.parametrize("state", list(ServiceState))
@pytest.mark.parametrize("action", list(StateAction))
def test_every_other_pair_is_refused_naming_the_state_and_the_rule(state: ServiceState, action: StateAction) -> None:
    if (state, action) in TRANSITIONS:
        return
    with pytest.raises(IllegalTransition) as refused:
        next_state(state, action)
    assert refused.value.current_state == state.value
    assert refused.value.code == refused.value.rule == "lifecycle.illegal_transition"
    assert RULES[action] in refused.value.message
    assert state.value.replace("_", " ") in refused.value.message


def test_cancelled_and_regretted_services_are_final() -> None:
    assert not any(state in (S.CANCELLED, S.REGRETTED) for state, _ in TRANSITIONS)


@pytest.mark.parametrize(
    ("states", "derived"),
    [
        ([S.EFFECTIVE, S.CANCELLED], DerivedState.ACTIVE),
        ([S.PAUSED], DerivedState.ACTIVE),
        ([S.DRAFT, S.NOT_EFFECTIVE], DerivedState.INACTIVE),
        ([S.NOT_EFFECTIVE, S.CANCELLED], DerivedState.INACTIVE),
        ([S.CANCELLED, S.REGRETTED], DerivedState.CHURNED),
        ([], DerivedState.INACTIVE),
    ],
)
def test_subscription_and_subscriber_states_derive_from_their_services(
    states: list[ServiceState], derived: DerivedState
) -> None:
    assert derived_state(states) is derived


def test_an_illegal_transition_is_answered_409_in_the_error_shape_naming_the_state() -> None:
    from api.handler import domain_error

    try:
        next_state(S.PAUSED, A.PAUSE)
    except IllegalTransition as error:
        response = domain_error(error)
    assert response.status_code == 409
    assert response.body == {
        "error": "lifecycle.illegal_transition",
        "message": "cannot pause a paused service: only effective services can be paused",
        "fields": [
            {"field": "action", "reason": "cannot pause a paused service: only effective services can be paused"}
        ],
    }
