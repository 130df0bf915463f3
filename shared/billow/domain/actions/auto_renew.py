"""Opt a termed service in or out of auto-renewal at the end of its term."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billow.domain.actions import Action, Asked, ServiceKind, register
from billow.domain.effects import Effect, not_final, termed
from billow.domain.subscriptions import Service


@dataclass(frozen=True, slots=True)
class AutoRenew:
    auto_renew: bool | None = None


class AutoRenewKind(ServiceKind[AutoRenew, AutoRenew]):
    name = "auto_renew"
    asks = holds = AutoRenew

    def check(self, asked: Asked[AutoRenew], action: Action) -> Action:
        self.needed(asked.params.auto_renew, "auto_renew")
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        not_final(service, self)
        termed(service)
        opt = bool(self.params(effect.action).auto_renew)
        return replace(service, auto_renew=opt), "auto-renewal on" if opt else "auto-renewal off"


AUTO_RENEW = register(AutoRenewKind())
