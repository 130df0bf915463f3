"""Subscription actions: request one (now or scheduled), cancel or reschedule a pending one, read
the log, and preview what an action does to the next invoices.

What each kind of action asks for, checks and does is its own module of `billow.domain.actions`;
this module runs any of them. A request is checked in three layers, and a refusal in any of them
is logged (status rejected, with the rule) and answered with a 4xx naming the rule (its code):
0. the transition table first: an action the service's state forbids on its day is an illegal
   transition, whatever else applies;
1. the business's subscription policy (reasons, regret period, pause and grace limits, tier paths,
   activation rules), some of which move the date instead of refusing (a cancellation inside the
   contract period, a downgrade: at the end of the cycle);
2. the transition table and the action's own rules, by executing it on a copy of the subscription
   as it will be on that day (`billow.domain.timeline`);
3. the write itself, conditioned on the subscription's version.
An immediate action then runs like a scheduled one whose day has come: billing due before it,
the action, then what is due today (a credit note for a cancellation or regret).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, NoReturn

from billow.domain.actions import (
    MAX_DAYS_SCHEDULED,
    MAX_PENDING_ACTIONS,
    Action,
    ActionKind,
    ActionStatus,
    Asked,
    Requester,
)
from billow.domain.billing import BillingStep, InvoiceDraft
from billow.domain.catalog import Product
from billow.domain.contacts import Contact
from billow.domain.errors import (
    ConcurrentModification,
    Conflict,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RuleViolation,
    refusal_for,
)
from billow.domain.invoices import Invoice
from billow.domain.money import Money
from billow.domain.receivables import net_owed
from billow.domain.subscriptions import Service, Subscription, Transfer
from billow.domain.timeline import receive, receiving_subscription, steps, upcoming_invoices
from billow.services.billing import InvoiceNumbers, bill_loaded, commit_step, subscription_by_id, subscription_for
from billow.services.contacts import contact_today, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.ports import Page, Store
from billow.services.usage.rating import StoredUsage

MAX_CONFLICT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ActionRequest:
    kind: ActionKind[Any, Any]
    service_id: str | None = None
    on: date | None = None
    """The day it takes effect; with `in_days`, that many days from today; neither: today."""
    in_days: int | None = None
    reason: str | None = None
    by: Requester = Requester.BACK_OFFICE
    """Who asks: Billow itself (`Requester.SYSTEM`) for a system action, such as one a rule of its
    own triggers, named in its parameters."""
    params: object = None
    """What the kind asks for (`kind.asks`; None: nothing given)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    subscription: Subscription
    invoices: list[Invoice]
    """Invoices created while executing an immediate action (billing due up to today included)."""
    today: date
    replayed: bool = False


# -- building the action ----------------------------------------------------------------------------
def _day(request: ActionRequest, today: date) -> date:
    if request.on is not None and request.in_days is not None:
        raise InvalidInput("give either on or in_days", field="on")
    on = today + timedelta(days=request.in_days) if request.in_days is not None else request.on or today
    if on < today:
        raise InvalidInput(f"on is before today ({today})", field="on")
    if on > today + timedelta(days=MAX_DAYS_SCHEDULED):
        raise InvalidInput(f"on is at most {MAX_DAYS_SCHEDULED} days ahead", field="on")
    return on


@dataclass(frozen=True, slots=True)
class _StoreLookups:
    """What a kind's checks read beyond the subscription (`billow.domain.actions.Lookups`)."""

    store: Store
    ctx: TenantContext
    contact_id: str

    def product(self, product_id: str) -> Product | None:
        return self.store.get_product(self.ctx.tenant_id, product_id)

    def subscriptions(self) -> list[Subscription]:
        return self.store.subscriptions_of(self.ctx.scope, self.contact_id)

    def owed(self) -> dict[str, Money]:
        return net_owed(self.store.invoices_of(self.ctx.scope, self.contact_id))

    def contact(self) -> Contact:
        return get_contact(self.store, self.ctx, self.contact_id)

    def has_saved_method(self, method_id: str) -> bool:
        method = self.store.get_payment_method(self.ctx.scope, self.contact_id, method_id)
        return method is not None and not method.removed


