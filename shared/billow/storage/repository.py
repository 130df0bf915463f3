"""`DynamoStore`: the storage port over the single table. SDK errors become domain errors here, so
nothing above this module imports botocore or pynamodb."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

from pynamodb.exceptions import (
    DeleteError,
    GetError,
    PutError,
    QueryError,
    TransactWriteError,
    UpdateError,
)
from pynamodb.expressions.condition import Condition
from pynamodb.transactions import TransactWrite

from billow.domain.actions import Action
from billow.domain.billing import next_due_date
from billow.domain.catalog import PriceTerms, Product
from billow.domain.contacts import Contact, TestClock
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, TemporaryFailure
from billow.domain.invoices import Invoice, Payment
from billow.domain.ordering import Order
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.services.ports import DUE_SHARDS, ApiKey, DueSubscription, Page
from billow.storage import codec
from billow.storage.models import BillowItem, connection
from billow.storage.table import INVOICE_LIST_SHARDS, shard_of

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


def contact_pk(tenant_id: str, contact_id: str) -> str:
    return f"T#{tenant_id}#C#{contact_id}"


def catalog_pk(tenant_id: str) -> str:
    return f"T#{tenant_id}#CATALOG"


def by_id(tenant_id: str, entity_id: str) -> str:
    return f"{tenant_id}#{entity_id}"


def due_partition(shard: int) -> str:
    return f"DUE#{shard:03d}"


def due_keys(tenant_id: str, subscription: Subscription, shards: int) -> tuple[str | None, str | None]:
    """Due-index keys, or (None, None) to leave the subscription out of the daily run: nothing left
    to bill, or a test-clock contact's subscription, which only its clock bills."""
    due = next_due_date(subscription)
    if due is None or subscription.test_clock:
        return None, None
    shard = shard_of(subscription.id, shards)
    return due_partition(shard), f"{due.isoformat()}#{tenant_id}#{subscription.contact_id}#{subscription.id}"


def _get(pk: str, sk: str, *, consistent_read: bool = False) -> BillowItem | None:
    try:
        return BillowItem.get(pk, sk, consistent_read=consistent_read)
    except BillowItem.DoesNotExist:
        return None


def _entity(
    pk: str,
    sk: str,
    kind: str,
    body: dict[str, Any],
    *,
    tenant_id: str | None = None,
    entity_id: str | None = None,
    version: int = 1,
    **indexes: Any,
) -> BillowItem:
    """A versioned item holding `body`; given a tenant and an entity id it is also findable by that
    id alone (GSI2, sort key = the kind in capitals)."""
    if tenant_id is not None and entity_id is not None:
        indexes.update(gsi2pk=by_id(tenant_id, entity_id), gsi2sk=kind.upper())
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
            raise Conflict(f"{what}: already exists or was changed") from error
        if error.cause_response_code in _THROTTLING:
            raise TemporaryFailure(f"{what}: DynamoDB throttled") from error
        raise
    except (GetError, QueryError) as error:
        if error.cause_response_code in _THROTTLING:
            raise TemporaryFailure(f"{what}: DynamoDB throttled") from error
        raise


def _encode_cursor(key: dict[str, Any] | None) -> str | None:
    return None if not key else base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_cursor(cursor: str | None, listing_key: str, index: str = "GSI3") -> dict[str, Any] | None:
    """The start key a cursor encodes, refused unless this listing returned it: a cursor of another
    listing (or another tenant) would otherwise reach DynamoDB and fail there as a 500."""
    if not cursor:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:  # bad base64 or JSON
        decoded = None
    well_formed = (
        isinstance(decoded, dict)
        and set(decoded) == {"PK", "SK", f"{index}PK", f"{index}SK"}
        and all(isinstance(v, dict) and isinstance(v.get("S"), str) for v in decoded.values())
    )
    if not well_formed or decoded[f"{index}PK"]["S"] != listing_key:
        raise InvalidInput("cursor is not one this listing returned", field="cursor")
    return dict(decoded)


