"""Contacts and their test clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from billow.domain.calendar import local_date, tenant_zone
from billow.domain.collection import CollectionMode
from billow.domain.contacts import Address, Contact, TestClock
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, NotFound
from billow.domain.lifecycle import FINAL_STATES
from billow.domain.money import Money, amounts_per_currency
from billow.domain.subscriptions import Subscription
from billow.services.context import MAX_EDIT_RETRIES, Clock, Scope, TenantContext, edit_versioned
from billow.services.ports import ContactPorts, ContactStore, Page, Transactions, UnitOfWork


def _credit_limit(credit_limit: Mapping[str, str] | None) -> dict[str, Money]:
    """Per-currency limits as the API takes them ({"EUR": "100.00"}); None clears them."""
    return {} if credit_limit is None else amounts_per_currency(credit_limit, "credit_limit")


def create_contact(
    store: ContactStore,
    ctx: TenantContext,
    *,
    name: str,
    email: str,
    billing_address: Address | None,
    classification: str | None,
    credit_limit: Mapping[str, str] | None,
    preferred_payment_method: str | None,
    clock: Clock,
    new_id: Callable[[str], str],
    collection: CollectionMode | None = None,
    dunning_excluded: bool = False,
) -> Contact:
    limit = _credit_limit(credit_limit)
    contact = Contact(
        id=new_id("con"),
        name=name,
        email=email,
        billing_address=billing_address,
        classification=classification,
        credit_limit=limit,
        preferred_payment_method=preferred_payment_method,
        test_mode=ctx.test_mode,
        created_at=clock.now(),
        collection=collection,
        dunning_excluded=dunning_excluded,
    )
    try:
        store.add_contact(ctx.scope, contact)
    except Conflict:
        # Ids derived from an idempotency key: this is a retry, answer with the first result.
        existing = store.get_contact(ctx.scope, contact.id)
        if existing is None:
            raise
        return existing
    return contact


def get_contact(store: ContactStore, ctx: TenantContext, contact_id: str) -> Contact:
    contact = store.get_contact(ctx.scope, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id}", field="contact_id")
    return contact


CONTACT_FIELDS = frozenset(
    {
        "name",
        "email",
        "billing_address",
        "classification",
        "credit_limit",
        "preferred_payment_method",
        "collection",
        "dunning_excluded",
    }
)


def _change_contact(
    store: ContactStore, ctx: TenantContext, contact_id: str, change: Callable[[Contact], Contact | None]
) -> Contact:
    return edit_versioned(
        lambda: get_contact(store, ctx, contact_id),
        lambda contact: store.save_contact(ctx.scope, contact),
        change,
        f"contact {contact_id}",
    )


def update_contact(store: ContactStore, ctx: TenantContext, contact_id: str, changes: dict[str, Any]) -> Contact:
    """Change some of a contact's details (`None` clears an optional one). Invoices already issued
    keep what they show; the classification counts from the next order or change, the credit
    limit and preferred payment method from the next time they are checked."""
    unknown = set(changes) - CONTACT_FIELDS
    if unknown:
        raise InvalidInput("not a contact field", field=sorted(unknown)[0])
    if "credit_limit" in changes:
        changes = {**changes, "credit_limit": _credit_limit(changes["credit_limit"])}
    if changes.get("collection") is not None:
        changes = {**changes, "collection": CollectionMode(changes["collection"])}

    def change(contact: Contact) -> Contact | None:
        changed = replace(contact, **changes)
        return None if changed == contact else changed

    return _change_contact(store, ctx, contact_id, change)


def set_contact_archived(store: ContactPorts, ctx: TenantContext, contact_id: str, archived: bool) -> Contact:
    """Archive (or unarchive) a contact. Only a contact whose services have all ended (cancelled
    or regretted) can be archived: 409 `contact.has_live_services` otherwise. An archived contact
    takes no new orders (409 `contact.archived`); its invoices stay readable and payable. The
    write is conditioned on the contact's version, which every order moves on, so an order racing
    the archiving makes one of them retry and see the other."""

    def change(contact: Contact) -> Contact | None:
        if contact.archived == archived:
            return None
        if archived:
            live = [
                s.id
                for sub in store.subscriptions_of(ctx.scope, contact_id)
                for s in sub.services
                if s.state not in FINAL_STATES
            ]
            if live:
                raise Conflict(
                    f"contact {contact_id} has {len(live)} service(s) not cancelled or regretted "
                    f"({', '.join(live[:3])}); cancel them first",
                    field="contact_id",
                    code="contact.has_live_services",
                )
        return replace(contact, archived=archived)

    return _change_contact(store, ctx, contact_id, change)


def check_orderable(contact: Contact) -> None:
    if contact.archived:
        raise Conflict(
            f"contact {contact.id} is archived; unarchive it to order", field="contact_id", code="contact.archived"
        )


def list_contacts(store: ContactStore, ctx: TenantContext, *, limit: int, cursor: str | None) -> Page[Contact]:
    return store.list_contacts(ctx.scope, limit, cursor)


@dataclass(frozen=True, slots=True)
class ContactTime:
    """What time it is for one contact: its test clock's, if it has one, else the real time."""

    now: datetime
    today: date  # the calendar day of `now` in the tenant's time zone
    test_clock: TestClock | None  # as read: `guard` conditions a write on it

    @property
    def on_test_clock(self) -> bool:
        return self.test_clock is not None

    def guard(self, work: UnitOfWork, scope: Scope) -> None:
        """Commit `work` only if the contact's clock has not moved since it was read: a write
        stamped with this time and day (its `clock_time`, a refund's day) loses to a concurrent
        advance and is retried on the new time. Nothing for a contact on real time (no clock to
        move, no cost); a condition check writes nothing."""
        if self.test_clock is not None:
            work.check_clock(scope, self.test_clock)


