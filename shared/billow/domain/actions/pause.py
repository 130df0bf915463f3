"""Pause a service, for N days (its resumption scheduled by the system) or until resumed: billed
days after it are credited on the next invoice. The business limits how often and how long."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billow.domain.actions import Action, Asked, Days, ServiceKind, register
from billow.domain.actions.resume import RESUME
from billow.domain.calendar import Period
from billow.domain.effects import Effect, cycle_end, state_change
from billow.domain.errors import InvalidInput
from billow.domain.lifecycle import StateAction
from billow.domain.subscriptions import Service


class Pause(ServiceKind[Days, Days]):
    name = "pause"
    asks = holds = Days

    def check(self, asked: Asked[Days], action: Action) -> Action:
        service, days = asked.service, asked.params.days
        assert service is not None
        if days is not None and days < 1:
            raise InvalidInput("a pause lasts at least 1 day", field="days")
        planned = [
            Period(a.on, a.on + timedelta(days=self.params(a).days or 1))
            for a in asked.subscription.actions
            if a.kind is self and a.service_id == service.id
        ]
        asked.policy.check_pause([*service.pauses, *planned], action.on, days)
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        action, on = effect.action, effect.on
        paused = state_change(service, StateAction.PAUSE, on)
        days = self.params(action).days or 0
        credit_on = cycle_end(effect.subscription, on)
        if days:
            resume_on = on + timedelta(days=days)
            # credited on the first invoice after the pause ends: the resume trims the credit of
            # days billed ahead to the paused days, before it is issued
            credit_on = cycle_end(effect.subscription, resume_on - timedelta(days=1))
            paused = replace(paused, pauses=(*service.pauses, Period(on, resume_on)))
            resume = RESUME.by_system(
                f"{action.id}-resume", resume_on, requested_on=on, reason="end of pause", service_id=service.id
            )
            effect.schedule(resume)
        settled = effect.settle(paused, on, credit_on=credit_on)
        return settled, f"paused for {days} days" if days else "paused"


PAUSE = register(Pause())
