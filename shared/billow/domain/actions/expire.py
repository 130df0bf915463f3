"""A service expires at the end of a termed period without auto-renewal: executed by the system
only (`billow.domain.timeline`), settled as a stop the same day."""

from __future__ import annotations

from dataclasses import replace

from billow.domain.actions import NoParams, Requester, ServiceKind, register
from billow.domain.effects import Effect
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service


class Expire(ServiceKind[NoParams, NoParams]):
    name = "expire"
    requesters = frozenset[Requester]()
    not_requested = "services expire by themselves at the end of their termed period"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        expired = replace(service, state=ServiceState.NOT_EFFECTIVE, state_since=on, expired=True)
        return effect.settle(expired, on, credit_on=on), "expired at the end of its termed period"


EXPIRE = register(Expire())