def build_action(
    store: Store, ctx: TenantContext, subscription: Subscription, request: ActionRequest, today: date, action_id: str
) -> tuple[Action, Asked[Any]]:
    """The action the request asks for, on the day the business's rules allow, and the request as
    its kind's checks see it; raises when the request is malformed (422) or a rule refuses it (409,
    logged by the caller)."""
    kind = request.kind
    policy = ctx.settings.subscriptions
    on = _day(request, today)
    service: Service | None = None
    if kind.on_service:
        kind.needed(request.service_id, "service_id")
        service = subscription.service(request.service_id or "")
        if service is None:
            raise NotFound(f"subscription {subscription.id} has no service {request.service_id}", field="service_id")
    elif request.service_id is not None:
        raise InvalidInput(f"{kind.name} acts on the whole subscription: leave service_id out", field="service_id")
    if request.by not in kind.requesters:
        raise InvalidInput(kind.not_requested or f"{kind.name} is not requested by {request.by}", field="action")
    params = kind.asks() if request.params is None else request.params
    lookups = _StoreLookups(store, ctx, subscription.contact_id)
    asked = Asked(params, subscription, service, request.by, policy, lookups)
    action = Action(
        id=action_id,
        kind=kind,
        on=on,
        requested_on=today,
        service_id=request.service_id,
        reason=request.reason,
        by=request.by,
        params=kind.prepare(asked),
    )
    if service is not None:
        _check_state(subscription, action)
    policy.check_reason(kind, request.reason)
    return kind.check(asked, action), asked


# -- the use cases ---------------------------------------------------------------------------------
def _executing(subscription: Subscription, action: Action) -> tuple[BillingStep, Action]:
    """The step that will execute `action` on its day, and the record it leaves: executed, or
    rejected by the transition table or its own rules (the pending actions before it executed
    first, as they will be)."""
    pending = replace(subscription, actions=(*subscription.actions, action))
    for step in steps(pending, action.on):
        for record in step.actions:
            if record.id == action.id:
                return step, record
    raise AssertionError(f"action {action.id} did not run by {action.on}")


def _check_state(subscription: Subscription, action: Action) -> None:
    """An action the service's state forbids on its day is refused as an illegal transition first,
    before the business's rules (a cancelled service cannot be regretted, whatever the period)."""
    _, record = _executing(subscription, action)
    if record.rule == IllegalTransition.code:
        _raise_refusal(record, subscription)


def _check_outcome(subscription: Subscription, action: Action) -> tuple[BillingStep, Action]:
    """`_executing`, raising the refusal when the action would be rejected."""
    step, record = _executing(subscription, action)
    if record.status is ActionStatus.REJECTED:
        _raise_refusal(record, subscription)
    return step, record


def _raise_refusal(record: Action, subscription: Subscription) -> NoReturn:
    """The refusal a rejected record stands for, classified by the code it logged (its rule)."""
    code = record.rule or Conflict.code
    service = subscription.service(record.service_id or "")
    raise refusal_for(code, record.outcome or code, service.state.value if service else "unknown")


