"""Dunning use cases: open a contact's case, decide it, take its steps, park and wake its flow
(docs/dunning.md, "The flow"). The rule is `billow.domain.dunning.decide`; this module reads what
it reads (`read_facts`), carries out what it decides, and records it on the case.

Each use case is called by one task of the case's Step Functions execution (functions/dunning), by
the hourly wake schedule, by events and by test-clock advances. Every one may run twice (a retried
task, a duplicated event, a crash) and any two may run at once; none does a step twice:

- a step re-decides on fresh facts and acts only if the fresh decision is of its kind;
- a retry charges through `collection.collect_invoice` with the attempt number the decision gives:
  one attempt per number, whoever asks and however often, so never two charges for one retry;
- a deactivation, a cancellation and an end are one transaction of the subscriptions, their action
  log records (system actions naming the case), the case's record (conditioned on its version) and
  a check of each invoice in debt at the version the decision read: a payment landing in between
  fails it, and the step decides again (it then ends the case instead of deactivating);
- a wake bumps the case's `wake_seq` in one UpdateItem that hands the parked task token to that
  wake alone; a park at an older `wake_seq` resumes itself at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from billow.domain.actions import Action, ActionKind, Requester
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.cancel import CANCEL, CancelTerms
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.calendar import local_date, tenant_zone
from billow.domain.collection import AttemptStatus, PaymentAttempt, attempt_id
from billow.domain.contacts import Contact
from billow.domain.dunning import (
    AttemptFacts,
    Cancel,
    CaseFacts,
    Deactivate,
    Decision,
    DunningCase,
    End,
    InvoiceFacts,
    Retry,
    ServiceFacts,
    StepKind,
    Wait,
    decide,
    end_outcome,
    reminder_outcome,
)
from billow.domain.errors import ConcurrentModification, NotFound
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus
from billow.domain.money import Money
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.receivables import balances
from billow.domain.subscriptions import Subscription
from billow.domain.timeline import execute
from billow.services.billing import InvoiceNumbers, bill_loaded
from billow.services.collection import charge_target, collect_invoice, resume
from billow.services.contacts import ContactTime, contact_time
from billow.services.context import Clock, Scope, TenantContext
from billow.services.gateway import PaymentGateway
from billow.services.ports import DUE_SHARDS, DunningFlows, DunningPorts, StoredCase

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
FURTHEST_AHEAD = timedelta(hours=14)
"""The furthest a time zone is ahead of UTC (UTC+14): no tenant's day is later than now + this."""
WAKE_PAGE = 100
FAILED = frozenset({AttemptStatus.FAILED, AttemptStatus.NOT_COLLECTABLE})
SETTLED = {InvoiceStatus.PAID: "paid", InvoiceStatus.VOID: "voided", InvoiceStatus.UNCOLLECTIBLE: "written_off"}
"""Invoice statuses that owe nothing, by the reason an end gives (`END_REASONS`)."""
STATE_KINDS = frozenset(
    {"activate", "activate_on_payment", "deactivate", "cancel", "pause", "resume", "regret", "expire", "lapse"}
)
"""Actions that move a service to another state: the last of them says who stopped it."""


# -- what a flow task answers -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decided:
    """A case and its next decision, as stored (`due`, `decided_on`)."""

    scope: Scope
    stored: StoredCase
    decision: Decision

    @property
    def action(self) -> str:
        """What the flow does next: retry|remind|deactivate|cancel|end|wait, or ended."""
        if self.stored.case.ended:
            return "ended"
        return str(self.decision.kind)

    def output(self) -> dict[str, Any]:
        """Every dunning task's output (docs/dunning.md, "The flow")."""
        due = self.stored.due
        return {
            "tenant_id": self.scope.tenant_id,
            "mode": self.scope.mode,
            "case_id": self.stored.id,
            "action": self.action,
            "due": None if due is None else due.isoformat(),
            "wake_seq": self.stored.wake_seq,
        }


def execution_input(scope: Scope, case_id: str) -> dict[str, Any]:
    return {"tenant_id": scope.tenant_id, "mode": scope.mode, "case_id": case_id}


