"""The storage ports the use cases need, one per aggregate, and the unit of work that commits a
use case's writes as one transaction. `billow.storage.repository.DynamoStore` implements them over
DynamoDB; every write either fully happens or raises, never half-writes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar

from billow.domain.actions import Action
from billow.domain.allowances import Counted, Used
from billow.domain.calendar import Period
from billow.domain.catalog import PriceTerms, Product
from billow.domain.collection import PaymentAttempt
from billow.domain.contacts import Contact, TestClock
from billow.domain.credits import CreditPriceList, LedgerEntry, Wallet
from billow.domain.dunning import DunningCase
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment
from billow.domain.ordering import Order
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.pricing import Allowance
from billow.domain.receivables import CreditApplication, Refund
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.domain.usage import LateMarker, UsageRecord
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
    """Which invoices a listing returns. `statuses` are stored statuses (overdue is one, stored
    the day after the due date); the issue-day range is half-open, [issued_from, issued_before)."""

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
    """The due entity: a subscription, or an invoice (`inv_...`) whose status moves on a day."""

    @property
    def is_invoice(self) -> bool:
        return self.subscription_id.startswith("inv_")


@dataclass(frozen=True, slots=True)
class StoredCase:
    """A dunning case as stored (docs/dunning.md, "The flow"): the `DunningCase` and what its
    Step Functions execution needs to follow the contact's clock."""

    case: DunningCase
    due: date | None = None
    """The contact's day of the case's next decision; None: only an event wakes it."""
    decided_on: date | None = None
    """The contact's day of its last stored decision (a client polls it after a clock advance)."""
    decided_at: datetime | None = None
    """When its last decision was stored (real time): a case neither parked nor decided for an
    hour has no live execution (`billow.services.dunning.wake` restarts it)."""
    token: str | None = None
    """The task token of its execution parked at the current `wake_seq`; None: not parked."""
    wake_seq: int = 0
    """Bumped by every wake: a park at an older one is resumed at once."""
    run: int = 0
    """Its execution's run: 0 is named `<case id>`, a restart `<case id>-r<run>`."""
    clocked: bool = False
    """Its contact has a test clock: only the clock's advances wake it (no wake-up entry)."""

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def version(self) -> int:
        return self.case.version

    @property
    def execution_name(self) -> str:
        return self.case.id if self.run == 0 else f"{self.case.id}-r{self.run}"


@dataclass(frozen=True, slots=True)
class DueCase:
    """A wake-up entry of the dunning index: an open case due on `due`."""

    scope: Scope
    contact_id: str
    case_id: str
    due: date


MAX_TRANSACTION_WRITES = 100
"""Writes one unit of work may hold: DynamoDB's TransactWriteItems limit."""


