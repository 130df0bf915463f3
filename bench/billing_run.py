#!/usr/bin/env python3
"""Billing-run benchmark on DynamoDB Local.

Creates N subscriptions due on one day (one in-advance service each), runs the daily billing run
over them, and prints subscriptions per second, DynamoDB requests per billed subscription (by
operation) and capacity units per billed subscription.

    .venv/bin/python bench/billing_run.py [--subscriptions 2000]

Capacity is what DynamoDB Local reports with ReturnConsumedCapacity=TOTAL; on AWS, transactional
writes cost twice a standard write, which Local's figure already reflects. Wall time on Local is
not AWS latency: use the request counts for cost, the rate only to compare runs on one machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared")]

from billow.domain.calendar import Cycle  # noqa: E402
from billow.domain.catalog import BillingModel, PriceTerms, Product  # noqa: E402
from billow.domain.money import Money  # noqa: E402
from billow.domain.ordering import OrderItem, plan_order  # noqa: E402
from billow.domain.rules import BillingRules  # noqa: E402
from billow.domain.tenants import TenantSettings  # noqa: E402
from billow.local import dynamodb  # noqa: E402
from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.services.billing import InvoiceNumbers, bill_due_subscriptions  # noqa: E402
from billow.services.context import new_id  # noqa: E402
from billow.storage.models import configure  # noqa: E402
from billow.storage.repository import DynamoStore  # noqa: E402
from pynamodb.connection.base import Connection  # noqa: E402

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


class RequestCounter:
    """Counts every request pynamodb sends, and the capacity DynamoDB says each consumed."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self._original = Connection.dispatch

    def __enter__(self) -> RequestCounter:
        counter = self

        def dispatch(conn: Connection, operation: str, kwargs: dict) -> dict:  # type: ignore[type-arg]
            if operation != "DescribeTable":
                kwargs.setdefault("ReturnConsumedCapacity", "TOTAL")
            result = counter._original(conn, operation, kwargs)
            counter.requests[operation] += 1
            consumed = result.get("ConsumedCapacity") if isinstance(result, dict) else None
            for entry in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
                units = float(entry.get("CapacityUnits", 0))
                if operation in WRITES:
                    counter.write_units += units
                else:
                    counter.read_units += units
            return result

        Connection.dispatch = dispatch  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Connection.dispatch = self._original  # type: ignore[method-assign]


def seed(store: DynamoStore, tenant_id: str, count: int, start: date) -> None:
    product = Product("prod_bench", "Bench plan")
    terms = PriceTerms("terms_bench", product.id, Money(2900, "USD"), Cycle.MONTH, BillingModel.ADVANCE)
    product = product.with_terms(terms)
    for i in range(count):
        plan = plan_order(
            order_id=new_id("ord"),
            contact_id=f"con_bench{i:07d}",
            reference=None,
            items=[OrderItem(product, terms, 1)],
            start_date=start,
            today=start,
            existing=[],
            new_id=new_id,
            test_clock=False,
            rules=BillingRules(),
        )
        store.place_order(tenant_id, plan.order, plan.subscriptions, plan.new_subscription_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", "-n", type=int, default=2000)
    args = parser.parse_args()
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)

    local = dynamodb.start()
    try:
        local.create_table("billow-bench")
        configure(table_name="billow-bench", endpoint=local.endpoint, region="us-east-1")
        store = DynamoStore()
        store.put_settings(TenantSettings("bench", "Bench"))
        start = date(2026, 12, 1)
        t0 = time.perf_counter()
        seed(store, "bench", args.subscriptions, start)
        seeded = time.perf_counter() - t0

        with RequestCounter() as counter:
            t1 = time.perf_counter()
            report = bill_due_subscriptions(store, datetime(2026, 12, 1, 0, 5, tzinfo=UTC), InvoiceNumbers(store))
            elapsed = time.perf_counter() - t1
        billed = report.invoices_created
        assert billed == args.subscriptions, f"billed {billed} of {args.subscriptions}"
        writes = sum(n for op, n in counter.requests.items() if op in WRITES)
        total = sum(counter.requests.values())
        print(f"billing run on DynamoDB Local: {args.subscriptions} subscriptions due on {start}")
        print(
            f"  seeded in {seeded:.1f}s; billed {billed} invoices in {elapsed:.2f}s "
            f"= {billed / elapsed:.0f} subscriptions/s (one process, one thread)"
        )
        print(
            f"  requests per billed subscription: {total / billed:.3f} "
            f"({', '.join(f'{op} {n / billed:.3f}' for op, n in sorted(counter.requests.items()))})"
        )
        print(f"  write requests per billed subscription: {writes / billed:.3f}  (target <= 3)")
        print(
            f"  write capacity units per billed subscription: {counter.write_units / billed:.2f}; "
            f"read units: {counter.read_units / billed:.2f}"
        )
        return 0
    finally:
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