# -- the facts ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class World:
    """What one decision reads: the contact, its day and the facts, with the invoices behind them
    (their versions guard a step's write)."""

    contact: Contact
    when: ContactTime
    facts: CaseFacts
    debt: tuple[Invoice, ...]
    """The invoices in debt, as read."""
    unfinished: tuple[PaymentAttempt, ...] = ()
    """Retries (attempts numbered 2 and on) of its open invoices still live: a retry task that
    died, or met the rail out of reach, after starting one."""
    settled: tuple[Invoice, ...] = ()
    """The contact's invoices in the currency paid, voided or written off (as read)."""

    @property
    def today(self) -> date:
        return self.when.today


def read_world(
    ports: DunningPorts, ctx: TenantContext, contact_id: str, currency: str, case: DunningCase | None, clock: Clock
) -> World:
    """The contact, its clock and `read_facts`: 2 GetItems (contact, clock) and what
    `read_facts` costs."""
    contact = ports.get_contact(ctx.scope, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id}", field="contact_id")
    when = contact_time(ports, ctx, contact_id, clock)
    facts, invoices, attempts = read_facts(ports, ctx, contact, currency, case, when)
    in_debt = {i.invoice_id for i in facts.in_debt(when.today)}
    owed = {i.invoice_id for i in facts.invoices}
    unfinished = tuple(a for a in attempts if a.live and a.number > 1 and a.invoice_id in owed)
    settled = tuple(
        i for i in invoices if i.currency == currency and i.kind is InvoiceKind.INVOICE and i.status in SETTLED
    )
    return World(contact, when, facts, tuple(i for i in invoices if i.id in in_debt), unfinished, settled)


def read_facts(
    ports: DunningPorts,
    ctx: TenantContext,
    contact: Contact,
    currency: str,
    case: DunningCase | None,
    when: ContactTime,
) -> tuple[CaseFacts, list[Invoice], list[PaymentAttempt]]:
    """`CaseFacts` of `contact` in `currency` on its day, with all its invoices and its payment
    attempts as read. Bounded reads:
    4 Queries of the contact's partition (its invoices, payment attempts, payment methods and
    subscriptions; each bounded by what one contact holds), and 1 Query per subscription holding a
    service `case` deactivated (its action log, for `stopped_by`)."""
    scope = ctx.scope
    invoices = ports.invoices_of(scope, contact.id)
    open_invoices = [
        i
        for i in invoices
        if i.currency == currency
        and i.kind is InvoiceKind.INVOICE
        and i.owed
        and i.amount_due.minor > 0
        and i.top_up is None  # a credit top-up is a purchase, not a debt: voided when it fails or lapses
    ]
    attempts = ports.attempts_of(scope, contact.id)
    methods = ports.payment_methods_of(scope, contact.id)
    subscriptions = ports.subscriptions_of(scope, contact.id)
    days = _AttemptDays(case, when, tenant_zone(ctx.settings.timezone))
    charged_with = _charged_with(contact, subscriptions, methods)
    facts = tuple(_invoice_facts(i, attempts, methods, days, charged_with(i)) for i in open_invoices)
    services = _service_facts(ports, scope, contact.id, subscriptions, open_invoices, case)
    balance = balances(invoices).get(currency)
    credit = None if balance is None or balance.credit.is_zero else balance.credit
    return (
        CaseFacts(currency, facts, services, contact.classification, credit, contact.dunning_excluded),
        invoices,
        attempts,
    )


class _AttemptDays:
    """The contact's day each attempt was made. A retry the case asked for: the day of its step.
    Another attempt: the day it records (`PaymentAttempt.made_on`, its contact's clock's). One
    recorded before attempts kept their day, as before: its creation's day in the tenant's zone; for
    a test-clock contact, whose attempts are stamped with real time, the case's opening day."""

    def __init__(self, case: DunningCase | None, when: ContactTime, zone: ZoneInfo) -> None:
        self._asked = {t: s.on for s in (case.history if case else ()) if s.kind is StepKind.RETRY for t in s.targets}
        self._clocked = when.on_test_clock
        self._opened = case.opened_on if case is not None else when.today
        self._zone = zone

    def of(self, attempt: PaymentAttempt) -> date:
        asked = self._asked.get(attempt.id)
        if asked is not None:
            return asked
        if attempt.made_on is not None:
            return attempt.made_on
        return self._opened if self._clocked else local_date(attempt.created_at, self._zone)