class UnitOfWork(Protocol):
    """The writes of one use case, staged with their conditions and committed together: `commit`
    writes all of them or none (one DynamoDB transaction). A use case that needs several items
    changed atomically stages them here instead of adding a port method; staging writes nothing.

    Every staged write carries its condition: a create, that the item is absent; a change, that
    the item is still at the version it was read at. A failed condition (or a concurrent
    transaction on one of the items) fails the whole commit with `ConcurrentModification`: the
    caller reloads and retries, and a retry that finds its work done writes nothing."""

    # -- contacts and clocks --------------------------------------------------------------------
    def save_contact(self, scope: Scope, contact: Contact) -> Contact:
        """The changed contact, only if still at `contact.version`; returns it as it will be stored."""
        ...

    def touch_contact(self, scope: Scope, contact_id: str, expected_version: int) -> None:
        """Move the contact's version on, only if still at `expected_version`: a write that
        depends on the contact as read (its clock, its archiving) loses to a concurrent change."""
        ...

    def save_clock(self, scope: Scope, clock: TestClock) -> TestClock:
        """Create the clock (version 0) or change it, only if still at `clock.version`."""
        ...

    def check_clock(self, scope: Scope, clock: TestClock) -> None:
        """Write nothing to the clock but commit only if it is still at `clock.version`: a write
        stamped with the clock's time loses to a concurrent move of it."""
        ...

    def save_payment_method(self, scope: Scope, method: SavedPaymentMethod) -> SavedPaymentMethod:
        """Record a saved method (version 0: only if new) or change it (only if still at its
        version); returns it as it will be stored."""
        ...

    # -- catalog --------------------------------------------------------------------------------
    def add_product(self, tenant_id: str, product: Product) -> None:
        """A new product and its price terms, each only if new."""
        ...

    def save_product(self, tenant_id: str, product: Product, new_terms: PriceTerms | None = None) -> Product:
        """The changed product, only if still at `product.version`, with new price terms when given
        (price terms are written once, never changed); returns it as it will be stored."""
        ...

    # -- orders, subscriptions and their action logs --------------------------------------------
    def add_order(self, scope: Scope, order: Order) -> None:
        """A new order (and its reference's marker), only if new."""
        ...

    def save_subscription(
        self, scope: Scope, subscription: Subscription, expected_version: int, *, new: bool = False
    ) -> None:
        """The subscription at `expected_version + 1`, only if still at `expected_version`; with
        `new`, only if absent, and the marker that makes it the contact's only subscription of its
        cycle, billing model and currency."""
        ...

    def touch_subscription(self, scope: Scope, subscription: Subscription) -> None:
        """Move the subscription's version on, only if still at `subscription.version`."""
        ...

    def log_action(self, scope: Scope, subscription: Subscription, action: Action, *, only_new: bool = False) -> None:
        """The action's log record, only if new or still scheduled (executed, cancelled and rejected
        records are final); with `only_new`, only if new."""
        ...

    # -- invoices and payments ------------------------------------------------------------------
    def add_invoice(self, scope: Scope, invoice: Invoice) -> None:
        """A new invoice, only if its id is new. A credit note keeps a marker exactly while credit
        remains of it (`InvoiceStore.credit_notes_with_credit`), here and in `save_invoice`."""
        ...

    def save_invoice(self, scope: Scope, invoice: Invoice, expected_version: int) -> None:
        """The changed invoice at `expected_version + 1`, only if still at `expected_version`."""
        ...

    def check_contact(self, scope: Scope, contact: Contact) -> None:
        """Write nothing to the contact but commit only if it is still at `contact.version`: a step
        decided on what the contact was (its classification, its exclusion from dunning) loses to
        staff changing it meanwhile."""
        ...

    def check_invoice(self, scope: Scope, invoice: Invoice) -> None:
        """Write nothing to the invoice but commit only if it is still at `invoice.version`: a step
        decided on an invoice's debt (a deactivation) loses to a payment landing meanwhile."""
        ...

    def check_wallet(self, scope: Scope, contact_id: str, version: int) -> None:
        """Write nothing to the contact's credit wallet but commit only if it is still at `version`
        (0: none yet): a deactivation decided on a wallet that could not pay loses to a top-up."""
        ...

    def record_credit_application(self, scope: Scope, note: Invoice, application: CreditApplication) -> None:
        """Credit note `note`'s application: a new one only if new; a reversed one over its record
        (stage it with the invoices it changes: their versions guard it)."""
        ...

    def add_refund(self, scope: Scope, note: Invoice, refund: Refund) -> None:
        """A new refund of credit note `note`, only if its id is new."""
        ...

    def save_refund(self, scope: Scope, contact_id: str, refund: Refund) -> None:
        """A card refund changed (leased, settled), only if still at `refund.version`."""
        ...

    def add_payment(self, scope: Scope, invoice: Invoice, payment: Payment) -> None:
        """A new payment of `invoice`, only if its id is new."""
        ...

    def save_attempt(self, scope: Scope, attempt: PaymentAttempt) -> PaymentAttempt:
        """The payment attempt: new (version 0) only if absent, else only if still at
        `attempt.version`; returns it as it will be stored."""
        ...

    def save_payment(self, scope: Scope, contact_id: str, payment: Payment) -> None:
        """A payment changed (refunded to the card), only if still at `payment.version`."""
        ...

    # -- dunning cases --------------------------------------------------------------------------
    def save_case(self, scope: Scope, stored: StoredCase, expected_version: int) -> StoredCase:
        """The case (with its wake-up entry while it is open, due and not on a test clock), only if
        still at `expected_version` (0: only if absent); returns it as it will be stored."""
        ...

    def add_usage_record(self, scope: Scope, record: UsageRecord) -> None:
        """A usage record, only if its id is new for its service and period (a duplicate cancels
        the unit of work: `ConcurrentModification`); allowance counters write beside it."""
        ...

    def clear_late_marker(self, scope: Scope, contact_id: str, marker: LateMarker) -> None:
        """Delete a period's late-usage marker (the invoice billing that period's late usage),
        only if no late record marked it again since it was read (its `token`)."""
        ...

    def commit(self) -> None:
        """Write everything staged, all or nothing; a unit of work with nothing staged writes
        nothing. `ConcurrentModification` when a condition failed, `TemporaryFailure` when throttled."""
        ...


