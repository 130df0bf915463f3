"""Allowances at submission, and the contact-level overrides (docs/billing.md, "Allowances").

A service whose allowance (its usage price's, or the contact's override for that meter) refuses
usage beyond it writes each record through `write`: the record and the service's counter for the
record's billing cycle in ONE TransactWriteItems, the counter conditioned on every window still
holding the record. Concurrent submissions, from any number of containers, can therefore never
overdraw a window, and the counter is exactly what was accepted. Records are written one after
another, in the order given: a batch that crosses the allowance accepts the records that fit and
refuses the rest (each naming the window and what remains of it).

An `overage` allowance refuses nothing and counts nothing at submission: billing prices what
`billow.domain.allowances.billable` says is beyond the windows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from billow.domain.allowances import Counted
from billow.domain.calendar import Period
from billow.domain.contacts import Contact
from billow.domain.errors import InvalidInput
from billow.domain.pricing import METER_MAX_LENGTH, METER_PATTERN, Allowance, Beyond, parse_allowance
from billow.domain.subscriptions import Service
from billow.domain.usage import UsageRecord
from billow.services.contacts import get_contact
from billow.services.context import Scope, TenantContext, edit_versioned
from billow.services.ports import AllowanceStore, ContactStore

MAX_OVERRIDES = 100
"""Meters a contact may have its own allowance on (the contact item stays small: every batch reads it)."""


def effective(contact: Contact | None, meter: str | None, terms_allowance: Allowance | None) -> Allowance | None:
    """The allowance a service's records on `meter` are held to: the contact's override for that
    meter when it has one, else its price terms'."""
    if contact is not None and meter is not None and meter in contact.allowances:
        return contact.allowances[meter]
    return terms_allowance


def basis(contact: Contact | None, service: Service) -> str:
    """What a service's allowance comes from, as its counter records it: the contact's override
    (at its revision) or the service's price terms (as of their last change). A counter opened on
    another basis may have missed records accepted meanwhile without counting (an `overage`
    allowance in between): it is opened again from the stored records before it counts."""
    meter = service.terms.meter
    if contact is not None and meter is not None and meter in contact.allowances:
        return f"contact:{contact.allowances_revision}"
    return f"terms:{service.terms.id}:{service.restarted_on or service.start_date}"


def refuses(allowance: Allowance | None) -> bool:
    """Whether records held to `allowance` go through `write` (counted at submission)."""
    return allowance is not None and allowance.beyond is Beyond.REFUSE


def write(
    store: AllowanceStore,
    scope: Scope,
    allowance: Allowance,
    records: Sequence[tuple[UsageRecord, Period]],
    basis: str,
) -> list[Counted]:
    """Write one service's records (each with its billing period), in order, each with its
    counter in one transaction: accepted, duplicate (nothing counted again) or refused (the
    window and what remains). `basis` says where the allowance comes from (`basis`)."""
    return [store.add_counted_usage(scope, record, allowance, cycle, basis) for record, cycle in records]


# -- the contact-level override ------------------------------------------------------------------------
def _meter(meter: str) -> str:
    if len(meter) > METER_MAX_LENGTH or not re.fullmatch(METER_PATTERN, meter):
        raise InvalidInput(
            f"a meter is 1 to {METER_MAX_LENGTH} characters a-z, 0-9 and _", field="meter", code="usage.invalid_meter"
        )
    return meter


def set_allowance(
    store: ContactStore, ctx: TenantContext, contact_id: str, meter: str, raw: Mapping[str, Any]
) -> Contact:
    """Give the contact its own allowance on `meter` (the allowance JSON of price terms), replacing
    the terms' for its services on that meter. Records submitted after it are held to it; a
    counter opened for the cycle counts what the cycle used already (a lower limit may be reached)."""
    allowance = parse_allowance(raw)
    _meter(meter)

    def change(allowances: Mapping[str, Allowance]) -> Mapping[str, Allowance]:
        if meter not in allowances and len(allowances) >= MAX_OVERRIDES:
            raise InvalidInput(
                f"a contact has its own allowance on at most {MAX_OVERRIDES} meters; remove one first",
                field="meter",
                code="usage.too_many_allowances",
            )
        return {**allowances, meter: allowance}

    return _change_allowances(store, ctx, contact_id, change)


def remove_allowance(store: ContactStore, ctx: TenantContext, contact_id: str, meter: str) -> Contact:
    """Drop the contact's own allowance on `meter`: its services on that meter are held to their
    terms' allowance again (a repeat changes nothing)."""
    _meter(meter)

    def change(allowances: Mapping[str, Allowance]) -> Mapping[str, Allowance]:
        return {m: a for m, a in allowances.items() if m != meter}

    return _change_allowances(store, ctx, contact_id, change)


def _change_allowances(
    store: ContactStore,
    ctx: TenantContext,
    contact_id: str,
    change: Callable[[Mapping[str, Allowance]], Mapping[str, Allowance]],
) -> Contact:
    """The contact with its allowances changed, written conditioned on its version (retried when
    someone else changed it first); nothing is written when they come out the same (a repeat)."""

    def changed(contact: Contact) -> Contact | None:
        allowances = change(contact.allowances)
        if allowances == contact.allowances:
            return None
        return replace(contact, allowances=allowances, allowances_revision=contact.allowances_revision + 1)

    return edit_versioned(
        lambda: get_contact(store, ctx, contact_id),
        lambda contact: store.save_contact(ctx.scope, contact),
        changed,
        f"contact {contact_id}",
    )