def _charged_with(
    contact: Contact, subscriptions: Sequence[Subscription], methods: Sequence[SavedPaymentMethod]
) -> Callable[[Invoice], str | None]:
    """The saved method an invoice would be charged with now (`collection.charge_target`: its
    subscription's method, else the contact's default; never a removed one)."""
    by_id = {s.id: s for s in subscriptions}
    removed = {m.id for m in methods if m.removed}
    return lambda invoice: charge_target(contact, by_id.get(invoice.subscription_id), removed.__contains__)[1]


def _invoice_facts(
    invoice: Invoice,
    attempts: Sequence[PaymentAttempt],
    methods: Sequence[SavedPaymentMethod],
    days: _AttemptDays,
    method: str | None,
) -> InvoiceFacts:
    """`method`: the saved method it would be charged with now; it is a new method when it is not
    the one its latest attempt was made with, or was saved after that attempt."""
    covering = sorted(
        (a for a in attempts if invoice.id in a.covered_ids()), key=lambda a: (a.created_at, a.invoice_id, a.number)
    )
    if not covering:
        return InvoiceFacts(invoice.id, invoice.amount_due, invoice.due_date)
    latest = covering[-1]
    own = max((a.number for a in attempts if a.invoice_id == invoice.id), default=0)
    failed = [days.of(a) for a in covering if a.status in FAILED]
    saved_at = {m.id: m.saved_at for m in methods}
    new_method = method is not None and (
        method != latest.method_ref or saved_at.get(method, latest.created_at) > latest.created_at
    )
    return InvoiceFacts(
        invoice.id,
        invoice.amount_due,
        invoice.due_date,
        first_failed_on=min(failed, default=None),
        latest_attempt=AttemptFacts(own, latest.status, latest.hard_decline, days.of(latest)),
        new_method=new_method,
    )


def _service_facts(
    ports: DunningPorts,
    scope: Scope,
    contact_id: str,
    subscriptions: Iterable[Subscription],
    invoices: Iterable[Invoice],
    case: DunningCase | None,
) -> tuple[ServiceFacts, ...]:
    billed: dict[str, set[str]] = {}
    for invoice in invoices:
        for line in invoice.lines:
            if line.service_id:
                billed.setdefault(line.service_id, set()).add(invoice.id)
    stopped = case.ever_deactivated if case is not None else frozenset()
    found = []
    for subscription in subscriptions:
        wanted = [s for s in subscription.services if s.id in billed or s.id in stopped]
        if not wanted:
            continue
        log_of = ports.actions_of(scope, contact_id, subscription.id) if any(s.id in stopped for s in wanted) else []
        for service in wanted:
            found.append(
                ServiceFacts(
                    service.id,
                    subscription.id,
                    service.state,
                    subscription.grace_until,
                    frozenset(billed.get(service.id, ())),
                    stopped_by(log_of, service.id),
                )
            )
    return tuple(sorted(found, key=lambda s: s.service_id))


def dunning_action_id(case_id: str, kind: ActionKind[Any, Any], service_id: str) -> str:
    """The id of the system action a case takes on a service (one per case, kind and service)."""
    return f"act_{case_id}_{kind.name}_{service_id}"


def stopped_by(log_of: Iterable[Action], service_id: str) -> str | None:
    """The case whose deactivation left the service in its current state: the last executed
    action moving its state is a case's system deactivation (on one day, staff's comes last)."""
    moves = [
        a for a in log_of if a.service_id == service_id and a.executed_on is not None and a.kind.name in STATE_KINDS
    ]
    suffix = f"_{DEACTIVATE.name}_{service_id}"

    def ours(a: Action) -> bool:
        return a.by is Requester.SYSTEM and a.id.startswith("act_dun_") and a.id.endswith(suffix)

    if not moves:
        return None
    last = max(moves, key=lambda a: (a.executed_on, not ours(a)))
    return last.id.removeprefix("act_").removesuffix(suffix) if ours(last) else None


# -- deciding ----------------------------------------------------------------------------------------
def _load(ports: DunningPorts, scope: Scope, case_id: str) -> StoredCase:
    stored = ports.get_case(scope, case_id)
    if stored is None:
        raise NotFound(f"no dunning case {case_id}", field="case_id", code="dunning.case_not_found")
    return stored


