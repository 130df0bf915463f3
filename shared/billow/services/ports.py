"""The storage port the use cases need. `billow.storage.repository.DynamoStore` implements it over
DynamoDB; every method either fully happens or raises, never half-writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, Protocol, TypeVar

from billow.domain.actions import Action
from billow.domain.catalog import PriceTerms, Product
from billow.domain.contacts import Contact, TestClock
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment
from billow.domain.ordering import Order
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.services.context import Scope

T = TypeVar("T")

DUE_SHARDS = 64
"""How many partitions the due-for-billing index spreads over; the daily run bills them in parallel
(docs/scale.md explains the number)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_hash: str  # sha256 of the secret; the secret itself is never stored
    tenant_id: str
    mode: str  # "test" or "live"
    name: str


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An idempotency key bound to the request it was first sent with (`billow.services.idempotency`)."""

    key_hash: str
    """sha256 of the key's scope and the key (the key itself is not stored)."""
    fingerprint: str
    """sha256 of the request the key was first sent with."""
    nonce: str
    """Drawn by the request that claimed the key; ids derived from the key include it, so a key
    used again after its claim expired makes new ids."""
    expires_at: datetime | None
    """None: never expires."""
    claimed_at: datetime | None = None
    """When the request that holds it claimed it (None on a claim from before this was kept)."""
    done: bool = True
    """The request that claimed it has answered: False while it may still be executing."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursor: str | None  # pass back to get the next page; None on the last page


@dataclass(frozen=True, slots=True)
class InvoiceQuery:
    """Which invoices a listing returns. `statuses` are stored statuses (overdue is open, shown
    overdue on the contact's clock: the use case tells them apart); the issue-day range is
    half-open, [issued_from, issued_before)."""

    contact_id: str | None = None
    statuses: frozenset[InvoiceStatus] | None = None
    kind: InvoiceKind | None = None
    issued_from: date | None = None
    issued_before: date | None = None

    def matches(self, invoice: Invoice) -> bool:
        return (
            (self.contact_id is None or invoice.contact_id == self.contact_id)
            and (self.statuses is None or invoice.status in self.statuses)
            and (self.kind is None or invoice.kind is self.kind)
            and (self.issued_from is None or invoice.issue_date >= self.issued_from)
            and (self.issued_before is None or invoice.issue_date < self.issued_before)
        )


@dataclass(frozen=True, slots=True)
class DueSubscription:
    scope: Scope  # the tenant and the mode it is billed in
    contact_id: str
    subscription_id: str


class Store(Protocol):
    """Tenant-level data (settings, API keys, the catalog) is keyed by the tenant id; everything of
    a contact (and invoice numbering) by a `Scope`, the tenant and a mode."""

    # -- tenants --------------------------------------------------------------------------------
    def get_settings(self, tenant_id: str) -> TenantSettings | None: ...
    def put_settings(self, settings: TenantSettings) -> TenantSettings: ...
    def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    def put_api_key(self, key: ApiKey) -> None: ...
    def reserve_invoice_numbers(self, scope: Scope, count: int) -> range: ...
    def claim_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim, now: datetime) -> IdempotencyClaim:
        """Store `claim` unless an unexpired claim of its key exists; return the claim that holds
        the key (`claim`, or the earlier one)."""
        ...

    def release_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim) -> None:
        """Delete `claim` if it still holds its key, unfinished."""
        ...

    def finish_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim) -> None:
        """Mark `claim` done if it still holds its key, unfinished."""
        ...

    # -- catalog --------------------------------------------------------------------------------
    def add_product(self, tenant_id: str, product: Product) -> None: ...
    def save_product(self, tenant_id: str, product: Product, new_terms: PriceTerms | None = None) -> Product: ...
    def get_product(self, tenant_id: str, product_id: str) -> Product | None: ...
    def list_products(self, tenant_id: str) -> list[Product]: ...
    def products_page(self, tenant_id: str, limit: int, cursor: str | None) -> Page[Product]: ...

    # -- contacts and clocks --------------------------------------------------------------------
    def add_contact(self, scope: Scope, contact: Contact) -> None: ...
    def save_contact(self, scope: Scope, contact: Contact) -> Contact: ...
    def get_contact(self, scope: Scope, contact_id: str) -> Contact | None: ...
    def list_contacts(self, scope: Scope, limit: int, cursor: str | None) -> Page[Contact]: ...
    def get_clock(self, scope: Scope, contact_id: str) -> TestClock | None: ...
    def save_clock(self, scope: Scope, clock: TestClock) -> TestClock: ...
    def move_clock(
        self, scope: Scope, clock: TestClock, contact_version: int, subscriptions: Sequence[Subscription]
    ) -> TestClock: ...

    # -- orders and subscriptions ---------------------------------------------------------------
    def place_order(
        self,
        scope: Scope,
        order: Order,
        subscriptions: Sequence[Subscription],
        new_subscription_ids: frozenset[str],
        contact_version: int | None = None,
    ) -> None: ...
    def get_order(self, scope: Scope, order_id: str) -> Order | None: ...
    def find_order_by_reference(self, scope: Scope, contact_id: str, reference: str) -> Order | None: ...
    def get_subscription(self, scope: Scope, subscription_id: str) -> Subscription | None: ...
    def load_subscription(self, scope: Scope, contact_id: str, subscription_id: str) -> Subscription | None: ...
    def subscriptions_of(self, scope: Scope, contact_id: str) -> list[Subscription]: ...
    def subscriptions_page(
        self, scope: Scope, contact_id: str, limit: int, cursor: str | None
    ) -> Page[Subscription]: ...
    def apply_billing_step(
        self,
        scope: Scope,
        subscription: Subscription,
        expected_version: int,
        invoice: Invoice | None,
        actions: Sequence[Action] = (),
    ) -> None: ...
    def move_service(
        self,
        scope: Scope,
        source: Subscription,
        source_version: int,
        target: Subscription,
        target_version: int | None,
        source_log: Sequence[Action],
        target_log: Sequence[Action],
    ) -> None: ...
    def log_actions(self, scope: Scope, subscription: Subscription, actions: Sequence[Action]) -> None: ...
    def actions_of(self, scope: Scope, contact_id: str, subscription_id: str) -> list[Action]: ...
    def actions_page(
        self, scope: Scope, contact_id: str, subscription_id: str, limit: int, cursor: str | None
    ) -> Page[Action]: ...

    due_shards: int

    def due_page(self, as_of: date, shard: int, limit: int, cursor: str | None) -> Page[DueSubscription]: ...

    # -- invoices and payments ------------------------------------------------------------------
    def get_invoice(self, scope: Scope, invoice_id: str) -> Invoice | None: ...
    def invoices_of(self, scope: Scope, contact_id: str) -> list[Invoice]: ...
    def list_invoices(self, scope: Scope, query: InvoiceQuery, limit: int, cursor: str | None) -> Page[Invoice]: ...
    def record_payment(self, scope: Scope, invoice: Invoice, expected_version: int, payment: Payment) -> None: ...
    def get_payment(self, scope: Scope, contact_id: str, invoice_id: str, payment_id: str) -> Payment | None: ...
    def payments_of(self, scope: Scope, contact_id: str, invoice_id: str) -> list[Payment]: ...
