"""Renew a service for one more termed period: by the system at the end of a term with
auto-renewal, or by request once it has expired (billing restarts that day)."""

from __future__ import annotations

from dataclasses import replace

from billow.domain.actions import NoParams, Requester, ServiceKind, register
from billow.domain.calendar import add_cycles
from billow.domain.effects import Effect, state_change, termed
from billow.domain.errors import RuleViolation
from billow.domain.lifecycle import StateAction, next_state
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service


class Renew(ServiceKind[NoParams, NoParams]):
    name = "renew"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on, cycle = effect.on, effect.subscription.cycle
        if effect.action.by is Requester.SYSTEM and service.state is not ServiceState.NOT_EFFECTIVE:
            term_end = add_cycles(service.term_end or on, cycle, termed(service))
            return replace(service, term_end=term_end), f"renewed automatically until {term_end}"
        if not service.expired:
            _ = next_state(service.state, StateAction.RENEW)  # refuses the states it must
            raise RuleViolation(f"service {service.id} has not expired; activate it instead", rule="renew.expired_only")
        term_end = add_cycles(on, cycle, termed(service))
        renewed = state_change(service, StateAction.RENEW, on)
        renewed = replace(effect.restart(renewed, on), term_end=term_end, expired=False)
        return renewed, f"renewed until {term_end}"


RENEW = register(Renew())
