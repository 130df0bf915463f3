"""Resume a paused service: billing restarts that day. The end of a pause of N days is one,
scheduled by the system; resuming by hand cancels it."""

from __future__ import annotations

from billow.domain.actions import NoParams, ServiceKind, register
from billow.domain.effects import Effect, state_change
from billow.domain.lifecycle import StateAction
from billow.domain.subscriptions import Service


class Resume(ServiceKind[NoParams, NoParams]):
    name = "resume"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        resumed = effect.restart(state_change(service, StateAction.RESUME, on), on)
        effect.drop_pending(service.id, f"service resumed on {on}", frozenset({self}))
        return resumed, "resumed; billing restarts"


RESUME = register(Resume())
