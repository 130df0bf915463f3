"""A contact's saved payment methods: start a setup, record it once it succeeded, list, choose the
default, remove. The rail (`PaymentGateway`) holds the card; Billow records which methods are the
contact's, so what a tenant lists, names and charges is always its own contact's (the rail is asked
only about objects Billow recorded for that contact).

Flow (docs/payments.md): `start_setup` makes the contact's rail customer on first need and a setup
for off-session use, whose client secret the tenant's page hands to Stripe.js; the customer
confirms it there; `record_setup` then reads the setup from the rail and records the saved method
(idempotent on the setup: recording it again answers the same method). The contact's first method
becomes its default.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from datetime import date

from billow.domain.actions.change_payment_method import CHANGE_PAYMENT_METHOD
from billow.domain.actions.change_payment_method import PaymentMethod as ChosenMethod
from billow.domain.contacts import Contact
from billow.domain.errors import ConcurrentModification, Conflict, NotFound
from billow.domain.payment_methods import SavedPaymentMethod, next_month
from billow.domain.timeline import execute
from billow.services.contacts import _change_contact, contact_today, get_contact
from billow.services.context import MAX_EDIT_RETRIES, Clock, Scope, SystemClock, TenantContext
from billow.services.gateway import GatewayUnavailable, PaymentGateway, SetupStarted
from billow.services.idempotency import RETENTION
from billow.services.ports import ContactStore, Page, PaymentMethodPorts, PaymentMethodStore, UnitOfWork

log = logging.getLogger(__name__)


def _metadata(ctx: TenantContext, contact_id: str) -> dict[str, str]:
    """What the rail's objects carry, so a webhook or a reader finds whose they are."""
    return {"tenant_id": ctx.tenant_id, "mode": ctx.mode, "contact_id": contact_id}


def rail_customer(store: ContactStore, ctx: TenantContext, contact: Contact, gateway: PaymentGateway) -> str:
    """The contact's customer on the rail, made at its first need and recorded on the contact.
    Two requests racing both ask the rail (with one idempotency key: Stripe answers both with one
    customer); the contact records the first, and the second uses it."""
    if contact.gateway_customer_ref is not None:
        return contact.gateway_customer_ref
    made = gateway.ensure_customer(
        existing_ref=None,
        email=contact.email,
        name=contact.name,
        metadata=_metadata(ctx, contact.id),
        idempotency_key=f"billow:{ctx.tenant_id}:{ctx.mode}:{contact.id}:customer",
    )

    def record(current: Contact) -> Contact | None:
        return None if current.gateway_customer_ref is not None else replace(current, gateway_customer_ref=made)

    recorded = _change_contact(store, ctx, contact.id, record)
    return recorded.gateway_customer_ref or made


def start_setup(
    store: PaymentMethodPorts,
    ctx: TenantContext,
    contact_id: str,
    gateway: PaymentGateway,
    clock: Clock,
    *,
    request_id: str,
    keyed: bool = False,
) -> SetupStarted:
    """A setup the customer confirms with Stripe.js (its `client_secret`). `request_id` is the
    rail's idempotency key (derived from the request's Idempotency-Key when it has one: `keyed`).
    A keyed request records the setup it started, so its replay answers that same setup (its
    client secret read again from the rail) instead of starting another: the rail's idempotency
    keys are not relied on (localstripe ignores them; Stripe keeps them 24 h). Of twins racing,
    the setup recorded first is every one's answer (another started meanwhile is never confirmed)."""
    contact = get_contact(store, ctx, contact_id)
    if keyed and (started := store.started_setup(ctx.scope, contact_id, request_id)) is not None:
        return _started(gateway, started)
    customer = rail_customer(store, ctx, contact, gateway)
    made = gateway.start_setup(
        customer, idempotency_key=f"billow:{ctx.tenant_id}:{request_id}", metadata=_metadata(ctx, contact_id)
    )
    if not keyed:
        return made
    recorded = store.remember_setup(ctx.scope, contact_id, request_id, made.ref, clock.now() + RETENTION)
    return made if recorded == made.ref else _started(gateway, recorded)


def _started(gateway: PaymentGateway, setup_ref: str) -> SetupStarted:
    state = gateway.setup_state(setup_ref)
    if state.client_secret is None:
        raise GatewayUnavailable(f"the rail did not give setup {setup_ref}'s client secret; retry")
    return SetupStarted(setup_ref, state.client_secret)


