"""Activate a draft or not-effective service: a draft starts (from that day, if earlier than its
start), a deactivated one restarts billing. Activation rules: no debt above the business's
threshold in its currency, and the contact's credit limit in each currency kept (what it owes is
net of its unused credit: `billow.domain.receivables.net_owed`)."""

from __future__ import annotations

from dataclasses import replace

from billow.domain.actions import Action, Asked, NoParams, ServiceKind, register
from billow.domain.effects import Effect, state_change
from billow.domain.errors import RuleViolation
from billow.domain.lifecycle import StateAction
from billow.domain.money import Money
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service


class Activate(ServiceKind[NoParams, NoParams]):
    name = "activate"

    def admit(self, asked: Asked[NoParams], action: Action) -> None:
        owed = asked.lookups.owed()
        policy = asked.policy
        for currency, amount in sorted(owed.items()):
            allowed = policy.debt_allowed(currency)
            if amount > allowed:
                raise RuleViolation(
                    f"the contact owes {amount}, above the {allowed} the business allows"
                    + ("" if currency in policy.debt_threshold else f" (no debt_threshold for {currency}: no debt)"),
                    rule="activation.debt_threshold",
                )
        for currency, limit in sorted(asked.lookups.contact().credit_limit.items()):
            if owed.get(currency, Money.zero(currency)) > limit:
                raise RuleViolation(
                    f"the contact owes {owed[currency]}, more than its credit limit of {limit}",
                    rule="activation.credit_limit",
                )

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        if service.expired:
            raise RuleViolation(
                f"service {service.id} expired at the end of its termed period; renew it instead",
                rule="activation.not_expired",
            )
        if service.state is ServiceState.DRAFT:
            started = state_change(service, StateAction.ACTIVATE, on)
            # Activated by hand before its first invoice was paid: no longer waiting for it.
            return replace(started, start_date=min(on, service.start_date), lapses_on=None), "activated"
        return effect.restart(state_change(service, StateAction.ACTIVATE, on), on), "activated; billing restarts"


ACTIVATE = register(Activate())
