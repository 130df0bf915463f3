"""Set a grace period of N days from the action's day: no deactivation but by the back office
before its end."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billow.domain.actions import Action, Asked, Days, SubscriptionKind, register
from billow.domain.effects import Effect
from billow.domain.subscriptions import Subscription


class SetGracePeriod(SubscriptionKind[Days, Days]):
    name = "set_grace_period"
    asks = holds = Days

    def check(self, asked: Asked[Days], action: Action) -> Action:
        asked.policy.check_grace(self.needed(asked.params.days, "days"))
        return action

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        until = effect.on + timedelta(days=self.params(effect.action).days or 0)
        return replace(effect.subscription, grace_until=until), f"grace period until {until}"


SET_GRACE_PERIOD = register(SetGracePeriod())