def save_from_setup(
    store: PaymentMethodPorts, scope: Scope, contact_id: str, setup_ref: str, gateway: PaymentGateway, clock: Clock
) -> tuple[SavedPaymentMethod, bool]:
    """(the method the setup saved, whether this call recorded it). Refused unless the setup is
    this contact's (`payment_method.setup_not_found`, 404: another contact's or tenant's setup is
    not even acknowledged) and succeeded (`payment_method.setup_incomplete`, 409)."""
    contact = _contact(store, scope, contact_id)
    not_found = NotFound(
        f"contact {contact_id} has no setup {setup_ref}", field="setup_id", code="payment_method.setup_not_found"
    )
    if contact.gateway_customer_ref is None:
        raise not_found
    state = gateway.setup_state(setup_ref)
    if state.customer_ref != contact.gateway_customer_ref:
        raise not_found
    if not state.succeeded or state.method is None:
        raise Conflict(
            f"setup {setup_ref} has not succeeded yet: the customer confirms it with Stripe.js first",
            field="setup_id",
            code="payment_method.setup_incomplete",
        )
    saved = state.method
    for _ in range(MAX_EDIT_RETRIES + 1):
        contact = _contact(store, scope, contact_id)  # first: the default is set on its version
        existing = store.get_payment_method(scope, contact_id, saved.ref)
        if existing is not None:
            if existing.removed:
                raise Conflict(
                    f"payment method {saved.ref} was removed; save the card again with a new setup",
                    field="setup_id",
                    code="payment_method.removed",
                )
            return existing, False  # a retry: recorded already
        method = SavedPaymentMethod(
            id=saved.ref,
            contact_id=contact_id,
            rail=gateway.name,
            customer_ref=saved.customer_ref,
            setup_ref=setup_ref,
            kind=saved.kind,
            brand=saved.brand,
            last4=saved.last4,
            exp_month=saved.exp_month,
            exp_year=saved.exp_year,
            saved_at=clock.now(),
        )
        gateway.attach_method(saved.ref, state.customer_ref)  # new to Billow: never a removed one
        work = store.unit_of_work(f"payment method {saved.ref}")
        recorded = work.save_payment_method(scope, method)
        if contact.default_method_ref is None:
            work.save_contact(scope, replace(contact, default_method_ref=method.id))
        try:
            work.commit()
        except ConcurrentModification:
            continue  # recorded by a racing retry, or the contact changed: look again
        return recorded, True
    raise ConcurrentModification(f"contact {contact_id} kept changing; try again")


def record_setup(store: PaymentMethodPorts, gateway: PaymentGateway, scope: Scope, setup_ref: str) -> object:
    """The `setup_intent.succeeded` webhook's applier (billow.services.webhooks.APPLIERS): records
    the method as `POST /contacts/{id}/payment-methods` would, for the contact the setup names
    (its metadata, which Billow set), so a card is saved even if the tenant's page never calls back."""
    contact_id = gateway.setup_state(setup_ref).metadata.get("contact_id")
    if not contact_id:
        return None  # not a setup Billow started: nothing of Billow's to record
    return save_from_setup(store, scope, contact_id, setup_ref, gateway, SystemClock())


def _contact(store: ContactStore, scope: Scope, contact_id: str) -> Contact:
    contact = store.get_contact(scope, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id}", field="contact_id")
    return contact


def saved_method(store: PaymentMethodStore, scope: Scope, contact_id: str, method_id: str) -> SavedPaymentMethod:
    """A method the contact saved and has not removed, else `payment_method.not_found` (404)."""
    method = store.get_payment_method(scope, contact_id, method_id)
    if method is None or method.removed:
        raise NotFound(
            f"contact {contact_id} has no saved payment method {method_id}",
            field="payment_method",
            code="payment_method.not_found",
        )
    return method


def list_methods(
    store: PaymentMethodPorts, ctx: TenantContext, contact_id: str, *, limit: int, cursor: str | None
) -> tuple[Contact, Page[SavedPaymentMethod]]:
    """The contact and a page of its saved methods (not the removed ones), in id order."""
    contact = get_contact(store, ctx, contact_id)
    return contact, store.payment_methods_page(ctx.scope, contact_id, limit, cursor)


def set_default(store: PaymentMethodPorts, ctx: TenantContext, contact_id: str, method_id: str) -> Contact:
    saved_method(store, ctx.scope, contact_id, method_id)

    def change(contact: Contact) -> Contact | None:
        return None if contact.default_method_ref == method_id else replace(contact, default_method_ref=method_id)

    return _change_contact(store, ctx, contact_id, change)


MAX_SUBSCRIPTIONS_FOLLOWING = 45
"""Subscriptions set back to the contact's default in one transaction (two items each, with the
method and the contact: within DynamoDB's 100). The removal's transaction takes the first ones;
any further ones follow in transactions of their own right after it (and again on a retry of the
removal, should it die in between: meanwhile they name a removed method, which is never charged,
collection falling back to the default)."""


