"""Test clocks: advancing a contact's clock runs everything that became due for that contact, and
only it, off the request path.

An advance is two halves. `request_advance` (the API, synchronous) moves the clock, marks it
`advancing` in one versioned write and hands the billing to the clock-advance function; it answers
at once. `run_advance` (that function, asynchronous) bills the contact's subscriptions as of the
clock's new day, one subscription at a time, and marks the clock `ready` when all are billed.
Billing is idempotent per period (billow.services.billing), so a step that is retried, delivered
twice or resumed after a crash bills nothing twice; and one advance is bounded
(`TestClock.advance_limit`), so the work of one advance is bounded too (docs/lifecycle.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billow.domain.actions.change import pending_cycle
from billow.domain.calendar import Cycle, local_date, tenant_zone
from billow.domain.contacts import ClockStatus, TestClock
from billow.domain.errors import ConcurrentModification
from billow.domain.invoices import Invoice
from billow.domain.subscriptions import Subscription
from billow.gateways.invoke import CLOCK_ADVANCE, AsyncInvoker
from billow.services.billing import MAX_CONFLICT_RETRIES, InvoiceNumbers, bill_subscription
from billow.services.contacts import contact_and_clock, move_clock
from billow.services.context import TenantContext
from billow.services.ports import ClockPorts, ContactPorts, SubscriptionStore
from billow.services.receivables import move_contact_invoices


def advance_limit(store: SubscriptionStore, ctx: TenantContext, clock: TestClock) -> datetime:
    """The furthest instant the clock may be advanced to in one step, from its contact's subscriptions."""
    return limit_of(clock, store.subscriptions_of(ctx.scope, clock.contact_id))


def limit_of(clock: TestClock, subscriptions: Iterable[Subscription]) -> datetime:
    """The bound of one advance from these subscriptions: their cycles, and those of the price
    terms their pending changes move services to (an advance executing such a change starts a
    subscription of that cycle and bills it up to the clock's new day)."""
    cycles: list[Cycle] = []
    for subscription in subscriptions:
        cycles.append(subscription.key.cycle)
        cycles += (c for c in map(pending_cycle, subscription.actions) if c is not None)
    return clock.advance_limit(cycles)


def advance_event(ctx: TenantContext, contact_id: str, to: datetime) -> dict[str, Any]:
    """What the clock-advance function is invoked with (functions/clock_advance)."""
    return {"tenant_id": ctx.tenant_id, "mode": ctx.mode, "contact_id": contact_id, "to": to.isoformat()}


def request_advance(
    store: ContactPorts, ctx: TenantContext, contact_id: str, to: datetime, invoker: AsyncInvoker
) -> TestClock:
    """Move the clock to `to` and start billing what became due, asynchronously.

    Refused while another advance is under way (409 `test_clock.advancing`), backwards, or beyond
    the bound (422 `test_clock.advance_too_far`). Asking again for the advance under way (same
    `to`) hands it to the clock-advance function again: that is how an interrupted advance resumes.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        # In this order, each read consistently: the contact (its version), the clock, then the
        # subscriptions the bound is computed from. The move is conditioned on the versions of the
        # contact and of those subscriptions: an order, a move or an action that came in between
        # makes it read again and check the bound against what they wrote (`move_clock`).
        contact, clock = contact_and_clock(store, ctx, contact_id)
        subscriptions = store.subscriptions_of(ctx.scope, contact_id)
        moved = clock.advanced_to(to, limit_of(clock, subscriptions))
        if moved is not clock:
            try:
                moved = move_clock(store, ctx.scope, moved, contact.version, subscriptions)
            except ConcurrentModification:
                continue  # another request moved it first, or the subscriptions changed: check again
        invoker.invoke_async(CLOCK_ADVANCE, advance_event(ctx, contact_id, to))
        return moved
    raise ConcurrentModification(f"the test clock of contact {contact_id} kept changing; try again")


@dataclass
class AdvanceRun:
    done: bool  # False: stopped early (out of time); invoke again with the same event to go on
    invoices: list[Invoice] = field(default_factory=list)


def run_advance(
    store: ClockPorts,
    ctx: TenantContext,
    contact_id: str,
    to: datetime,
    numbers: InvoiceNumbers,
    *,
    keep_going: Callable[[], bool] = lambda: True,
    wake: Callable[[], object] = lambda: None,
) -> AdvanceRun:
    """Bill the contact's subscriptions as of the clock's day, move its invoices on to that day
    (finalise drafts, mark unpaid ones overdue), then mark the clock ready.

    An event for an advance that is no longer under way (already finished, or delivered twice) does
    nothing. `keep_going` is asked before each subscription; when it says no, the run stops with
    `done=False` and the same event continues it, billing only what is still due. `wake` (the
    contact's dunning cases: `billow.services.dunning.wake_contact`) is called once everything is
    billed and moved on, just before the clock is marked ready: a redelivery after a crash in
    between wakes them again (a wake is idempotent), so none is left asleep."""
    clock = store.get_clock(ctx.scope, contact_id)
    if clock is None or clock.status is not ClockStatus.ADVANCING or clock.frozen_time != to:
        return AdvanceRun(done=True)
    as_of = local_date(to, tenant_zone(ctx.settings.timezone))
    run = AdvanceRun(done=False)
    for subscription in store.subscriptions_of(ctx.scope, contact_id):
        if not keep_going():
            return run
        run.invoices += bill_subscription(store, ctx, contact_id, subscription.id, as_of, numbers)
    # Then the invoices' own days, on the clock's: drafts whose review ended, unpaid ones past due.
    move_contact_invoices(store, ctx, contact_id, as_of, numbers)
    wake()
    # A second delivery of this event may have finished it first (a new advance needs a ready clock).
    with suppress(ConcurrentModification):
        store.save_clock(ctx.scope, clock.done())
    run.done = True
    return run
