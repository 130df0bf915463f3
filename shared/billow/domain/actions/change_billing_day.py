"""Change the billing day (anniversary billing only): the current cycle is settled to the day of
the change, and the new cycle billed from it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from billow.domain.actions import Action, Asked, SubscriptionKind, register
from billow.domain.calendar import BillingSchedule, Cycle, day_on_or_after
from billow.domain.effects import Effect
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.lifecycle import FINAL_STATES
from billow.domain.rules import CalendarMode, ServiceState
from billow.domain.subscriptions import Service, Subscription


@dataclass(frozen=True, slots=True)
class NewBillingDay:
    billing_day: int | None = None


class ChangeBillingDay(SubscriptionKind[NewBillingDay, NewBillingDay]):
    name = "change_billing_day"
    asks = holds = NewBillingDay

    def check(self, asked: Asked[NewBillingDay], action: Action) -> Action:
        day = self.needed(asked.params.billing_day, "billing_day")
        top = 6 if asked.subscription.cycle is Cycle.WEEK else 31
        if not 0 <= day <= top or (top == 31 and day == 0):
            raise InvalidInput(
                "billing_day is a weekday 0-6 for weekly cycles, else a day of month 1-31", field="billing_day"
            )
        return action

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        subscription, on = effect.subscription, effect.on
        if subscription.rules.calendar is not CalendarMode.ANNIVERSARY:
            raise RuleViolation(
                "the billing day changes only under anniversary billing", rule="billing_day.anniversary"
            )
        day = self.params(effect.action).billing_day
        assert day is not None
        if day == subscription.schedule.billing_day:
            raise RuleViolation(f"the billing day is {day} already", rule="billing_day.unchanged")
        if any(_usage_to_bill(s) for s in subscription.services):
            # Usage records are kept by the billing period they fell in: new periods would not find
            # the records of the open one (docs/billing.md, "Usage records").
            raise RuleViolation(
                "a subscription with metered services keeps its billing day", rule="billing_day.metered"
            )
        cycle = subscription.cycle
        schedule = BillingSchedule(cycle, day, day_on_or_after(on, cycle, day))
        # The credit goes on the invoice that charges the new cycle's first days: today's, when
        # today is the new billing day or that invoice is billed ahead (it goes out today).
        next_invoice = schedule.next_on_or_after(on)
        lead = timedelta(days=subscription.rules.bill_days_before)
        if subscription.bill_ahead_until is not None and next_invoice - lead <= subscription.bill_ahead_until:
            next_invoice = on
        services = []
        for service in subscription.services:
            if service.state in FINAL_STATES or service.in_trial(on) or service.state is ServiceState.DRAFT:
                services.append(service)
                continue
            settled = effect.settle(service, on, credit_on=next_invoice)
            restarted = replace(settled, restarted_on=on, billed_at_stop=None)
            services.append(restarted if settled.billed_through is not None else settled)
        moved = replace(subscription, schedule=schedule, services=tuple(services))
        return moved, f"billing day {day} from {on}; the current cycle is settled to {on}"


CHANGE_BILLING_DAY = register(ChangeBillingDay())


def _usage_to_bill(service: Service) -> bool:
    """Whether a metered service may still have usage to bill: it runs, or it ended and its usage
    is not yet invoiced through its end."""
    if not service.meters_usage:
        return False
    if service.terms.meter is None:  # metered before a change: until its metered days are invoiced
        until = service.usage_end(None)
        return service.usage_billed_through is None or until is None or service.usage_billed_through < until
    if service.state not in FINAL_STATES:
        return True
    end = service.end_date or service.state_since
    return service.usage_billed_through is None or end is None or service.usage_billed_through < end
