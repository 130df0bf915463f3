"""Bill upcoming cycles now: the next N billing dates, or every one up to a day. The action
holds the as-of day billing ahead bills up to; repeating it the same day bills nothing more."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from billow.domain.actions import Action, Asked, SubscriptionKind, register
from billow.domain.effects import Effect
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.lifecycle import FINAL_STATES
from billow.domain.subscriptions import Subscription

MAX_CYCLES_AHEAD = 36
MAX_DAYS_AHEAD = 3 * 366


@dataclass(frozen=True, slots=True)
class AheadAsked:
    cycles: int | None = None
    until: date | None = None


@dataclass(frozen=True, slots=True)
class Ahead:
    until: date | None = None
    """The bill-ahead horizon (set by the checks)."""


class BillAhead(SubscriptionKind[AheadAsked, Ahead]):
    name = "bill_ahead"
    asks = AheadAsked
    holds = Ahead

    def prepare(self, asked: Asked[AheadAsked]) -> Ahead:
        return Ahead()

    def check(self, asked: Asked[AheadAsked], action: Action) -> Action:
        """The as-of date billing ahead bills up to: the next `cycles` billing dates or `until`."""
        cycles, until, on = asked.params.cycles, asked.params.until, action.on
        subscription = asked.subscription
        if (cycles is None) == (until is None):
            raise InvalidInput("give either cycles or until", field="cycles")
        if cycles is not None:
            if not 1 <= cycles <= MAX_CYCLES_AHEAD:
                raise InvalidInput(f"cycles is 1 to {MAX_CYCLES_AHEAD}", field="cycles")
            schedule = subscription.schedule
            horizon = schedule.billing_date(schedule.index_of(on) + cycles)
        else:
            assert until is not None
            if not on < until <= on + timedelta(days=MAX_DAYS_AHEAD):
                raise InvalidInput(f"until is after {on} and at most {MAX_DAYS_AHEAD} days ahead", field="until")
            horizon = until
        # The run invoices a charge `bill_days_before` days ahead of its billing date: undo that here.
        ahead = max(horizon - timedelta(days=subscription.rules.bill_days_before), on)
        return replace(action, params=Ahead(ahead))

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        until = self.params(effect.action).until
        assert until is not None
        subscription = effect.subscription
        if subscription.services and all(service.state in FINAL_STATES for service in subscription.services):
            raise RuleViolation(
                f"subscription {subscription.id} has no service left to bill (cancelled or regretted)",
                rule="bill_ahead.nothing_billable",
            )
        before = subscription.bill_ahead_until
        if before is not None and until <= before:  # nothing more to bill ahead than already
            return subscription, f"billing ahead up to {until}"
        on = effect.action.on
        # A service moving in on an earlier day (a move another subscription ran late) is billed
        # ahead by the steps in force that day: keep a year of them.
        kept = tuple(step for step in subscription.bill_ahead_steps if step[1] > on - timedelta(days=366))
        updated = replace(subscription, bill_ahead_until=until, bill_ahead_steps=(*kept, (on, until)))
        return updated, f"billing ahead up to {until}"


BILL_AHEAD = register(BillAhead())
