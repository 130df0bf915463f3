"""A subscription moving through time: its pending actions executed on their day, before that day's
billing, and the billing engine run between them.

`next_step` is the one function everything that moves a subscription calls (the daily run, test
clock advances, immediate actions, the view bill and the dry run): each step is one atomic write,
either an action (with the lines it settles kept in the subscription for the invoice of their run
date) or one invoice. Applying steps until none is due is exactly once by construction: a step's
write removes the action it executed, and advances the services it billed.

Each kind of action says what executing it does (`billow.domain.actions`, docs/lifecycle.md);
`execute` runs one on its day and gathers its records. In short:
- stopping a service (pause, deactivate, cancel, regret, expire, change) settles it at the day:
  days already invoiced past it are credited, unbilled days before it are charged (`settle`);
- starting it again (resume, activate, renew, change) restarts billing from that day, as if it had
  just joined mid-period (prorated, no first-piece rules); days already invoiced past that day
  (billed ahead) are not invoiced again: a restart trims the stop's pending credit to the stopped
  days, and a change charges its new terms for them beside their credit.
Credits of a pause, a deactivation or a change go on the next invoice; those of a cancellation, a
regret or a change that moves the service to the subscription of its new cycle go on an invoice
the same day.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, timedelta
from itertools import islice

from billow.domain.actions import Action, ServiceKind, SubscriptionKind
from billow.domain.actions.expire import EXPIRE
from billow.domain.actions.renew import RENEW
from billow.domain.billing import BillingStep, InvoiceDraft, next_billing_step
from billow.domain.calendar import Period
from billow.domain.effects import Effect
from billow.domain.errors import Conflict, InvalidInput, RuleViolation
from billow.domain.rules import Alignment, BillingRules
from billow.domain.subscriptions import MAX_SERVICES_PER_SUBSCRIPTION, Service, Subscription, Transfer
from billow.domain.usage import NO_USAGE, LateMarker, LateUsage, RatedUsage, UsageRater

MAX_CATCH_UP_STEPS = 1000  # a subscription more than 1000 steps behind is a data error, not billing
FAR_FUTURE = date(9000, 1, 1)
_DAY = timedelta(days=1)


def execute(subscription: Subscription, action: Action) -> BillingStep:
    """The subscription after `action`, with the records for the action log: the action executed
    (or rejected, with the rule) and any action it scheduled or cancelled; and the service it
    moves to another subscription, if it does.

    A refused action changes nothing but leaves the pending list; the caller decides whether the
    refusal is an answer (an immediate request) or a log entry (a scheduled one)."""
    effect = Effect(subscription, action)
    kind = action.kind
    try:
        if isinstance(kind, ServiceKind):
            service = subscription.service(action.service_id or "")
            if service is None:
                raise Conflict(f"subscription {subscription.id} has no service {action.service_id}", field="service_id")
            after, outcome = kind.apply(effect, service)
            updated = subscription.without(service.id) if effect.moving else subscription.replacing(after)
        else:
            assert isinstance(kind, SubscriptionKind), kind
            updated, outcome = kind.apply(effect)
    except Conflict as refusal:  # an illegal transition, a rule, a missing service: logged by its code
        left = replace(subscription, actions=tuple(effect.pending))
        return BillingStep(left, None, (action.rejected(refusal.message, refusal.code),))
    done = replace(updated.with_actions(effect.pending), adjustments=effect.adjustments, acted_on=action.on)
    record = action.executed(outcome)
    transfer = None
    if effect.moving is not None:
        moved, key = effect.moving
        transfer = Transfer(moved, key, record, tuple(effect.moved))
    return BillingStep(done, None, (record, *effect.logged), transfer)


def receiving_subscription(source: Subscription, transfer: Transfer, rules: BillingRules) -> Subscription:
    """The new subscription a moving service goes to when the contact has none of its cycle and
    billing model: billed under the business's current `rules` from the service's first unbilled
    day (its id comes from the action's, so two runs executing the same change make the same one)."""
    return Subscription(
        id=f"sub_{transfer.record.id.removeprefix('act_')}",
        contact_id=source.contact_id,
        key=transfer.key,
        schedule=rules.schedule_for(transfer.key.cycle, transfer.service.unbilled_from),
        services=(),
        created_on=transfer.record.on,
        test_clock=source.test_clock,
        rules=rules,
    )


def check_room(subscription: Subscription) -> None:
    """Whether a service can move into `subscription`."""
    if len(subscription.services) >= MAX_SERVICES_PER_SUBSCRIPTION:
        raise RuleViolation(
            f"subscription {subscription.id} already holds {MAX_SERVICES_PER_SUBSCRIPTION} services",
            rule="change.subscription_full",
        )


def receive(subscription: Subscription, transfer: Transfer, *, new: bool) -> Subscription:
    """`subscription` with the moving service and its pending actions. The service is aligned as a
    newly ordered one would be: at once in a new subscription, else as its terms or the
    subscription's rules say (a running service restarts mid-period: billed on the next invoice)."""
    check_room(subscription)
    alignment = Alignment.IMMEDIATE if new else (transfer.service.terms.alignment or subscription.rules.alignment)
    service = replace(transfer.service, alignment=alignment)
    received = subscription.adding([service]).with_actions((*subscription.actions, *transfer.actions))
    # Billing ahead bills the newcomer as of the day it joined, issued that day, even when the
    # subscription ran later actions before the move reached it.
    return replace(received, acted_on=transfer.record.on)


# -- what is due ------------------------------------------------------------------------------------
def _term_actions(subscription: Subscription, as_of: date) -> list[Action]:
    """Ends of termed periods on or before `as_of`: an automatic renewal or an expiry."""
    due = []
    for service in subscription.services:
        end = service.open_term_end
        if end is None or end > as_of:
            continue
        kind = RENEW if service.auto_renew else EXPIRE
        action_id = f"act_{service.id.removeprefix('svc_')}_{kind.name}_{end:%Y%m%d}"
        reason = "end of the termed period"
        due.append(kind.by_system(action_id, end, requested_on=end, reason=reason, service_id=service.id))
    return due


def _billed_ahead_late(subscription: Subscription, before: date, rater: UsageRater) -> BillingStep | None:
    """What billing ahead would have billed before `before` had the clock moved one day at a time:
    for each bill-ahead, as of the later of its day and the last action's, issued that day."""
    acted = subscription.acted_on
    for ran_on, until in subscription.bill_ahead_steps:
        day = ran_on if acted is None else max(ran_on, acted)
        if day < before and day < until:
            step = next_billing_step(subscription, day, today=day, rater=rater, ahead=until)
            if step is not None:
                return step
    return None


def next_step(
    subscription: Subscription, as_of: date, *, today: date | None = None, rater: UsageRater = NO_USAGE
) -> BillingStep | None:
    """The earliest thing due at `as_of`: an action (before any billing of its day), else an invoice.

    While billing ahead is on, what it bills is billed as of the day of the last action first (the
    day the bill-ahead ran, a service restarted or moved in), issued that day, before anything
    later: the documents and their dates do not depend on how far the clock moved at once."""
    due = [a for a in subscription.actions if a.on <= as_of]
    if any(s.term_end is not None for s in subscription.services):
        due += _term_actions(subscription, as_of)
    action = min(due, key=lambda a: (a.on, a.id)) if due else None
    if subscription.bill_ahead_steps:
        step = _billed_ahead_late(subscription, as_of if action is None else action.on, rater)
        if step is not None:
            return step
    if action is not None:
        step = next_billing_step(subscription, action.on - _DAY, rater=rater)
        if step is not None:
            return step
        return execute(subscription, action)
    ahead = subscription.bill_ahead_until
    if ahead is not None and ahead > as_of:
        return next_billing_step(subscription, as_of, today=today or as_of, rater=rater, ahead=ahead)
    return next_billing_step(subscription, as_of, today=today, rater=rater)


def steps(
    subscription: Subscription, as_of: date, *, today: date | None = None, rater: UsageRater = NO_USAGE
) -> Iterator[BillingStep]:
    """Every step due at `as_of`, each applied to the result of the one before (a dry run)."""
    current = subscription
    simulated = _ClearedOnce(rater)
    for _ in range(MAX_CATCH_UP_STEPS):
        step = next_step(current, as_of, today=today, rater=simulated)
        if step is None:
            return
        yield step
        simulated.cleared.update(step.cleared)
        current = step.subscription
    # Over a thousand steps at once is a mistake (a far as-of date, or a corrupt item): refuse it.
    raise InvalidInput(f"billing up to {as_of} would create over {MAX_CATCH_UP_STEPS} invoices", field="as_of")


class _ClearedOnce:
    """A rater for a dry run: the late markers a step cleared are gone for the steps after it, as
    they are from the table once a real step is written (else an ended service's markers would be
    billed by every step after, forever)."""

    def __init__(self, rater: UsageRater) -> None:
        self.rater = rater
        self.cleared: set[LateMarker] = set()

    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        return self.rater.rate(subscription, service, period)

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        found = self.rater.late(subscription, service)
        return [late for late in found if late.marker not in self.cleared] if self.cleared else found


def upcoming_invoices(
    subscription: Subscription, count: int = 3, *, rater: UsageRater = NO_USAGE
) -> list[InvoiceDraft]:
    """The view bill: the next `count` invoices the billing run will create, from the current state
    on, scheduled actions included (trial services too: their first invoice is the one after the
    trial)."""
    drafts = (step.invoice for step in steps(subscription, FAR_FUTURE, rater=rater) if step.invoice)
    return list(islice(drafts, count))
