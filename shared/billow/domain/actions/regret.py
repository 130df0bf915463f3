"""Regret a service inside the regret period: everything charged since it started is credited
the same day, its setup fee included."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billow.domain.actions import Action, Asked, NoParams, ServiceKind, register
from billow.domain.billing import one_time_line
from billow.domain.effects import Effect, state_change
from billow.domain.errors import RuleViolation
from billow.domain.lifecycle import StateAction
from billow.domain.lines import Adjustment
from billow.domain.subscriptions import Service


class Regret(ServiceKind[NoParams, NoParams]):
    name = "regret"

    def check(self, asked: Asked[NoParams], action: Action) -> Action:
        service, policy = asked.service, asked.policy
        assert service is not None
        last = service.start_date + timedelta(days=policy.regret_days)
        if action.on > last:
            raise RuleViolation(
                f"the regret period ended on {last} ({policy.regret_days} days from the service's start on "
                f"{service.start_date}); cancel the service instead",
                rule="regret.period",
            )
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        start = service.charged_from
        regretted = replace(state_change(service, StateAction.REGRET, on), end_date=start)
        had_invoice = service.billed_through is not None
        settled = effect.settle(regretted, start, credit_on=on)
        fee = service.terms.setup_fee
        if had_invoice and fee is not None and not fee.is_zero:
            line = one_time_line(service, "credit", f"{service.product_name} setup fee credited", -fee)
            effect.add(Adjustment(line, on))
        effect.drop_pending(service.id, f"service regretted on {on}")
        return settled, "regretted: everything charged since it started is credited"


REGRET = register(Regret())
