"""Dunning cases over the API (docs/dunning.md, "The case over the API"): a contact's cases, one
case, and an operator's pause, resume and end.

An operator's change is written conditioned on the case's version and retried on a conflict (the
flow writes the same item), then the case is woken (`billow.services.dunning.wake`: its `wake_seq`
bumped, its parked execution resumed, or restarted when it has none left), so the flow decides on
it at once rather than at its next due day. Each is idempotent: pausing a paused case, resuming a
case not paused, ending an ended one changes nothing and answers the case as it stands (woken
again, which is harmless: the flow only re-decides)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from functools import partial

from billow.domain.dunning import DunningCase
from billow.domain.errors import InvalidInput, NotFound
from billow.domain.invoices import Invoice, InvoiceKind
from billow.domain.money import Money
from billow.services.contacts import contact_today, get_contact
from billow.services.context import Clock, TenantContext, edit_versioned
from billow.services.dunning import open_case, read_world, wake, wake_contact
from billow.services.ports import DunningFlows, DunningPorts, DunningStore, StoredCase

log = logging.getLogger(__name__)


def get_case(store: DunningStore, ctx: TenantContext, case_id: str) -> StoredCase:
    """The case of the caller's tenant and mode; 404 `dunning.case_not_found` for any other
    (another tenant's or mode's case is not found: its key is under their partition)."""
    try:
        stored = store.get_case(ctx.scope, case_id)
    except InvalidInput:  # not a case id at all: no such case either
        stored = None
    if stored is None:
        raise NotFound(f"no dunning case {case_id}", field="case_id", code="dunning.case_not_found")
    return stored


def cases_of(store: DunningPorts, ctx: TenantContext, contact_id: str) -> tuple[bool, list[StoredCase]]:
    """Whether the contact is excluded from dunning, and its cases, every currency's, newest first
    (404 `contact.not_found`)."""
    contact = get_contact(store, ctx, contact_id)
    return contact.dunning_excluded, store.cases_of(ctx.scope, contact_id)


@dataclass(frozen=True, slots=True)
class CaseNow:
    """What one case's answer reads fresh (`case_now`)."""

    owed: Money | None
    """The debt it follows now; None once it ended (what the contact owes then is its balance's)."""
    excluded: bool
    """Its contact is excluded from dunning: the case waits, as if paused."""
    holding: frozenset[str]
    """The services it deactivated that it still holds so (not effective, and neither staff nor its
    end reactivated them since: `ServiceFacts.stopped_by_case`)."""


def case_now(store: DunningPorts, ctx: TenantContext, stored: StoredCase, clock: Clock) -> CaseNow:
    """The case's debt as its next decision would read it, on the contact's today (the invoices in
    debt in its currency, failed or overdue, less the contact's credit), its contact's exclusion and
    the services it still holds deactivated: the facts' reads (a few Queries of the contact's
    partition, so for one case, not a list)."""
    case = stored.case
    world = read_world(store, ctx, case.contact_id, case.currency, case, clock)
    deactivated = case.deactivated
    holding = frozenset(
        s.service_id for s in world.facts.services if s.service_id in deactivated and s.stopped_by_case(case.id)
    )
    owed = None if case.ended else world.facts.owed(world.today)
    return CaseNow(owed, world.contact.dunning_excluded, holding)


