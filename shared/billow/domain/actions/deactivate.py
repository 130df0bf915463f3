"""Deactivate a service: billed days after it are credited on the next invoice. Inside the
subscription's grace period only the back office may."""

from __future__ import annotations

from billow.domain.actions import NoParams, Requester, ServiceKind, register
from billow.domain.effects import Effect, cycle_end, state_change
from billow.domain.errors import RuleViolation
from billow.domain.lifecycle import StateAction
from billow.domain.subscriptions import Service


class Deactivate(ServiceKind[NoParams, NoParams]):
    name = "deactivate"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on, subscription = effect.on, effect.subscription
        grace = subscription.grace_until
        if grace is not None and on < grace and effect.action.by is not Requester.BACK_OFFICE:
            raise RuleViolation(
                f"the subscription is in a grace period until {grace}", rule="deactivation.grace_period"
            )
        stopped = state_change(service, StateAction.DEACTIVATE, on)
        return effect.settle(stopped, on, credit_on=cycle_end(subscription, on)), "deactivated"


DEACTIVATE = register(Deactivate())