class Transactions(Protocol):
    def unit_of_work(self, what: str) -> UnitOfWork:
        """A new, empty unit of work; `what` names it in errors ("billing subscription sub_1")."""
        ...


# -- the ports, one per aggregate: a use case depends on the ones it reads and writes ------------
class TenantStore(Protocol):
    """Tenant settings and API keys, keyed by the tenant id."""

    def get_settings(self, tenant_id: str) -> TenantSettings | None: ...
    def put_settings(self, settings: TenantSettings) -> TenantSettings:
        """The settings, only if the stored ones are still at `settings.version` (absent for 0);
        returns them as stored. `ConcurrentModification` if not."""
        ...

    def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    def put_api_key(self, key: ApiKey) -> None: ...


class IdempotencyStore(Protocol):
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


@dataclass(frozen=True, slots=True)
class UsageCount:
    """A service-period's usage counter (charge limits): records and quantity accepted so far."""

    records: int
    quantity: Decimal


class UsageLimitStore(Protocol):
    def count_usage(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date, records: int, quantity: Decimal
    ) -> UsageCount:
        """Add an accepted batch to the service-period's counter (one atomic update, no
        condition); returns the counter after it."""
        ...


class CatalogStore(Protocol):
    """Products and their price terms, keyed by the tenant id (written through a `UnitOfWork`)."""

    def get_product(self, tenant_id: str, product_id: str) -> Product | None: ...
    def list_products(self, tenant_id: str) -> list[Product]: ...
    def products_page(self, tenant_id: str, limit: int, cursor: str | None) -> Page[Product]: ...


class ContactStore(Protocol):
    """Contacts and their test clocks. Single-item writes are methods here (one conditional write,
    not a transaction); to change a contact or clock together with other items, stage it in a
    `UnitOfWork`."""

    def add_contact(self, scope: Scope, contact: Contact) -> None:
        """The new contact, only if new (`Conflict` if it exists)."""
        ...

    def save_contact(self, scope: Scope, contact: Contact) -> Contact:
        """`UnitOfWork.save_contact` written alone."""
        ...

    def get_contact(self, scope: Scope, contact_id: str) -> Contact | None: ...
    def list_contacts(self, scope: Scope, limit: int, cursor: str | None) -> Page[Contact]: ...
    def get_clock(self, scope: Scope, contact_id: str) -> TestClock | None: ...
    def save_clock(self, scope: Scope, clock: TestClock) -> TestClock:
        """`UnitOfWork.save_clock` written alone: a change of the clock's status. A write that moves
        the clock's time also moves on the versions of its contact and subscriptions
        (`billow.services.contacts.move_clock`)."""
        ...


class SubscriptionStore(Protocol):
    """Orders, subscriptions and their action logs, by contact (written through a `UnitOfWork`)."""

    def get_order(self, scope: Scope, order_id: str) -> Order | None: ...
    def find_order_by_reference(self, scope: Scope, contact_id: str, reference: str) -> Order | None: ...
    def get_subscription(self, scope: Scope, subscription_id: str) -> Subscription | None: ...
    def load_subscription(self, scope: Scope, contact_id: str, subscription_id: str) -> Subscription | None: ...
    def subscriptions_of(self, scope: Scope, contact_id: str) -> list[Subscription]: ...
    def subscriptions_page(
        self, scope: Scope, contact_id: str, limit: int, cursor: str | None
    ) -> Page[Subscription]: ...
    def actions_of(self, scope: Scope, contact_id: str, subscription_id: str) -> list[Action]: ...
    def actions_page(
        self, scope: Scope, contact_id: str, subscription_id: str, limit: int, cursor: str | None
    ) -> Page[Action]: ...


