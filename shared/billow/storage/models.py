"""The pynamodb model of the single table. Every entity is a `BillowItem` with generic key
attributes, index attributes, a version for optimistic locking and its body as JSON in `data`;
`billow.storage.codec` maps bodies to and from domain objects."""

from __future__ import annotations

import os

from pynamodb.attributes import MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from billow.storage.table import (
    BY_ID_INDEX,
    CLOCK_TIME,
    DEFAULT_TABLE_NAME,
    DUE_INDEX,
    LISTING_INDEX,
    TTL_ATTRIBUTE,
)


class DueIndex(GlobalSecondaryIndex["BillowItem"]):
    class Meta:
        index_name = DUE_INDEX
        projection = KeysOnlyProjection()

    gsi1pk = UnicodeAttribute(hash_key=True, attr_name="GSI1PK")
    gsi1sk = UnicodeAttribute(range_key=True, attr_name="GSI1SK")


class ByIdIndex(GlobalSecondaryIndex["BillowItem"]):
    class Meta:
        index_name = BY_ID_INDEX
        projection = KeysOnlyProjection()

    gsi2pk = UnicodeAttribute(hash_key=True, attr_name="GSI2PK")
    gsi2sk = UnicodeAttribute(range_key=True, attr_name="GSI2SK")


class ListingIndex(GlobalSecondaryIndex["BillowItem"]):
    class Meta:
        index_name = LISTING_INDEX
        projection = AllProjection()

    gsi3pk = UnicodeAttribute(hash_key=True, attr_name="GSI3PK")
    gsi3sk = UnicodeAttribute(range_key=True, attr_name="GSI3SK")


class BillowItem(Model):
    class Meta:
        table_name = os.environ.get("BILLOW_TABLE", DEFAULT_TABLE_NAME)
        region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        host = os.environ.get("BILLOW_DYNAMODB_ENDPOINT") or None
        max_retry_attempts = 3
        max_pool_connections = 16
        """Keep-alive connections to DynamoDB: as many as the threads of one request (a usage
        batch's concurrent puts, the invoice listing's shard reads), none reopened per request."""

    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    kind = UnicodeAttribute(attr_name="type")
    version = NumberAttribute(null=True)
    data = UnicodeAttribute(null=True)
    counter = NumberAttribute(null=True)
    status = UnicodeAttribute(null=True)
    """An action log record's status, outside `data` so that a write can be conditioned on it."""
    expires_at = NumberAttribute(null=True, attr_name=TTL_ATTRIBUTE)
    """Epoch seconds after which DynamoDB's TTL deletes the item (idempotency claims)."""
    lease_until = NumberAttribute(null=True)
    """On a webhook event record still being applied: epoch seconds until which the delivery
    applying it holds it (billow.services.webhooks)."""
    clock_time = UnicodeAttribute(null=True, attr_name=CLOCK_TIME)
    """On items of a test-clock contact: the clock's time when the item was written (ISO 8601), the
    business time its events carry (docs/events.md)."""
    wake_seq = NumberAttribute(null=True)
    """On a dunning case: bumped by every wake (`DynamoStore.wake_case`)."""
    token = UnicodeAttribute(null=True)
    """On a dunning case: the task token its execution parked with, valid while `token_seq` is
    still `wake_seq` (a wake, one UpdateItem, bumps `wake_seq` and reads the token it ends)."""
    token_seq = NumberAttribute(null=True)
    used = NumberAttribute(null=True)
    """On a usage allowance counter: the quantity accepted in its billing cycle (written with `ADD`
    and read raw, as an exact decimal: never through this attribute's float)."""
    days = MapAttribute[str, object](null=True)
    """On a usage allowance counter: day (ISO) -> the quantity accepted that day."""
    basis = UnicodeAttribute(null=True)
    """On a usage allowance counter: where the allowance it counts for came from when it was
    (re)opened (`billow.services.usage.allowances.basis`)."""
    gsi1pk = UnicodeAttribute(null=True, attr_name="GSI1PK")
    gsi1sk = UnicodeAttribute(null=True, attr_name="GSI1SK")
    gsi2pk = UnicodeAttribute(null=True, attr_name="GSI2PK")
    gsi2sk = UnicodeAttribute(null=True, attr_name="GSI2SK")
    gsi3pk = UnicodeAttribute(null=True, attr_name="GSI3PK")
    gsi3sk = UnicodeAttribute(null=True, attr_name="GSI3SK")
    # Filterable copies of body fields, for listings that filter on what is not a key (invoices).
    status = UnicodeAttribute(null=True)
    invoice_kind = UnicodeAttribute(null=True)

    due_index = DueIndex()
    by_id = ByIdIndex()
    listing = ListingIndex()


def configure(*, table_name: str | None = None, endpoint: str | None = None, region: str | None = None) -> None:
    """Point the model at a table (tests and the local stack call this; Lambda uses the env)."""
    if table_name is not None:
        BillowItem.Meta.table_name = table_name
    if endpoint is not None:
        BillowItem.Meta.host = endpoint or None
    if region is not None:
        BillowItem.Meta.region = region
    BillowItem._connection = None  # pynamodb caches the connection with the old settings


def connection() -> Connection:
    """The model's own (cached) connection, for transactions."""
    return BillowItem._get_connection().connection
