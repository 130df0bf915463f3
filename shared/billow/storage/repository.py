"""`DynamoStore`: the storage port over the single table. SDK errors become domain errors here, so
nothing above this module imports botocore or pynamodb."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any, TypeVar, cast

from pynamodb.exceptions import (
    DeleteError,
    GetError,
    PutError,
    QueryError,
    TransactWriteError,
    UpdateError,
)
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path
from pynamodb.transactions import TransactWrite

from billow.domain.actions import Action
from billow.domain.allowances import Counted, Used, refusal
from billow.domain.billing import next_due_date
from billow.domain.calendar import Period
from billow.domain.catalog import PriceTerms, Product
from billow.domain.collection import PaymentAttempt
from billow.domain.contacts import Contact, TestClock
from billow.domain.credits import CreditPriceList, LedgerEntry, Wallet
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, TemporaryFailure
from billow.domain.invoices import Invoice, InvoiceKind, Payment
from billow.domain.ordering import Order
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.pricing import Allowance
from billow.domain.receivables import CreditApplication, Refund, RefundStatus
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.domain.usage import LateMarker, UsageRecord
from billow.services.context import Scope
from billow.services.gateway import GatewayEvent
from billow.services.ports import (
    DUE_SHARDS,
    MAX_TRANSACTION_WRITES,
    ApiKey,
    DueCase,
    DueSubscription,
    IdempotencyClaim,
    InvoiceQuery,
    Page,
    StoredCase,
    StoredWallet,
    Unfinished,
    UsageCount,
)
from billow.services.webhooks import EventClaim
from billow.storage import codec, credits
from billow.storage.models import BillowItem, connection
from billow.storage.table import INVOICE_LIST_SHARDS, shard_of

T = TypeVar("T")

_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}


# -- keys (docs/data-model.md) -----------------------------------------------------------------------
def tenant_pk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


def scope_key(scope: Scope) -> str:
    """`<tenant>#LIVE` or `<tenant>#TEST`: the prefix of every key of a mode's contact-level data."""
    return f"{scope.tenant_id}#{scope.mode.upper()}"


def contact_pk(scope: Scope, contact_id: str) -> str:
    return f"T#{scope_key(scope)}#C#{contact_id}"


def webhook_event_pk(scope: Scope, rail: str, event_id: str) -> str:
    """One partition per event received (ids are the rail's, unique): records never crowd one."""
    return f"T#{scope_key(scope)}#WHEVT#{rail}#{event_id}"


def catalog_pk(tenant_id: str) -> str:
    return f"T#{tenant_id}#CATALOG"


def by_id(owner: str, entity_id: str) -> str:
    """The by-id index key: `owner` is a tenant (catalog) or a `scope_key` (a mode's data)."""
    return f"{owner}#{entity_id}"


def listing(scope: Scope, kind: str) -> str:
    """The partition of a mode's tenant-wide listing of `kind` (GSI3PK, before any bucket)."""
    return by_id(scope_key(scope), kind)


def invoice_position(invoice: Invoice) -> str:
    """Where an invoice sorts in every invoice listing: by issue day, then id (GSI3SK)."""
    return f"{invoice.issue_date.isoformat()}#{invoice.id}"


def due_partition(shard: int) -> str:
    return f"DUE#{shard:03d}"


def due_keys(scope: Scope, subscription: Subscription, shards: int) -> tuple[str | None, str | None]:
    """Due-index keys, or (None, None) to leave the subscription out of the daily run: nothing left
    to bill, or a test-clock contact's subscription, which only its clock bills. The sort key is
    `<date>#<tenant>#<MODE>#<contact>#<subscription>`: the run bills each in its own mode."""
    due = next_due_date(subscription)
    return _due_on(scope, due, subscription.test_clock, subscription.contact_id, subscription.id, shards)


def invoice_due_keys(scope: Scope, invoice: Invoice, shards: int) -> tuple[str | None, str | None]:
    """Due-index keys of an invoice whose status moves on a day (a draft finalised, an open invoice
    overdue), the same form as a subscription's; a test-clock contact's invoice is left out."""
    return _due_on(scope, invoice.next_transition(), invoice.test_clock, invoice.contact_id, invoice.id, shards)


def _due_on(
    scope: Scope, due: date | None, test_clock: bool, contact_id: str, entity_id: str, shards: int
) -> tuple[str | None, str | None]:
    if due is None or test_clock:
        return None, None
    shard = shard_of(entity_id, shards)
    return due_partition(shard), f"{due.isoformat()}#{scope_key(scope)}#{contact_id}#{entity_id}"


def due_entry(sort_key: str) -> DueSubscription:
    """The subscription a due-index sort key names (read from the right: a tenant id may hold '#')."""
    day_and_tenant, mode, contact_id, subscription_id = sort_key.rsplit("#", 3)
    tenant_id = day_and_tenant.split("#", 1)[1]
    return DueSubscription(Scope(tenant_id, mode.lower()), contact_id, subscription_id)


USAGE_SHARDS = 16
"""A service's records of one period are spread over this many partitions: 16 x 1,000 write units a
second per partition is the 10,000 records a second one busy service may send (docs/scale.md)."""
USAGE_RECORD_PREFIX = "REC#"
USAGE_LATE_PREFIX = "ULATE#"


def usage_shard(record_id: str) -> int:
    """The shard of a record: the first byte of sha256(record id) mod 16 (stable everywhere)."""
    return hashlib.sha256(record_id.encode()).digest()[0] % USAGE_SHARDS


def usage_partition(scope: Scope, contact_id: str, service_id: str, period_start: date, shard: int) -> str:
    """`T#<s>#C#<c>#U#<service>#<period start>#<shard 00..15>`: a partition per service, period and
    shard, off the contact's own partition."""
    return f"{contact_pk(scope, contact_id)}#U#{service_id}#{period_start.isoformat()}#{shard:02d}"


def usage_late_sk(service_id: str, period_start: date) -> str:
    return f"{USAGE_LATE_PREFIX}{service_id}#{period_start.isoformat()}"


SWEEP_ATTEMPT, SWEEP_REFUND = "ATT", "REFUND"


def sweep_partition(shard: int) -> str:
    return f"SWEEP#{shard:03d}"


def _sweep_instant(instant: datetime) -> str:
    """An instant as it sorts in the sweep index: UTC, fixed width."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sweep_keys(
    scope: Scope, contact_id: str, since: datetime, kind: str, parent_id: str, item_id: str, entity_id: str
) -> dict[str, str]:
    """The due index's (GSI1) keys of an attempt left live or a card refund left pending, in its
    own partitions `SWEEP#<shard>` (shard: of `entity_id`), sorted by the instant it became so:
    `<since>#<tenant>#<MODE>#<contact>#<ATT|REFUND>#<invoice|credit note>#<number|refund>`. Put by
    the write that makes it live, gone with the write that makes it final (docs/data-model.md)."""
    shard = shard_of(entity_id, DUE_SHARDS)
    key = f"{_sweep_instant(since)}#{scope_key(scope)}#{contact_id}#{kind}#{parent_id}#{item_id}"
    return {"gsi1pk": sweep_partition(shard), "gsi1sk": key}


def unfinished_entry(sort_key: str) -> Unfinished:
    """What a sweep-index sort key names (read from the right: a tenant id may hold '#')."""
    _, rest = sort_key.split("#", 1)
    tenant_id, mode, contact_id, kind, parent_id, item_id = rest.rsplit("#", 5)
    what = "attempt" if kind == SWEEP_ATTEMPT else "refund"
    return Unfinished(Scope(tenant_id, mode.lower()), contact_id, what, parent_id, item_id)


def dunning_partition(shard: int) -> str:
    return f"DUNNING#{shard:03d}"


def case_sk(currency: str, sequence: int) -> str:
    return f"DUNNING#{currency}#{sequence:06d}"


def case_key(scope: Scope, case_id: str) -> tuple[str, str]:
    """A case's item key from its id alone (`dun_<contact>_<currency>_<sequence>`, read from the
    right: a contact id may hold '_'); `InvalidInput` for an id that is not a case's."""
    parts = case_id.split("_")
    if len(parts) < 4 or parts[0] != "dun" or not parts[-1].isdigit() or len(parts[-2]) != 3:
        raise InvalidInput(f"{case_id!r} is not a dunning case id", field="case_id", code="dunning.case_id")
    contact_id = "_".join(parts[1:-2])
    return contact_pk(scope, contact_id), case_sk(parts[-2], int(parts[-1]))


def case_wake_keys(scope: Scope, stored: StoredCase) -> dict[str, str]:
    """The case's wake-up entry in the due index (GSI1): `DUNNING#<shard>` (shard of the case id) /
    `<due>#<tenant>#<MODE>#<contact>#<case>`, only while it is open with a due day and its contact
    has no test clock (the clock's advances wake those)."""
    case = stored.case
    if case.ended or stored.due is None or stored.clocked:
        return {}
    key = f"{stored.due.isoformat()}#{scope_key(scope)}#{case.contact_id}#{case.id}"
    return {"gsi1pk": dunning_partition(shard_of(case.id, DUE_SHARDS)), "gsi1sk": key}


def due_case_entry(sort_key: str) -> DueCase:
    """What a dunning wake-up sort key names (read from the right: a tenant id may hold '#')."""
    day_and_tenant, mode, contact_id, case_id = sort_key.rsplit("#", 3)
    day, tenant_id = day_and_tenant.split("#", 1)
    return DueCase(Scope(tenant_id, mode.lower()), contact_id, case_id, date.fromisoformat(day))


def _case_item(scope: Scope, stored: StoredCase, version: int) -> BillowItem:
    case = stored.case
    body = {
        "case": codec.case_out(case),
        "due": None if stored.due is None else stored.due.isoformat(),
        "decided_on": None if stored.decided_on is None else stored.decided_on.isoformat(),
        "decided_at": None if stored.decided_at is None else stored.decided_at.isoformat(),
        "run": stored.run,
        "clocked": stored.clocked,
    }
    pk, sk = case_key(scope, case.id)
    item = _entity(pk, sk, "dunning_case", body, version=version, **case_wake_keys(scope, stored))
    item.status = case.status.value
    item.wake_seq = stored.wake_seq
    if stored.token is not None:
        item.token, item.token_seq = stored.token, stored.wake_seq
    return item


def _stored_case(item: BillowItem) -> StoredCase:
    body = json.loads(item.data or "{}")
    wake_seq = int(item.wake_seq or 0)
    valid = item.token is not None and item.token_seq is not None and int(item.token_seq) == wake_seq
    return StoredCase(
        codec.case_in(body["case"], int(item.version or 0)),
        due=None if body.get("due") is None else date.fromisoformat(body["due"]),
        decided_on=None if body.get("decided_on") is None else date.fromisoformat(body["decided_on"]),
        decided_at=None if body.get("decided_at") is None else datetime.fromisoformat(body["decided_at"]),
        token=item.token if valid else None,
        wake_seq=wake_seq,
        run=int(body.get("run", 0)),
        clocked=bool(body.get("clocked", False)),
    )