def request_action(
    store: Store,
    ctx: TenantContext,
    subscription_id: str,
    request: ActionRequest,
    *,
    clock: Clock,
    numbers: InvoiceNumbers,
    new_id: Callable[[str], str],
    keyed: bool = False,
) -> ActionResult:
    """Execute the action now, or schedule it. Refusals are logged and raised.

    `keyed`: the ids come from the caller's idempotency key, so a retry (or a copy of the request
    racing it) finds the first attempt's record in the log and answers as it did (the record, or
    the same refusal) instead of acting twice. The log is read again after every lost race, and a
    record once written is never replaced by a later attempt's (a refusal's record is written only
    if new; the step's write is conditioned on the subscription's version)."""
    action_id = new_id("act")
    invoices: list[Invoice] = []
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        # The subscription first, then the contact's today: moving a test clock moves the
        # subscription's version on, so a write of an attempt that read the old day loses and the
        # next attempt reads the new one.
        subscription = subscription_by_id(store, ctx, subscription_id)
        today = contact_today(store, ctx, subscription.contact_id, clock)
        if keyed and (earlier := _logged(store, ctx, subscription, action_id)) is not None:
            return _replay(store, ctx, subscription, earlier, today, numbers)
        # Bring it up to today first: the action is checked against the state it will act on.
        created, subscription = bill_loaded(store, ctx, subscription, today, numbers)
        invoices += created
        if contact_today(store, ctx, subscription.contact_id, clock) != today:
            continue  # the clock moved while billing lost a race to it and read back the moved subscription
        action: Action | None = None
        try:
            action, asked = build_action(store, ctx, subscription, request, today, action_id)
            step, record = _check_outcome(subscription, action)
            action.kind.admit(asked, action)
        except (RuleViolation, IllegalTransition) as refusal:
            refused = action or _unbuilt(request, today, action_id)
            try:
                # The log alone (a refusal changes nothing else), only if new: it never replaces
                # the record of an earlier attempt with the same id.
                work = store.unit_of_work(f"actions of subscription {subscription.id}")
                work.log_action(ctx.scope, subscription, refused.rejected(refusal.message, refusal.rule), only_new=True)
                work.commit()
            except ConcurrentModification:
                continue  # an attempt with the same key logged first: answer as it did
            raise
        if len(subscription.actions) >= MAX_PENDING_ACTIONS:
            raise Conflict(
                f"a subscription holds at most {MAX_PENDING_ACTIONS} pending actions; cancel some first",
                code="action.too_many_pending",
            )
        scheduled = subscription.with_actions((*subscription.actions, action))
        try:
            commit_step(store, ctx.scope, scheduled, subscription.version, None, [action])
        except ConcurrentModification:
            continue
        scheduled = replace(scheduled, version=subscription.version + 1)
        if action.on > today:
            return ActionResult(action, scheduled, invoices, today)
        # Its day has come: execute it as the run would (it is the outcome checked above).
        created, done = bill_loaded(store, ctx, scheduled, today, numbers)
        if step.transfer is not None:  # the record names the subscription it moved to
            record = _logged(store, ctx, subscription, action.id) or record
        return ActionResult(record, done, invoices + created, today)
    raise ConcurrentModification(f"subscription {subscription_id} kept changing; try again")


def _replay(
    store: Store, ctx: TenantContext, subscription: Subscription, earlier: Action, today: date, numbers: InvoiceNumbers
) -> ActionResult:
    """Answer a retry as the first attempt answered: its record, or its refusal. An immediate
    action the first attempt scheduled but has not executed yet is executed here (exactly once:
    the step's write is versioned), so a crashed first attempt never blocks its key; when another
    attempt is executing it right now, the caller hears that it is in progress."""
    if earlier.status is ActionStatus.SCHEDULED and earlier.on <= today:
        with suppress(ConcurrentModification):  # another attempt is executing it: see below
            _, subscription = bill_loaded(store, ctx, subscription, today, numbers)
        earlier = _logged(store, ctx, subscription, earlier.id) or earlier
        if earlier.status is ActionStatus.SCHEDULED:
            raise Conflict(
                f"a request with this idempotency key (action {earlier.id}) is still being executed; retry shortly",
                field="Idempotency-Key",
                code="idempotency.in_progress",
            )
    if earlier.status is ActionStatus.REJECTED:
        _raise_refusal(earlier, subscription)
    return ActionResult(earlier, subscription, [], today, replayed=True)


def _logged(store: Store, ctx: TenantContext, subscription: Subscription, action_id: str) -> Action | None:
    log = store.actions_of(ctx.scope, subscription.contact_id, subscription.id)
    return next((a for a in log if a.id == action_id), None)


def _unbuilt(request: ActionRequest, today: date, action_id: str) -> Action:
    """The record of a request refused before its action could be built (for the log)."""
    return Action(
        id=action_id,
        kind=request.kind,
        on=request.on or today,
        requested_on=today,
        service_id=request.service_id,
        reason=request.reason,
        by=request.by,
    )


def _pending(subscription: Subscription, action_id: str) -> Action:
    action = next((a for a in subscription.actions if a.id == action_id), None)
    if action is None:
        raise NotFound(f"subscription {subscription.id} has no pending action {action_id}", field="action_id")
    return action


Edit = Callable[[Subscription, Action, date], tuple[Subscription, Action]]