def remove_method(
    store: PaymentMethodPorts,
    ctx: TenantContext,
    contact_id: str,
    method_id: str,
    gateway: PaymentGateway,
    clock: Clock,
) -> SavedPaymentMethod:
    """Detach it on the rail (it can no longer be charged), then, in one transaction, record it
    removed, clear it as the contact's default if it was, and set every subscription naming it back
    to the contact's default (each logged as a `change_payment_method` by the system). A retry
    after a crash between the two detaches again (nothing to do) and records; removing a removed
    method detaches it again (a no-op unless something attached it since) and answers it as it is."""
    method = store.get_payment_method(ctx.scope, contact_id, method_id)
    get_contact(store, ctx, contact_id)
    if method is not None and method.removed:
        gateway.remove_method(method_id)  # detached again, should anything have attached it since
        _all_follow_default(store, ctx, contact_id, method_id, clock)
        return method
    method = saved_method(store, ctx.scope, contact_id, method_id)
    gateway.remove_method(method_id)
    for _ in range(MAX_EDIT_RETRIES + 1):
        contact = get_contact(store, ctx, contact_id)
        current = store.get_payment_method(ctx.scope, contact_id, method_id) or method
        if current.removed:
            return current  # a racing removal recorded it
        work = store.unit_of_work(f"payment method {method_id}")
        removed = work.save_payment_method(ctx.scope, replace(current, removed_at=clock.now()))
        if contact.default_method_ref == method_id:
            work.save_contact(ctx.scope, replace(contact, default_method_ref=None))
        _follow_default(store, ctx, work, contact_id, method_id, clock)
        try:
            work.commit()
        except ConcurrentModification:
            continue
        _all_follow_default(store, ctx, contact_id, method_id, clock)
        return removed
    raise ConcurrentModification(f"payment method {method_id} kept changing; try again")


def _all_follow_default(
    store: PaymentMethodPorts, ctx: TenantContext, contact_id: str, method_id: str, clock: Clock
) -> None:
    """The subscriptions still naming the removed method (beyond the removal's transaction), set
    back to the default in transactions of their own."""
    for _ in range(200):  # each pass sets up to MAX_SUBSCRIPTIONS_FOLLOWING back, or loses a race and reads again
        work = store.unit_of_work(f"subscriptions of removed payment method {method_id}")
        if not _follow_default(store, ctx, work, contact_id, method_id, clock):
            return
        with contextlib.suppress(ConcurrentModification):  # a subscription changed: read again
            work.commit()


def _follow_default(
    store: PaymentMethodPorts, ctx: TenantContext, work: UnitOfWork, contact_id: str, method_id: str, clock: Clock
) -> bool:
    """Stage the subscriptions naming `method_id` (at most `MAX_SUBSCRIPTIONS_FOLLOWING`) set back
    to the contact's default, each only if still at the version read, with its log record. False
    when none names it."""
    naming = [s for s in store.subscriptions_of(ctx.scope, contact_id) if s.payment_method == method_id]
    if not naming:
        return False
    today = contact_today(store, ctx, contact_id, clock)
    for subscription in naming[:MAX_SUBSCRIPTIONS_FOLLOWING]:
        action = CHANGE_PAYMENT_METHOD.by_system(
            f"act_{subscription.id.removeprefix('sub_')}_pm_{method_id}_removed",
            today,
            requested_on=today,
            reason=f"payment method {method_id} removed: the contact's default pays it",
            params=ChosenMethod(None),
        )
        step = execute(subscription, action)
        work.save_subscription(ctx.scope, step.subscription, subscription.version)
        for record in step.actions:
            work.log_action(ctx.scope, step.subscription, record)
        log.info(
            "subscription %s: payment method %s removed, the contact's default pays it", subscription.id, method_id
        )
    return True


def announce_expiring(store: PaymentMethodPorts, today: date, shard: int) -> int:
    """Mark every method of the due shard that expires at the end of next month as announced
    today (its stream record becomes `payment_method.expiring`, billow.services.events): once per
    method, since a marked one leaves the index and the mark is a versioned write (a second run,
    or a racing one, finds it marked, or loses the write and finds it marked on reading again).
    Called by each shard of the daily billing run. Returns how many were announced."""
    announced = 0
    for scope, method in store.expiring_methods(next_month(today), shard):
        for _ in range(MAX_EDIT_RETRIES + 1):
            if not method.to_announce:
                break
            work = store.unit_of_work(f"payment method {method.id} expiring")
            work.save_payment_method(scope, replace(method, expiring_announced_on=today))
            try:
                work.commit()
            except ConcurrentModification:
                again = store.get_payment_method(scope, method.contact_id, method.id)
                if again is None:
                    break
                method = again
                continue
            announced += 1
            break
    return announced