def _due_index_page(partition: str, upper: str, limit: int, cursor: str | None, entry: Callable[[str], T]) -> Page[T]:
    """Up to `limit` entries of one partition of the due index (GSI1) with sort keys up to `upper`."""
    with _translated("due index"):
        result = BillowItem.due_index.query(
            partition,
            BillowItem.gsi1sk <= upper,
            limit=limit,
            last_evaluated_key=_decode_cursor(cursor, partition, "GSI1", upper),
        )
        found = [entry(item.gsi1sk or "") for item in result]
    return Page(found, _encode_cursor(result.last_evaluated_key))


def _record(pk: str, sk: str, decode: Callable[[dict[str, Any], int], T], what: str) -> T | None:
    """One record of a contact (a payment, a credit application, a refund) with its item's
    version, read consistently."""
    with _translated(what):
        item = _get(pk, sk, consistent_read=True)
    return None if item is None else decode(json.loads(item.data or "{}"), int(item.version or 0))


def _records(pk: str, prefix: str, decode: Callable[[dict[str, Any], int], T], what: str) -> list[T]:
    """A contact's records whose sort key starts with `prefix`, with their versions, read consistently."""
    with _translated(what):
        items = BillowItem.query(pk, BillowItem.sk.startswith(prefix), consistent_read=True)
        return [decode(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]


def _get(pk: str, sk: str, *, consistent_read: bool = False) -> BillowItem | None:
    try:
        return BillowItem.get(pk, sk, consistent_read=consistent_read)
    except BillowItem.DoesNotExist:
        return None


_CLOCK_TIMES: ContextVar[dict[str, datetime]] = ContextVar("billow_clock_times")
"""Per contact partition, the test-clock time this context last read or wrote. Every use case that
acts for a contact on a test clock reads its clock first (`billow.services.contacts.contact_time`,
the clock advance), and every write that depends on that time is conditioned on a version the
clock's move changes: so the items a use case writes are stamped with the clock's time of their
change (`clock_time`), which their events carry (docs/events.md), without a write of its own."""


def forget_clock_times() -> None:
    """Start an invocation with no clock time noted: a Lambda container runs its invocations one
    after another in one context, so a time noted by an earlier one could otherwise stamp a later
    one's items (`runtime.invocation` calls this first)."""
    _CLOCK_TIMES.set({})


def _note_clock(scope: Scope, clock: TestClock) -> None:
    times = dict(_CLOCK_TIMES.get({}))
    times[contact_pk(scope, clock.contact_id)] = clock.frozen_time
    _CLOCK_TIMES.set(times)


def _entity(
    pk: str,
    sk: str,
    kind: str,
    body: dict[str, Any],
    *,
    owner: str | None = None,
    entity_id: str | None = None,
    version: int = 1,
    **indexes: Any,
) -> BillowItem:
    """A versioned item holding `body`; given its owner (see `by_id`) and an entity id it is also
    findable by that id alone (GSI2, sort key = the kind in capitals)."""
    if owner is not None and entity_id is not None:
        indexes.update(gsi2pk=by_id(owner, entity_id), gsi2sk=kind.upper())
    clock_time = _CLOCK_TIMES.get({}).get(pk)
    if clock_time is not None:
        indexes.update(clock_time=clock_time.isoformat())
    return BillowItem(pk, sk, kind=kind, data=_dump(body), version=version, **indexes)


def _key_marker(pk: str, subscription: Subscription) -> BillowItem:
    """Claims a cycle, billing model and currency for one subscription of the contact: two writers
    racing to create the contact's subscription of the same key cannot both succeed."""
    key = subscription.key
    sk = f"SUBKEY#{key.cycle.value}#{key.billing_model.value}#{key.currency}"
    return _entity(pk, sk, "subscription_key", {"subscription_id": subscription.id})


def _absent() -> Condition:
    """The condition of every create: the key must not exist yet."""
    return BillowItem.pk.does_not_exist()


def _still_pending() -> Condition:
    """The condition of every action log write beside a step: the record is new or still
    scheduled. Executed, cancelled and rejected are final and never written over (a record from
    before the status attribute existed counts as scheduled)."""
    return _absent() | (BillowItem.status == "scheduled") | BillowItem.status.does_not_exist()


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _reason_codes(error: TransactWriteError) -> list[str]:
    return [r.code for r in (error.cancellation_reasons or []) if r is not None and r.code]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate pynamodb/botocore failures into domain errors."""
    try:
        yield
    except TransactWriteError as error:
        codes = _reason_codes(error)
        if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
            raise ConcurrentModification(f"{what}: changed concurrently, reload and retry") from error
        if error.cause_response_code in _THROTTLING or any(c in _THROTTLING for c in codes):
            raise TemporaryFailure(f"{what}: DynamoDB throttled") from error
        raise
    except (PutError, UpdateError, DeleteError) as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise Conflict(f"{what}: already exists or was changed", code="resource.already_exists") from error
        if error.cause_response_code in _THROTTLING:
            raise TemporaryFailure(f"{what}: DynamoDB throttled") from error
        raise
    except (GetError, QueryError) as error:
        if error.cause_response_code in _THROTTLING:
            raise TemporaryFailure(f"{what}: DynamoDB throttled") from error
        raise


def _encode_cursor(key: dict[str, Any] | None) -> str | None:
    return None if not key else base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


MAX_CURSOR_LENGTH = 4096
"""Characters of a cursor: the four keys it encodes, base64-encoded, are far shorter."""
MAX_KEY_BYTES = 1024
"""UTF-8 bytes of a key value DynamoDB takes (a sort key's limit; Billow's keys are far shorter)."""


def _decode_cursor(
    cursor: str | None, listing_key: str, index: str = "GSI3", upper: str | None = None
) -> dict[str, Any] | None:
    """The start key a cursor encodes, refused unless it has exactly the shape of one this listing
    returned: the table's and the index's keys, each a non-empty string DynamoDB can take, with
    this listing's partition and, given the query's `upper` bound, an index sort key within it.
    Anything else would reach DynamoDB and be refused there (a 5xx)."""
    if not cursor:
        return None
    decoded: Any = None
    if len(cursor) <= MAX_CURSOR_LENGTH:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        except (ValueError, RecursionError):  # bad base64, JSON or UTF-8
            decoded = None
    well_formed = (
        isinstance(decoded, dict)
        and set(decoded) == {"PK", "SK", f"{index}PK", f"{index}SK"}
        and all(isinstance(v, dict) and set(v) == {"S"} and _is_key_value(v["S"]) for v in decoded.values())
    )
    if (
        not well_formed
        or decoded[f"{index}PK"]["S"] != listing_key
        or (upper is not None and decoded[f"{index}SK"]["S"] > upper)
    ):
        raise InvalidInput("cursor is not one this listing returned", field="cursor", code="listing.invalid_cursor")
    return dict(decoded)


def _is_key_value(value: Any) -> bool:
    """A string DynamoDB takes as a key: not empty, valid UTF-8 (no lone surrogates), not too long."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return len(value.encode()) <= MAX_KEY_BYTES
    except UnicodeEncodeError:
        return False


# -- listing cursors -----------------------------------------------------------------------------
# Every API listing pages by position: its cursor holds the sort key of the last item it returned
# (and a digest of the listing it came from, so a cursor of another listing or tenant is refused),
# and the next page is a key condition starting just after it. Keys hold no character below "!",
# so the key plus a space is the least key after it. A cursor never carries a partition key: it can
# only ever move within the caller's own listing.
_KEY_TEXT = re.compile(r"[!-~]{1,400}")
_TOP = "\uffff"


@dataclass(frozen=True, slots=True)
class _Listing:
    of: str  # what is listed: its partition, and for a partition shared by kinds, the kind
    prefix: str = ""  # every position of the listing starts with this
    pattern: re.Pattern[str] = _KEY_TEXT

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.of.encode(), digest_size=6).hexdigest()

    def cursor(self, after: str | None) -> str | None:
        if after is None:
            return None
        return base64.urlsafe_b64encode(json.dumps({"after": after, "of": self.digest}).encode()).decode()

    def after(self, cursor: str | None) -> str | None:
        """The position a cursor continues after, refused unless this listing returned it."""
        if not cursor:
            return None
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        except (ValueError, UnicodeError, RecursionError):  # bad base64, UTF-8 or JSON; JSON nested too deep
            decoded = None
        after = decoded.get("after") if isinstance(decoded, dict) else None
        if (
            not isinstance(after, str)
            or decoded.get("of") != self.digest
            or not self.pattern.fullmatch(after)
            or not after.startswith(self.prefix)
        ):
            raise InvalidInput("cursor is not one this listing returned", field="cursor", code="listing.invalid_cursor")
        return after


def _range(key: Any, prefix: str, after: str | None) -> Condition | None:
    """Sort keys starting with `prefix`, after `after` when given."""
    if after is not None:
        return key.between(after + " ", prefix + _TOP)
    return None if not prefix else key.startswith(prefix)


def _page(
    query: Callable[[Condition | None, int], Iterable[BillowItem]],
    key: str,
    listed: _Listing,
    cursor: str | None,
    limit: int,
) -> tuple[list[BillowItem], str | None]:
    """Up to `limit` items of a listing ordered by the sort key `key` ("sk" or "gsi3sk"), and the
    cursor of the next page (None when none is left: one item more than the page is read to know)."""
    condition = _range(getattr(BillowItem, key), listed.prefix, listed.after(cursor))
    items = list(islice(query(condition, limit + 1), limit + 1))
    if len(items) <= limit:
        return items, None
    return items[:limit], listed.cursor(str(getattr(items[limit - 1], key)))


def _slice(positioned: Iterable[tuple[str, T]], listed: _Listing, cursor: str | None, limit: int) -> Page[T]:
    """A page of a listing read whole (a contact's invoices, a subscription's action log): the
    items after the cursor's position, in position order."""
    after = listed.after(cursor)
    rest = sorted(((p, x) for p, x in positioned if after is None or p > after), key=lambda px: px[0])
    more = len(rest) > limit
    return Page([x for _, x in rest[:limit]], listed.cursor(rest[limit - 1][0]) if more else None)


# The tenant-wide invoice listing merges the listing shards by position, in rounds: each round asks
# every shard for a few items after the position reached; items up to the lowest position where a
# shard stopped early are complete and in order. A page is short (even empty) when filters skip
# most of what a round read: its cursor then continues after what was read.
_INVOICE_POSITION = re.compile(r"\d{4}-\d{2}-\d{2}#[A-Za-z0-9_\-]{1,80}")
_MERGE_ROUNDS = 4
_MERGE_WORKERS = 16


