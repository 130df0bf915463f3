"""Extend a service's trial by N days: by the back office, once, where the business allows it;
its termed and contract periods move with it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billow.domain.actions import Action, Asked, Days, Requester, ServiceKind, register
from billow.domain.effects import Effect, not_final
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.subscriptions import Service


class ExtendTrial(ServiceKind[Days, Days]):
    name = "extend_trial"
    asks = holds = Days

    def check(self, asked: Asked[Days], action: Action) -> Action:
        policy = asked.policy
        if asked.by is not Requester.BACK_OFFICE or not policy.trial_extension:
            raise RuleViolation(
                "only back-office users extend trials, where the business allows it", rule="trial.extension"
            )
        if not 1 <= self.needed(asked.params.days, "days") <= policy.max_trial_extension_days:
            raise InvalidInput(f"days is 1 to {policy.max_trial_extension_days}", field="days")
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        not_final(service, self)
        if not service.in_trial(effect.on):
            raise RuleViolation(f"service {service.id} is not in its trial", rule="trial.extend_in_trial")
        if service.trial_extended:
            raise RuleViolation("a trial can be extended only once", rule="trial.extend_once")
        if service.billed_through is not None:
            raise RuleViolation("the first charge after the trial is invoiced already", rule="trial.extend_in_trial")
        shift = timedelta(days=self.params(effect.action).days or 0)
        trial_end = service.billing_start + shift
        return replace(
            service,
            trial_ends_on=trial_end,
            trial_extended=True,
            term_end=service.term_end + shift if service.term_end else None,
            contract_end=service.contract_end + shift if service.contract_end else None,
        ), f"trial extended to {trial_end}"


EXTEND_TRIAL = register(ExtendTrial())