def _stored(
    ports: DunningPorts, scope: Scope, stored: StoredCase, decision: Decision, world: World, clock: Clock
) -> Decided:
    """The decision stored on the case (`due`, `decided_on`, `decided_at`): one write conditioned on
    the version read (`ConcurrentModification`: decide again)."""
    due = None if stored.case.ended else (decision.until if isinstance(decision, Wait) else world.today)
    changed = replace(stored, due=due, decided_on=world.today, decided_at=clock.now())
    work = ports.unit_of_work(f"dunning case {stored.id}")
    saved = work.save_case(scope, changed, stored.version)
    work.commit()
    return Decided(scope, saved, decision)


def _retrying() -> range:
    return range(MAX_CONFLICT_RETRIES + 1)


def decide_case(ports: DunningPorts, ctx: TenantContext, case_id: str, *, clock: Clock) -> Decided:
    """The case's next decision on fresh facts, stored (`due`, `decided_on`); no step is taken.
    Costs `read_world` and one write."""
    for _ in _retrying():
        stored = _load(ports, ctx.scope, case_id)
        world = read_world(ports, ctx, stored.case.contact_id, stored.case.currency, stored.case, clock)
        decision = decide(stored.case, world.facts, world.today)
        try:
            return _stored(ports, ctx.scope, stored, decision, world, clock)
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"dunning case {case_id} kept changing; try again")


# -- steps -------------------------------------------------------------------------------------------
def take_step(
    ports: DunningPorts,
    ctx: TenantContext,
    case_id: str,
    kind: StepKind,
    *,
    clock: Clock,
    gateway: PaymentGateway | None,
    numbers: InvoiceNumbers,
) -> Decided:
    """Decide again and, only if the fresh decision is a `kind` step, take it and record it; then
    the next decision, stored. A step whose write loses to a concurrent change (a payment, a
    wake, another run of the same task) decides again from the start."""
    for _ in _retrying():
        stored = _load(ports, ctx.scope, case_id)
        case = stored.case
        world = read_world(ports, ctx, case.contact_id, case.currency, case, clock)
        decision = decide(case, world.facts, world.today)
        if kind is StepKind.RETRY and world.unfinished and gateway is not None and not case.ended:
            try:
                _finish_retries(ports, ctx, stored, world, clock, gateway)
            except ConcurrentModification:
                continue
            return decide_case(ports, ctx, case_id, clock=clock)
        if case.ended or decision.kind != kind:
            try:
                return _stored(ports, ctx.scope, stored, decision, world, clock)
            except ConcurrentModification:
                continue
        try:
            if isinstance(decision, Retry):
                _retry(ports, ctx, stored, decision, world, clock, gateway)
            elif isinstance(decision, Deactivate | Cancel | End):
                _on_services(ports, ctx, stored, decision, world, numbers)
            else:  # a reminder: recorded with the debt it reminds of, its event derived from the case's change
                facts, today = world.facts, world.today
                credit = facts.credit or Money.zero(facts.currency)
                reminded = reminder_outcome(facts.owed(today), facts.due(today), credit)
                _record(ports, ctx.scope, stored, decision, world.today, reminded)
        except ConcurrentModification:
            continue
        return decide_case(ports, ctx, case_id, clock=clock)
    raise ConcurrentModification(f"dunning case {case_id} kept changing; try again")


def _record(
    ports: DunningPorts, scope: Scope, stored: StoredCase, decision: Decision, today: date, outcome: str = ""
) -> StoredCase:
    work = ports.unit_of_work(f"dunning case {stored.id}: {decision.kind}")
    saved = work.save_case(scope, replace(stored, case=stored.case.record(decision, today, outcome)), stored.version)
    work.commit()
    return saved


def _retry(
    ports: DunningPorts,
    ctx: TenantContext,
    stored: StoredCase,
    decision: Retry,
    world: World,
    clock: Clock,
    gateway: PaymentGateway | None,
) -> None:
    """Charge each invoice again as the attempt number decided (`collect_invoice`: one attempt per
    number, whoever asks and however often), then record the step."""
    outcomes = []
    for invoice_id, number in decision.attempts:
        if gateway is None:
            outcomes.append(f"{invoice_id}: no payment rail")
            continue
        attempt = collect_invoice(ports, gateway, ctx.scope, invoice_id, clock=clock, number=number)
        outcomes.append(f"{invoice_id}: {'nothing to charge' if attempt is None else attempt.status.value}")
    _record_retry(ports, ctx.scope, stored, decision, world.today, "; ".join(outcomes))