class InvoiceStore(Protocol):
    """Invoices and payments (written through a `UnitOfWork`), and invoice numbering."""

    def reserve_invoice_numbers(self, scope: Scope, count: int) -> range: ...
    def get_invoice(self, scope: Scope, invoice_id: str) -> Invoice | None: ...
    def contact_invoice(self, scope: Scope, contact_id: str, invoice_id: str) -> Invoice | None:
        """The invoice when its contact is known: one consistent read (`get_invoice` first finds
        its keys in the by-id index)."""
        ...

    def invoices_of(self, scope: Scope, contact_id: str) -> list[Invoice]: ...
    def list_invoices(self, scope: Scope, query: InvoiceQuery, limit: int, cursor: str | None) -> Page[Invoice]: ...
    def get_payment(self, scope: Scope, contact_id: str, invoice_id: str, payment_id: str) -> Payment | None: ...
    def payments_of(self, scope: Scope, contact_id: str, invoice_id: str) -> list[Payment]: ...
    def credit_notes_with_credit(self, scope: Scope, contact_id: str, currency: str) -> list[Invoice]:
        """The contact's credit notes in `currency` with credit remaining, read consistently: one
        small Query of their markers (`UnitOfWork.add_invoice`), which finds none when there is none."""
        ...

    def get_application(
        self, scope: Scope, contact_id: str, credit_note_id: str, application_id: str
    ) -> CreditApplication | None: ...
    def applications_of(
        self, scope: Scope, contact_id: str, credit_note_id: str | None = None
    ) -> list[CreditApplication]:
        """The contact's credit applications (reversed ones too), or one credit note's."""
        ...

    def get_refund(self, scope: Scope, contact_id: str, credit_note_id: str, refund_id: str) -> Refund | None: ...
    def refunds_of(self, scope: Scope, contact_id: str, credit_note_id: str) -> list[Refund]: ...


class CollectionStore(Protocol):
    """Payment attempts, under their contact, keyed by invoice and attempt number."""

    def attempts_of(self, scope: Scope, contact_id: str) -> list[PaymentAttempt]:
        """The contact's attempts, every invoice's, read consistently."""
        ...

    def latest_attempt(self, scope: Scope, contact_id: str, invoice_id: str) -> PaymentAttempt | None:
        """The invoice's attempt of the highest number, read consistently."""
        ...

    def get_attempt(self, scope: Scope, contact_id: str, invoice_id: str, number: int) -> PaymentAttempt | None: ...

    def save_attempt(self, scope: Scope, attempt: PaymentAttempt) -> PaymentAttempt:
        """`UnitOfWork.save_attempt` written alone (one conditional write); `ConcurrentModification`
        when another writer got there first."""
        ...


class DueIndex(Protocol):
    due_shards: int

    def due_page(self, as_of: date, shard: int, limit: int, cursor: str | None) -> Page[DueSubscription]: ...


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A payment attempt left live or a card refund left pending, as the sweep index names it
    (docs/payments.md, "Sweep"): an attempt is (invoice id, its number), a refund (credit note id,
    refund id)."""

    scope: Scope
    contact_id: str
    kind: str
    """`attempt` or `refund`."""
    parent_id: str
    item_id: str


class SweepIndex(Protocol):
    def unfinished_page(self, before: datetime, shard: int, limit: int, cursor: str | None) -> Page[Unfinished]:
        """Up to `limit` live attempts and pending card refunds of one shard that became so before
        `before`, oldest first."""
        ...


class PaymentMethodStore(Protocol):
    """A contact's saved payment methods (written through a `UnitOfWork`)."""

    def get_payment_method(self, scope: Scope, contact_id: str, method_id: str) -> SavedPaymentMethod | None: ...
    def payment_methods_of(self, scope: Scope, contact_id: str) -> list[SavedPaymentMethod]:
        """Every method the contact saved, removed ones too, in id order."""
        ...

    def payment_methods_page(
        self, scope: Scope, contact_id: str, limit: int, cursor: str | None
    ) -> Page[SavedPaymentMethod]:
        """One page of the contact's methods not removed, in id order."""
        ...

    def expiring_methods(self, month: str, shard: int) -> list[tuple[Scope, SavedPaymentMethod]]:
        """Every tenant's methods of one due shard expiring at the end of `month` ("YYYY-MM"),
        not removed and not announced yet."""
        ...

    def started_setup(self, scope: Scope, contact_id: str, request_id: str) -> str | None:
        """The rail's setup a keyed setup request started (`remember_setup`), if any."""
        ...

    def remember_setup(
        self, scope: Scope, contact_id: str, request_id: str, setup_ref: str, expires_at: datetime
    ) -> str:
        """Record that request `request_id` started `setup_ref` (one conditional put, deleted by the
        TTL after `expires_at`); returns the setup recorded first when a racing twin recorded one."""
        ...


