"""Postpone the end of a service's termed period by N days."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billow.domain.actions import MAX_DAYS_SCHEDULED, Action, Asked, Days, ServiceKind, register
from billow.domain.effects import Effect, not_final, termed
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.subscriptions import Service


class ExtendTerm(ServiceKind[Days, Days]):
    name = "extend_term"
    asks = holds = Days

    def check(self, asked: Asked[Days], action: Action) -> Action:
        if not 1 <= self.needed(asked.params.days, "days") <= MAX_DAYS_SCHEDULED:
            raise InvalidInput(f"days is 1 to {MAX_DAYS_SCHEDULED}", field="days")
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        not_final(service, self)
        termed(service)
        if service.term_end is None or service.expired:
            raise RuleViolation("an expired term is renewed, not extended", rule="extend_term.not_expired")
        term_end = service.term_end + timedelta(days=self.params(effect.action).days or 0)
        return replace(service, term_end=term_end), f"termed period extended to {term_end}"


EXTEND_TERM = register(ExtendTerm())