def _record_retry(
    ports: DunningPorts, scope: Scope, stored: StoredCase, retry: Retry, today: date, outcome: str
) -> None:
    """Record the retry on the case. The record alone is retried on a conflict: the charges are
    done, the decision that asked for them is the one to record (recording it twice changes nothing)."""
    for _ in _retrying():
        try:
            work = ports.unit_of_work(f"dunning case {stored.id}: retry")
            work.save_case(scope, replace(stored, case=stored.case.record(retry, today, outcome)), stored.version)
            work.commit()
            return
        except ConcurrentModification:
            stored = _load(ports, scope, stored.id)
            if stored.case.ended:
                return
    raise ConcurrentModification(f"dunning case {stored.id} kept changing; try again")


def _finish_retries(
    ports: DunningPorts, ctx: TenantContext, stored: StoredCase, world: World, clock: Clock, gateway: PaymentGateway
) -> None:
    """A retry task run again after it died (or met the rail out of reach) having started its
    attempt: that attempt is taken on from its recorded state (`collection.resume`, as the sweep
    would: the charge an earlier run created is found, never a second one), and recorded as the
    case's retry if it is not yet."""
    attempts = tuple(sorted((a.invoice_id, a.number) for a in world.unfinished))
    outcomes = [
        f"{a.invoice_id}: {resume(ports, gateway, ctx.scope, a, clock=clock).status.value}" for a in world.unfinished
    ]
    retry = Retry(attempts)
    if {attempt_id(i, n) for i, n in attempts} <= stored.case.retried:
        return
    _record_retry(ports, ctx.scope, stored, retry, world.today, "; ".join(outcomes) + " (resumed)")


def _on_services(
    ports: DunningPorts,
    ctx: TenantContext,
    stored: StoredCase,
    decision: Deactivate | Cancel | End,
    world: World,
    numbers: InvoiceNumbers,
) -> None:
    """Deactivate, cancel or reactivate the decision's services as system actions naming the case,
    each subscription billed up to the day before first (as any action on its day), then one
    transaction: the subscriptions, their log records, the case's record at the version read and
    every invoice in debt at the version the decision read, under the contact's clock as read."""
    scope, today = ctx.scope, world.today
    owed = world.facts.owed(today)
    if isinstance(decision, Deactivate | Cancel) and decision.on is not None:
        today = decision.on  # as of the day it fell due (a clock jumped over it): docs/dunning.md
    kind: ActionKind[Any, Any]
    params: Any
    outcomes: list[str] = []
    match decision:
        case Deactivate(services=services):
            kind, params, why = DEACTIVATE, None, f"dunning {stored.id}: {owed} owed past grace"
        case Cancel(services=services, with_fees=with_fees):
            kind, why = CANCEL, f"dunning {stored.id}: deactivated for debt beyond the cancellation delay"
            params = CancelTerms(fee_waived=True) if not with_fees else None
        case End(reactivate=services):
            kind, params, why = ACTIVATE, None, f"dunning {stored.id}: nothing owed"
            outcomes.append(end_outcome(_why_nothing_owed(stored.case, world)))
    by_subscription: dict[str, list[str]] = {}
    for service_id in services:
        found = world.facts.service(service_id)
        if found is not None:
            by_subscription.setdefault(found.subscription_id, []).append(service_id)
    work = ports.unit_of_work(f"dunning case {stored.id}: {decision.kind}")
    for subscription_id, service_ids in sorted(by_subscription.items()):
        loaded = ports.load_subscription(scope, stored.case.contact_id, subscription_id)
        if loaded is None:
            continue
        _, subscription = bill_loaded(ports, ctx, loaded, today - timedelta(days=1), numbers)
        current: Subscription = subscription
        records: list[Action] = []
        for service_id in service_ids:
            action = kind.by_system(
                dunning_action_id(stored.id, kind, service_id),
                today,
                requested_on=today,
                reason=why,
                service_id=service_id,
                params=params,
            )
            step = execute(current, action)
            current = step.subscription
            records += step.actions
            done = step.actions[0]
            outcomes.append(f"{service_id}: {done.outcome}" + (f" ({done.rule})" if done.rule else ""))
        work.save_subscription(scope, current, subscription.version)
        for record in records:
            work.log_action(scope, current, record)
    recorded = replace(stored, case=stored.case.record(decision, today, "; ".join(outcomes)), due=None)
    work.save_case(scope, recorded, stored.version)
    for invoice in world.debt:
        work.check_invoice(scope, invoice)
    work.check_contact(scope, world.contact)  # its classification and exclusion, as decided on
    world.when.guard(work, scope)
    work.commit()


