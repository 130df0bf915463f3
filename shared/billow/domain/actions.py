"""Subscription actions as records (CRM.COM Subscriptions manual, "Managing Subscriptions").

Every change to a subscription or one of its services is an `Action`: requested for today
(immediate) or for a later day (scheduled), it ends executed, cancelled (while still pending) or
rejected (an illegal transition or a business rule, with the rule named). Pending actions live in
the subscription item itself, so executing one is part of the same atomic, versioned write as the
billing it affects: a schedule firing twice finds it executed already. Every action also has its
own log item, written in that same transaction (docs/lifecycle.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from billow.domain.catalog import PriceTerms

MAX_PENDING_ACTIONS = 20
"""Per subscription: keeps the subscription item small, and nobody needs more queued."""


class ActionKind(StrEnum):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    CHANGE = "change"  # service, price terms and/or quantity
    PAUSE = "pause"
    RESUME = "resume"
    REGRET = "regret"
    CANCEL = "cancel"
    RENEW = "renew"  # an expired service, for one more termed period
    EXPIRE = "expire"  # by the system, at the end of a termed period without auto-renewal
    AUTO_RENEW = "auto_renew"  # opt in or out
    EXTEND_TERM = "extend_term"
    EXTEND_TRIAL = "extend_trial"
    CHANGE_BILLING_DAY = "change_billing_day"
    SET_GRACE_PERIOD = "set_grace_period"
    CHANGE_PAYMENT_METHOD = "change_payment_method"
    BILL_AHEAD = "bill_ahead"  # bill upcoming cycles

    @property
    def on_service(self) -> bool:
        """Whether the action names one service (the others act on the whole subscription)."""
        return self not in SUBSCRIPTION_ACTIONS


SUBSCRIPTION_ACTIONS = frozenset(
    {
        ActionKind.CHANGE_BILLING_DAY,
        ActionKind.SET_GRACE_PERIOD,
        ActionKind.CHANGE_PAYMENT_METHOD,
        ActionKind.BILL_AHEAD,
    }
)


class ActionStatus(StrEnum):
    SCHEDULED = "scheduled"
    EXECUTED = "executed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Requester(StrEnum):
    BACK_OFFICE = "back_office"  # the business's staff or systems (an API key)
    CONTACT = "contact"  # the subscriber, self-service
    SYSTEM = "system"  # Billow itself: term ends, the end of a pause


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """What a change action switches a service to (any of the three may differ)."""

    product_id: str
    product_name: str
    terms: PriceTerms
    quantity: int


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    kind: ActionKind
    on: date
    """The day it takes effect: before that day's billing."""
    requested_on: date
    service_id: str | None = None
    status: ActionStatus = ActionStatus.SCHEDULED
    reason: str | None = None
    by: Requester = Requester.BACK_OFFICE
    # -- parameters (each kind uses the ones it needs) ----------------------------------------
    days: int | None = None
    """Pause length; days a term, trial or grace period is extended or set to."""
    until: date | None = None
    """Bill-ahead horizon."""
    change: ServiceChange | None = None
    upgrade: bool | None = None
    """For a change: whether it raises the recurring charge."""
    auto_renew: bool | None = None
    billing_day: int | None = None
    payment_method: str | None = None
    # -- outcome -------------------------------------------------------------------------------
    outcome: str | None = None
    """What executing it did, or why it was rejected or cancelled."""
    rule: str | None = None
    """The rule that rejected it."""
    executed_on: date | None = None
    moved_to: str | None = None
    """For a change to price terms of another cycle or billing model: the subscription the service
    moved to."""

    def executed(self, outcome: str) -> Action:
        return replace(self, status=ActionStatus.EXECUTED, outcome=outcome, executed_on=self.on)

    def rejected(self, outcome: str, rule: str) -> Action:
        return replace(self, status=ActionStatus.REJECTED, outcome=outcome, rule=rule)

    def cancelled(self, outcome: str) -> Action:
        return replace(self, status=ActionStatus.CANCELLED, outcome=outcome)
