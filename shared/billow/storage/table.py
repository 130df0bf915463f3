"""The one table's physical shape, shared by the CDK construct, the local stack and the tests.

docs/data-model.md explains every key; this module is its executable half.
"""

from __future__ import annotations

import hashlib
from typing import Any

DEFAULT_TABLE_NAME = "billow"

DUE_INDEX = "GSI1"  # due-for-billing, sharded: GSI1PK = DUE#<shard>, GSI1SK = <date>#<tenant>#<sub>
BY_ID_INDEX = "GSI2"  # direct lookup by id: GSI2PK = <tenant>#<id>
LISTING_INDEX = "GSI3"  # tenant-wide listings: GSI3PK = <tenant>#<kind>#<bucket>, GSI3SK sortable

CLOCK_TIME = "clock_time"  # on items of a test-clock contact: the clock's time when written (events' time)
TTL_ATTRIBUTE = "expires_at"  # epoch seconds; DynamoDB deletes the item some time after it

STREAM_VIEW = "NEW_AND_OLD_IMAGES"
"""The table's stream: every committed write with the item before and after it, the outbox the
events publisher reads (docs/events.md)."""

INVOICE_LIST_SHARDS = 64
"""Invoices created on one day are spread over this many listing partitions, so that a million
invoices on one billing day write each partition at a few hundred units a second (docs/scale.md)."""

# The by-id index holds keys only: a lookup reads the item itself next (consistently), and no
# write of a subscription or invoice pays for a second copy of its body.
GSIS: tuple[tuple[str, str], ...] = ((DUE_INDEX, "KEYS_ONLY"), (BY_ID_INDEX, "KEYS_ONLY"), (LISTING_INDEX, "ALL"))


def shard_of(value: str, shards: int) -> int:
    """A stable shard number for an id (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=4).digest(), "big") % shards


def create_table_request(table_name: str) -> dict[str, Any]:
    """CreateTable arguments for boto3, used by the local stack and integration tests."""
    attributes = ["PK", "SK"] + [f"{name}{part}" for name, _ in GSIS for part in ("PK", "SK")]
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": STREAM_VIEW},
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": f"{name}PK", "KeyType": "HASH"},
                    {"AttributeName": f"{name}SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": projection},
            }
            for name, projection in GSIS
        ],
    }