def _why_nothing_owed(case: DunningCase, world: World) -> list[str]:
    """Why nothing is owed, as far as what the end read tells (`END_REASONS`): the invoices in the
    currency settled since the case opened (paid, voided, written off), and credit covering what
    the open ones still owe."""
    reasons = [SETTLED[i.status] for i in world.settled if i.status_on is None or i.status_on >= case.opened_on]
    if world.facts.credit is not None and not world.facts.due(world.today).is_zero:
        reasons.append("credited")
    return reasons


# -- opening -----------------------------------------------------------------------------------------
def open_case(
    ports: DunningPorts,
    ctx: TenantContext,
    contact_id: str,
    currency: str,
    flows: DunningFlows,
    *,
    clock: Clock,
    cause: str | None = None,
    invoice_id: str | None = None,
) -> StoredCase | None:
    """On `payment.failed` and `invoice.overdue`: the contact's open case in `currency`, woken (a
    new failure may change its decision), or a new one and its execution started, when something
    is owed and the contact is not excluded (its open step recording `cause` and `invoice_id`: what
    opened it); None otherwise. Two openers racing make one case: its
    id is the next sequence's, created only if absent, and only the creator starts its execution."""
    scope = ctx.scope
    for _ in _retrying():
        # One Query of the contact's cases (bounded by the cases it ever had), so that "none is
        # open" and the next sequence come from the same read: an opener that read before another
        # created its case tries the same id, and loses.
        earlier = [c for c in ports.cases_of(scope, contact_id) if c.case.currency == currency]
        existing = next((c for c in earlier if not c.case.ended), None)
        if existing is not None:
            # Woken (one write), the case is as that write left it: one that ended after the Query
            # (its End read the facts before this failure was committed) follows nothing more, so
            # read again and open the next. One not ended yet cannot end on facts older than this
            # wake: the End's write is conditioned on the case's version, which the wake moved on.
            current, _ = _woken(ports, ctx, existing.id, flows, clock)
            if current is not None and current.case.ended:
                continue
            return existing
        world = read_world(ports, ctx, contact_id, currency, None, clock)
        if world.facts.owed(world.today).is_zero or world.contact.dunning_excluded:
            return None
        sequence = 1 + max((int(c.id.rsplit("_", 1)[1]) for c in earlier), default=0)
        policy = ctx.settings.dunning
        case = DunningCase.open(contact_id, currency, sequence, policy, world.today, cause=cause, invoice_id=invoice_id)
        opened = StoredCase(case, due=world.today, clocked=world.when.on_test_clock, decided_at=clock.now())
        work = ports.unit_of_work(f"opening dunning case {case.id}")
        try:
            saved = work.save_case(scope, opened, 0)
            work.commit()
        except ConcurrentModification:
            continue  # another opener came first: find its case
        flows.start(saved.execution_name, execution_input(scope, saved.id))
        log.info("dunning case %s opened", saved.id)
        return saved
    raise ConcurrentModification(f"opening a dunning case of contact {contact_id} kept conflicting; try again")


def open_for_invoice(
    ports: DunningPorts,
    ctx: TenantContext,
    invoice_id: str,
    flows: DunningFlows,
    *,
    clock: Clock,
    cause: str | None = None,
) -> StoredCase | None:
    """`open_case` for the contact and currency of `invoice_id` (its charge failed, or it fell
    overdue: `cause`, the event's type): one read of the invoice by id, then `open_case`."""
    invoice = ports.get_invoice(ctx.scope, invoice_id)
    if invoice is None:
        return None
    return open_case(
        ports, ctx, invoice.contact_id, invoice.currency, flows, clock=clock, cause=cause, invoice_id=invoice_id
    )


# -- parking and waking ------------------------------------------------------------------------------
def park(ports: DunningPorts, ctx: TenantContext, case_id: str, wake_seq: int, token: str, flows: DunningFlows) -> bool:
    """The flow's Park task: store its token, unless a wake came since its decision (`wake_seq`
    moved on) or the case ended: then resume it at once, to decide again. True: parked."""
    if ports.park_case(ctx.scope, case_id, wake_seq, token):
        return True
    flows.resume(token)
    return False


