"""What `billow.storage.capacity` counts from DynamoDB's answers (the benchmarks' figures)."""

from __future__ import annotations

from billow.storage.capacity import Capacity


def test_a_committed_transaction_counts_its_units_and_a_cancelled_one_counts_apart_by_reason() -> None:
    capacity = Capacity()
    capacity.note("TransactWriteItems", {"ConsumedCapacity": [{"TableName": "t", "CapacityUnits": 6.0}]})
    capacity.note(
        "TransactWriteItems",
        {
            "Error": {"Code": "TransactionCanceledException"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
        },
    )
    capacity.note(
        "TransactWriteItems",
        {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": [{"Code": "TransactionConflict"}]},
    )
    capacity.note("GetItem", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}})
    assert capacity.requests == {"TransactWriteItems": 3, "GetItem": 1}
    assert capacity.cancelled == {"ConditionalCheckFailed": 1, "TransactionConflict": 1}
    assert capacity.cancelled_transactions == 2
    assert (capacity.write_units, capacity.read_units, capacity.failed_conditions) == (6.0, 1.0, 0)


def test_a_refused_conditional_put_is_billed_one_write_unit_and_is_no_cancelled_transaction() -> None:
    capacity = Capacity()
    capacity.note("PutItem", {"Error": {"Code": "ConditionalCheckFailedException"}})
    assert (capacity.failed_conditions, capacity.write_units, capacity.cancelled_transactions) == (1, 1.0, 0)