# -- items: one builder per kind, shared by every write of it -------------------------------------
def _versioned(expected_version: int) -> Condition:
    """The condition of every change: the item is still at the version it was read at."""
    return BillowItem.version == expected_version


def _created_or_versioned(version: int) -> Condition:
    """An item whose version 0 means "not stored yet" (settings, a clock)."""
    return _absent() if version == 0 else _versioned(version)


def _settings_item(settings: TenantSettings, version: int) -> BillowItem:
    return _entity(tenant_pk(settings.tenant_id), "SETTINGS", "settings", codec.settings_out(settings), version=version)


def _product_item(tenant_id: str, product: Product, version: int) -> BillowItem:
    return _entity(
        catalog_pk(tenant_id),
        f"PROD#{product.id}",
        "product",
        codec.product_out(product),
        owner=tenant_id,
        entity_id=product.id,
        version=version,
    )


def _terms_item(tenant_id: str, terms: PriceTerms) -> BillowItem:
    return _entity(catalog_pk(tenant_id), f"PROD#{terms.product_id}#TERMS#{terms.id}", "terms", codec.terms_out(terms))


def _contact_item(scope: Scope, contact: Contact, version: int) -> BillowItem:
    return _entity(
        contact_pk(scope, contact.id),
        "CONTACT",
        "contact",
        codec.contact_out(contact),
        owner=scope_key(scope),
        entity_id=contact.id,
        version=version,
        gsi3pk=listing(scope, "CONTACT"),
        gsi3sk=f"{contact.created_at.isoformat()}#{contact.id}",
    )


def expiring_partition(month: str, shard: int) -> str:
    """The listing-index partition of the methods expiring at the end of `month` ("YYYY-MM") not
    announced yet, one per due shard (the billing run's shard announces its own)."""
    return f"EXPIRES#{month}#{shard:03d}"


def _payment_method_item(scope: Scope, method: SavedPaymentMethod, version: int) -> BillowItem:
    pk = contact_pk(scope, method.contact_id)
    indexes: dict[str, str] = {}
    if method.to_announce and method.expires_in is not None:  # sparse: gone once announced or removed
        partition = expiring_partition(method.expires_in, shard_of(method.id, DUE_SHARDS))
        indexes = {"gsi3pk": partition, "gsi3sk": f"{scope_key(scope)}#{method.contact_id}#{method.id}"}
    body = codec.payment_method_out(method)
    return _entity(pk, f"PM#{method.id}", "payment_method", body, version=version, **indexes)


def _clock_item(scope: Scope, clock: TestClock, version: int) -> BillowItem:
    return _entity(contact_pk(scope, clock.contact_id), "CLOCK", "test_clock", codec.clock_out(clock), version=version)


def _subscription_item(scope: Scope, subscription: Subscription, version: int, due_shards: int) -> BillowItem:
    due_pk, due_sk = due_keys(scope, subscription, due_shards)
    return _entity(
        contact_pk(scope, subscription.contact_id),
        f"SUB#{subscription.id}",
        "subscription",
        codec.subscription_out(subscription),
        owner=scope_key(scope),
        entity_id=subscription.id,
        version=version,
        gsi1pk=due_pk,
        gsi1sk=due_sk,
    )


def _action_item(scope: Scope, subscription: Subscription, action: Action) -> BillowItem:
    item = _entity(
        contact_pk(scope, subscription.contact_id),
        f"ACT#{subscription.id}#{action.id}",
        "action",
        codec.action_out(action),
    )
    item.status = action.status.value
    return item


def invoice_shard(scope: Scope, shard: int) -> str:
    """The partition of one shard of a mode's invoice listing (GSI3PK)."""
    return f"{listing(scope, 'INVOICE')}#{shard:02d}"


def _invoice_item(scope: Scope, invoice: Invoice, version: int, due_shards: int) -> BillowItem:
    due_pk, due_sk = invoice_due_keys(scope, invoice, due_shards)
    return _entity(
        contact_pk(scope, invoice.contact_id),
        f"INV#{invoice.id}",
        "invoice",
        codec.invoice_out(invoice),
        owner=scope_key(scope),
        entity_id=invoice.id,
        version=version,
        gsi1pk=due_pk,
        gsi1sk=due_sk,
        gsi3pk=invoice_shard(scope, shard_of(invoice.id, INVOICE_LIST_SHARDS)),
        gsi3sk=invoice_position(invoice),
        status=invoice.status.value,
        invoice_kind=invoice.kind.value,
    )


def _credit_marker(scope: Scope, note: Invoice) -> _Write:
    """A credit note's `CREDIT#<currency>#<id>` marker, put while credit remains of it and deleted
    once none does: the engine finds a contact's credit with one small Query, none when there is none."""
    item = _entity(
        contact_pk(scope, note.contact_id),
        f"CREDIT#{note.currency}#{note.id}",
        "credit_marker",
        {"credit_note": note.id},
    )
    return _Write(item, None, delete=note.credit_remaining.is_zero)


def _application_item(scope: Scope, note: Invoice, application: CreditApplication) -> BillowItem:
    pk = contact_pk(scope, note.contact_id)
    sk = f"CRAPP#{application.credit_note_id}#{application.id}"
    # Written at most twice: applied (version 1), then reversed (version 2) if its invoice is voided.
    version = 1 if application.reversed_on is None else 2
    return _entity(pk, sk, "credit_application", codec.application_out(application), version=version)


def _refund_item(scope: Scope, contact_id: str, refund: Refund, version: int = 1) -> BillowItem:
    pk = contact_pk(scope, contact_id)
    sk = f"REFUND#{refund.credit_note_id}#{refund.id}"
    indexes: dict[str, str] = {}
    if refund.status is RefundStatus.PENDING:  # sparse: the sweep finishes it if its sender died
        indexes = sweep_keys(
            scope, contact_id, refund.recorded_at, SWEEP_REFUND, refund.credit_note_id, refund.id, refund.id
        )
    return _entity(pk, sk, "refund", codec.refund_out(refund), version=version, **indexes)


def _payment_item(scope: Scope, contact_id: str, payment: Payment, version: int = 1) -> BillowItem:
    return _entity(
        contact_pk(scope, contact_id),
        f"PAY#{payment.invoice_id}#{payment.id}",
        "payment",
        codec.payment_out(payment),
        owner=scope_key(scope),
        entity_id=payment.id,
        version=version,
    )


def _attempt_sk(invoice_id: str, number: int) -> str:
    return f"ATT#{invoice_id}#{number:04d}"


def _attempt_saved(scope: Scope, attempt: PaymentAttempt) -> tuple[PaymentAttempt, _Write]:
    saved = replace(attempt, version=attempt.version + 1)
    indexes: dict[str, str] = {}
    if saved.live:  # sparse: the sweep resumes it if its collector died
        number = f"{attempt.number:04d}"
        indexes = sweep_keys(
            scope, attempt.contact_id, attempt.created_at, SWEEP_ATTEMPT, attempt.invoice_id, number, attempt.id
        )
    item = _entity(
        contact_pk(scope, attempt.contact_id),
        _attempt_sk(attempt.invoice_id, attempt.number),
        "payment_attempt",
        codec.attempt_out(saved),
        version=saved.version,
        **indexes,
    )
    return saved, _Write(item, _created_or_versioned(attempt.version))


def _attempts(items: Iterable[BillowItem]) -> list[PaymentAttempt]:
    return [codec.attempt_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]


def _usage_item(scope: Scope, record: UsageRecord) -> BillowItem:
    """A usage record's item: no version (it never changes), its body in `data`."""
    pk = usage_partition(scope, record.contact_id, record.service_id, record.period_start, usage_shard(record.id))
    return BillowItem(
        pk, USAGE_RECORD_PREFIX + record.id, kind="usage_record", data=_dump(codec.usage_record_out(record))
    )


def _usage_record_in(item: BillowItem, contact_id: str, service_id: str, period_start: date) -> UsageRecord:
    return codec.usage_record_in(
        json.loads(item.data or "{}"),
        record_id=str(item.sk).removeprefix(USAGE_RECORD_PREFIX),
        contact_id=contact_id,
        service_id=service_id,
        period_start=period_start,
    )


_USAGE_POSITION = re.compile(r"(?:0\d|1[0-5])#REC#[A-Za-z0-9._:\-]{1,128}")
"""A position in a service's usage listing: `<shard>#<sort key>` (shards in order, then ids)."""
_USAGE_THREADS = 16
_BATCH_GET = 100
"""Keys in one BatchGetItem (DynamoDB's limit)."""
_BATCH_GET_ATTEMPTS = 8
"""Concurrent requests of one usage call: a batch's conditional PutItems (one per record:
BatchWriteItem takes no condition), a period's 16 shard reads."""


@dataclass(frozen=True, slots=True)
class _Write:
    """One write with its condition: a put of the whole item, an update (`actions`), or a
    condition check that writes nothing (`check`)."""

    item: BillowItem
    condition: Condition | None
    actions: tuple[Any, ...] | None = None
    check: bool = False
    delete: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return str(self.item.pk), str(self.item.sk)

    def alone(self) -> None:
        """Written on its own: one conditional PutItem or UpdateItem (not a transaction)."""
        assert not self.check, "a condition check writes nothing on its own: stage it with a write"
        if self.delete:
            self.item.delete(condition=self.condition)
        elif self.actions is not None:
            self.item.update(actions=list(self.actions), condition=self.condition)
        else:
            self.item.save(condition=self.condition)

    def into(self, tx: TransactWrite) -> None:
        if self.check:
            tx.condition_check(BillowItem, self.item.pk, self.item.sk, condition=self.condition)
        elif self.delete:
            tx.delete(self.item, condition=self.condition)
        elif self.actions is not None:
            tx.update(self.item, actions=list(self.actions), condition=self.condition)
        else:
            tx.save(self.item, condition=self.condition)


def _alone_versioned(write: _Write, what: str, *, code: str | None = None) -> None:
    """One conditioned write on its own (not a transaction); its condition failing (another writer
    came first) is `ConcurrentModification`: the caller reloads and retries."""
    try:
        with _translated(what):
            write.alone()
    except Conflict as error:
        raise ConcurrentModification(f"{what}: changed concurrently; reload and retry", code=code) from error


def _version_moved_on(pk: str, sk: str, expected_version: int) -> _Write:
    """The item's version + 1, only if still at `expected_version`; nothing else of it changes."""
    return _Write(BillowItem(pk, sk), _versioned(expected_version), (BillowItem.version.add(1),))