def wake(
    ports: DunningPorts,
    ctx: TenantContext,
    case_id: str,
    flows: DunningFlows,
    *,
    clock: Clock,
) -> bool:
    """Bump the case's `wake_seq` and resume its parked execution, if one is parked (only this
    wake resumes it). A case not ended with no parked token whose execution is not running (it
    failed, or was never started: a crash between the case's write and its start) is started
    again as the next run; one that runs (between two tasks, or resumed by another wake a moment
    ago) re-reads the case at its next decision. True: an execution was resumed or started."""
    return _woken(ports, ctx, case_id, flows, clock)[1]


def _woken(
    ports: DunningPorts, ctx: TenantContext, case_id: str, flows: DunningFlows, clock: Clock
) -> tuple[StoredCase | None, bool]:
    """`wake`, with the case as the wake's write left it (None: no such case)."""
    woken = ports.wake_case(ctx.scope, case_id)
    if woken is None:
        return None, False
    stored, token = woken
    if token is not None and flows.resume(token):
        return stored, True
    if stored.case.ended or flows.running(stored.execution_name):
        return stored, False
    return stored, _restart(ports, ctx.scope, stored, flows, clock)


def _restart(ports: DunningPorts, scope: Scope, stored: StoredCase, flows: DunningFlows, clock: Clock) -> bool:
    """The next run of the case's execution, claimed by one versioned write (two wakes at once
    start one run)."""
    work = ports.unit_of_work(f"restarting dunning case {stored.id}")
    try:
        saved = work.save_case(scope, replace(stored, run=stored.run + 1, decided_at=clock.now()), stored.version)
        work.commit()
    except ConcurrentModification:
        return False
    log.warning("dunning case %s had no live execution: started %s", stored.id, saved.execution_name)
    flows.start(saved.execution_name, execution_input(scope, saved.id))
    return True


def wake_contact(
    ports: DunningPorts, ctx: TenantContext, contact_id: str, flows: Callable[[], DunningFlows], *, clock: Clock
) -> int:
    """Wake the contact's open cases (a payment, a credit, a new card, its test clock's advance).
    One Query, then one UpdateItem per open case; `flows` is asked for the state machine only when
    a case is open (every clock advance calls this; most contacts have none). Answers how many
    executions were resumed or started."""
    open_cases = [c for c in ports.cases_of(ctx.scope, contact_id) if not c.case.ended]
    return sum(wake(ports, ctx, c.id, flows(), clock=clock) for c in open_cases)


@dataclass(frozen=True, slots=True)
class WakeRun:
    woken: int
    seen: int
    done: bool = True


def wake_due(
    ports: DunningPorts,
    flows: DunningFlows,
    *,
    clock: Clock,
    shards: int = DUE_SHARDS,
    page: int = WAKE_PAGE,
    keep_going: Callable[[], bool] = lambda: True,
) -> WakeRun:
    """The hourly schedule: every wake-up entry (contacts without a test clock) due on or before
    its tenant's today is woken. Per shard, pages of `page` entries up to the furthest day any
    zone has reached; each entry is checked against its tenant's day (settings read once per
    tenant), then woken (one UpdateItem, and a resume). `keep_going` is asked before each page: a
    run out of time stops (`done` False); what it left is still due, and the next hour wakes it."""
    now = clock.now()
    upper = (now.astimezone(UTC) + FURTHEST_AHEAD).date()
    contexts: dict[Scope, TenantContext] = {}
    woken = seen = 0
    for shard in range(shards):
        cursor: str | None = None
        while True:
            if not keep_going():
                return WakeRun(woken, seen, done=False)
            entries = ports.due_cases(shard, upper, page, cursor)
            for entry in entries.items:
                ctx = contexts.get(entry.scope)
                if ctx is None:
                    settings = ports.get_settings(entry.scope.tenant_id)
                    if settings is None:
                        continue
                    ctx = contexts[entry.scope] = TenantContext(entry.scope.tenant_id, entry.scope.mode, settings)
                seen += 1
                if entry.due <= local_date(now, tenant_zone(ctx.settings.timezone)):
                    woken += wake(ports, ctx, entry.case_id, flows, clock=clock)
            cursor = entries.cursor
            if cursor is None:
                break
    return WakeRun(woken, seen)
