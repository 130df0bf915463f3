"""Access on payment: a service kept draft until the first invoice that bills it is paid is
activated by the system when it is (docs/payments.md, "Access on payment"). Its billing period is
not moved: the first invoice billed it from the order day, and billing goes on from where that
invoice ended (from the activation day, if that is later: days without access are not charged)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billow.domain.actions import NoParams, Requester, ServiceKind, register
from billow.domain.effects import Effect, state_change
from billow.domain.errors import RuleViolation
from billow.domain.lifecycle import StateAction
from billow.domain.subscriptions import Service


@dataclass(frozen=True, slots=True)
class FirstInvoice:
    invoice_id: str | None = None
    """The first invoice of the order: paid (activation) or unpaid (a lapse)."""


def check_waiting(service: Service) -> None:
    """Only a service still waiting for its first invoice's payment is activated or lapsed by it."""
    if not service.awaiting_payment:
        raise RuleViolation(f"service {service.id} is not waiting for a payment", rule="activation.not_waiting")


class ActivateOnPayment(ServiceKind[NoParams, FirstInvoice]):
    name = "activate_on_payment"
    holds = FirstInvoice
    requesters = frozenset[Requester]()
    not_requested = "a service waiting for payment is activated when its first invoice is paid; use activate"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        check_waiting(service)
        started = state_change(service, StateAction.ACTIVATE, on)
        billed = service.billed_through
        # Paid after the days its first invoice covered (a long lapse period, a short cycle):
        # billing restarts on the day of access, as a resume does; otherwise it goes on unchanged.
        restarted = on if billed is not None and on > billed else service.restarted_on
        invoice = self.params(effect.action).invoice_id
        return replace(
            started, lapses_on=None, restarted_on=restarted
        ), f"activated: its first invoice {invoice} is paid"


ACTIVATE_ON_PAYMENT = register(ActivateOnPayment())
