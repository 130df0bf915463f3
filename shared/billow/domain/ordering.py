"""Ordering: turning chosen price terms into services grouped into subscriptions, and quoting the
first invoice of each before anything is placed.

The quotation is not a separate calculation: it runs the billing engine on the planned
subscriptions, so the quoted invoice is the invoice the billing run will create.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from billow.domain.billing import InvoiceDraft
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.errors import InvalidInput
from billow.domain.lifecycle import FINAL_STATES
from billow.domain.policy import DEFAULT_POLICY, SubscriptionPolicy, TrialLimit
from billow.domain.rules import Alignment, BillingRules
from billow.domain.subscriptions import Service, ServiceState, Subscription, SubscriptionKey
from billow.domain.timeline import FAR_FUTURE, next_step

MAX_ITEMS_PER_ORDER = 50


@dataclass(frozen=True, slots=True)
class OrderItem:
    product: Product
    terms: PriceTerms
    quantity: int


@dataclass(frozen=True, slots=True)
class OrderedService:
    service_id: str
    subscription_id: str
    product_id: str
    terms_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    contact_id: str
    reference: str | None
    start_date: date
    services: tuple[OrderedService, ...]
    request: str | None = None
    """The fingerprint of the request that placed it (`billow.services.idempotency.fingerprint`):
    only that request is answered this order by its `reference`. None: placed without one."""


@dataclass(frozen=True, slots=True)
class OrderPlan:
    order: Order
    subscriptions: tuple[Subscription, ...]  # every subscription the order creates or changes
    new_subscription_ids: frozenset[str]

    @property
    def new_ids(self) -> frozenset[str]:
        """Ids the plan makes up for what the order creates (subscriptions, services): a quote does
        not show them, as placing the order makes its own."""
        return self.new_subscription_ids | {s.service_id for s in self.order.services}


def plan_order(
    *,
    order_id: str,
    contact_id: str,
    reference: str | None,
    items: Sequence[OrderItem],
    start_date: date,
    today: date,
    existing: Sequence[Subscription],
    new_id: Callable[[str], str],
    test_clock: bool,
    rules: BillingRules,
    policy: SubscriptionPolicy = DEFAULT_POLICY,
    classification: str | None = None,
    activate_on_payment: bool | None = None,
    request: str | None = None,
) -> OrderPlan:
    """Services for each item, added to the contact's subscription of the same cycle, billing model
    and currency, or to a new subscription billed under `rules` (its billing day comes from the
    first charged day under anniversary billing, from the business under period billing).

    A service joining a subscription that already had services is aligned as its price terms say,
    else as the subscription's rules say; the services a new subscription starts with are aligned
    immediately.

    Access on payment (`activate_on_payment`, None: the business's `policy.activate_on_payment`):
    each service whose first charge is invoiced with the order (billed in advance, starting today,
    no trial) stays draft until that invoice is paid, and lapses `policy.unpaid_order_lapse_days`
    after today if it is not (`Service.lapses_on`); the others start as they would anyway.

    `request`: the fingerprint of the request placing it, kept on the order (`Order.request`)."""
    on_payment = policy.activate_on_payment if activate_on_payment is None else activate_on_payment
    lapses_on = today + timedelta(days=policy.unpaid_order_lapse_days) if on_payment else None
    if not items:
        raise InvalidInput("an order needs at least one item", field="items")
    if len(items) > MAX_ITEMS_PER_ORDER:
        raise InvalidInput(f"an order has at most {MAX_ITEMS_PER_ORDER} items", field="items")
    if start_date < today:
        raise InvalidInput(f"start_date {start_date} is before today ({today})", field="start_date")

    held = [s for sub in existing for s in sub.services if s.state not in FINAL_STATES]
    policy.check_dependencies([*(s.product_id for s in held), *(item.product.id for item in items)])
    policy.check_service_count(classification, len(held) + len(items))
    trials = _Trials(policy.trial_limit, existing)

    by_key: dict[SubscriptionKey, Subscription] = {s.key: s for s in existing}
    new_ids: set[str] = set()
    ordered: list[OrderedService] = []
    for index, item in enumerate(items):
        if item.terms.product_id != item.product.id:
            raise InvalidInput("price terms belong to another product", field=f"items[{index}].terms_id")
        try:
            item.terms.check_quantity(item.quantity)
        except InvalidInput as error:
            raise InvalidInput(error.message, field=f"items[{index}].quantity") from None
        key = SubscriptionKey.of(item.terms)
        trial_days = trials.days(item)
        subscription = by_key.get(key)
        if subscription is None:
            subscription = Subscription(
                id=new_id("sub"),
                contact_id=contact_id,
                key=key,
                schedule=rules.schedule_for(key.cycle, start_date + timedelta(days=trial_days)),
                services=(),
                created_on=today,
                test_clock=test_clock,
                rules=rules,
            )
            new_ids.add(subscription.id)
        joining = subscription.id not in new_ids
        alignment = (item.terms.alignment or subscription.rules.alignment) if joining else Alignment.IMMEDIATE
        service = Service(
            id=new_id("svc"),
            order_id=order_id,
            product_id=item.product.id,
            product_name=item.product.name,
            terms=item.terms,
            quantity=item.quantity,
            state=ServiceState.EFFECTIVE if start_date <= today else ServiceState.DRAFT,
            start_date=start_date,
            alignment=alignment,
            ordered_on=today,
            auto_renew=item.terms.auto_renew,
            trial_ends_on=None if trial_days == item.terms.trial_days else start_date,
        )
        if lapses_on is not None and _invoiced_with_order(service, key, today):
            service = replace(service, state=ServiceState.DRAFT, lapses_on=lapses_on)
        service = service.with_periods_from(service.billing_start, subscription.cycle)
        by_key[key] = subscription.adding([service])
        ordered.append(OrderedService(service.id, subscription.id, item.product.id, item.terms.id, item.quantity))

    touched = {o.subscription_id for o in ordered}
    order = Order(order_id, contact_id, reference, start_date, tuple(ordered), request)
    changed = tuple(s for s in by_key.values() if s.id in touched)
    return OrderPlan(order, changed, frozenset(new_ids))


def _invoiced_with_order(service: Service, key: SubscriptionKey, today: date) -> bool:
    """Whether the service's first charge is invoiced the day it is ordered: billed in advance,
    starting today, with no trial (access on payment waits for that invoice)."""
    return key.billing_model is BillingModel.ADVANCE and service.start_date == today == service.billing_start


class _Trials:
    """Trial management: which ordered services still get the trial their price terms give."""

    def __init__(self, limit: TrialLimit, existing: Sequence[Subscription]) -> None:
        self.limit = limit
        self.products = {s.product_id for sub in existing for s in sub.services if s.billing_start > s.start_date}

    def days(self, item: OrderItem) -> int:
        days = item.terms.trial_days
        if days == 0 or self.limit is TrialLimit.NONE:
            return days
        per_service = self.limit is TrialLimit.ONCE_PER_SERVICE
        if (item.product.id in self.products) if per_service else bool(self.products):
            return 0
        self.products.add(item.product.id)
        return days


def quote_order(plan: OrderPlan, *, today: date) -> list[InvoiceDraft]:
    """The first invoice that bills each of the order's new services, exactly as billing will make it."""
    new_service_ids = {s.service_id for s in plan.order.services}
    quotes: list[InvoiceDraft] = []
    for subscription in plan.subscriptions:
        current = subscription
        while (step := next_step(current, FAR_FUTURE)) is not None:
            current = step.subscription
            invoice = step.invoice
            if invoice and any(line.service_id in new_service_ids for line in invoice.lines):
                quotes.append(invoice)
                break
    return quotes
