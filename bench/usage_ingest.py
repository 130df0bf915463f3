#!/usr/bin/env python3
"""Usage-ingestion benchmark on DynamoDB Local, through the real API handler.

Sends `--batches` batches of 1,000 usage records to one metered service with `POST /usage`, the
handler called in-process with an API-key event as the local gateway builds it, then sends the
same batches again (every record a duplicate), then the same number of records to a service whose
allowance refuses usage beyond it (the allowance check: record and counter in one transaction),
measured side by side in one run. For each pass it prints records per second, the
DynamoDB requests per record (by operation) and the capacity units per record: write units are
what DynamoDB reports with ReturnConsumedCapacity=TOTAL, plus one per conditional put refused as a
duplicate (DynamoDB bills a failed conditional write, at least 1 WRU, but its error answer carries
no ConsumedCapacity; `billow.storage.capacity`).

    .venv/bin/python bench/usage_ingest.py [--batches 5]

Wall time on Local is not AWS latency (Local is one Java process on this machine): use the request
and capacity counts for cost and the arithmetic in docs/scale.md, the rate only to compare runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT / "functions")]

from billow.local import dynamodb, gateway  # noqa: E402
from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.local.lambda_runtime import invoke, prepare_environment  # noqa: E402
from billow.local.stack import add_tenant  # noqa: E402
from billow.services.context import Scope  # noqa: E402
from billow.storage.capacity import Capacity, measured  # noqa: E402
from billow.storage.models import configure  # noqa: E402
from billow.storage.repository import DynamoStore  # noqa: E402

KEY = "bk_test_bench_usage"
BATCH = 1000
TARGET_WRU = 1.1


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request through the authorizer and the API handler, as the local gateway makes it."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    context = gateway.authorize(method, path, headers)
    assert context is not None, "the API key was refused"
    text = None if body is None else json.dumps(body)
    result = invoke("api.handler.lambda_handler", gateway.api_gateway_event(method, path, headers, text, context))
    return int(result["statusCode"]), json.loads(result["body"] or "null")


PLAIN = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.001"}
REFUSING = {**PLAIN, "allowance": {"per_day": "1000000000", "per_cycle": "1000000000", "beyond": "refuse"}}
"""The same price with an allowance that refuses usage beyond it (never reached here): every record
is checked against its day's and its cycle's windows at submission."""


AGE = timedelta(days=70)
"""How long before now the benchmark's services start."""


def metered_service(usage: dict[str, Any]) -> dict[str, str]:
    """A contact (real time) with a monthly subscription to one service priced by `usage`, started
    70 days ago: the cross-period duplicate check reads the record ids' keys in its earlier periods
    within 35 days (as for any service older than that)."""
    terms = {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "usage": usage}
    status, product = call("POST", "/products", {"name": "API", "terms": [terms]})
    assert status == 201, product
    status, contact = call("POST", "/contacts", {"name": "Bench Customer", "email": "bench@example.com"})
    assert status == 201, contact
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    now = datetime.now(UTC)
    status, clock = call("POST", f"/contacts/{contact['id']}/test-clock", {"frozen_time": (now - AGE).isoformat()})
    assert status == 201, clock
    status, placed = call("POST", "/orders", {"contact_id": contact["id"], "items": [item]})
    assert status == 201, placed
    # straight to now (the periods between bill nothing: a price of 0.00, no usage yet)
    store, scope = DynamoStore(), Scope("bench", "test")
    ticking = store.get_clock(scope, contact["id"])
    assert ticking is not None
    store.save_clock(scope, replace(ticking, frozen_time=now))
    _, listed = call("GET", f"/contacts/{contact['id']}/subscriptions")
    subscription = listed["items"][0]
    return {"subscription_id": subscription["id"], "service_id": subscription["services"][0]["id"]}


def batches_for(service: dict[str, str], prefix: str, count: int) -> list[list[dict[str, Any]]]:
    return [
        [{"id": f"{prefix}-{b:04d}-{i:04d}", "quantity": "1", **service} for i in range(BATCH)] for b in range(count)
    ]


def send(batches: list[list[dict[str, Any]]], expect: str) -> tuple[float, Capacity]:
    with measured() as capacity:
        began = time.perf_counter()
        for batch in batches:
            status, answer = call("POST", "/usage", {"records": batch})
            assert status == 200, answer
            statuses = {r["status"] for r in answer["records"]}
            assert statuses == {expect}, statuses
        elapsed = time.perf_counter() - began
    return elapsed, capacity


def report(title: str, records: int, elapsed: float, capacity: Capacity, target: str | None = None) -> float:
    """Print one pass's figures; `target` says what its write units are held to (default: the
    1.1 WRU per record of a plain record)."""
    per_record = {op: n / records for op, n in sorted(capacity.requests.items())}
    wru = capacity.write_units / records
    print(f"{title}: {records} records in {elapsed:.2f}s = {records / elapsed:,.0f} records/s")
    print(f"  DynamoDB requests per record: {capacity.total_requests / records:.3f}  ({_shown(per_record)})")
    print(
        f"  write units per record: {wru:.3f}  ({target or f'target <= {TARGET_WRU}'}; {capacity.failed_conditions} "
        f"duplicates refused by the condition, 1 WRU each)  read units per record: {capacity.read_units / records:.4f}"
    )
    return elapsed


def _shown(values: dict[str, float]) -> str:
    return ", ".join(f"{op} {value:.3f}" for op, value in values.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", "-n", type=int, default=5, help="batches of 1,000 records")
    args = parser.parse_args()
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    prepare_environment()

    local = dynamodb.start()
    try:
        table = f"billow-bench-usage-{uuid.uuid4().hex[:8]}"
        local.create_table(table)
        configure(table_name=table, endpoint=local.endpoint, region="us-east-1")
        os.environ["BILLOW_TABLE"], os.environ["BILLOW_DYNAMODB_ENDPOINT"] = table, local.endpoint
        add_tenant("bench", "Bench", KEY)
        service = metered_service(PLAIN)
        records = BATCH * args.batches
        print(f"usage ingestion on DynamoDB Local: {args.batches} batches of {BATCH} records to one service")
        plain = report("new records", records, *send(batches_for(service, "evt", args.batches), "accepted"))
        report(
            "the same batches again (all duplicates)",
            records,
            *send(batches_for(service, "evt", args.batches), "duplicate"),
        )
        _, total = call("GET", f"/subscriptions/{service['subscription_id']}/services/{service['service_id']}/usage")
        assert (total["count"], total["total"]) == (records, str(records)), total

        checked = metered_service(REFUSING)
        elapsed, capacity = send(batches_for(checked, "chk", args.batches), "accepted")
        refusing = report(
            "new records on a service whose allowance refuses beyond it",
            records,
            elapsed,
            capacity,
            "record + counter in one transaction: 2 items, 4 WRU on AWS; no 1.1 target",
        )
        transacted = capacity.requests.get("TransactWriteItems", 0)
        print(
            f"  allowance check overhead: {refusing / plain:.1f}x the time of the plain path; each record is one "
            f"TransactWriteItems of 2 items ({transacted / records:.3f} per record): DynamoDB Local reports "
            f"{capacity.write_units / records:.3f} WRU per record, on AWS a transactional write costs 2 WRU per "
            f"item, so ~{2 * capacity.write_units / records:.1f} WRU per record (vs 1 on the plain path)"
        )
    finally:
        local.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
