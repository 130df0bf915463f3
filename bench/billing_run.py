#!/usr/bin/env python3
"""Billing-run benchmark on DynamoDB Local.

Prints, measured side by side in one run:
- the billing engine alone: two-service subscriptions priced per second (no I/O, one thread);
- the billing run end to end on DynamoDB Local: N two-service subscriptions due on one day billed
  with 1 and with 4 threads, DynamoDB requests per billed subscription (by operation) and capacity
  units per billed subscription.

    .venv/bin/python bench/billing_run.py [--subscriptions 2000] [--engine-subscriptions 50000]

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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared")]

from billow.domain.calendar import Cycle  # noqa: E402
from billow.domain.catalog import BillingModel, PriceTerms, Product  # noqa: E402
from billow.domain.money import Money  # noqa: E402
from billow.domain.ordering import OrderItem, OrderPlan, plan_order  # noqa: E402
from billow.domain.rules import BillingRules  # noqa: E402
from billow.domain.tenants import TenantSettings  # noqa: E402
from billow.domain.timeline import next_step  # noqa: E402
from billow.local import dynamodb  # noqa: E402
from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.services.billing import InvoiceNumbers, RunReport, bill_due_subscriptions  # noqa: E402
from billow.services.context import Scope  # noqa: E402
from billow.services.ordering import commit_order  # noqa: E402
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
        self.cpu_seconds = 0.0  # of this (billing) process only, not DynamoDB Local's
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

        Connection.dispatch = dispatch  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Connection.dispatch = self._original  # type: ignore[method-assign]


RUN_DAY = date(2026, 12, 1)


def two_line_products() -> tuple[Product, Product]:
    plan = PriceTerms("terms_plan", "prod_plan", Money(2900, "USD"), Cycle.MONTH, BillingModel.ADVANCE)
    seats = PriceTerms("terms_seats", "prod_seats", Money(450, "USD"), Cycle.MONTH, BillingModel.ADVANCE)
    return Product("prod_plan", "Plan").with_terms(plan), Product("prod_seats", "Seats").with_terms(seats)


def two_line_order(i: int, products: tuple[Product, Product], start: date) -> OrderPlan:
    """Subscription number i: two services (two invoice lines) starting on `start`."""
    counter = iter(range(10))
    return plan_order(
        order_id=f"ord_{i:07d}",
        contact_id=f"con_{i:07d}",
        reference=None,
        items=[OrderItem(p, p.terms[0], 1) for p in products],
        start_date=start,
        today=start,
        existing=[],
        new_id=lambda prefix: f"{prefix}_{i:07d}_{next(counter)}",
        test_clock=False,
        rules=BillingRules(),
    )


def engine_rate(count: int) -> tuple[float, int]:
    """Subscriptions priced per second by the billing engine alone (no I/O), one thread. Each is
    two services on the day its first period is due; billing days vary over the month."""
    products = two_line_products()
    due = []
    for i in range(count):
        start = date(2026, 12, 1) + timedelta(days=i % 28)
        (subscription,) = two_line_order(i, products, start).subscriptions
        due.append((subscription, start))
    lines = 0
    began = time.process_time()
    for subscription, as_of in due:
        step = next_step(subscription, as_of)
        assert step is not None and step.invoice is not None
        lines += len(step.invoice.lines)
    elapsed = time.process_time() - began
    return count / elapsed, lines


def seed(store: DynamoStore, scope: Scope, count: int, start: date) -> None:
    products = two_line_products()
    for i in range(count):
        plan = two_line_order(i, products, start)
        commit_order(store, scope, plan)


def end_to_end(
    local: dynamodb.DynamoDBLocal, table: str, count: int, workers: int
) -> tuple[float, RunReport, RequestCounter]:
    local.create_table(table)
    configure(table_name=table, endpoint=local.endpoint, region="us-east-1")
    store = DynamoStore()
    store.put_settings(TenantSettings("bench", "Bench"))
    seed(store, Scope("bench", "live"), count, RUN_DAY)
    with RequestCounter() as counter:
        began, cpu = time.perf_counter(), time.process_time()
        report = bill_due_subscriptions(
            store, datetime(2026, 12, 1, 0, 5, tzinfo=UTC), InvoiceNumbers(store), workers=workers
        )
        elapsed, counter.cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    assert report.invoices_created == count, f"billed {report.invoices_created} of {count}"
    return elapsed, report, counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", "-n", type=int, default=2000)
    parser.add_argument("--engine-subscriptions", type=int, default=50_000)
    args = parser.parse_args()
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)

    rate, lines = engine_rate(args.engine_subscriptions)
    print(f"billing engine alone: {args.engine_subscriptions} two-service subscriptions ({lines} lines)")
    print(f"  {rate:,.0f} subscriptions priced per second (one thread, CPU time)  (target >= 20,000)")

    local = dynamodb.start()
    try:
        n = args.subscriptions
        print(f"billing run on DynamoDB Local: {n} two-service subscriptions due on {RUN_DAY}")
        results = {}
        for workers in (1, 4):
            results[workers] = end_to_end(local, f"billow-bench-{workers}", n, workers)
        for workers, (elapsed, _, _) in results.items():
            print(f"  {workers} thread(s): {n} invoices in {elapsed:.2f}s = {n / elapsed:.0f} subscriptions/s")
        _, report, counter = results[1]
        billed = report.invoices_created
        writes = sum(k for op, k in counter.requests.items() if op in WRITES)
        total = sum(counter.requests.values())
        print(
            f"  requests per billed subscription: {total / billed:.3f} "
            f"({', '.join(f'{op} {k / billed:.3f}' for op, k in sorted(counter.requests.items()))})"
        )
        print(f"  write requests per billed subscription: {writes / billed:.3f}  (target <= 3)")
        print(
            f"  CPU time of the billing process per billed subscription: {1000 * counter.cpu_seconds / billed:.2f} ms "
            "(engine, pynamodb and botocore; DynamoDB Local's own CPU not included)"
        )
        print(
            "  capacity units per billed subscription as DynamoDB Local reports them: "
            f"write {counter.write_units / billed:.2f}, read {counter.read_units / billed:.2f} "
            "(docs/scale.md derives AWS's from item sizes)"
        )
        return 0
    finally:
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
