"""Subscriptions and the services they group.

A subscription groups a contact's services that share a billing cycle, billing model and currency,
so they are invoiced together on one billing schedule. Services are embedded in the subscription
(one aggregate, one item, one version), which is what lets a billing step advance every service
and create the invoice in a single atomic write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from billow.domain.calendar import BillingSchedule, Cycle
from billow.domain.catalog import BillingModel, PriceTerms
from billow.domain.errors import InvalidInput
from billow.domain.lifecycle import DerivedState, derived_state
from billow.domain.rules import DEFAULT_RULES, Alignment, BillingRules, ServiceState

MAX_SERVICES_PER_SUBSCRIPTION = 100  # keeps the subscription item far below DynamoDB's 400 KB


__all__ = ["Service", "ServiceState", "Subscription", "SubscriptionKey", "SubscriptionState"]


SubscriptionState = DerivedState
"""Active (a service effective or paused), inactive (none active, some not final) or churned."""


@dataclass(frozen=True, slots=True)
class SubscriptionKey:
    """What services must share to be billed together."""

    cycle: Cycle
    billing_model: BillingModel
    currency: str

    @classmethod
    def of(cls, terms: PriceTerms) -> SubscriptionKey:
        return cls(terms.cycle, terms.billing_model, terms.currency)


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    order_id: str
    product_id: str
    product_name: str
    terms: PriceTerms
    quantity: int
    state: ServiceState
    start_date: date
    billed_through: date | None = None
    """Exclusive end of the days already invoiced; None until the first invoice."""
    state_since: date | None = None
    """The day the service entered `state` (None: its start date)."""
    end_date: date | None = None
    """Exclusive end of the service's billable days, when known (a termed or cancelled service)."""
    alignment: Alignment = Alignment.IMMEDIATE
    """Decided when the service is ordered: delayed only for a service joining a billed subscription."""
    ordered_on: date | None = None
    """The day the order was placed (None: its start date); no invoice is issued before it."""
    usage_billed_through: date | None = None
    """Exclusive end of the days whose usage is invoiced (metered services only)."""
    billable_states: frozenset[ServiceState] | None = None
    """Overrides the business's billable states for this service."""
    non_creditable_states: frozenset[ServiceState] | None = None
    """Overrides the business's non-creditable states for this service."""

    @property
    def billing_start(self) -> date:
        """The first day that is charged: the start date, after any trial."""
        return self.start_date + timedelta(days=self.terms.trial_days)

    @property
    def unbilled_from(self) -> date:
        return self.billed_through or self.billing_start

    @property
    def since(self) -> date:
        return self.state_since or self.start_date


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    contact_id: str
    key: SubscriptionKey
    schedule: BillingSchedule
    services: tuple[Service, ...]
    created_on: date
    invoice_count: int = 0
    version: int = 0
    test_clock: bool = False
    """True for subscriptions of a contact on a test clock: only that clock bills them."""
    rules: BillingRules = DEFAULT_RULES
    """The business's billing rules this subscription is billed under (copied when it was created)."""

    def __post_init__(self) -> None:
        if len(self.services) > MAX_SERVICES_PER_SUBSCRIPTION:
            raise InvalidInput(f"a subscription holds at most {MAX_SERVICES_PER_SUBSCRIPTION} services", field="items")

    @property
    def currency(self) -> str:
        return self.key.currency

    @property
    def cycle(self) -> Cycle:
        return self.key.cycle

    @property
    def billing_model(self) -> BillingModel:
        return self.key.billing_model

    @property
    def state(self) -> SubscriptionState:
        return derived_state(s.state for s in self.services)

    def with_services(self, services: tuple[Service, ...]) -> Subscription:
        return replace(self, services=services)

    def adding(self, new_services: list[Service]) -> Subscription:
        return replace(self, services=(*self.services, *new_services))
