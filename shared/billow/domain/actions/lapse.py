"""Access on payment: a service kept draft whose first invoice is still unpaid on the day its
order lapses is cancelled by the system (docs/payments.md, "Access on payment").

Cancelled, not regretted nor not effective: it never came into effect, so nothing can be resumed
or reactivated (a payment after the lapse never brings it back: the contact orders again), and
nothing is credited (regret's full credit note) because the invoice that billed it is voided in
the same write. It had no billable days: it ends on its start date, billed through nothing."""

from __future__ import annotations

from dataclasses import replace

from billow.domain.actions import NoParams, Requester, ServiceKind, register
from billow.domain.actions.activate_on_payment import FirstInvoice, check_waiting
from billow.domain.effects import Effect, state_change
from billow.domain.lifecycle import StateAction
from billow.domain.subscriptions import Service


class Lapse(ServiceKind[NoParams, FirstInvoice]):
    name = "lapse"
    holds = FirstInvoice
    requesters = frozenset[Requester]()
    not_requested = "an order lapses by itself when its first invoice stays unpaid; use cancel"

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        on = effect.on
        check_waiting(service)
        cancelled = state_change(service, StateAction.CANCEL, on)
        effect.drop_pending(service.id, f"its order lapsed unpaid on {on}")
        invoice = self.params(effect.action).invoice_id
        lapsed = replace(cancelled, lapses_on=None, billed_through=None, end_date=service.start_date)
        return lapsed, f"lapsed: its first invoice {invoice} was not paid by {on}"


LAPSE = register(Lapse())