class AllowanceStore(Protocol):
    """Allowance counters (docs/data-model.md): one item per service and billing cycle in the
    contact's partition, written with the records they count."""

    def add_counted_usage(
        self, scope: Scope, record: UsageRecord, allowance: Allowance, cycle: Period, basis: str = ""
    ) -> Counted:
        """The record (only if its id is new) and its cycle's counter (only if every window of
        `allowance` still holds it) in one transaction; refused records and duplicates count nothing.
        A counter opened on another `basis` (the allowance's source) counts the cycle's stored
        records again first."""
        ...

    def allowance_used(self, scope: Scope, contact_id: str, service_id: str, period_start: date) -> Used:
        """What the service's counter of the cycle starting on `period_start` holds (read consistently)."""
        ...


class DunningStore(Protocol):
    """Dunning cases, under their contact (written through a `UnitOfWork`), and their wake-ups."""

    def get_case(self, scope: Scope, case_id: str) -> StoredCase | None:
        """One consistent GetItem (the case id names its contact, currency and sequence)."""
        ...

    def cases_of(self, scope: Scope, contact_id: str) -> list[StoredCase]:
        """The contact's cases, every currency's, newest first: one consistent Query."""
        ...

    def open_case_of(self, scope: Scope, contact_id: str, currency: str) -> StoredCase | None:
        """The contact's case in `currency` if it has not ended: one consistent Query, limit 1."""
        ...

    def due_cases(self, shard: int, upper_day: date, limit: int, cursor: str | None) -> Page[DueCase]:
        """Up to `limit` wake-up entries of one shard due on or before `upper_day`, earliest first."""
        ...

    def wake_case(self, scope: Scope, case_id: str) -> tuple[StoredCase, str | None] | None:
        """Bump the case's `wake_seq` (one UpdateItem): the case after, and the token of the
        execution parked at the previous one, which this wake alone is to resume (None: none
        was). None: no such case."""
        ...

    def park_case(self, scope: Scope, case_id: str, wake_seq: int, token: str) -> bool:
        """Store `token` (one UpdateItem) only if the case is still at `wake_seq` and has not
        ended; False otherwise (a wake came in between: resume the token at once)."""
        ...


class UsageStore(Protocol):
    """Usage records (docs/data-model.md): one item per record, spread over 16 partitions per
    service and period; late markers in the contact's partition."""

    def put_usage_records(self, scope: Scope, records: list[UsageRecord]) -> list[bool]:
        """Each record written only if its id is new for its service and period: True where it
        was, False for a duplicate (the stored record's values stay)."""
        ...

    def stored_record_ids(
        self, scope: Scope, contact_id: str, service_id: str, keys: Iterable[tuple[date, str]]
    ) -> set[tuple[date, str]]:
        """Which of the (period start, record id) keys of a service hold a stored record."""
        ...

    def usage_records(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date
    ) -> Iterator[UsageRecord]:
        """Every record of a service's period, read consistently."""
        ...

    def usage_page(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date, limit: int, cursor: str | None
    ) -> Page[UsageRecord]: ...

    def put_late_marker(self, scope: Scope, contact_id: str, service_id: str, period_start: date) -> None:
        """Mark a period whose usage was billed as having received records since (idempotent)."""
        ...

    def late_markers(self, scope: Scope, contact_id: str, service_id: str) -> list[LateMarker]:
        """The marked periods of a service, oldest first, each with the token its clear needs."""
        ...


@dataclass(frozen=True, slots=True)
class StoredWallet:
    wallet: Wallet
    version: int
    """0: no wallet stored yet (an empty one)."""


class DuplicateEntry(Exception):
    """A wallet change's own ledger entry is booked already: the operation was done before (a retry)."""

    def __init__(self, entry_id: str) -> None:
        super().__init__(entry_id)
        self.entry_id = entry_id


