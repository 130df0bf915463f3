"""What executing one action changes, gathered before one new subscription is built
(`billow.domain.timeline.execute`), and the helpers the kinds of action share for it
(`billow.domain.actions`).

What each action does to billing (docs/lifecycle.md):
- stopping a service (pause, deactivate, cancel, regret, expire, change) settles it at the day:
  days already invoiced past it are credited, unbilled days before it are charged (`Effect.settle`);
- starting it again (resume, activate, renew, change) restarts billing from that day, as if it had
  just joined mid-period (prorated, no first-piece rules: `Effect.restart`); days already
  invoiced past that day (billed ahead) are not invoiced again: a restart trims the stop's pending
  credit to the stopped days, and a change charges its new terms for them beside their credit.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from billow.domain.actions import Action, ActionKind
from billow.domain.billing import bring_forward, restart, settle
from billow.domain.errors import IllegalTransition, RuleViolation
from billow.domain.lifecycle import FINAL_RULE, FINAL_STATES, StateAction, next_state
from billow.domain.lines import Adjustment
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service, Subscription, SubscriptionKey


def cycle_end(subscription: Subscription, day: date) -> date:
    """The first day of the billing cycle after the one `day` is in: "at the end of the cycle",
    and the day of the next invoice, where prorations go."""
    return subscription.schedule.period_containing(day).end


class Effect:
    """What executing an action changes, gathered before one new subscription is built."""

    def __init__(self, subscription: Subscription, action: Action) -> None:
        self.subscription = subscription
        self.action = action
        self.adjustments = subscription.adjustments  # pending: settling and restarting change them
        self.logged: list[Action] = []  # actions the execution schedules or cancels
        self.pending = [a for a in subscription.actions if a.id != action.id]
        self.moving: tuple[Service, SubscriptionKey] | None = None
        self.moved: list[Action] = []

    @property
    def on(self) -> date:
        return self.action.on

    def settle(self, service: Service, on: date, *, credit_on: date) -> Service:
        """Settle `service` (already in its new state) at `on`; a service still billable is one
        whose old billing ends (a change, a new billing day), credited as a cancellation is."""
        rules = self.subscription.rules
        before = self.subscription.service(service.id)
        billable = before is not None and rules.is_billable(before.state, service.billable_states)
        still_billable = rules.is_billable(service.state, service.billable_states)
        if before is not None and before.state is not service.state and still_billable:
            return service  # the business bills the new state too: billing goes on
        after = ServiceState.CANCELLED if still_billable else service.state
        creditable = rules.is_creditable(after, service.non_creditable_states)
        settled, self.adjustments = settle(
            service, self.pending_subscription(), on, credit_on=credit_on, credit=creditable, charge=billable
        )
        # Credits an earlier action left waiting for a later invoice (a change, a new billing day)
        # are due no later than this stop's: a cancellation credits them the same day.
        self.adjustments = bring_forward(self.adjustments, service.id, credit_on)
        return replace(settled, stopped_on=on, billed_at_stop=service.billed_through) if billable else settled

    def restart(self, service: Service, on: date) -> Service:
        """Billing starts again on `on`, if an action had stopped it; a credit of days billed
        ahead that is still pending is trimmed to the days it was stopped (`billing.restart`)."""
        if service.stopped_on is None:
            return service
        restarted, self.adjustments = restart(service, self.pending_subscription(), on)
        return restarted

    def pending_subscription(self) -> Subscription:
        """The subscription as the action found it, with the adjustments pending so far."""
        return replace(self.subscription, adjustments=self.adjustments)

    def add(self, *adjustments: Adjustment) -> None:
        self.adjustments = (*self.adjustments, *adjustments)

    def move(self, service: Service, key: SubscriptionKey) -> None:
        """The service leaves for the subscription of `key`; its pending actions go with it."""
        self.moving = (service, key)
        self.moved = [a for a in self.pending if a.service_id == service.id]
        self.drop_pending(service.id, "moved with the service to another subscription")

    def schedule(self, action: Action) -> None:
        self.pending.append(action)
        self.logged.append(action)

    def drop_pending(self, service_id: str, outcome: str, kinds: frozenset[ActionKind[Any, Any]] | None = None) -> None:
        keep = []
        for pending in self.pending:
            if pending.service_id == service_id and (kinds is None or pending.kind in kinds):
                self.logged.append(pending.cancelled(outcome))
            else:
                keep.append(pending)
        self.pending = keep


def state_change(service: Service, action: StateAction, on: date) -> Service:
    return replace(service, state=next_state(service.state, action), state_since=on)


def not_final(service: Service, kind: ActionKind[Any, Any]) -> None:
    if service.state in FINAL_STATES:
        raise IllegalTransition(
            f"cannot {kind.words} a {service.state.value} service: {FINAL_RULE}",
            current_state=service.state.value,
        )


def termed(service: Service) -> int:
    cycles = service.terms.term_cycles
    if cycles is None:
        raise RuleViolation(f"service {service.id} has no termed period", rule="term.not_termed")
    return cycles