def _contact_saved(scope: Scope, contact: Contact) -> tuple[Contact, _Write]:
    saved = replace(contact, version=contact.version + 1)
    return saved, _Write(_contact_item(scope, saved, saved.version), _versioned(contact.version))


def _clock_saved(scope: Scope, clock: TestClock) -> tuple[TestClock, _Write]:
    saved = replace(clock, version=clock.version + 1)
    _note_clock(scope, clock)
    return saved, _Write(_clock_item(scope, clock, saved.version), _created_or_versioned(clock.version))


# -- usage allowance counters (docs/billing.md, "Allowances") ----------------------------------------
ALLOWANCE_COUNTER_KIND = "usage_allowance"
_COUNT_ATTEMPTS = 40
"""Transactions one record may lose to others on its counter (TransactionConflict) before the
write gives up as `TemporaryFailure` (each retry after a short random pause)."""


def allowance_counter_sk(service_id: str, period_start: date) -> str:
    """A service's allowance counter for the billing cycle starting on `period_start`: a new cycle
    is a new item, so counters reset with the cycle (and follow a test clock)."""
    return f"UALLOW#{service_id}#{period_start.isoformat()}"


def _number(value: Decimal) -> dict[str, str]:
    """A DynamoDB number, exact (never through a float)."""
    return {"N": format(value, "f")}


def _used_in(raw: dict[str, Any] | None) -> Used:
    """A counter's raw item (DynamoDB JSON) as what it counted."""
    if not raw:
        return Used()
    days = (raw.get("days") or {}).get("M") or {}
    return Used(
        Decimal((raw.get("used") or {}).get("N", "0")),
        {date.fromisoformat(d): Decimal(v["N"]) for d, v in days.items()},
    )


def _counter_key(scope: Scope, record: UsageRecord) -> tuple[str, str]:
    return contact_pk(scope, record.contact_id), allowance_counter_sk(record.service_id, record.period_start)


def _counted(scope: Scope, record: UsageRecord, allowance: Allowance, basis: str) -> _Write:
    """The counter update accepting `record`: `ADD used :q`, `days[day] += q`, conditioned on the
    counter being opened on `basis` and each window the allowance sets still holding `q` (DynamoDB
    conditions take no arithmetic, so the condition is `used <= limit - q`)."""
    item = BillowItem(*_counter_key(scope, record), kind=ALLOWANCE_COUNTER_KIND)
    q = record.quantity
    day = Path(["days", record.day.isoformat()])  # the map's entry of the record's day
    condition = BillowItem.days.exists() & (BillowItem.basis == basis)
    if q == 0:  # uses nothing: fits any window, even one already over its limit (a lowered override)
        return _Write(item, condition, (BillowItem.used.add(_number(q)),))
    if allowance.per_cycle is not None:
        condition &= BillowItem.used <= _number(allowance.per_cycle - q)
    if allowance.per_day is not None:
        condition &= day.does_not_exist() | (day <= _number(allowance.per_day - q))
    actions = (BillowItem.used.add(_number(q)), day.set((day | _number(Decimal(0))) + _number(q)))
    return _Write(item, condition, actions)


def _open_counter(
    scope: Scope, record: UsageRecord, stored: Iterable[UsageRecord], basis: str, old: dict[str, Any] | None
) -> None:
    """(Re)open the cycle's counter on `basis`, holding what the cycle's records `stored` use
    (records accepted before a `refuse` allowance applied to the service: a contact's override set
    mid-cycle counts the usage before it; records an `overage` allowance accepted in between).

    `old` is the counter as the failed transaction saw it, before `stored` was read: the write is
    conditioned on it being unchanged (no record counted since, which the read may have missed),
    else nothing is written and the caller tries again. Racing openers: one write wins."""
    days: dict[str, Decimal] = {}
    for found in stored:
        days[found.day.isoformat()] = days.get(found.day.isoformat(), Decimal(0)) + found.quantity
    item = BillowItem(*_counter_key(scope, record), kind=ALLOWANCE_COUNTER_KIND)
    unchanged: Condition
    if not old:
        unchanged = BillowItem.pk.does_not_exist()
    else:
        used = (old.get("used") or {}).get("N")
        unchanged = BillowItem.used.does_not_exist() if used is None else BillowItem.used == {"N": used}
        was = (old.get("basis") or {}).get("S")
        unchanged &= BillowItem.basis.does_not_exist() if was is None else BillowItem.basis == was
    try:
        with _translated("usage allowance counter"):
            item.update(
                actions=[
                    BillowItem.kind.set(ALLOWANCE_COUNTER_KIND),
                    BillowItem.used.set(cast(Any, _number(sum(days.values(), Decimal(0))))),  # exact
                    BillowItem.days.set({"M": {day: _number(q) for day, q in days.items()}}),
                    BillowItem.basis.set(basis),
                ],
                condition=unchanged,
            )
    except Conflict:
        pass  # counted or opened by another writer meanwhile: the caller tries again


class DynamoUnitOfWork:
    """Implements `billow.services.ports.UnitOfWork`: staged writes, committed as one
    TransactWriteItems. A failed condition or a transaction conflict on any item cancels all of
    them and is `ConcurrentModification`; throttling is `TemporaryFailure`."""

    def __init__(self, what: str, due_shards: int = DUE_SHARDS) -> None:
        self.what = what
        self._due_shards = due_shards
        self._writes: list[_Write] = []

    @property
    def staged(self) -> int:
        return len(self._writes)

    def _stage(self, write: _Write) -> None:
        # Both are a use case's mistake, not a request's: DynamoDB would refuse the transaction.
        if len(self._writes) == MAX_TRANSACTION_WRITES:
            raise ValueError(f"{self.what}: over {MAX_TRANSACTION_WRITES} writes in one transaction")
        if any(w.key == write.key for w in self._writes):
            raise ValueError(f"{self.what}: item {write.key} staged twice in one transaction")
        self._writes.append(write)

    # -- contacts and clocks --------------------------------------------------------------------
    def save_contact(self, scope: Scope, contact: Contact) -> Contact:
        saved, write = _contact_saved(scope, contact)
        self._stage(write)
        return saved

    def touch_contact(self, scope: Scope, contact_id: str, expected_version: int) -> None:
        self._stage(_version_moved_on(contact_pk(scope, contact_id), "CONTACT", expected_version))

    def save_payment_method(self, scope: Scope, method: SavedPaymentMethod) -> SavedPaymentMethod:
        saved = replace(method, version=method.version + 1)
        item = _payment_method_item(scope, saved, saved.version)
        self._stage(_Write(item, _created_or_versioned(method.version)))
        return saved

    def save_clock(self, scope: Scope, clock: TestClock) -> TestClock:
        saved, write = _clock_saved(scope, clock)
        self._stage(write)
        return saved

    def check_clock(self, scope: Scope, clock: TestClock) -> None:
        item = BillowItem(contact_pk(scope, clock.contact_id), "CLOCK")
        self._stage(_Write(item, _versioned(clock.version), check=True))

    # -- catalog --------------------------------------------------------------------------------
    def add_product(self, tenant_id: str, product: Product) -> None:
        self._stage(_Write(_product_item(tenant_id, product, 1), _absent()))
        for terms in product.terms:
            self._stage(_Write(_terms_item(tenant_id, terms), _absent()))

    def save_product(self, tenant_id: str, product: Product, new_terms: PriceTerms | None = None) -> Product:
        saved = replace(product, version=product.version + 1)
        self._stage(_Write(_product_item(tenant_id, saved, saved.version), _versioned(product.version)))
        if new_terms is not None:
            self._stage(_Write(_terms_item(tenant_id, new_terms), _absent()))
        return saved

    # -- orders, subscriptions and their action logs --------------------------------------------
    def add_order(self, scope: Scope, order: Order) -> None:
        pk = contact_pk(scope, order.contact_id)
        item = _entity(
            pk, f"ORD#{order.id}", "order", codec.order_out(order), owner=scope_key(scope), entity_id=order.id
        )
        self._stage(_Write(item, _absent()))
        if order.reference is not None:
            marker = _entity(pk, f"ORDREF#{order.reference}", "order_reference", {"order_id": order.id})
            self._stage(_Write(marker, _absent()))

    def save_subscription(
        self, scope: Scope, subscription: Subscription, expected_version: int, *, new: bool = False
    ) -> None:
        item = _subscription_item(scope, subscription, expected_version + 1, self._due_shards)
        self._stage(_Write(item, _absent() if new else _versioned(expected_version)))
        if new:
            self._stage(_Write(_key_marker(contact_pk(scope, subscription.contact_id), subscription), _absent()))

    def touch_subscription(self, scope: Scope, subscription: Subscription) -> None:
        pk = contact_pk(scope, subscription.contact_id)
        self._stage(_version_moved_on(pk, f"SUB#{subscription.id}", subscription.version))

    def log_action(self, scope: Scope, subscription: Subscription, action: Action, *, only_new: bool = False) -> None:
        self._stage(_Write(_action_item(scope, subscription, action), _absent() if only_new else _still_pending()))

    # -- invoices and payments ------------------------------------------------------------------
    def add_invoice(self, scope: Scope, invoice: Invoice) -> None:
        self._stage(_Write(_invoice_item(scope, invoice, 1, self._due_shards), _absent()))
        if invoice.kind is InvoiceKind.CREDIT_NOTE:
            self._stage(_credit_marker(scope, invoice))

    def save_invoice(self, scope: Scope, invoice: Invoice, expected_version: int) -> None:
        item = _invoice_item(scope, invoice, expected_version + 1, self._due_shards)
        self._stage(_Write(item, _versioned(expected_version)))
        if invoice.kind is InvoiceKind.CREDIT_NOTE:
            self._stage(_credit_marker(scope, invoice))

    def check_contact(self, scope: Scope, contact: Contact) -> None:
        item = BillowItem(contact_pk(scope, contact.id), "CONTACT")
        self._stage(_Write(item, _versioned(contact.version), check=True))

    def check_invoice(self, scope: Scope, invoice: Invoice) -> None:
        item = BillowItem(contact_pk(scope, invoice.contact_id), f"INV#{invoice.id}")
        self._stage(_Write(item, _versioned(invoice.version), check=True))

    def check_wallet(self, scope: Scope, contact_id: str, version: int) -> None:
        item = BillowItem(contact_pk(scope, contact_id), credits.WALLET_SK)
        self._stage(_Write(item, _absent() if version == 0 else _versioned(version), check=True))

    def record_credit_application(self, scope: Scope, note: Invoice, application: CreditApplication) -> None:
        new = application.reversed_on is None
        self._stage(_Write(_application_item(scope, note, application), _absent() if new else None))

    def add_refund(self, scope: Scope, note: Invoice, refund: Refund) -> None:
        self._stage(_Write(_refund_item(scope, note.contact_id, refund), _absent()))

    def save_refund(self, scope: Scope, contact_id: str, refund: Refund) -> None:
        item = _refund_item(scope, contact_id, refund, refund.version + 1)
        self._stage(_Write(item, _versioned(refund.version)))

    def add_payment(self, scope: Scope, invoice: Invoice, payment: Payment) -> None:
        self._stage(_Write(_payment_item(scope, invoice.contact_id, payment), _absent()))

    def save_payment(self, scope: Scope, contact_id: str, payment: Payment) -> None:
        item = _payment_item(scope, contact_id, payment, payment.version + 1)
        self._stage(_Write(item, _versioned(payment.version)))

    def save_attempt(self, scope: Scope, attempt: PaymentAttempt) -> PaymentAttempt:
        saved, write = _attempt_saved(scope, attempt)
        self._stage(write)
        return saved

    def save_case(self, scope: Scope, stored: StoredCase, expected_version: int) -> StoredCase:
        saved = replace(stored, case=replace(stored.case, version=expected_version + 1))
        item = _case_item(scope, saved, saved.version)
        self._stage(_Write(item, _created_or_versioned(expected_version)))
        return saved

    # -- usage ------------------------------------------------------------------------------------
    def add_usage_record(self, scope: Scope, record: UsageRecord) -> None:
        """The record, only if its id is new for its service and period (`attribute_not_exists`):
        a duplicate cancels the transaction (`ConcurrentModification`)."""
        self._stage(_Write(_usage_item(scope, record), _absent()))

    def clear_late_marker(self, scope: Scope, contact_id: str, marker: LateMarker) -> None:
        item = BillowItem(contact_pk(scope, contact_id), usage_late_sk(marker.service_id, marker.period_start))
        self._stage(_Write(item, BillowItem.counter == marker.token, delete=True))

    def commit(self) -> None:
        writes, self._writes = self._writes, []
        if not writes:
            return
        with _translated(self.what), TransactWrite(connection=connection()) as tx:
            for write in writes:
                write.into(tx)


