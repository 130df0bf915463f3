#!/usr/bin/env python3
"""Collection benchmark on DynamoDB Local, against the fake rail (tests/fake_rail.py: localstripe's
semantics, in a SQLite file, with no network latency), or with `--localstripe` against localstripe
itself over HTTP through the real StripeGateway (billow.local.stripe, on loopback).

Prints, for N issued invoices of N contacts with a saved card (automatic collection), collected with
1 and with 4 collectors (threads):
- DynamoDB requests per collected invoice, by operation, and write requests;
- rail requests per collected invoice (what counts against Stripe's rate limit; with
  `--localstripe`, the Stripe SDK's HTTP requests, counted where every one passes);
- the collection rate (invoices/s) on this machine.

    .venv/bin/python bench/collection.py [--invoices 500] [--localstripe]

The rate is Billow's side alone: on Stripe each rail request takes 0.2 to 1 s, and the collector's
concurrency is bounded for Stripe's limits (docs/payments.md), so AWS's rate is set by those, not
by this figure. The request counts are what matter for cost and for the rate limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "shared"), str(ROOT)]

from billow.domain.collection import AttemptStatus  # noqa: E402
from billow.gateways.stripe import StripeGateway  # noqa: E402
from billow.local import dynamodb  # noqa: E402
from billow.local import stripe as local_stripe  # noqa: E402
from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.local.stripe import TEST_API_KEY, LocalStripe  # noqa: E402
from billow.services.collection import collect_invoice  # noqa: E402
from billow.storage.models import configure  # noqa: E402
from billow.storage.repository import DynamoStore  # noqa: E402

from bench.billing_run import WRITES, RequestCounter  # noqa: E402
from tests.collection_support import (  # noqa: E402
    SCOPE,
    FixedClock,
    card_holder,
    seed_contact,
    seed_invoice,
    seed_tenant,
)
from tests.fake_rail import FakeRail  # noqa: E402
from tests.stripe_support import StripeRequests, intents_of  # noqa: E402


def run(
    local: dynamodb.DynamoDBLocal, count: int, workers: int, rail_dir: Path, server: LocalStripe | None = None
) -> tuple[float, RequestCounter, int]:
    table = f"billow-bench-collection-{workers}"
    local.create_table(table)
    configure(table_name=table, endpoint=local.endpoint, region="us-east-1")
    store = DynamoStore()
    seed_tenant(store)
    stripe = None if server is None else StripeGateway(TEST_API_KEY, api_base=server.url, localstripe=True)
    if server is not None:
        server.flush()  # each run counts its own PaymentIntents
    for i in range(count):
        if server is None or stripe is None:
            contact = seed_contact(store, f"con_{i:06d}").id
        else:
            contact = card_holder(store, server, stripe)
        seed_invoice(store, contact, f"inv_{i:06d}", "29.00")
    rail = stripe or FakeRail(rail_dir / f"rail-{workers}.sqlite")
    clock = FixedClock()

    def collect(i: int) -> AttemptStatus | None:
        attempt = collect_invoice(store, rail, SCOPE, f"inv_{i:06d}", clock=clock)
        return None if attempt is None else attempt.status

    with RequestCounter() as counter, StripeRequests(None) as stripe_requests:
        began = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            statuses = list(pool.map(collect, range(count)))
        elapsed = time.perf_counter() - began
    assert statuses.count(AttemptStatus.SUCCEEDED) == count, "every invoice collected"
    if isinstance(rail, FakeRail):
        assert rail.succeeded_per_invoice() == {f"inv_{i:06d}": 1 for i in range(count)}
        return elapsed, counter, rail.request_count()
    assert server is not None
    for i in range(count):
        assert [p.status for p in intents_of(server, f"inv_{i:06d}")] == ["succeeded"], "one charge per invoice"
    return elapsed, counter, stripe_requests.made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", "-n", type=int, default=500)
    parser.add_argument(
        "--localstripe", action="store_true", help="collect on localstripe over HTTP, not the fake rail"
    )
    args = parser.parse_args()
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    n = args.invoices
    local = dynamodb.start()
    rail_dir = Path(tempfile.mkdtemp(prefix="billow-bench-rail-"))
    server = local_stripe.start() if args.localstripe else None
    try:
        on = "localstripe over HTTP (StripeGateway)" if server else "the fake rail (tests/fake_rail.py)"
        print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
        print(f"collection on DynamoDB Local with {on}: {n} issued invoices")
        results = {workers: run(local, n, workers, rail_dir, server) for workers in (1, 4)}
        for workers, (elapsed, _, _) in results.items():
            print(f"  {workers} collector(s): {n} invoices in {elapsed:.2f}s = {n / elapsed:.0f} invoices/s")
        _, counter, rail_requests = results[1]
        total = sum(counter.requests.values())
        writes = sum(k for op, k in counter.requests.items() if op in WRITES)
        print(
            f"  DynamoDB requests per collected invoice: {total / n:.2f} "
            f"({', '.join(f'{op} {k / n:.2f}' for op, k in sorted(counter.requests.items()))}); "
            f"writes {writes / n:.2f}"
        )
        print(f"  rail requests per collected invoice: {rail_requests / n:.2f} (every request the rail answered)")
        print(
            "  capacity units per collected invoice as DynamoDB Local reports them: "
            f"write {counter.write_units / n:.2f}, read {counter.read_units / n:.2f}"
        )
        return 0
    finally:
        if server is not None:
            server.stop()
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