class DynamoStore:
    """Implements `billow.services.ports.Store`."""

    def __init__(self, due_shards: int = DUE_SHARDS) -> None:
        self.due_shards = due_shards

    # -- tenants ------------------------------------------------------------------------------------
    def get_settings(self, tenant_id: str) -> TenantSettings | None:
        with _translated("tenant settings"):
            item = _get(tenant_pk(tenant_id), "SETTINGS")
        return None if item is None or item.data is None else codec.settings_in(json.loads(item.data))

    def put_settings(self, settings: TenantSettings) -> None:
        with _translated("tenant settings"):
            BillowItem(
                tenant_pk(settings.tenant_id), "SETTINGS", kind="settings", data=_dump(codec.settings_out(settings))
            ).save()

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

    def reserve_invoice_numbers(self, tenant_id: str, count: int) -> range:
        """Reserve `count` consecutive invoice numbers with one atomic counter update."""
        item = BillowItem(tenant_pk(tenant_id), "SEQ#INVOICE", kind="sequence")
        with _translated("invoice number sequence"):
            item.update(actions=[BillowItem.counter.add(count), BillowItem.kind.set("sequence")])
        end = int(item.counter or 0) + 1
        return range(end - count, end)

    # -- catalog ------------------------------------------------------------------------------------
    def add_product(self, tenant_id: str, product: Product) -> None:
        with _translated(f"product {product.id}"), TransactWrite(connection=connection()) as tx:
            product_item = _entity(
                catalog_pk(tenant_id),
                f"PROD#{product.id}",
                "product",
                codec.product_out(product),
                tenant_id=tenant_id,
                entity_id=product.id,
            )
            tx.save(product_item, condition=_absent())
            for terms in product.terms:
                tx.save(self._terms_item(tenant_id, terms), condition=_absent())

    def _terms_item(self, tenant_id: str, terms: PriceTerms) -> BillowItem:
        return _entity(
            catalog_pk(tenant_id), f"PROD#{terms.product_id}#TERMS#{terms.id}", "terms", codec.terms_out(terms)
        )

    def add_terms(self, tenant_id: str, terms: PriceTerms) -> None:
        with _translated(f"price terms {terms.id}"), TransactWrite(connection=connection()) as tx:
            tx.condition_check(
                BillowItem, catalog_pk(tenant_id), f"PROD#{terms.product_id}", condition=BillowItem.pk.exists()
            )
            tx.save(self._terms_item(tenant_id, terms), condition=_absent())

    def get_product(self, tenant_id: str, product_id: str) -> Product | None:
        with _translated(f"product {product_id}"):
            items = list(BillowItem.query(catalog_pk(tenant_id), BillowItem.sk.startswith(f"PROD#{product_id}")))
        products = self._products_from(items)
        return products[0] if products and products[0].id == product_id else None

    def list_products(self, tenant_id: str) -> list[Product]:
        with _translated("catalog"):
            items = list(BillowItem.query(catalog_pk(tenant_id), BillowItem.sk.startswith("PROD#")))
        return self._products_from(items)

    @staticmethod
    def _products_from(items: list[BillowItem]) -> list[Product]:
        terms: dict[str, list[PriceTerms]] = {}
        bodies: list[dict[str, Any]] = []
        for item in items:
            body = json.loads(item.data or "{}")
            if item.kind == "product":
                bodies.append(body)
            elif item.kind == "terms":
                terms.setdefault(body["product_id"], []).append(codec.terms_in(body))
        return [codec.product_in(b, tuple(terms.get(b["id"], []))) for b in bodies]

    # -- contacts and clocks ------------------------------------------------------------------------
    def add_contact(self, tenant_id: str, contact: Contact) -> None:
        item = _entity(
            contact_pk(tenant_id, contact.id),
            "CONTACT",
            "contact",
            codec.contact_out(contact),
            tenant_id=tenant_id,
            entity_id=contact.id,
            gsi3pk=f"{tenant_id}#CONTACT",
            gsi3sk=f"{contact.created_at.isoformat()}#{contact.id}",
        )
        with _translated(f"contact {contact.id}"):
            item.save(condition=_absent())

    def get_contact(self, tenant_id: str, contact_id: str) -> Contact | None:
        with _translated(f"contact {contact_id}"):
            item = _get(contact_pk(tenant_id, contact_id), "CONTACT")
        return None if item is None else codec.contact_in(json.loads(item.data or "{}"))

    def list_contacts(self, tenant_id: str, limit: int, cursor: str | None) -> Page[Contact]:
        listing = f"{tenant_id}#CONTACT"
        with _translated("contacts"):
            result = BillowItem.listing.query(listing, limit=limit, last_evaluated_key=_decode_cursor(cursor, listing))
            items = [codec.contact_in(json.loads(i.data or "{}")) for i in result]
        return Page(items, _encode_cursor(result.last_evaluated_key))

    def get_clock(self, tenant_id: str, contact_id: str) -> TestClock | None:
        with _translated("test clock"):
            item = _get(contact_pk(tenant_id, contact_id), "CLOCK")
        return None if item is None else codec.clock_in(json.loads(item.data or "{}"), int(item.version or 0))

    def save_clock(self, tenant_id: str, clock: TestClock) -> TestClock:
        saved = TestClock(clock.contact_id, clock.frozen_time, clock.version + 1)
        item = _entity(
            contact_pk(tenant_id, clock.contact_id),
            "CLOCK",
            "test_clock",
            codec.clock_out(clock),
            version=saved.version,
        )
        condition = _absent() if clock.version == 0 else BillowItem.version == clock.version
        try:
            with _translated("test clock"):
                item.save(condition=condition)
        except Conflict as error:
            raise ConcurrentModification("the test clock was changed concurrently; reload and retry") from error
        return saved

    # -- orders and subscriptions -------------------------------------------------------------------
    def _subscription_item(self, tenant_id: str, subscription: Subscription, version: int) -> BillowItem:
        due_pk, due_sk = due_keys(tenant_id, subscription, self.due_shards)
        return _entity(
            contact_pk(tenant_id, subscription.contact_id),
            f"SUB#{subscription.id}",
            "subscription",
            codec.subscription_out(subscription),
            tenant_id=tenant_id,
            entity_id=subscription.id,
            version=version,
            gsi1pk=due_pk,
            gsi1sk=due_sk,
        )

    def place_order(
        self, tenant_id: str, order: Order, subscriptions: Sequence[Subscription], new_subscription_ids: frozenset[str]
    ) -> None:
        pk = contact_pk(tenant_id, order.contact_id)
        with _translated(f"order {order.id}"), TransactWrite(connection=connection()) as tx:
            tx.save(
                _entity(
                    pk, f"ORD#{order.id}", "order", codec.order_out(order), tenant_id=tenant_id, entity_id=order.id
                ),
                condition=_absent(),
            )
            if order.reference is not None:
                marker = _entity(pk, f"ORDREF#{order.reference}", "order_reference", {"order_id": order.id})
                tx.save(marker, condition=_absent())
            for subscription in subscriptions:
                new = subscription.id in new_subscription_ids
                tx.save(
                    self._subscription_item(tenant_id, subscription, subscription.version + 1),
                    condition=_absent() if new else BillowItem.version == subscription.version,
                )
                if new:
                    tx.save(_key_marker(pk, subscription), condition=_absent())

    def get_order(self, tenant_id: str, order_id: str) -> Order | None:
        item = self._by_id(tenant_id, order_id, "ORDER")
        return None if item is None else codec.order_in(json.loads(item.data or "{}"))

    def find_order_by_reference(self, tenant_id: str, contact_id: str, reference: str) -> Order | None:
        with _translated("order reference"):
            marker = _get(contact_pk(tenant_id, contact_id), f"ORDREF#{reference}")
            if marker is None:
                return None
            item = _get(contact_pk(tenant_id, contact_id), f"ORD#{json.loads(marker.data or '{}')['order_id']}")
        return None if item is None else codec.order_in(json.loads(item.data or "{}"))

    def _by_id(self, tenant_id: str, entity_id: str, kind: str) -> BillowItem | None:
        """The item with this id: its keys from the (keys-only, eventually consistent) by-id
        index, then the item itself, read consistently for its current version."""
        with _translated(f"{kind.lower()} {entity_id}"):
            keys = next(
                iter(BillowItem.by_id.query(by_id(tenant_id, entity_id), BillowItem.gsi2sk == kind, limit=1)), None
            )
            return None if keys is None else _get(keys.pk, keys.sk, consistent_read=True)

    def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription | None:
        item = self._by_id(tenant_id, subscription_id, "SUBSCRIPTION")
        return None if item is None else codec.subscription_in(json.loads(item.data or "{}"), int(item.version or 0))

    def load_subscription(self, tenant_id: str, contact_id: str, subscription_id: str) -> Subscription | None:
        with _translated(f"subscription {subscription_id}"):
            item = _get(contact_pk(tenant_id, contact_id), f"SUB#{subscription_id}", consistent_read=True)
        return None if item is None else codec.subscription_in(json.loads(item.data or "{}"), int(item.version or 0))

    def subscriptions_of(self, tenant_id: str, contact_id: str) -> list[Subscription]:
        with _translated("subscriptions"):
            items = BillowItem.query(
                contact_pk(tenant_id, contact_id), BillowItem.sk.startswith("SUB#"), consistent_read=True
            )
            return [codec.subscription_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]

    def apply_billing_step(
        self,
        tenant_id: str,
        subscription: Subscription,
        expected_version: int,
        invoice: Invoice | None,
        actions: Sequence[Action] = (),
    ) -> None:
        """One atomic write: the advanced subscription (only if still at `expected_version`), its
        new invoice (only if that invoice id is new) and the log records of the actions the step
        executed, scheduled, cancelled or rejected."""
        with _translated(f"billing subscription {subscription.id}"), TransactWrite(connection=connection()) as tx:
            tx.save(
                self._subscription_item(tenant_id, subscription, expected_version + 1),
                condition=BillowItem.version == expected_version,
            )
            if invoice is not None:
                tx.save(self._invoice_item(tenant_id, invoice, 1), condition=_absent())
            for action in actions:
                tx.save(self._action_item(tenant_id, subscription, action))

    def move_service(
        self,
        tenant_id: str,
        source: Subscription,
        source_version: int,
        target: Subscription,
        target_version: int | None,
        source_log: Sequence[Action],
        target_log: Sequence[Action],
    ) -> None:
        """One atomic write moving a service between two of a contact's subscriptions: both
        subscriptions (each only if still at its version; the target only if new, when
        `target_version` is None) and both action logs."""
        with _translated(f"moving a service to subscription {target.id}"), TransactWrite(connection=connection()) as tx:
            tx.save(
                self._subscription_item(tenant_id, source, source_version + 1),
                condition=BillowItem.version == source_version,
            )
            tx.save(
                self._subscription_item(tenant_id, target, (target_version or 0) + 1),
                condition=_absent() if target_version is None else BillowItem.version == target_version,
            )
            if target_version is None:
                tx.save(_key_marker(contact_pk(tenant_id, target.contact_id), target), condition=_absent())
            for subscription, log in ((source, source_log), (target, target_log)):
                for action in log:
                    tx.save(self._action_item(tenant_id, subscription, action))

    def _action_item(self, tenant_id: str, subscription: Subscription, action: Action) -> BillowItem:
        return _entity(
            contact_pk(tenant_id, subscription.contact_id),
            f"ACT#{subscription.id}#{action.id}",
            "action",
            codec.action_out(action),
        )

    def log_actions(self, tenant_id: str, subscription: Subscription, actions: Sequence[Action]) -> None:
        """Records for the log alone (a refused request changes nothing else)."""
        with _translated(f"actions of subscription {subscription.id}"), TransactWrite(connection=connection()) as tx:
            for action in actions:
                tx.save(self._action_item(tenant_id, subscription, action))

    def actions_of(self, tenant_id: str, contact_id: str, subscription_id: str) -> list[Action]:
        with _translated("action log"):
            items = BillowItem.query(
                contact_pk(tenant_id, contact_id), BillowItem.sk.startswith(f"ACT#{subscription_id}#")
            )
            return [codec.action_in(json.loads(i.data or "{}")) for i in items]

    def due_page(self, as_of: date, shard: int, limit: int, cursor: str | None) -> Page[DueSubscription]:
        """Up to `limit` subscriptions of one due-index shard due on or before `as_of`."""
        partition = due_partition(shard)
        upper = f"{as_of.isoformat()}#\uffff"
        with _translated("due index"):
            result = BillowItem.due_index.query(
                partition,
                BillowItem.gsi1sk <= upper,
                limit=limit,
                last_evaluated_key=_decode_cursor(cursor, partition, "GSI1"),
            )
            due = []
            for item in result:
                _, tenant_id, contact_id, subscription_id = (item.gsi1sk or "").split("#", 3)
                due.append(DueSubscription(tenant_id, contact_id, subscription_id))
        return Page(due, _encode_cursor(result.last_evaluated_key))

    # -- invoices and payments ----------------------------------------------------------------------
    def _invoice_item(self, tenant_id: str, invoice: Invoice, version: int) -> BillowItem:
        shard = shard_of(invoice.id, INVOICE_LIST_SHARDS)
        return _entity(
            contact_pk(tenant_id, invoice.contact_id),
            f"INV#{invoice.id}",
            "invoice",
            codec.invoice_out(invoice),
            tenant_id=tenant_id,
            entity_id=invoice.id,
            version=version,
            gsi3pk=f"{tenant_id}#INVOICE#{invoice.billing_date.isoformat()}#{shard}",
            gsi3sk=invoice.id,
        )

    def get_invoice(self, tenant_id: str, invoice_id: str) -> Invoice | None:
        item = self._by_id(tenant_id, invoice_id, "INVOICE")
        return None if item is None else codec.invoice_in(json.loads(item.data or "{}"), int(item.version or 0))

    def invoices_of(self, tenant_id: str, contact_id: str) -> list[Invoice]:
        with _translated("invoices"):
            items = BillowItem.query(contact_pk(tenant_id, contact_id), BillowItem.sk.startswith("INV#"))
            return [codec.invoice_in(json.loads(i.data or "{}"), int(i.version or 0)) for i in items]

    def record_payment(self, tenant_id: str, invoice: Invoice, expected_version: int, payment: Payment) -> None:
        pk = contact_pk(tenant_id, invoice.contact_id)
        with _translated(f"payment on invoice {invoice.id}"), TransactWrite(connection=connection()) as tx:
            tx.save(
                self._invoice_item(tenant_id, invoice, expected_version + 1),
                condition=BillowItem.version == expected_version,
            )
            payment_item = _entity(
                pk,
                f"PAY#{invoice.id}#{payment.id}",
                "payment",
                codec.payment_out(payment),
                tenant_id=tenant_id,
                entity_id=payment.id,
            )
            tx.save(payment_item, condition=_absent())

    def get_payment(self, tenant_id: str, contact_id: str, invoice_id: str, payment_id: str) -> Payment | None:
        with _translated(f"payment {payment_id}"):
            item = _get(contact_pk(tenant_id, contact_id), f"PAY#{invoice_id}#{payment_id}", consistent_read=True)
        return None if item is None else codec.payment_in(json.loads(item.data or "{}"))

    def payments_of(self, tenant_id: str, contact_id: str, invoice_id: str) -> list[Payment]:
        with _translated("payments"):
            items = BillowItem.query(contact_pk(tenant_id, contact_id), BillowItem.sk.startswith(f"PAY#{invoice_id}#"))
            return [codec.payment_in(json.loads(i.data or "{}")) for i in items]
