"""Cancel a service: billed days after it are credited the same day, with the cancellation fee
inside the contract period. The business's contract rules may move it to the end of the cycle."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billow.domain.actions import Action, Asked, NoParams, ServiceKind, register
from billow.domain.billing import one_time_line
from billow.domain.effects import Effect, cycle_end, state_change
from billow.domain.lifecycle import StateAction
from billow.domain.lines import Adjustment
from billow.domain.policy import Timing
from billow.domain.subscriptions import Service


@dataclass(frozen=True, slots=True)
class CancelTerms:
    """What a cancellation holds: only Billow's own may waive the fee (dunning's, when the tenant's
    policy says `cancel_with_fees: false`); None or false: the usual fee."""

    fee_waived: bool | None = None


class Cancel(ServiceKind[NoParams, CancelTerms]):
    name = "cancel"
    holds = CancelTerms

    def prepare(self, asked: Asked[NoParams]) -> CancelTerms:
        return CancelTerms()

    def check(self, asked: Asked[NoParams], action: Action) -> Action:
        service, policy, on = asked.service, asked.policy, action.on
        assert service is not None
        timing = policy.cancel_in_contract if service.in_contract(on) else policy.cancel_out_of_contract
        if timing is Timing.END_OF_CYCLE:
            return replace(action, on=max(on, cycle_end(asked.subscription, on)))
        return action

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        cancelled = state_change(service, StateAction.CANCEL, on)
        settled = effect.settle(cancelled, on, credit_on=on)
        fee = service.terms.cancellation_fee
        outcome = "cancelled"
        waived = bool(self.params(effect.action).fee_waived)
        if fee is not None and not fee.is_zero and service.in_contract(on) and not waived:
            line = one_time_line(service, "cancellation_fee", f"{service.product_name} cancellation fee", fee)
            effect.add(Adjustment(line, on))
            outcome = f"cancelled inside the contract period (until {service.contract_end}): fee {fee}"
        effect.drop_pending(service.id, f"service cancelled on {on}")
        return settled, outcome


CANCEL = register(Cancel())