def contact_time(store: ContactStore, ctx: TenantContext, contact_id: str, clock: Clock) -> ContactTime:
    """One read of the contact's clock item; pass the result on rather than reading it again.

    A write that depends on it must be conditioned on what a clock move changes: the contact's
    version read *before* it (an order), the version of the subscription it writes (an action),
    since moving a clock moves both on (`move_clock`), or else the clock item itself
    (`ContactTime.guard`: receivables and payments, which write neither). A writer that read the
    old time then loses, and reads the new one."""
    test_clock = store.get_clock(ctx.scope, contact_id)
    now = test_clock.frozen_time if test_clock is not None else clock.now()
    return ContactTime(now, local_date(now, tenant_zone(ctx.settings.timezone)), test_clock)


def contact_today(store: ContactStore, ctx: TenantContext, contact_id: str, clock: Clock) -> date:
    return contact_time(store, ctx, contact_id, clock).today


def create_test_clock(store: ContactPorts, ctx: TenantContext, contact_id: str, frozen_time: datetime) -> TestClock:
    """Give a test-mode contact its own clock. Only before it has subscriptions: a clock attached
    later would have to rewrite billing history that real time already made (409
    `test_clock.after_ordering`). The clock is written conditioned on the contact's version, which
    every order moves on: of an order and a clock racing, one retries and sees the other (the order
    then starts on the clock's day, or the clock is refused)."""
    _test_mode_only(ctx)
    for _ in range(MAX_EDIT_RETRIES + 1):
        contact = get_contact(store, ctx, contact_id)  # first: the write is conditioned on its version
        ordered = store.subscriptions_of(ctx.scope, contact_id)
        existing = store.get_clock(ctx.scope, contact_id)  # after: orders placed under it are its own
        if existing is not None:
            if existing.frozen_time == frozen_time:
                return existing  # a retry of the create that made it
            raise Conflict(
                f"contact {contact_id} already has a test clock; advance it instead", code="test_clock.exists"
            )
        if ordered:
            raise Conflict(
                f"contact {contact_id} already has subscriptions; attach a test clock before ordering",
                code="test_clock.after_ordering",
            )
        try:
            return move_clock(store, ctx.scope, TestClock(contact_id, frozen_time), contact.version, ())
        except ConcurrentModification:
            continue  # a clock, an order or an edit came first: check again against what it wrote
    raise ConcurrentModification(f"the test clock of contact {contact_id} kept changing; try again")


def move_clock(
    store: Transactions, scope: Scope, clock: TestClock, contact_version: int, subscriptions: Iterable[Subscription]
) -> TestClock:
    """Create the clock or move its time, in one transaction that also moves on the version of
    the contact and of each of its `subscriptions`, each only if still at the version it was
    read at. Every write that depends on the contact's today (an order: the contact's version;
    an action or a move: its subscription's) is conditioned on one of those, so a writer that
    read the old time loses and re-reads; and the clock is not moved if an order or a move
    changed the subscriptions it was checked against (attach before ordering, the advance's
    bound) since they were read."""
    work = store.unit_of_work("test clock")
    moved = work.save_clock(scope, clock)
    work.touch_contact(scope, clock.contact_id, contact_version)
    for subscription in subscriptions:
        work.touch_subscription(scope, subscription)
    work.commit()
    return moved


def _test_mode_only(ctx: TenantContext) -> None:
    """Test clocks exist only in test mode (a live key cannot even see a test contact)."""
    if not ctx.test_mode:
        raise Conflict("test clocks exist only in test mode: use a test-mode API key", code="test_clock.live_mode")


def get_test_clock(store: ContactStore, ctx: TenantContext, contact_id: str) -> TestClock:
    return contact_and_clock(store, ctx, contact_id)[1]


def contact_and_clock(store: ContactStore, ctx: TenantContext, contact_id: str) -> tuple[Contact, TestClock]:
    """The contact, then its test clock, read in that order (a write moving the clock is
    conditioned on the contact's version read first)."""
    _test_mode_only(ctx)
    contact = get_contact(store, ctx, contact_id)
    found = store.get_clock(ctx.scope, contact_id)
    if found is None:
        raise NotFound(f"contact {contact_id} has no test clock", field="contact_id")
    return contact, found
