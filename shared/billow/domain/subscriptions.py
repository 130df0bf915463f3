"""Subscriptions and the services they group.

A subscription groups a contact's services that share a billing cycle, billing model and currency,
so they are invoiced together on one billing schedule. Services are embedded in the subscription
(one aggregate, one item, one version), which is what lets a billing step advance every service
and create the invoice in a single atomic write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, timedelta

from billow.domain.actions import Action
from billow.domain.calendar import BillingSchedule, Cycle, Period, add_cycles
from billow.domain.catalog import BillingModel, PriceTerms
from billow.domain.errors import InvalidInput
from billow.domain.lifecycle import ACTIVE_STATES, DerivedState, derived_state
from billow.domain.lines import Adjustment
from billow.domain.rules import DEFAULT_RULES, Alignment, BillingRules, ServiceState
from billow.domain.usage import BilledUsage

MAX_SERVICES_PER_SUBSCRIPTION = 100  # keeps the subscription item far below DynamoDB's 400 KB


__all__ = [
    "EarlierTerms",
    "Service",
    "ServiceState",
    "Subscription",
    "SubscriptionKey",
    "SubscriptionState",
    "Transfer",
]


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
class EarlierTerms:
    """Price terms a metered service had before a change of terms on `until`: the usage of its
    billing periods that ended by then is rated on them (`Service.usage_terms`)."""

    product_name: str
    terms: PriceTerms
    until: date


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
    usage_billed: tuple[BilledUsage, ...] = ()
    """Usage billed per billing period: the open period's immediate (charge-limit) invoices and
    the last `KEPT_BILLED_PERIODS` billed periods (late usage bills the difference)."""
    billable_states: frozenset[ServiceState] | None = None
    """Overrides the business's billable states for this service."""
    non_creditable_states: frozenset[ServiceState] | None = None
    """Overrides the business's non-creditable states for this service."""
    trial_ends_on: date | None = None
    """Overrides the end of the trial the price terms give (extended, kept over a change, or
    withheld by the business's trial management)."""
    trial_extended: bool = False
    stopped_on: date | None = None
    """The day an action stopped billing, when the service is in a state that is not billed (a
    pause turned into a cancellation still stopped billing on the pause's day)."""
    restarted_on: date | None = None
    """The first day of the current billable stretch, when billing stopped and restarted (a pause,
    a deactivation, a change): days before it were settled by the action that stopped billing."""
    billed_at_stop: date | None = None
    """Where `billed_through` was just before the action that stopped billing on `stopped_on` (None
    if nothing was billed yet): a restart on the day of the stop undoes the stop's pending lines,
    and a restart before that day while the stop's credit is pending trims the credit to the days
    the service was stopped, the days after staying invoiced."""
    term_end: date | None = None
    """Exclusive end of the current termed period (termed price terms only)."""
    auto_renew: bool = True
    contract_end: date | None = None
    """Exclusive end of the contract period (None: no contract, or it never had one)."""
    expired: bool = False
    """Not effective because its termed period ended without renewal (renew, not activate)."""
    pauses: tuple[Period, ...] = ()
    """Every pause so far, as planned when it started ([first paused day, resume day))."""
    lapses_on: date | None = None
    """Access on payment: the service stays draft until the first invoice that bills it is paid,
    and lapses on this day if that invoice is still unpaid (None: not waiting for a payment).
    While it waits, nothing after that first invoice is billed for it (docs/payments.md)."""
    earlier_terms: tuple[EarlierTerms, ...] = ()
    """A metered service's price terms before its changes, oldest first, kept while a period rated
    on them may still take late usage (`with_earlier_terms`)."""

    @property
    def awaiting_payment(self) -> bool:
        return self.lapses_on is not None and self.state is ServiceState.DRAFT

    @property
    def billing_start(self) -> date:
        """The first day that is charged: the start date, after any trial."""
        if self.trial_ends_on is not None:
            return self.trial_ends_on
        return self.start_date + timedelta(days=self.terms.trial_days)

    @property
    def charged_from(self) -> date:
        """The first day of the current billable stretch."""
        start = self.billing_start
        restarted = self.restarted_on
        return restarted if restarted is not None and restarted > start else start

    @property
    def unbilled_from(self) -> date:
        billed = self.billed_through
        start = self.charged_from
        return billed if billed is not None and billed > start else start

    def in_trial(self, day: date) -> bool:
        return day < self.billing_start

    def trialing(self, today: date) -> bool:
        """In use and not charged yet on `today`: effective, on or after its start, before its
        trial ends (Stripe's `trialing`). The stored state stays effective."""
        return self.state is ServiceState.EFFECTIVE and self.start_date <= today < self.billing_start

    def in_contract(self, day: date) -> bool:
        return self.contract_end is not None and day < self.contract_end

    @property
    def open_term_end(self) -> date | None:
        """The end of a termed period still to come into effect (renewal or expiry), if any."""
        if self.term_end is None or self.expired or self.state not in ACTIVE_STATES:
            return None
        return self.term_end

    @property
    def since(self) -> date:
        return self.state_since or self.start_date

    def usage_terms(self, period: Period) -> tuple[str, PriceTerms] | None:
        """The product name and price terms the usage of the billing period `period` is rated on:
        the latest terms in force during it that price usage (None: none did). A change at a
        period's end (an end-of-cycle downgrade) leaves the period it ends on the old terms; a
        change within a period rates the whole period on the new ones, unless they meter nothing."""
        found: tuple[str, PriceTerms] | None = None
        since = date.min
        for earlier in self.earlier_terms:
            if earlier.terms.usage is not None and since < period.end and earlier.until > period.start:
                found = (earlier.product_name, earlier.terms)
            since = earlier.until
        if self.terms.usage is not None and since < period.end:
            found = (self.product_name, self.terms)
        return found

    @property
    def meters_usage(self) -> bool:
        """Whether it has usage to bill: metered terms now, or before a change (their last periods)."""
        return self.terms.meter is not None or any(e.terms.meter is not None for e in self.earlier_terms)

    def usage_end(self, end: date | None) -> date | None:
        """The exclusive end of its metered days, given its billable `end`: that end while its
        terms are metered, else the day its last metered terms were changed (if earlier)."""
        if self.terms.meter is not None:
            return end
        last = max((e.until for e in self.earlier_terms if e.terms.meter is not None), default=None)
        return last if end is None or last is None else min(end, last)

    def with_earlier_terms(self, before: Service, until: date, kept_from: date | None) -> Service:
        """This service (`before` with new terms from `until`) remembering `before`'s terms for the
        usage of the periods that end by `until`; entries whose periods all start before
        `kept_from` (the oldest period whose usage is still billed again when late) are dropped."""
        if before.terms.meter is None:
            return self
        kept = tuple(e for e in before.earlier_terms if kept_from is None or e.until > kept_from)
        return replace(self, earlier_terms=(*kept, EarlierTerms(before.product_name, before.terms, until)))

    def with_periods_from(self, start: date, cycle: Cycle) -> Service:
        """The service with the termed and contract periods of its price terms counted in cycles
        from `start` (none where its terms have none)."""
        term, contract = self.terms.term_cycles, self.terms.contract_cycles
        return replace(
            self,
            term_end=None if term is None else add_cycles(start, cycle, term),
            contract_end=None if contract is None else add_cycles(start, cycle, contract),
        )


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
    actions: tuple[Action, ...] = ()
    """Pending (scheduled) actions, in the order they take effect."""
    adjustments: tuple[Adjustment, ...] = ()
    """Lines settled by actions, waiting for the invoice of their run date."""
    payment_method: str | None = None
    """Pays this subscription's invoices (None: the contact's preferred method)."""
    bill_ahead_until: date | None = None
    """Billing upcoming cycles: recurring charges up to this day are invoiced ahead of time."""
    bill_ahead_steps: tuple[tuple[date, date], ...] = ()
    """Each bill-ahead that moved `bill_ahead_until` on and is not past: (the day it ran, its
    until), both increasing. A charge became billable ahead on the day of the first that covers it."""
    acted_on: date | None = None
    """The day of the last action executed (or service received): billing ahead catches up as of
    that day (or the day of the bill-ahead, if later) before anything later, as a clock moving one
    day at a time would have billed it."""
    grace_until: date | None = None
    """Exclusive end of the subscription's grace period: no service is deactivated before it."""

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
        if not self.services:  # every service moved to another subscription
            return SubscriptionState.CHURNED
        return derived_state(s.state for s in self.services)

    def with_services(self, services: tuple[Service, ...]) -> Subscription:
        return replace(self, services=services)

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)

    def replacing(self, service: Service) -> Subscription:
        return replace(self, services=tuple(service if s.id == service.id else s for s in self.services))

    def with_actions(self, actions: Iterable[Action]) -> Subscription:
        """The subscription with these pending actions, in the order they take effect."""
        return replace(self, actions=tuple(sorted(actions, key=lambda a: (a.on, a.id))))

    def adding(self, new_services: list[Service]) -> Subscription:
        return replace(self, services=(*self.services, *new_services))

    def waiting_for_payment(self, service_ids: Iterable[str]) -> list[Service]:
        """Those of `service_ids` that wait for their first invoice's payment (access on payment)."""
        wanted = set(service_ids)
        return [s for s in self.services if s.id in wanted and s.awaiting_payment]

    def without(self, service_id: str) -> Subscription:
        return replace(self, services=tuple(s for s in self.services if s.id != service_id))


@dataclass(frozen=True, slots=True)
class Transfer:
    """A service leaving its subscription for the contact's subscription of another cycle or
    billing model (a change of price terms), settled in the one it leaves."""

    service: Service
    """As it joins: new price terms, billed from the day of the change."""
    key: SubscriptionKey
    record: Action
    """The change, executed."""
    actions: tuple[Action, ...]
    """Its pending actions, which move with it."""
