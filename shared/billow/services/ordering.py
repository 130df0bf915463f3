"""Ordering use cases: quote an order's first invoices, then place it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from billow.domain.billing import InvoiceDraft
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, NotFound
from billow.domain.invoices import Invoice
from billow.domain.ordering import Order, OrderItem, OrderPlan, plan_order, quote_order
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.contacts import ContactTime, check_orderable, contact_time, get_contact
from billow.services.context import Clock, Scope, TenantContext
from billow.services.idempotency import key_reused
from billow.services.ports import CatalogStore, OrderingPorts, Transactions

MAX_CONFLICT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class OrderItemInput:
    product_id: str
    terms_id: str
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class Quote:
    contact_id: str
    start_date: date
    invoices: list[InvoiceDraft]
    payment_terms_days: int
    new_ids: frozenset[str]
    """Ids made up for what the order would create: not shown (placing the order makes its own)."""


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order: Order
    invoices: list[Invoice]
    replayed: bool  # True when the reference matched an order placed before
    today: date  # the day the order was placed and billed on, on the contact's clock


def _resolve(store: CatalogStore, ctx: TenantContext, items: Sequence[OrderItemInput]) -> list[OrderItem]:
    resolved = []
    for index, item in enumerate(items):
        product = store.get_product(ctx.tenant_id, item.product_id)
        if product is None:
            raise NotFound(f"no product {item.product_id}", field=f"items[{index}].product_id")
        terms = product.orderable_terms(item.terms_id, field=f"items[{index}].terms_id")
        resolved.append(OrderItem(product, terms, item.quantity))
    return resolved


def _plan(
    store: OrderingPorts,
    ctx: TenantContext,
    contact_id: str,
    items: Sequence[OrderItemInput],
    start_date: date | None,
    reference: str | None,
    time: ContactTime,
    new_id: Callable[[str], str],
    classification: str | None,
    activate_on_payment: bool | None = None,
    request: str | None = None,
) -> OrderPlan:
    return plan_order(
        order_id=new_id("ord"),
        contact_id=contact_id,
        reference=reference,
        items=_resolve(store, ctx, items),
        start_date=start_date or time.today,
        today=time.today,
        existing=store.subscriptions_of(ctx.scope, contact_id),
        new_id=new_id,
        test_clock=time.on_test_clock,
        rules=ctx.settings.billing,
        policy=ctx.settings.subscriptions,
        classification=classification,
        activate_on_payment=activate_on_payment,
        request=request,
    )


def quote(
    store: OrderingPorts,
    ctx: TenantContext,
    contact_id: str,
    items: Sequence[OrderItemInput],
    start_date: date | None,
    clock: Clock,
    new_id: Callable[[str], str],
) -> Quote:
    contact = get_contact(store, ctx, contact_id)
    check_orderable(contact)
    time = contact_time(store, ctx, contact_id, clock)
    plan = _plan(store, ctx, contact_id, items, start_date, None, time, new_id, contact.classification)
    quotes = quote_order(plan, today=time.today)
    return Quote(contact_id, plan.order.start_date, quotes, ctx.settings.payment_terms_days, plan.new_ids)


def place_order(
    store: OrderingPorts,
    ctx: TenantContext,
    contact_id: str,
    items: Sequence[OrderItemInput],
    start_date: date | None,
    reference: str | None,
    clock: Clock,
    new_id: Callable[[str], str],
    numbers: InvoiceNumbers,
    activate_on_payment: bool | None = None,
    request: str | None = None,
) -> PlacedOrder:
    """Place the order and bill what is due at once (the first in-advance invoice).

    With a `reference`, placing is idempotent: a repeat returns the order placed the first time.
    Given `request` (the fingerprint of the request placing it, kept on the order), only the same
    request is answered that order: another one with the reference is refused with 422
    `idempotency.key_reused`. The reference's claim refuses it first, except for a retry of a
    refused request that was still running when the reference was freed and used by another body.
    If the process dies after the order is stored but before billing, the subscriptions are in the
    due index already and the next run (or a repeat of this call) bills them.

    `activate_on_payment` (None: the business's setting) keeps the services whose first charge is
    invoiced now draft until that invoice is paid (`billow.services.activation`).
    """
    if reference is not None and not reference.strip():
        raise InvalidInput("reference must not be blank", field="reference")
    for attempt in range(MAX_CONFLICT_RETRIES + 1):
        # The contact first, then its clock: the write below is conditioned on the contact's
        # version, which creating or moving the clock moves on, so an order never lands on a
        # time that is no longer the contact's (docs/billing.md, test clocks).
        contact = get_contact(store, ctx, contact_id)
        time = contact_time(store, ctx, contact_id, clock)
        if reference is not None:
            earlier = store.find_order_by_reference(ctx.scope, contact_id, reference)
            if earlier is not None:
                if request is not None and earlier.request not in (None, request):
                    raise key_reused("reference", reference)
                return PlacedOrder(earlier, _bill_order(store, ctx, earlier, time.today, numbers), True, time.today)
        check_orderable(contact)
        plan = _plan(
            store,
            ctx,
            contact_id,
            items,
            start_date,
            reference,
            time,
            new_id,
            contact.classification,
            activate_on_payment,
            request,
        )
        try:
            commit_order(store, ctx.scope, plan, contact.version)
        except (ConcurrentModification, Conflict):
            if attempt == MAX_CONFLICT_RETRIES:
                raise
            continue
        return PlacedOrder(plan.order, _bill_order(store, ctx, plan.order, time.today, numbers), False, time.today)
    raise AssertionError("unreachable")


def commit_order(store: Transactions, scope: Scope, plan: OrderPlan, contact_version: int | None = None) -> None:
    """One transaction: the order and its subscriptions (the new ones only if new, the others only
    if still at their version). Given `contact_version`, the contact's version moves on too, so that
    an order and archiving the contact (which checks it has no live services) cannot both succeed."""
    work = store.unit_of_work(f"order {plan.order.id}")
    if contact_version is not None:
        work.touch_contact(scope, plan.order.contact_id, contact_version)
    work.add_order(scope, plan.order)
    for subscription in plan.subscriptions:
        work.save_subscription(
            scope, subscription, subscription.version, new=subscription.id in plan.new_subscription_ids
        )
    work.commit()


def _bill_order(
    store: OrderingPorts, ctx: TenantContext, order: Order, today: date, numbers: InvoiceNumbers
) -> list[Invoice]:
    invoices: list[Invoice] = []
    for subscription_id in dict.fromkeys(s.subscription_id for s in order.services):
        invoices += bill_subscription(store, ctx, order.contact_id, subscription_id, today, numbers)
    return invoices