class CreditStore(Protocol):
    """A contact's credit wallet and ledger, and the tenant's credit price list (docs/credits.md)."""

    def get_wallet(self, scope: Scope, contact_id: str) -> StoredWallet:
        """The contact's wallet, read consistently (an empty one at version 0 when none is stored)."""
        ...

    def commit_wallet(
        self,
        scope: Scope,
        contact_id: str,
        wallet: Wallet,
        version: int,
        entries: Sequence[LedgerEntry],
        own: str | None = None,
    ) -> int:
        """The wallet at `version + 1`, only if still at `version`, with each entry only if new, in
        one transaction; returns the new version. `DuplicateEntry` when the entry `own` is booked
        already; `ConcurrentModification` when anything else moved (read again, retry)."""
        ...

    def get_credit_entry(self, scope: Scope, contact_id: str, entry_id: str) -> LedgerEntry | None:
        """One ledger entry by id, read consistently."""
        ...

    def credit_ledger(
        self, scope: Scope, contact_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[LedgerEntry]:
        """The contact's entries booked in [start, end), in time order (eventually consistent)."""
        ...

    def credit_ledger_page(self, scope: Scope, contact_id: str, limit: int, cursor: str | None) -> Page[LedgerEntry]:
        """A page of the contact's entries in time order, after `cursor` (eventually consistent)."""
        ...

    def get_credit_prices(self, tenant_id: str) -> tuple[CreditPriceList, int]:
        """The tenant's credit price list and its version (0: none yet)."""
        ...

    def save_credit_prices(self, tenant_id: str, prices: CreditPriceList, version: int) -> None:
        """The price list, only if still at `version` (`ConcurrentModification` otherwise)."""
        ...


class Store(
    TenantStore,
    CreditStore,
    IdempotencyStore,
    CatalogStore,
    ContactStore,
    SubscriptionStore,
    InvoiceStore,
    CollectionStore,
    PaymentMethodStore,
    DunningStore,
    AllowanceStore,
    UsageStore,
    DueIndex,
    SweepIndex,
    Transactions,
    Protocol,
):
    """Every port: what the handlers wire (`DynamoStore` implements it); a use case names the
    narrow ports it uses. Tenant-level data (settings, API keys, the catalog) is keyed by the
    tenant id; everything of a contact (and invoice numbering) by a `Scope`, the tenant and a mode."""


# Use cases that read and write several aggregates name them together.
class RatingPorts(ContactStore, UsageStore, Protocol):
    """Rating stored usage: a service's records, its late markers, the contact's allowance overrides."""


class BillingPorts(SubscriptionStore, InvoiceStore, Transactions, RatingPorts, CreditStore, DunningStore, Protocol):
    """Billing a subscription: read it and its usage, number and write its invoices and steps."""


class PaymentMethodPorts(ContactStore, PaymentMethodStore, SubscriptionStore, Transactions, Protocol):
    """Saving, listing and removing a contact's payment methods (and the subscriptions naming one)."""


class ContactPorts(ContactStore, SubscriptionStore, Transactions, Protocol):
    """A contact with its subscriptions and its test clock (archiving, attaching a clock)."""


class ClockPorts(BillingPorts, ContactStore, Protocol):
    """Advancing a test clock and billing what became due."""


class CatalogPorts(CatalogStore, Transactions, Protocol):
    """Reading and writing the catalog."""


class SettingsPorts(TenantStore, CatalogStore, Protocol):
    """Tenant settings that name products (the subscription policy)."""


class InvoicePorts(InvoiceStore, ContactStore, Transactions, Protocol):
    """Invoices, their payments and credits, on the contact's clock."""


class OrderingPorts(BillingPorts, ContactStore, CatalogStore, Protocol):
    """Quoting and placing an order: the contact and its clock, the catalog, then billing."""


class RunPorts(BillingPorts, DueIndex, TenantStore, Protocol):
    """The daily run: the due index, each tenant's settings, then billing."""


class CollectionPorts(
    InvoiceStore,
    ContactStore,
    SubscriptionStore,
    TenantStore,
    CollectionStore,
    PaymentMethodStore,
    Transactions,
    Protocol,
):
    """Collecting an invoice: the tenant's settings, the contact, its invoices and attempts, the
    subscription naming the payment method, and that method (never charged once removed)."""


class DunningFlows(Protocol):
    """The dunning state machine (`billow.gateways.flows.StepFunctionsFlows`, `flows_from_env`):
    one execution per case, named after it (docs/dunning.md, "The flow")."""

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        """StartExecution of the dunning state machine; an execution of that name existing already is
        success (a duplicate start is refused by Step Functions, which is what we want)."""
        ...

    def resume(self, token: str) -> bool:
        """SendTaskSuccess(token, output "{}"); False when the token waits no more (TaskTimedOut,
        InvalidToken, TaskDoesNotExist) — the execution has moved on and will re-read the case."""
        ...

    def running(self, execution_name: str) -> bool:
        """Whether the execution of that name is running (DescribeExecution: RUNNING); False when it
        ended (succeeded, failed, timed out, aborted) or never started."""
        ...


class DunningPorts(CollectionPorts, DunningStore, UsageStore, CreditStore, Protocol):
    """Dunning: its cases, and everything a decision reads and a step writes (invoices, attempts,
    payment methods, subscriptions and their logs, the contact and its clock)."""
