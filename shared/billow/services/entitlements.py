"""`GET /contacts/{id}/entitlements`: what the contact may use right now (docs/credits.md,
"Entitlements"), from ONE Query of its subscriptions (their services' states and terms); an
application may call it on each login. Its changes are the event `entitlements.changed`
(`billow.services.events`), derived from each subscription write that changes what it grants."""

from __future__ import annotations

from typing import Protocol

from billow.domain.entitlements import Entitlements, entitlements, grantors_of
from billow.services.contacts import contact_today, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.ports import ContactStore, SubscriptionStore


class EntitlementPorts(ContactStore, SubscriptionStore, Protocol):
    """The contact and its subscriptions."""


def entitlements_of(store: EntitlementPorts, ctx: TenantContext, clock: Clock, contact_id: str) -> Entitlements:
    subscriptions = store.subscriptions_of(ctx.scope, contact_id)
    if not subscriptions:
        get_contact(store, ctx, contact_id)  # 404 for a contact that does not exist
    today = contact_today(store, ctx, contact_id, clock)
    return entitlements(g for s in subscriptions for g in grantors_of(s, today))