def _edit_pending(
    store: Store, ctx: TenantContext, subscription_id: str, action_id: str, clock: Clock, edit: Edit
) -> Action:
    """Apply `edit` to a pending action (it returns the subscription to write and the log record),
    re-reading and re-checking when the subscription changed in between."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        subscription = subscription_by_id(store, ctx, subscription_id)
        action = _pending(subscription, action_id)
        today = contact_today(store, ctx, subscription.contact_id, clock)
        others = subscription.with_actions(a for a in subscription.actions if a.id != action_id)
        updated, record = edit(others, action, today)
        try:
            commit_step(store, ctx.scope, updated, subscription.version, None, [record])
        except ConcurrentModification:
            continue
        return record
    raise ConcurrentModification(f"subscription {subscription_id} kept changing; try again")


def cancel_action(store: Store, ctx: TenantContext, subscription_id: str, action_id: str, clock: Clock) -> Action:
    """Withdraw a pending action; it stays in the log as cancelled."""

    def cancel(others: Subscription, action: Action, today: date) -> tuple[Subscription, Action]:
        return others, action.cancelled(f"cancelled on {today} by request")

    return _edit_pending(store, ctx, subscription_id, action_id, clock, cancel)


def reschedule_action(
    store: Store, ctx: TenantContext, subscription_id: str, action_id: str, on: date, clock: Clock
) -> Action:
    """Move a pending action to a later day, checked as a new request would be."""

    def move(others: Subscription, action: Action, today: date) -> tuple[Subscription, Action]:
        if on <= today:
            raise InvalidInput(f"on must be after today ({today}); cancel it and act now instead", field="on")
        if on > today + timedelta(days=MAX_DAYS_SCHEDULED):
            raise InvalidInput(f"on is at most {MAX_DAYS_SCHEDULED} days ahead", field="on")
        moved = replace(action, on=on)
        _check_outcome(others, moved)
        return others.with_actions((*others.actions, moved)), moved

    return _edit_pending(store, ctx, subscription_id, action_id, clock, move)


def action_log(
    store: Store, ctx: TenantContext, subscription_id: str, *, limit: int, cursor: str | None
) -> Page[Action]:
    """One page of the action log, by day, then request day, then id."""
    subscription = subscription_by_id(store, ctx, subscription_id)
    return store.actions_page(ctx.scope, subscription.contact_id, subscription_id, limit, cursor)


@dataclass(frozen=True, slots=True)
class ActionPreview:
    action: Action
    """The record the request would leave: executed (with its outcome) when it takes effect today,
    scheduled for a later day."""
    invoices: list[InvoiceDraft]
    """The next invoices with it; for a change that moves the service, those of both subscriptions."""
    new_ids: frozenset[str]
    """Ids made up for what does not exist yet (the subscription a move would create): not shown."""


def preview_action(
    store: Store, ctx: TenantContext, subscription_id: str, request: ActionRequest, *, clock: Clock, count: int = 2
) -> ActionPreview:
    """The action as the request would leave it, and the next invoices with it (nothing is written),
    by date."""
    subscription = subscription_by_id(store, ctx, subscription_id)
    today = contact_today(store, ctx, subscription.contact_id, clock)
    rater = StoredUsage(store, ctx)
    current = subscription
    for step in steps(subscription, today, rater=rater):  # as the request would find it
        current = step.subscription
    action, _ = build_action(store, ctx, current, request, today, "act_preview")
    step, record = _check_outcome(current, action)
    with_action = replace(current, actions=(*current.actions, action))
    invoices = upcoming_invoices(with_action, count + 1, rater=rater)
    new_ids: frozenset[str] = frozenset()
    if step.transfer is not None:
        received, new = _received(store, ctx, current, step.transfer)
        invoices += upcoming_invoices(received, count + 1, rater=rater)
        new_ids = frozenset({received.id}) if new else new_ids
    upcoming = sorted((i for i in invoices if i.billing_date >= today), key=lambda i: i.billing_date)
    shown = record if action.on == today else action
    return ActionPreview(shown, upcoming[:count], new_ids)


def _received(store: Store, ctx: TenantContext, source: Subscription, transfer: Transfer) -> tuple[Subscription, bool]:
    """The subscription a moving service joins, as it will be right after (a dry run), and whether
    the move creates it."""
    target = subscription_for(store, ctx.scope, source.contact_id, transfer.key)
    if target is None:
        return receive(receiving_subscription(source, transfer, ctx.settings.billing), transfer, new=True), True
    for step in steps(target, transfer.record.on - timedelta(days=1)):
        target = step.subscription
    return receive(target, transfer, new=False), False