class DynamoStore:
    """Implements `billow.services.ports.Store`: every port, and units of work over the table."""

    def __init__(self, due_shards: int = DUE_SHARDS) -> None:
        self.due_shards = due_shards

    # -- credits (billow.storage.credits) -------------------------------------------------------------
    def get_wallet(self, scope: Scope, contact_id: str) -> StoredWallet:
        with _translated("credit wallet"):
            return credits.get_wallet(contact_pk(scope, contact_id))

    def commit_wallet(
        self,
        scope: Scope,
        contact_id: str,
        wallet: Wallet,
        version: int,
        entries: Sequence[LedgerEntry],
        own: str | None = None,
    ) -> int:
        return credits.commit_wallet(contact_pk(scope, contact_id), wallet, version, entries, own)

    def get_credit_entry(self, scope: Scope, contact_id: str, entry_id: str) -> LedgerEntry | None:
        with _translated("credit ledger entry"):
            return credits.get_entry(contact_pk(scope, contact_id), entry_id)

    def credit_ledger(
        self, scope: Scope, contact_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> Iterator[LedgerEntry]:
        with _translated("credit ledger"):
            yield from credits.ledger(contact_pk(scope, contact_id), start, end)

    def credit_ledger_page(self, scope: Scope, contact_id: str, limit: int, cursor: str | None) -> Page[LedgerEntry]:
        partition = credits.ledger_pk(contact_pk(scope, contact_id))
        with _translated("credit ledger"):
            items, next_cursor = _page(
                lambda condition, size: BillowItem.listing.query(partition, condition, page_size=size),
                "gsi3sk",
                _Listing(partition),
                cursor,
                limit,
            )
        return Page([credits.entry_in(json.loads(i.data or "{}")) for i in items], next_cursor)

    def get_credit_prices(self, tenant_id: str) -> tuple[CreditPriceList, int]:
        with _translated("credit price list"):
            return credits.get_prices(catalog_pk(tenant_id))

    def save_credit_prices(self, tenant_id: str, prices: CreditPriceList, version: int) -> None:
        with _translated("credit price list"):
            credits.save_prices(catalog_pk(tenant_id), prices, version)

    def unit_of_work(self, what: str) -> DynamoUnitOfWork:
        return DynamoUnitOfWork(what, self.due_shards)

    # -- tenants ------------------------------------------------------------------------------------
    def get_settings(self, tenant_id: str) -> TenantSettings | None:
        with _translated("tenant settings"):
            item = _get(tenant_pk(tenant_id), "SETTINGS", consistent_read=True)
        if item is None or item.data is None:
            return None
        return codec.settings_in(json.loads(item.data), int(item.version or 0))

    def put_settings(self, settings: TenantSettings) -> TenantSettings:
        """Write the settings only if the stored ones are still at `settings.version` (absent for
        0); returns them as stored, at the next version."""
        saved = replace(settings, version=settings.version + 1)
        write = _Write(_settings_item(settings, saved.version), _created_or_versioned(settings.version))
        _alone_versioned(write, "the settings", code="resource.concurrent_modification")
        return saved

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        with _translated("api key"):
            item = _get(f"APIKEY#{key_hash}", "APIKEY")
        if item is None or item.data is None:
            return None
        body = json.loads(item.data)
        return ApiKey(key_hash, body["tenant_id"], body["mode"], body["name"])

    def put_api_key(self, key: ApiKey) -> None:
        body = {"tenant_id": key.tenant_id, "mode": key.mode, "name": key.name}
        with _translated("api key"):
            BillowItem(f"APIKEY#{key.key_hash}", "APIKEY", kind="api_key", data=_dump(body)).save()

    def claim_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim, now: datetime) -> IdempotencyClaim:
        """One conditional put: the claim is written unless its key is held by an unexpired claim
        (an expired one not yet deleted by the TTL is replaced); else the holder is read back."""
        pk, body = self._claim_key(tenant_id, claim)
        item = _entity(pk, "IDEM", "idempotency_key", body)
        item.expires_at = None if claim.expires_at is None else int(claim.expires_at.timestamp())
        for _ in range(3):
            try:
                with _translated("idempotency key"):
                    item.save(condition=_absent() | (BillowItem.expires_at < int(now.timestamp())))
                return claim
            except Conflict:
                with _translated("idempotency key"):
                    held = _get(pk, "IDEM", consistent_read=True)
                if held is not None:  # else the TTL deleted it in between: claim it again
                    found = json.loads(held.data or "{}")
                    return IdempotencyClaim(
                        claim.key_hash,
                        found["fingerprint"],
                        found["nonce"],
                        None if held.expires_at is None else datetime.fromtimestamp(held.expires_at, UTC),
                        None if "claimed_at" not in found else datetime.fromisoformat(found["claimed_at"]),
                        done=found.get("done", True),  # a claim from before `done` was kept: done
                    )
        raise ConcurrentModification("the idempotency key kept changing; try again")

    def release_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim) -> None:
        pk, body = self._claim_key(tenant_id, claim)
        with suppress(Conflict), _translated("idempotency key"):
            BillowItem(pk, "IDEM").delete(condition=BillowItem.data == _dump(body))

    def finish_idempotency_key(self, tenant_id: str, claim: IdempotencyClaim) -> None:
        pk, body = self._claim_key(tenant_id, claim)
        finished = _dump(self._claim_key(tenant_id, replace(claim, done=True))[1])
        with suppress(Conflict), _translated("idempotency key"):
            BillowItem(pk, "IDEM").update(
                actions=[BillowItem.data.set(finished)], condition=BillowItem.data == _dump(body)
            )

    @staticmethod
    def _claim_key(tenant_id: str, claim: IdempotencyClaim) -> tuple[str, dict[str, Any]]:
        """The claim's partition key (one per key: claims never crowd a partition) and body."""
        body: dict[str, Any] = {"fingerprint": claim.fingerprint, "nonce": claim.nonce}
        if claim.claimed_at is not None:
            body |= {"claimed_at": claim.claimed_at.isoformat(), "done": claim.done}
        return f"{tenant_pk(tenant_id)}#IDEM#{claim.key_hash}", body

    def count_usage(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date, records: int, quantity: Decimal
    ) -> UsageCount:
        """One UpdateItem: `ADD records :n, quantity :q` on the contact's `ULIMIT#<service>#<period
        start>` item, read back as updated (quantity kept exact: a DynamoDB number, never a float)."""
        kwargs = {
            "TableName": BillowItem.Meta.table_name,
            "Key": {"PK": {"S": contact_pk(scope, contact_id)}, "SK": {"S": f"ULIMIT#{service_id}#{period_start}"}},
            "UpdateExpression": "ADD #records :n, #quantity :q SET #type = :type",
            "ExpressionAttributeNames": {"#records": "records", "#quantity": "quantity", "#type": "type"},
            "ExpressionAttributeValues": {
                ":n": {"N": str(records)},
                ":q": {"N": str(quantity)},
                ":type": {"S": "usage_limit"},
            },
            "ReturnValues": "ALL_NEW",
        }
        with _translated(f"usage counter of service {service_id}"):
            item = connection().dispatch("UpdateItem", kwargs)["Attributes"]
        return UsageCount(int(item["records"]["N"]), Decimal(item["quantity"]["N"]))

    def reserve_invoice_numbers(self, scope: Scope, count: int) -> range:
        """Reserve `count` consecutive invoice numbers of one mode with one atomic counter update:
        test invoices never consume live invoice numbers."""
        item = BillowItem(tenant_pk(scope.tenant_id), f"SEQ#INVOICE#{scope.mode.upper()}", kind="sequence")
        with _translated("invoice number sequence"):
            item.update(actions=[BillowItem.counter.add(count), BillowItem.kind.set("sequence")])
        end = int(item.counter or 0) + 1
        return range(end - count, end)

    # -- catalog ------------------------------------------------------------------------------------
    def get_product(self, tenant_id: str, product_id: str) -> Product | None:
        with _translated(f"product {product_id}"):
            items = list(
                BillowItem.query(
                    catalog_pk(tenant_id), BillowItem.sk.startswith(f"PROD#{product_id}"), consistent_read=True
                )
            )
        products = self._products_from(items)
        return next((p for p in products if p.id == product_id), None)

    def list_products(self, tenant_id: str) -> list[Product]:
        """The whole catalog (rule checks); the API pages it with `products_page`."""
        with _translated("catalog"):
            items = list(BillowItem.query(catalog_pk(tenant_id), BillowItem.sk.startswith("PROD#")))
        return self._products_from(items)

    def products_page(self, tenant_id: str, limit: int, cursor: str | None) -> Page[Product]:
        """Up to `limit` products with their terms, in id order. A product's terms sort right after
        it (`PROD#<p>#TERMS#...`), so the page reads on until the next product shows up."""
        listed = _Listing(catalog_pk(tenant_id), "PROD#")
        condition = _range(BillowItem.sk, listed.prefix, listed.after(cursor))
        groups: list[list[BillowItem]] = []
        more = False
        with _translated("catalog"):
            for item in BillowItem.query(catalog_pk(tenant_id), condition, page_size=min(4 * limit + 1, 200)):
                if item.kind == "product":
                    if len(groups) == limit:
                        more = True
                        break
                    groups.append([item])
                elif groups:
                    groups[-1].append(item)
        products = self._products_from([item for group in groups for item in group])
        # "~" sorts after every key of the last product's terms and before the next product.
        return Page(products, listed.cursor(f"PROD#{products[-1].id}#~") if more else None)

    @staticmethod
    def _products_from(items: list[BillowItem]) -> list[Product]:
        terms: dict[str, list[PriceTerms]] = {}
        bodies: list[tuple[dict[str, Any], int]] = []
        for item in items:
            body = json.loads(item.data or "{}")
            if item.kind == "product":
                bodies.append((body, int(item.version or 0)))
            elif item.kind == "terms":
                terms.setdefault(body["product_id"], []).append(codec.terms_in(body))
        return [codec.product_in(b, terms.get(b["id"], []), v) for b, v in bodies]

    # -- contacts and clocks ------------------------------------------------------------------------
    def add_contact(self, scope: Scope, contact: Contact) -> None:
        with _translated(f"contact {contact.id}"):
            _Write(_contact_item(scope, contact, 1), _absent()).alone()

    def save_contact(self, scope: Scope, contact: Contact) -> Contact:
        """The changed contact, only if still at `contact.version`."""
        saved, write = _contact_saved(scope, contact)
        _alone_versioned(write, f"contact {contact.id}")
        return saved

    def get_contact(self, scope: Scope, contact_id: str) -> Contact | None:
        with _translated(f"contact {contact_id}"):
            item = _get(contact_pk(scope, contact_id), "CONTACT", consistent_read=True)
        return None if item is None else codec.contact_in(json.loads(item.data or "{}"), int(item.version or 0))

    def list_contacts(self, scope: Scope, limit: int, cursor: str | None) -> Page[Contact]:
        partition = listing(scope, "CONTACT")
        with _translated("contacts"):
            items, next_cursor = _page(
                lambda condition, size: BillowItem.listing.query(partition, condition, page_size=size),
                "gsi3sk",
                _Listing(partition),
                cursor,
                limit,
            )
            contacts = [codec.contact_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]
        return Page(contacts, next_cursor)

    def get_payment_method(self, scope: Scope, contact_id: str, method_id: str) -> SavedPaymentMethod | None:
        with _translated(f"payment method {method_id}"):
            item = _get(contact_pk(scope, contact_id), f"PM#{method_id}", consistent_read=True)
        return None if item is None else codec.payment_method_in(json.loads(item.data or "{}"), int(item.version or 0))

    def started_setup(self, scope: Scope, contact_id: str, request_id: str) -> str | None:
        with _translated("payment method setup"):
            item = _get(contact_pk(scope, contact_id), f"SETUP#{request_id}", consistent_read=True)
        return None if item is None else str(json.loads(item.data or "{}")["setup_ref"])

    def remember_setup(
        self, scope: Scope, contact_id: str, request_id: str, setup_ref: str, expires_at: datetime
    ) -> str:
        item = _entity(contact_pk(scope, contact_id), f"SETUP#{request_id}", "setup_started", {"setup_ref": setup_ref})
        item.expires_at = int(expires_at.timestamp())
        try:
            with _translated("payment method setup"):
                item.save(condition=_absent())
        except Conflict:
            return self.started_setup(scope, contact_id, request_id) or setup_ref
        return setup_ref

    def expiring_methods(self, month: str, shard: int) -> list[tuple[Scope, SavedPaymentMethod]]:
        """Every tenant's saved methods of one due shard expiring at the end of `month` whose
        expiry is not announced yet (the sparse listing partition `expiring_partition`)."""
        with _translated("expiring payment methods"):
            found = []
            for item in BillowItem.listing.query(expiring_partition(month, shard)):
                scope_and_contact, _ = (item.gsi3sk or "").rsplit("#", 1)
                tenant_and_mode, _ = scope_and_contact.rsplit("#", 1)
                tenant_id, mode = tenant_and_mode.rsplit("#", 1)
                method = codec.payment_method_in(json.loads(item.data or "{}"), int(item.version or 0))
                found.append((Scope(tenant_id, mode.lower()), method))
            return found

    def payment_methods_of(self, scope: Scope, contact_id: str) -> list[SavedPaymentMethod]:
        with _translated("payment methods"):
            pk = contact_pk(scope, contact_id)
            items = BillowItem.query(pk, BillowItem.sk.startswith("PM#"), consistent_read=True)
            return [codec.payment_method_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]

    def payment_methods_page(
        self, scope: Scope, contact_id: str, limit: int, cursor: str | None
    ) -> Page[SavedPaymentMethod]:
        """The contact's methods not removed, in id order: read whole (a contact saves a few) and
        paged by position, as a subscription's action log is."""
        kept = ((m.id, m) for m in self.payment_methods_of(scope, contact_id) if not m.removed)
        return _slice(kept, _Listing(f"{contact_pk(scope, contact_id)}#PM"), cursor, limit)

    def get_clock(self, scope: Scope, contact_id: str) -> TestClock | None:
        with _translated("test clock"):
            item = _get(contact_pk(scope, contact_id), "CLOCK", consistent_read=True)
        if item is None:
            return None
        clock = codec.clock_in(json.loads(item.data or "{}"), int(item.version or 0))
        _note_clock(scope, clock)
        return clock

    def save_clock(self, scope: Scope, clock: TestClock) -> TestClock:
        """The clock's status, only if still at `clock.version` (absent for 0). A write that moves
        the clock's time is `billow.services.contacts.move_clock`."""
        saved, write = _clock_saved(scope, clock)
        _alone_versioned(write, "the test clock")
        return saved

    # -- orders and subscriptions -------------------------------------------------------------------
    def get_order(self, scope: Scope, order_id: str) -> Order | None:
        item = self._by_id(scope, order_id, "ORDER")
        return None if item is None else codec.order_in(json.loads(item.data or "{}"))

    def find_order_by_reference(self, scope: Scope, contact_id: str, reference: str) -> Order | None:
        with _translated("order reference"):
            marker = _get(contact_pk(scope, contact_id), f"ORDREF#{reference}")
            if marker is None:
                return None
            item = _get(contact_pk(scope, contact_id), f"ORD#{json.loads(marker.data or '{}')['order_id']}")
        return None if item is None else codec.order_in(json.loads(item.data or "{}"))

    def _by_id(self, scope: Scope, entity_id: str, kind: str) -> BillowItem | None:
        """The item with this id: its keys from the (keys-only, eventually consistent) by-id
        index, then the item itself, read consistently for its current version."""
        with _translated(f"{kind.lower()} {entity_id}"):
            keys = next(
                iter(BillowItem.by_id.query(by_id(scope_key(scope), entity_id), BillowItem.gsi2sk == kind, limit=1)),
                None,
            )
            return None if keys is None else _get(keys.pk, keys.sk, consistent_read=True)

    def get_subscription(self, scope: Scope, subscription_id: str) -> Subscription | None:
        item = self._by_id(scope, subscription_id, "SUBSCRIPTION")
        return None if item is None else codec.subscription_in(json.loads(item.data or "{}"), int(item.version or 0))

    def load_subscription(self, scope: Scope, contact_id: str, subscription_id: str) -> Subscription | None:
        with _translated(f"subscription {subscription_id}"):
            item = _get(contact_pk(scope, contact_id), f"SUB#{subscription_id}", consistent_read=True)
        return None if item is None else codec.subscription_in(json.loads(item.data or "{}"), int(item.version or 0))

    def subscriptions_of(self, scope: Scope, contact_id: str) -> list[Subscription]:
        with _translated("subscriptions"):
            items = BillowItem.query(
                contact_pk(scope, contact_id), BillowItem.sk.startswith("SUB#"), consistent_read=True
            )
            return [codec.subscription_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]

    def subscriptions_page(self, scope: Scope, contact_id: str, limit: int, cursor: str | None) -> Page[Subscription]:
        pk = contact_pk(scope, contact_id)
        with _translated("subscriptions"):
            items, next_cursor = _page(
                lambda condition, size: BillowItem.query(pk, condition, page_size=size, consistent_read=True),
                "sk",
                _Listing(pk, "SUB#"),
                cursor,
                limit,
            )
            found = [codec.subscription_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]
        return Page(found, next_cursor)

    def actions_page(
        self, scope: Scope, contact_id: str, subscription_id: str, limit: int, cursor: str | None
    ) -> Page[Action]:
        """A subscription's action log by day, then request day, then id: read whole (it is bounded
        by the subscription's actions) and paged by position."""
        log = self.actions_of(scope, contact_id, subscription_id)
        positioned = ((f"{a.on.isoformat()}#{a.requested_on.isoformat()}#{a.id}", a) for a in log)
        return _slice(positioned, _Listing(f"{contact_pk(scope, contact_id)}#ACT#{subscription_id}"), cursor, limit)

    def actions_of(self, scope: Scope, contact_id: str, subscription_id: str) -> list[Action]:
        with _translated("action log"):
            items = BillowItem.query(
                contact_pk(scope, contact_id),
                BillowItem.sk.startswith(f"ACT#{subscription_id}#"),
                consistent_read=True,
            )
            return [codec.action_in(json.loads(i.data or "{}")) for i in items]

    def due_page(self, as_of: date, shard: int, limit: int, cursor: str | None) -> Page[DueSubscription]:
        """Up to `limit` subscriptions of one due-index shard due on or before `as_of`."""
        return _due_index_page(due_partition(shard), f"{as_of.isoformat()}#\uffff", limit, cursor, due_entry)

    def unfinished_page(self, before: datetime, shard: int, limit: int, cursor: str | None) -> Page[Unfinished]:
        """Up to `limit` entries of one sweep shard that became live or pending before `before`."""
        upper = f"{_sweep_instant(before)}#\uffff"
        return _due_index_page(sweep_partition(shard), upper, limit, cursor, unfinished_entry)

    # -- invoices and payments ----------------------------------------------------------------------
    def list_invoices(self, scope: Scope, query: InvoiceQuery, limit: int, cursor: str | None) -> Page[Invoice]:
        """Invoices oldest first (issue day, then id), filtered; a contact's from its own partition,
        the tenant's by merging the listing shards (docs/data-model.md, pattern 8)."""
        if query.contact_id is not None:
            found = self.invoices_of(scope, query.contact_id)
            listed = _Listing(f"{contact_pk(scope, query.contact_id)}#INV", pattern=_INVOICE_POSITION)
            return _slice(((invoice_position(i), i) for i in found if query.matches(i)), listed, cursor, limit)
        listed = _Listing(listing(scope, "INVOICE"), pattern=_INVOICE_POSITION)
        after = listed.after(cursor)
        lower = query.issued_from.isoformat() if query.issued_from else "0"
        if after is not None:
            lower = max(lower, after + " ")
        upper = query.issued_before.isoformat() if query.issued_before else "~"
        filters: Condition | None = None
        if query.statuses is not None:
            filters = BillowItem.status.is_in(*sorted(s.value for s in query.statuses))
        if query.kind is not None:
            kind = BillowItem.invoice_kind == query.kind.value
            filters = kind if filters is None else filters & kind
        items, next_position = self._merge_shards(scope, lower, upper, filters, limit)
        invoices = [codec.invoice_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]
        return Page(invoices, listed.cursor(next_position))

    def _merge_shards(
        self, scope: Scope, lower: str, upper: str, filters: Condition | None, limit: int
    ) -> tuple[list[BillowItem], str | None]:
        """Up to `limit` listing items with positions in [lower, upper], in position order, from
        every shard, and the position the next page continues after (None when nothing is left)."""
        per_shard = max(4, -(-2 * limit // INVOICE_LIST_SHARDS))
        found: list[BillowItem] = []
        for _ in range(_MERGE_ROUNDS):
            if lower > upper:
                return found, None
            condition = BillowItem.gsi3sk.between(lower, upper)

            def read(shard: int, condition: Condition = condition) -> tuple[list[BillowItem], str | None]:
                return self._shard_page(scope, shard, condition, filters, per_shard)

            with _translated("invoices"), ThreadPoolExecutor(_MERGE_WORKERS) as pool:
                pages = list(pool.map(read, range(INVOICE_LIST_SHARDS)))
            stops = [stop for _, stop in pages if stop is not None]
            bound = min(stops) if stops else None
            complete = [i for items, _ in pages for i in items if bound is None or (i.gsi3sk or "") <= bound]
            found += sorted(complete, key=lambda i: i.gsi3sk or "")
            if len(found) > limit:
                return found[:limit], found[limit - 1].gsi3sk
            if bound is None:
                return found, None
            if len(found) == limit:
                return found, bound
            lower = bound + " "
        return found, bound

    def _shard_page(
        self, scope: Scope, shard: int, condition: Condition, filters: Condition | None, size: int
    ) -> tuple[list[BillowItem], str | None]:
        """One Query of one listing shard: its matching items and, when it stopped early, the
        position it stopped at."""
        result = BillowItem.listing.query(
            invoice_shard(scope, shard), condition, filter_condition=filters, page_size=size
        )
        page = next(result.page_iter)
        items = [BillowItem.from_raw_data(raw) for raw in page.get("Items", [])]
        stop = page.get("LastEvaluatedKey")
        return items, None if stop is None else str(stop["GSI3SK"]["S"])

    def get_invoice(self, scope: Scope, invoice_id: str) -> Invoice | None:
        item = self._by_id(scope, invoice_id, "INVOICE")
        return None if item is None else codec.invoice_in(json.loads(item.data or "{}"), int(item.version or 0))

    def contact_invoice(self, scope: Scope, contact_id: str, invoice_id: str) -> Invoice | None:
        return _record(contact_pk(scope, contact_id), f"INV#{invoice_id}", codec.invoice_in, f"invoice {invoice_id}")

    def invoices_of(self, scope: Scope, contact_id: str) -> list[Invoice]:
        with _translated("invoices"):
            items = BillowItem.query(contact_pk(scope, contact_id), BillowItem.sk.startswith("INV#"))
            return [codec.invoice_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]

    def get_payment(self, scope: Scope, contact_id: str, invoice_id: str, payment_id: str) -> Payment | None:
        sk = f"PAY#{invoice_id}#{payment_id}"
        return _record(contact_pk(scope, contact_id), sk, codec.payment_in, f"payment {payment_id}")

    def payments_of(self, scope: Scope, contact_id: str, invoice_id: str) -> list[Payment]:
        return _records(contact_pk(scope, contact_id), f"PAY#{invoice_id}#", codec.payment_in, "payments")

    # -- payment attempts ----------------------------------------------------------------------------
    def attempts_of(self, scope: Scope, contact_id: str) -> list[PaymentAttempt]:
        with _translated("payment attempts"):
            pk = contact_pk(scope, contact_id)
            return _attempts(BillowItem.query(pk, BillowItem.sk.startswith("ATT#"), consistent_read=True))

    def latest_attempt(self, scope: Scope, contact_id: str, invoice_id: str) -> PaymentAttempt | None:
        with _translated("payment attempts"):
            pk = contact_pk(scope, contact_id)
            items = BillowItem.query(
                pk,
                BillowItem.sk.startswith(f"ATT#{invoice_id}#"),
                consistent_read=True,
                scan_index_forward=False,
                limit=1,
            )
            found = _attempts(items)
        return found[0] if found else None

    def get_attempt(self, scope: Scope, contact_id: str, invoice_id: str, number: int) -> PaymentAttempt | None:
        with _translated(f"payment attempt {number} of invoice {invoice_id}"):
            item = _get(contact_pk(scope, contact_id), _attempt_sk(invoice_id, number), consistent_read=True)
        return None if item is None else _attempts([item])[0]

    def save_attempt(self, scope: Scope, attempt: PaymentAttempt) -> PaymentAttempt:
        saved, write = _attempt_saved(scope, attempt)
        _alone_versioned(write, f"payment attempt {attempt.id}")
        return saved

    # -- receivables ---------------------------------------------------------------------------------
    def credit_notes_with_credit(self, scope: Scope, contact_id: str, currency: str) -> list[Invoice]:
        pk = contact_pk(scope, contact_id)
        with _translated("credit balance"):
            markers = list(BillowItem.query(pk, BillowItem.sk.startswith(f"CREDIT#{currency}#"), consistent_read=True))
            notes = [_get(pk, f"INV#{m.sk.rsplit('#', 1)[1]}", consistent_read=True) for m in markers]
        found = [codec.invoice_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in notes if i is not None]
        return [n for n in found if not n.credit_remaining.is_zero]

    def get_application(
        self, scope: Scope, contact_id: str, credit_note_id: str, application_id: str
    ) -> CreditApplication | None:
        sk = f"CRAPP#{credit_note_id}#{application_id}"
        return _record(contact_pk(scope, contact_id), sk, codec.application_in, f"credit application {application_id}")

    def applications_of(
        self, scope: Scope, contact_id: str, credit_note_id: str | None = None
    ) -> list[CreditApplication]:
        prefix = "CRAPP#" if credit_note_id is None else f"CRAPP#{credit_note_id}#"
        return _records(contact_pk(scope, contact_id), prefix, codec.application_in, "credit applications")

    def get_refund(self, scope: Scope, contact_id: str, credit_note_id: str, refund_id: str) -> Refund | None:
        sk = f"REFUND#{credit_note_id}#{refund_id}"
        return _record(contact_pk(scope, contact_id), sk, codec.refund_in, f"refund {refund_id}")

    def refunds_of(self, scope: Scope, contact_id: str, credit_note_id: str) -> list[Refund]:
        return _records(contact_pk(scope, contact_id), f"REFUND#{credit_note_id}#", codec.refund_in, "refunds")

    # -- dunning cases -------------------------------------------------------------------------------
    def get_case(self, scope: Scope, case_id: str) -> StoredCase | None:
        pk, sk = case_key(scope, case_id)
        with _translated(f"dunning case {case_id}"):
            item = _get(pk, sk, consistent_read=True)
        return None if item is None else _stored_case(item)

    def cases_of(self, scope: Scope, contact_id: str) -> list[StoredCase]:
        with _translated("dunning cases"):
            items = BillowItem.query(
                contact_pk(scope, contact_id), BillowItem.sk.startswith("DUNNING#"), consistent_read=True
            )
            found = [_stored_case(i) for i in items]
        return sorted(found, key=lambda c: (c.case.opened_on, int(c.id.rsplit("_", 1)[1])), reverse=True)

    def open_case_of(self, scope: Scope, contact_id: str, currency: str) -> StoredCase | None:
        with _translated("dunning cases"):
            items = BillowItem.query(
                contact_pk(scope, contact_id),
                BillowItem.sk.startswith(f"DUNNING#{currency}#"),
                consistent_read=True,
                scan_index_forward=False,
                limit=1,
            )
            latest = next((_stored_case(i) for i in items), None)
        return None if latest is None or latest.case.ended else latest

    def due_cases(self, shard: int, upper_day: date, limit: int, cursor: str | None) -> Page[DueCase]:
        return _due_index_page(
            dunning_partition(shard), f"{upper_day.isoformat()}#\uffff", limit, cursor, due_case_entry
        )

    def wake_case(self, scope: Scope, case_id: str) -> tuple[StoredCase, str | None] | None:
        pk, sk = case_key(scope, case_id)
        item = BillowItem(pk, sk)
        try:
            with _translated(f"dunning case {case_id}"):
                item.update(
                    actions=[BillowItem.wake_seq.add(1), BillowItem.version.add(1)],
                    condition=BillowItem.pk.exists(),
                )
        except Conflict:
            return None
        woken = _stored_case(item)
        parked = item.token is not None and item.token_seq is not None and int(item.token_seq) == woken.wake_seq - 1
        return woken, item.token if parked else None

    def park_case(self, scope: Scope, case_id: str, wake_seq: int, token: str) -> bool:
        pk, sk = case_key(scope, case_id)
        try:
            with _translated(f"dunning case {case_id}"):
                BillowItem(pk, sk).update(
                    actions=[
                        BillowItem.token.set(token),
                        BillowItem.token_seq.set(wake_seq),
                        BillowItem.version.add(1),
                    ],
                    condition=(BillowItem.wake_seq == wake_seq) & (BillowItem.status != "ended"),
                )
        except Conflict:
            return False
        return True

    # -- webhook events ------------------------------------------------------------------------------
    def claim_webhook_event(
        self, scope: Scope, rail: str, event: GatewayEvent, *, now: datetime, lease: timedelta, keep: timedelta
    ) -> EventClaim:
        """A conditional put records the event, leased to this delivery; else a conditional update
        takes over an unapplied record whose lease ran out; else the record is read back."""
        pk = webhook_event_pk(scope, rail, event.id)
        leased_until = int((now + lease).timestamp())
        body = {"type": event.type, "object_ref": event.object_ref, "received_at": now.isoformat()}
        item = _entity(pk, "WHEVT", "webhook_event", body, status="received", lease_until=leased_until)
        item.expires_at = int((now + keep).timestamp())
        for _ in range(3):
            try:
                with _translated("webhook event"):
                    item.save(condition=_absent())
                return EventClaim.CLAIMED
            except Conflict:
                pass
            try:
                with _translated("webhook event"):
                    BillowItem(pk, "WHEVT").update(
                        actions=[BillowItem.lease_until.set(leased_until)],
                        condition=(BillowItem.status == "received") & (BillowItem.lease_until < int(now.timestamp())),
                    )
                return EventClaim.CLAIMED
            except Conflict:
                pass
            with _translated("webhook event"):
                held = _get(pk, "WHEVT", consistent_read=True)
            if held is not None:  # else the TTL deleted it in between: record it again
                return EventClaim.APPLIED if held.status == "applied" else EventClaim.IN_PROGRESS
        raise ConcurrentModification("the webhook event record kept changing; try again")

    def release_webhook_event(self, scope: Scope, rail: str, event_id: str) -> None:
        with suppress(Conflict), _translated("webhook event"):
            BillowItem(webhook_event_pk(scope, rail, event_id), "WHEVT").update(
                actions=[BillowItem.lease_until.set(0)], condition=BillowItem.status == "received"
            )

    def finish_webhook_event(self, scope: Scope, rail: str, event_id: str) -> None:
        with _translated("webhook event"):
            BillowItem(webhook_event_pk(scope, rail, event_id), "WHEVT").update(
                actions=[BillowItem.status.set("applied"), BillowItem.lease_until.remove()],
                condition=BillowItem.pk.exists(),
            )

    # -- usage allowances (docs/billing.md, "Allowances") ----------------------------------------------
    def add_counted_usage(
        self, scope: Scope, record: UsageRecord, allowance: Allowance, cycle: Period, basis: str = "-"
    ) -> Counted:
        """The record and its counter in ONE TransactWriteItems: the record only if new
        (`attribute_not_exists`), the counter only if every window still holds it and it was
        opened on `basis`. The cancellation reasons tell the cases apart: a duplicate counts
        nothing, a counter not there yet or opened on another basis is (re)opened from the cycle's
        stored records, an exhausted window is refused with what remains (read from the counter as
        the failed condition saw it)."""
        alone = refusal(allowance, record.quantity, record.day, cycle, Used())
        if alone is not None:  # beyond a window even with nothing used: no write can accept it,
            # unless it is a retry of a record stored before (a duplicate counts nothing, ever)
            item = _usage_item(scope, record)
            with _translated("usage record"):
                again = _get(str(item.pk), str(item.sk), consistent_read=True) is not None
            return Counted("duplicate") if again else Counted("refused", alone)
        put = _Write(_usage_item(scope, record), _absent())
        for attempt in range(_COUNT_ATTEMPTS):
            counter = _counted(scope, record, allowance, basis)
            try:
                with TransactWrite(connection=connection()) as tx:
                    put.into(tx)
                    tx.update(
                        counter.item,
                        actions=list(counter.actions or ()),
                        condition=counter.condition,
                        return_values="ALL_OLD",
                    )
                return Counted("accepted")
            except TransactWriteError as error:
                # pynamodb sends puts before updates: the reasons are [record, counter].
                reasons = list(error.cancellation_reasons or [])
                on_record, on_counter = [*reasons, None, None][:2]
                if on_record is not None and on_record.code == "ConditionalCheckFailed":
                    return Counted("duplicate")
                if on_counter is not None and on_counter.code == "ConditionalCheckFailed":
                    old = on_counter.raw_item
                    if not old or "days" not in old or (old.get("basis") or {}).get("S") != basis:
                        # the cycle's first counted record, or the allowance's source changed (an
                        # override set, changed or removed; the service's terms changed): the
                        # counter holds what the cycle's stored records use, whatever counted them
                        stored = self.usage_records(scope, record.contact_id, record.service_id, record.period_start)
                        _open_counter(scope, record, stored, basis, old)
                        continue
                    found = refusal(allowance, record.quantity, record.day, cycle, _used_in(old))
                    if found is not None:
                        return Counted("refused", found)
                    continue  # cannot happen: the condition is the refusal's; try again
                codes = {r.code for r in reasons if r is not None}
                if "TransactionConflict" in codes or codes & _THROTTLING or error.cause_response_code in _THROTTLING:
                    time.sleep(random.uniform(0, min(0.25, 0.004 * 2**attempt)))
                    continue
                with _translated(f"usage record {record.id}"):
                    raise
        raise TemporaryFailure(f"usage record {record.id}: its allowance counter is too busy; retry")

    def allowance_used(self, scope: Scope, contact_id: str, service_id: str, period_start: date) -> Used:
        """What a service's allowance counter holds for the cycle starting on `period_start`."""
        with _translated("usage allowance counter"):
            raw = connection().get_item(
                BillowItem.Meta.table_name,
                contact_pk(scope, contact_id),
                allowance_counter_sk(service_id, period_start),
                consistent_read=True,
            )
        return _used_in(raw.get("Item"))

    # -- usage ----------------------------------------------------------------------------------------
    def put_usage_records(self, scope: Scope, records: list[UsageRecord]) -> list[bool]:
        """Each record on its own conditional PutItem (`attribute_not_exists`), run concurrently:
        True where it was written, False where its id was already stored (a duplicate: the first
        record's values stay). Throttling is `TemporaryFailure` (the records written before stay
        written; a resend answers them as duplicates)."""

        def put(record: UsageRecord) -> bool:
            try:
                with _translated("usage record"):
                    _usage_item(scope, record).save(condition=_absent())
            except Conflict:
                return False
            return True

        if len(records) <= 1:
            return [put(r) for r in records]
        with ThreadPoolExecutor(min(_USAGE_THREADS, len(records))) as pool:
            return list(pool.map(put, records))

    def stored_record_ids(
        self, scope: Scope, contact_id: str, service_id: str, keys: Iterable[tuple[date, str]]
    ) -> set[tuple[date, str]]:
        """Which of the (period start, record id) keys of a service are stored: BatchGetItem, 100
        keys a request, consistently, the keys alone projected (1 read unit a key)."""
        wanted = {
            (usage_partition(scope, contact_id, service_id, start, usage_shard(rid)), USAGE_RECORD_PREFIX + rid): (
                start,
                rid,
            )
            for start, rid in keys
        }
        # the connection itself: Model.batch_get asks for no consumed capacity (the benchmark counts it)
        connection = BillowItem._get_connection()
        table = BillowItem.Meta.table_name
        found: set[tuple[date, str]] = set()
        pairs = list(wanted)
        for begin in range(0, len(pairs), _BATCH_GET):
            asked: list[Any] = [{"PK": {"S": pk}, "SK": {"S": sk}} for pk, sk in pairs[begin : begin + _BATCH_GET]]
            for attempt in range(_BATCH_GET_ATTEMPTS):
                with _translated("usage records"):
                    answer = connection.batch_get_item(
                        asked, consistent_read=True, return_consumed_capacity="TOTAL", attributes_to_get=["PK", "SK"]
                    )
                for item in answer.get("Responses", {}).get(table, []):
                    found.add(wanted[(item["PK"]["S"], item["SK"]["S"])])
                asked = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                if not asked:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: what DynamoDB left, again after a pause
            else:
                raise TemporaryFailure("usage records: reading record ids was throttled; send the batch again")
        return found

    def usage_records(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date
    ) -> Iterator[UsageRecord]:
        """Every record of a service's period: the 16 shards read at once, each whole and
        consistently, shard after shard."""

        def shard(number: int) -> list[BillowItem]:
            pk = usage_partition(scope, contact_id, service_id, period_start, number)
            with _translated("usage records"):
                return list(BillowItem.query(pk, BillowItem.sk.startswith(USAGE_RECORD_PREFIX), consistent_read=True))

        with ThreadPoolExecutor(_USAGE_THREADS) as pool:
            shards = list(pool.map(shard, range(USAGE_SHARDS)))
        for items in shards:
            for item in items:
                yield _usage_record_in(item, contact_id, service_id, period_start)

    def usage_page(
        self, scope: Scope, contact_id: str, service_id: str, period_start: date, limit: int, cursor: str | None
    ) -> Page[UsageRecord]:
        """A page of a service's period records, shard after shard, by id within a shard; the
        cursor holds the position `<shard>#REC#<id>` of the last record returned (pattern 7a)."""
        base = usage_partition(scope, contact_id, service_id, period_start, 0)[:-3]
        listed = _Listing(f"{base}#USAGE", pattern=_USAGE_POSITION)
        after = listed.after(cursor)
        first, after_sk = (0, None) if after is None else (int(after[:2]), after[3:])
        found: list[tuple[str, BillowItem]] = []
        for shard in range(first, USAGE_SHARDS):
            pk = usage_partition(scope, contact_id, service_id, period_start, shard)
            condition = _range(BillowItem.sk, USAGE_RECORD_PREFIX, after_sk if shard == first else None)
            wanted = limit + 1 - len(found)
            with _translated("usage records"):
                items = list(islice(BillowItem.query(pk, condition, consistent_read=True, page_size=wanted), wanted))
            found += [(f"{shard:02d}#{item.sk}", item) for item in items]
            if len(found) > limit:
                break
        records = [_usage_record_in(item, contact_id, service_id, period_start) for _, item in found[:limit]]
        return Page(records, listed.cursor(found[limit - 1][0]) if len(found) > limit else None)

    def put_late_marker(self, scope: Scope, contact_id: str, service_id: str, period_start: date) -> None:
        """Marks a billed period that received records after it was billed: one UpdateItem that
        also adds 1 to the marker's `counter`, so the billing step that clears it (conditioned on
        the counter it read) loses to a late batch marked after it rated the period."""
        body = {"service_id": service_id, "period_start": period_start.isoformat()}
        item = BillowItem(contact_pk(scope, contact_id), usage_late_sk(service_id, period_start))
        with _translated("late usage marker"):
            item.update(
                actions=[BillowItem.kind.set("usage_late"), BillowItem.data.set(_dump(body)), BillowItem.counter.add(1)]
            )

    def late_markers(self, scope: Scope, contact_id: str, service_id: str) -> list[LateMarker]:
        """The periods of a service marked late, oldest first (read consistently)."""
        prefix = f"{USAGE_LATE_PREFIX}{service_id}#"
        with _translated("late usage markers"):
            items = BillowItem.query(
                contact_pk(scope, contact_id), BillowItem.sk.startswith(prefix), consistent_read=True
            )
            markers = [
                LateMarker(service_id, date.fromisoformat(str(i.sk).removeprefix(prefix)), int(i.counter or 0))
                for i in items
            ]
        return sorted(markers, key=lambda m: m.period_start)
