"""A subscription moving through time: its pending actions executed on their day, before that day's
billing, and the billing engine run between them.

`next_step` is the one function everything that moves a subscription calls (the daily run, test
clock advances, immediate actions, the view bill and the dry run): each step is one atomic write,
either an action (with the lines it settles kept in the subscription for the invoice of their run
date) or one invoice. Applying steps until none is due is exactly once by construction: a step's
write removes the action it executed, and advances the services it billed.

What each action does to billing (docs/lifecycle.md):
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

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from itertools import islice

from billow.domain.actions import Action, ActionKind, Requester, ServiceChange
from billow.domain.billing import (
    BillingStep,
    InvoiceDraft,
    bring_forward,
    charge_again,
    next_billing_step,
    one_time_line,
    restart,
    settle,
)
from billow.domain.calendar import BillingSchedule, Cycle, Period, add_cycles, day_on_or_after
from billow.domain.catalog import PriceTerms
from billow.domain.errors import Conflict, IllegalTransition, InvalidInput, RuleViolation
from billow.domain.lifecycle import CHANGE_RULE, FINAL_RULE, FINAL_STATES, StateAction, next_state
from billow.domain.lines import Adjustment
from billow.domain.rules import Alignment, BillingRules, CalendarMode, ServiceState
from billow.domain.subscriptions import (
    MAX_SERVICES_PER_SUBSCRIPTION,
    Service,
    Subscription,
    SubscriptionKey,
    Transfer,
)
from billow.domain.usage import NO_USAGE, UsageRater

MAX_CATCH_UP_STEPS = 1000  # a subscription more than 1000 steps behind is a data error, not billing
FAR_FUTURE = date(9000, 1, 1)
_DAY = timedelta(days=1)


# -- dates the rules need ------------------------------------------------------------------------
def cycle_end(subscription: Subscription, day: date) -> date:
    """The first day of the billing cycle after the one `day` is in: "at the end of the cycle",
    and the day of the next invoice, where prorations go."""
    return subscription.schedule.period_containing(day).end


# -- executing one action ------------------------------------------------------------------------
class _Effect:
    """What executing an action changes, gathered before one new subscription is built."""

    def __init__(self, subscription: Subscription, action: Action) -> None:
        self.subscription = subscription
        self.action = action
        self.adjustments = subscription.adjustments  # pending: settling and restarting change them
        self.logged: list[Action] = []  # actions the execution schedules or cancels
        self.pending = [a for a in subscription.actions if a.id != action.id]
        self.moving: tuple[Service, SubscriptionKey] | None = None
        self.moved: list[Action] = []

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

    def drop_pending(self, service_id: str, outcome: str, kinds: frozenset[ActionKind] | None = None) -> None:
        keep = []
        for pending in self.pending:
            if pending.service_id == service_id and (kinds is None or pending.kind in kinds):
                self.logged.append(pending.cancelled(outcome))
            else:
                keep.append(pending)
        self.pending = keep


def _state_change(service: Service, action: StateAction, on: date) -> Service:
    return replace(service, state=next_state(service.state, action), state_since=on)


def _not_final(service: Service, kind: ActionKind) -> None:
    if service.state in FINAL_STATES:
        raise IllegalTransition(
            f"cannot {kind.value.replace('_', ' ')} a {service.state.value} service: {FINAL_RULE}",
            current_state=service.state.value,
        )


def _termed(service: Service) -> int:
    cycles = service.terms.term_cycles
    if cycles is None:
        raise RuleViolation(f"service {service.id} has no termed period", rule="term.not_termed")
    return cycles


def _service_effect(effect: _Effect, service: Service) -> tuple[Service, str]:
    """The service after the action, and what happened, in words. Raises when it is refused."""
    action, subscription = effect.action, effect.subscription
    on, kind = action.on, action.kind
    if kind is ActionKind.ACTIVATE:
        if service.expired:
            raise RuleViolation(
                f"service {service.id} expired at the end of its termed period; renew it instead",
                rule="activation.not_expired",
            )
        if service.state is ServiceState.DRAFT:
            return replace(_state_change(service, StateAction.ACTIVATE, on), start_date=min(on, service.start_date)), (
                "activated"
            )
        return effect.restart(_state_change(service, StateAction.ACTIVATE, on), on), "activated; billing restarts"
    if kind is ActionKind.DEACTIVATE:
        grace = subscription.grace_until
        if grace is not None and on < grace and action.by is not Requester.BACK_OFFICE:
            raise RuleViolation(
                f"the subscription is in a grace period until {grace}", rule="deactivation.grace_period"
            )
        stopped = _state_change(service, StateAction.DEACTIVATE, on)
        return effect.settle(stopped, on, credit_on=cycle_end(subscription, on)), "deactivated"
    if kind is ActionKind.PAUSE:
        paused = _state_change(service, StateAction.PAUSE, on)
        days = action.days or 0
        credit_on = cycle_end(subscription, on)
        if days:
            resume_on = on + timedelta(days=days)
            # credited on the first invoice after the pause ends: the resume trims the credit of
            # days billed ahead to the paused days, before it is issued
            credit_on = cycle_end(subscription, resume_on - _DAY)
            paused = replace(paused, pauses=(*service.pauses, Period(on, resume_on)))
            effect.schedule(
                Action(
                    id=f"{action.id}-resume",
                    kind=ActionKind.RESUME,
                    on=resume_on,
                    requested_on=on,
                    service_id=service.id,
                    reason="end of pause",
                    by=Requester.SYSTEM,
                )
            )
        settled = effect.settle(paused, on, credit_on=credit_on)
        return settled, f"paused for {days} days" if days else "paused"
    if kind is ActionKind.RESUME:
        resumed = effect.restart(_state_change(service, StateAction.RESUME, on), on)
        effect.drop_pending(service.id, f"service resumed on {on}", frozenset({ActionKind.RESUME}))
        return resumed, "resumed; billing restarts"
    if kind is ActionKind.CANCEL:
        cancelled = _state_change(service, StateAction.CANCEL, on)
        settled = effect.settle(cancelled, on, credit_on=on)
        fee = service.terms.cancellation_fee
        outcome = "cancelled"
        if fee is not None and not fee.is_zero and service.in_contract(on):
            line = one_time_line(service, "cancellation_fee", f"{service.product_name} cancellation fee", fee)
            effect.add(Adjustment(line, on))
            outcome = f"cancelled inside the contract period (until {service.contract_end}): fee {fee}"
        effect.drop_pending(service.id, f"service cancelled on {on}")
        return settled, outcome
    if kind is ActionKind.REGRET:
        start = service.charged_from
        regretted = replace(_state_change(service, StateAction.REGRET, on), end_date=start)
        had_invoice = service.billed_through is not None
        settled = effect.settle(regretted, start, credit_on=on)
        fee = service.terms.setup_fee
        if had_invoice and fee is not None and not fee.is_zero:
            line = one_time_line(service, "credit", f"{service.product_name} setup fee credited", -fee)
            effect.add(Adjustment(line, on))
        effect.drop_pending(service.id, f"service regretted on {on}")
        return settled, "regretted: everything charged since it started is credited"
    if kind is ActionKind.RENEW:
        if action.by is Requester.SYSTEM and service.state is not ServiceState.NOT_EFFECTIVE:
            term_end = add_cycles(service.term_end or on, subscription.cycle, _termed(service))
            return replace(service, term_end=term_end), f"renewed automatically until {term_end}"
        if not service.expired:
            _ = next_state(service.state, StateAction.RENEW)  # refuses the states it must
            raise RuleViolation(f"service {service.id} has not expired; activate it instead", rule="renew.expired_only")
        term_end = add_cycles(on, subscription.cycle, _termed(service))
        renewed = _state_change(service, StateAction.RENEW, on)
        renewed = replace(effect.restart(renewed, on), term_end=term_end, expired=False)
        return renewed, f"renewed until {term_end}"
    if kind is ActionKind.EXPIRE:
        expired = replace(service, state=ServiceState.NOT_EFFECTIVE, state_since=on, expired=True)
        return effect.settle(expired, on, credit_on=on), "expired at the end of its termed period"
    _not_final(service, kind)
    if kind is ActionKind.AUTO_RENEW:
        _termed(service)
        opt = bool(action.auto_renew)
        return replace(service, auto_renew=opt), "auto-renewal on" if opt else "auto-renewal off"
    if kind is ActionKind.EXTEND_TERM:
        _termed(service)
        if service.term_end is None or service.expired:
            raise RuleViolation("an expired term is renewed, not extended", rule="extend_term.not_expired")
        term_end = service.term_end + timedelta(days=action.days or 0)
        return replace(service, term_end=term_end), f"termed period extended to {term_end}"
    if kind is ActionKind.EXTEND_TRIAL:
        if not service.in_trial(on):
            raise RuleViolation(f"service {service.id} is not in its trial", rule="trial.extend_in_trial")
        if service.trial_extended:
            raise RuleViolation("a trial can be extended only once", rule="trial.extend_once")
        if service.billed_through is not None:
            raise RuleViolation("the first charge after the trial is invoiced already", rule="trial.extend_in_trial")
        shift = timedelta(days=action.days or 0)
        trial_end = service.billing_start + shift
        return replace(
            service,
            trial_ends_on=trial_end,
            trial_extended=True,
            term_end=service.term_end + shift if service.term_end else None,
            contract_end=service.contract_end + shift if service.contract_end else None,
        ), f"trial extended to {trial_end}"
    if kind is ActionKind.CHANGE:
        return _change(effect, service)
    raise AssertionError(f"{kind} is not a service action")


def _with_new_terms(service: Service, change: ServiceChange, cycle: Cycle, on: date) -> Service:
    """The service on its new product, price terms and quantity. A service not charged yet (a
    draft, a trial) counts its termed and contract periods afresh from its first charged day; else
    a running term or contract is kept (a change does not end a contract), and one that only the
    new terms have starts on the day of the change."""
    terms = change.terms
    charging = service.state is not ServiceState.DRAFT and not service.in_trial(on)
    changed = replace(
        service, product_id=change.product_id, product_name=change.product_name, terms=terms, quantity=change.quantity
    )
    fresh = changed.with_periods_from(on if charging else service.billing_start, cycle)
    running_term = service.term_end if charging and terms.term_cycles is not None else None
    contract_end = service.contract_end
    running_contract = contract_end if charging and contract_end is not None and contract_end > on else None
    return replace(
        fresh,
        term_end=running_term or fresh.term_end,
        auto_renew=service.auto_renew if running_term else terms.auto_renew,
        contract_end=running_contract or fresh.contract_end,
    )


def check_same_currency(subscription: Subscription, terms: PriceTerms) -> None:
    if terms.currency != subscription.currency:
        raise RuleViolation(
            f"a change keeps the service's currency ({subscription.currency}): cancel it and order the new terms",
            rule="change.currency",
        )


def _change(effect: _Effect, service: Service) -> tuple[Service, str]:
    """Another product, price terms or quantity from the action's day: the old price is settled to
    that day and the new one billed from it. Price terms of another cycle or billing model move
    the service to the contact's subscription of that cycle and model (a new one if there is none):
    it is settled here as a cancellation is (credited the same day), and billed there from the day
    of the change."""
    action, subscription = effect.action, effect.subscription
    change = action.change
    assert change is not None
    if service.state not in (ServiceState.EFFECTIVE, ServiceState.DRAFT):
        raise IllegalTransition(
            f"cannot change a {service.state.value.replace('_', ' ')} service: {CHANGE_RULE}",
            current_state=service.state.value,
        )
    terms, on = change.terms, action.on
    if (change.product_id, terms, change.quantity) == (service.product_id, service.terms, service.quantity):
        # scheduled when it was a change: crediting and charging the same price is no change
        raise RuleViolation("the service is on these terms already: the change changes nothing", rule="change.nothing")
    check_same_currency(subscription, terms)
    key = SubscriptionKey.of(terms)
    moving = key != subscription.key
    if moving and (service.terms.meter is not None or terms.meter is not None):
        raise RuleViolation(
            "a metered service changes price terms only within its billing cycle and model",
            rule="change.metered",
        )
    changed = _with_new_terms(service, change, key.cycle, on)
    what = f"changed to {change.product_name} x{change.quantity} at {terms.price} per {terms.cycle.value}"
    if service.state is not ServiceState.DRAFT:
        # A started service keeps the trial it had (none, running or over): the new terms' trial
        # is for services that start on them, not free days for a paying one.
        changed = replace(changed, trial_ends_on=service.billing_start)
    if service.in_trial(on) and service.state is not ServiceState.DRAFT:
        what = f"{what} (in trial)"
    elif service.state is not ServiceState.DRAFT:
        credit_on = on if moving else cycle_end(subscription, on)
        settled = effect.settle(service, on, credit_on=credit_on)
        changed = replace(changed, billed_through=settled.billed_through, restarted_on=on, billed_at_stop=None)
        billed_ahead = settled.billed_at_stop
        if not moving and billed_ahead is not None and billed_ahead > on:
            # Periods invoiced ahead are adjusted beside their credit, not invoiced again.
            effect.adjustments = charge_again(changed, effect.pending_subscription(), billed_ahead, credit_on)
            changed = replace(changed, billed_through=billed_ahead)
        what = f"{what}; the old price is settled to {on}"
    if moving:
        # It leaves settled: what it still has pending here goes on this subscription's invoice
        # of the day (a credit of an earlier change included), before it is billed there.
        effect.adjustments = tuple(
            replace(a, run_on=on) if a.line.service_id == service.id and a.run_on > on else a
            for a in effect.adjustments
        )
        effect.move(changed, key)
        what = f"{what}; moved to the contact's {key.cycle.adjective} {key.billing_model.value} subscription"
    return changed, what


def _subscription_effect(effect: _Effect) -> tuple[Subscription, str]:
    action, subscription = effect.action, effect.subscription
    on, kind = action.on, action.kind
    if kind is ActionKind.CHANGE_PAYMENT_METHOD:
        return replace(subscription, payment_method=action.payment_method), f"payment method {action.payment_method}"
    if kind is ActionKind.SET_GRACE_PERIOD:
        until = on + timedelta(days=action.days or 0)
        return replace(subscription, grace_until=until), f"grace period until {until}"
    if kind is ActionKind.BILL_AHEAD:
        assert action.until is not None
        ahead = max(action.until, subscription.bill_ahead_until or action.until)
        return replace(subscription, bill_ahead_until=ahead), f"billing ahead up to {action.until}"
    if kind is ActionKind.CHANGE_BILLING_DAY:
        if subscription.rules.calendar is not CalendarMode.ANNIVERSARY:
            raise RuleViolation(
                "the billing day changes only under anniversary billing", rule="billing_day.anniversary"
            )
        day = action.billing_day
        assert day is not None
        if day == subscription.schedule.billing_day:
            raise RuleViolation(f"the billing day is {day} already", rule="billing_day.unchanged")
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
    raise AssertionError(f"{kind} is not a subscription action")


def execute(subscription: Subscription, action: Action) -> BillingStep:
    """The subscription after `action`, with the records for the action log: the action executed
    (or rejected, with the rule) and any action it scheduled or cancelled; and the service it
    moves to another subscription, if it does.

    A refused action changes nothing but leaves the pending list; the caller decides whether the
    refusal is an answer (an immediate request) or a log entry (a scheduled one)."""
    effect = _Effect(subscription, action)
    try:
        if action.kind.on_service:
            service = subscription.service(action.service_id or "")
            if service is None:
                raise Conflict(f"subscription {subscription.id} has no service {action.service_id}", field="service_id")
            after, outcome = _service_effect(effect, service)
            updated = subscription.without(service.id) if effect.moving else subscription.replacing(after)
        else:
            updated, outcome = _subscription_effect(effect)
    except Conflict as refusal:  # an illegal transition, a rule, a missing service: logged by its code
        left = replace(subscription, actions=tuple(effect.pending))
        return BillingStep(left, None, (action.rejected(refusal.message, refusal.code),))
    done = replace(updated.with_actions(effect.pending), adjustments=effect.adjustments)
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
    return subscription.adding([service]).with_actions((*subscription.actions, *transfer.actions))


# -- what is due ------------------------------------------------------------------------------------
def _term_actions(subscription: Subscription, as_of: date) -> list[Action]:
    """Ends of termed periods on or before `as_of`: an automatic renewal or an expiry."""
    due = []
    for service in subscription.services:
        end = service.open_term_end
        if end is None or end > as_of:
            continue
        kind = ActionKind.RENEW if service.auto_renew else ActionKind.EXPIRE
        due.append(
            Action(
                id=f"act_{service.id.removeprefix('svc_')}_{kind.value}_{end:%Y%m%d}",
                kind=kind,
                on=end,
                requested_on=end,
                service_id=service.id,
                reason="end of the termed period",
                by=Requester.SYSTEM,
            )
        )
    return due


def next_step(
    subscription: Subscription, as_of: date, *, today: date | None = None, rater: UsageRater = NO_USAGE
) -> BillingStep | None:
    """The earliest thing due at `as_of`: an action (before any billing of its day), else an invoice."""
    due = [a for a in subscription.actions if a.on <= as_of]
    if any(s.term_end is not None for s in subscription.services):
        due += _term_actions(subscription, as_of)
    if due:
        action = min(due, key=lambda a: (a.on, a.id))
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
    for _ in range(MAX_CATCH_UP_STEPS):
        step = next_step(current, as_of, today=today, rater=rater)
        if step is None:
            return
        yield step
        current = step.subscription
    # Over a thousand steps at once is a mistake (a far as-of date, or a corrupt item): refuse it.
    raise InvalidInput(f"billing up to {as_of} would create over {MAX_CATCH_UP_STEPS} invoices", field="as_of")


def upcoming_invoices(
    subscription: Subscription, count: int = 3, *, rater: UsageRater = NO_USAGE
) -> list[InvoiceDraft]:
    """The view bill: the next `count` invoices the billing run will create, from the current state
    on, scheduled actions included (trial services too: their first invoice is the one after the
    trial)."""
    drafts = (step.invoice for step in steps(subscription, FAR_FUTURE, rater=rater) if step.invoice)
    return list(islice(drafts, count))
