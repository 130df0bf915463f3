"""Advancing a contact's test clock runs everything that became due for that contact, and only it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from billow.domain.calendar import local_date, tenant_zone
from billow.domain.contacts import TestClock
from billow.domain.invoices import Invoice
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.contacts import get_test_clock
from billow.services.context import TenantContext
from billow.services.ports import Store


@dataclass(frozen=True, slots=True)
class ClockAdvance:
    clock: TestClock
    today: date  # the clock's day in the tenant's time zone: what was billed up to
    invoices: list[Invoice]


def advance_test_clock(
    store: Store, ctx: TenantContext, contact_id: str, to: datetime, numbers: InvoiceNumbers
) -> ClockAdvance:
    """Move the clock to `to`, then bill the contact's subscriptions as of that day.

    The clock is saved first: if billing is interrupted, advancing again to the same instant (or
    any later one) finishes it, and billing never runs twice for a period either way.
    """
    clock = get_test_clock(store, ctx, contact_id)
    moved = clock.advanced_to(to)
    if moved != clock:
        moved = store.save_clock(ctx.tenant_id, moved)
    as_of = local_date(moved.frozen_time, tenant_zone(ctx.settings.timezone))
    invoices: list[Invoice] = []
    for subscription in store.subscriptions_of(ctx.tenant_id, contact_id):
        invoices += bill_subscription(store, ctx.settings, contact_id, subscription.id, as_of, numbers)
    return ClockAdvance(moved, as_of, invoices)