class OperatorStep(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"


def _change(step: OperatorStep, today: date, reason: str) -> Callable[[DunningCase], DunningCase]:
    match step:
        case OperatorStep.PAUSE:
            return lambda case: case.paused(today, reason)
        case OperatorStep.RESUME:
            return lambda case: case.resumed(today, reason)
        case OperatorStep.END:
            return lambda case: case.ended_by_operator(today, reason)


def operate(
    store: DunningPorts,
    flows: Callable[[], DunningFlows],
    ctx: TenantContext,
    case_id: str,
    step: OperatorStep,
    reason: str | None,
    clock: Clock,
) -> StoredCase:
    """An operator pauses, resumes or ends the case on the contact's today (its test clock's in
    test mode), `reason` kept as the step's outcome. 409 `dunning.case_ended` to pause or resume an
    ended case; ending an ended case answers it. An end reactivates nothing (docs/dunning.md); when
    nothing is owed the case is not ended by the operator but woken, to end by itself, reactivating
    what it deactivated."""
    first = get_case(store, ctx, case_id)
    today = contact_today(store, ctx, first.case.contact_id, clock)
    change = _change(step, today, reason or "")
    what = f"dunning case {case_id}"

    debt: list[Invoice] = []

    def changed(stored: StoredCase) -> StoredCase | None:
        case = change(stored.case)
        if case == stored.case:
            return None
        debt.clear()
        if step is OperatorStep.END:
            # Nothing owed: the case ends by itself at the decision this wake brings, reactivating
            # what it deactivated; an operator's end would leave those services off. Else the end
            # is written only if that debt is still as read: a payment landing meanwhile fails it.
            world = read_world(store, ctx, case.contact_id, case.currency, stored.case, clock)
            if world.facts.owed(world.today).is_zero:
                return None
            debt.extend(world.debt)
        return replace(stored, case=case)

    def save(stored: StoredCase) -> StoredCase:
        work = store.unit_of_work(what)
        saved = work.save_case(ctx.scope, stored, stored.version)
        for invoice in debt:
            work.check_invoice(ctx.scope, invoice)
        work.commit()
        return saved

    edit_versioned(lambda: get_case(store, ctx, case_id), save, changed, what)
    _after_commit(lambda: wake(store, ctx, case_id, flows(), clock=clock), case_id)
    return get_case(store, ctx, case_id)


EXCLUSION_CLEARED = "exclusion_cleared"
"""What opened a case opened by clearing its contact's exclusion (`dunning.case_opened`'s `cause`)."""


def exclusion_changed(
    store: DunningPorts,
    ctx: TenantContext,
    contact_id: str,
    excluded: bool,
    flows: Callable[[], DunningFlows],
    clock: Clock,
) -> None:
    """After `PATCH /contacts/{id}` set or cleared `dunning_excluded`: excluded, its open cases are
    woken (they wait, as if paused); cleared, each currency it owes in, or has an open case in, is
    `open_case`d: an open case is woken and chased again at once, and a debt that opened no case
    while it was excluded (a failed charge) opens one now rather than when the invoice falls
    overdue. One Query of its cases and one of its invoices more than a wake."""
    if excluded:
        _after_commit(lambda: wake_contact(store, ctx, contact_id, flows, clock=clock), contact_id)
        return
    scope = ctx.scope
    currencies = {c.case.currency for c in store.cases_of(scope, contact_id) if not c.case.ended}
    currencies |= {
        i.currency
        for i in store.invoices_of(scope, contact_id)
        if i.kind is InvoiceKind.INVOICE and i.owed and i.amount_due.minor > 0
    }
    for currency in sorted(currencies):
        _after_commit(partial(_open_again, store, ctx, contact_id, currency, flows, clock), contact_id)


def _open_again(
    store: DunningPorts,
    ctx: TenantContext,
    contact_id: str,
    currency: str,
    flows: Callable[[], DunningFlows],
    clock: Clock,
) -> None:
    open_case(store, ctx, contact_id, currency, flows(), clock=clock, cause=EXCLUSION_CLEARED)


def _after_commit(wake_up: Callable[[], object], what: str) -> None:
    """A wake (or an opening) that follows an operator's committed change: the change stands and is
    answered whatever Step Functions says. A wake that fails (Step Functions out of reach, throttled)
    is logged, not raised as a 500 over a change already made: the case's park times out within a
    day and decides again, the hourly wake reaches a case due, and a case written without its
    execution is restarted by its next wake (`billow.services.dunning.wake`)."""
    try:
        wake_up()
    except Exception:
        log.warning("dunning: waking %s after an operator's change failed; the flow catches up", what, exc_info=True)
