"""Crash the daily run after its k-th DynamoDB call, for every k until the run completes, then
rerun it: the invoices must be exactly those of an uninterrupted run, on DynamoDB Local.

A crash is a BaseException raised right after the k-th request returned: the request took effect
(its write is in the table) but the process "died" before it could use the answer, which is the
worst moment for a billing run. The run's own per-subscription error handling does not catch it,
just as it could not catch a process kill.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.contacts import ClockStatus
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.rules import BillingRules
from billow.domain.tenants import TenantSettings
from billow.gateways.invoke import handler_of
from billow.local.dynamodb import DynamoDBLocal
from billow.local.lambda_runtime import invoke
from billow.services import catalog, contacts, ordering, time_travel
from billow.services.billing import InvoiceNumbers, bill_due_subscriptions
from billow.services.context import Scope, TenantContext, new_id
from billow.services.ordering import commit_order
from billow.storage import codec
from billow.storage.repository import DynamoStore
from pynamodb.connection.base import Connection

from tests.integration.test_billing_run import FixedClock, new_contact, setup_tenant
from tests.support import RecordingInvoker

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = 10
"""One of each kind `seed` makes (i % 10). The run makes the same calls for each subscription of a
kind, so more copies only repeat crash points already tested (50 took five times as long); 9 due
over 4 shards still put several in one shard, and a page (PAGE_SIZE) holds them all either way."""
SHARDS = 4  # a small due index keeps the number of crash points (and the test) short
CHUNKS = 4  # crash points are split over this many tests, so xdist runs them in parallel


class Crash(BaseException):
    """The process dies."""


@dataclass
class Calls:
    made: int = 0


@contextmanager
def crash_after(k: int | None) -> Iterator[Calls]:
    """Count DynamoDB requests; after the k-th one returns, die (k None: never)."""
    calls = Calls()
    original = Connection.dispatch

    def dispatch(connection: Connection, operation: str, kwargs: dict[str, Any]) -> Any:
        result = original(connection, operation, kwargs)
        calls.made += 1
        if calls.made == k:
            raise Crash(f"after call {k} ({operation})")
        return result

    Connection.dispatch = dispatch  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        Connection.dispatch = original  # type: ignore[method-assign]


def _products() -> list[Product]:
    advance = PriceTerms("terms_a", "prod_a", Money.parse("9.99", "USD"), Cycle.MONTH, BillingModel.ADVANCE)
    arrears = PriceTerms("terms_b", "prod_b", Money.parse("30.00", "USD"), Cycle.MONTH, BillingModel.ARREARS)
    setup = PriceTerms(
        "terms_c", "prod_c", Money.parse("4.50", "USD"), Cycle.MONTH, BillingModel.ADVANCE, setup_fee=Money(2500, "USD")
    )
    return [
        Product("prod_a", "Basic").with_terms(advance),
        Product("prod_b", "Pro").with_terms(arrears),
        Product("prod_c", "Seats").with_terms(setup),
    ]


RUN_DAY = date(2024, 4, 20)


def seed(store: DynamoStore, tenant_id: str) -> datetime:
    """`SUBSCRIPTIONS` subscriptions with deterministic ids, of every kind a run meets: due in advance or in
    arrears, two services on one invoice, a setup fee, three months to catch up, not due yet."""
    store.put_settings(TenantSettings(tenant_id, tenant_id))
    basic, pro, seats = _products()
    for i in range(SUBSCRIPTIONS):
        counter = iter(range(100))

        def new_id(prefix: str, i: int = i, counter: Iterator[int] = counter) -> str:
            return f"{prefix}_{i:03d}_{next(counter)}"

        kind = i % 10
        items = [OrderItem(pro if kind in (4, 5, 6) else basic, (pro if kind in (4, 5, 6) else basic).terms[0], 1)]
        start = {4: date(2024, 3, 20), 5: date(2024, 3, 20), 6: date(2024, 3, 20), 8: date(2024, 2, 20)}.get(
            kind, RUN_DAY
        )
        if kind == 7:
            items.append(OrderItem(seats, seats.terms[0], 1))
        if kind == 9:
            start = date(2024, 4, 30)  # not due at the run
        plan = plan_order(
            order_id=f"ord_{i:03d}",
            contact_id=f"con_{i:03d}",
            reference=None,
            items=items,
            start_date=start,
            today=start,
            existing=[],
            new_id=new_id,
            test_clock=False,
            rules=BillingRules(),
        )
        commit_order(store, Scope(tenant_id, "live"), plan)
    return datetime(2024, 4, 20, 0, 5, tzinfo=UTC)


class Table:
    """Raw access to the test's table, outside the counted (and crashable) requests."""

    def __init__(self, dynamodb_local: DynamoDBLocal, name: str) -> None:
        self._client = dynamodb_local.client()
        self._name = name

    def items(self) -> list[dict[str, Any]]:
        pages = self._client.get_paginator("scan").paginate(TableName=self._name, ConsistentRead=True)
        return [item for page in pages for item in page["Items"]]

    def restore(self, snapshot: list[dict[str, Any]]) -> None:
        """Make the table hold exactly `snapshot` again: remove what the run added, put back the rest."""
        keep = {(item["PK"]["S"], item["SK"]["S"]) for item in snapshot}
        added = [i for i in self.items() if (i["PK"]["S"], i["SK"]["S"]) not in keep]
        requests = [{"DeleteRequest": {"Key": {"PK": i["PK"], "SK": i["SK"]}}} for i in added]
        requests += [{"PutRequest": {"Item": item}} for item in snapshot]
        for at in range(0, len(requests), 25):
            self._client.batch_write_item(RequestItems={self._name: requests[at : at + 25]})

    def invoices(self) -> dict[str, tuple[Any, ...]]:
        found = [
            codec.invoice_in(json.loads(item["data"]["S"]), int(item["version"]["N"]))
            for item in self.items()
            if item["SK"]["S"].startswith("INV#")
        ]
        numbers = [invoice.number for invoice in found]
        assert len(set(numbers)) == len(numbers), "an invoice number was given twice"
        return {i.id: (i.billing_date, i.issue_date, i.period, i.lines, i.total) for i in found}


def run(store: DynamoStore, instant: datetime) -> None:
    bill_due_subscriptions(store, instant, InvoiceNumbers(store))


def run_twice_at_once(store: DynamoStore, instant: datetime) -> list[BaseException]:
    """The same run delivered twice, both starting together; the errors they raised."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def deliver() -> None:
        barrier.wait()
        try:
            run(store, instant)
        except BaseException as error:  # pragma: no cover - reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_a_crash_after_any_call_then_a_rerun_bills_exactly_as_an_uninterrupted_run(
    local_table: str, dynamodb_local: DynamoDBLocal, chunk: int
) -> None:
    store = DynamoStore(due_shards=SHARDS)
    table = Table(dynamodb_local, local_table)
    instant = seed(store, "t1")
    seeded = table.items()
    with crash_after(None) as calls:
        run(store, instant)
    expected = table.invoices()
    assert len(expected) > SUBSCRIPTIONS  # the catch-ups made more than one invoice each
    total_calls = calls.made
    crash_points = [k for k in range(1, total_calls + 1) if k % CHUNKS == chunk]
    for k in crash_points:
        table.restore(seeded)
        with pytest.raises(Crash), crash_after(k):
            run(store, instant)
        run(store, instant)  # the rerun, as the schedule's retry or the next day's run would
        assert table.invoices() == expected, f"crash after call {k} of {total_calls}"


def test_the_same_run_delivered_twice_concurrently_bills_once(local_table: str, dynamodb_local: DynamoDBLocal) -> None:
    store = DynamoStore(due_shards=SHARDS)
    table = Table(dynamodb_local, local_table)
    instant = seed(store, "t1")
    seeded = table.items()
    run(store, instant)
    expected = table.invoices()
    table.restore(seeded)
    assert run_twice_at_once(store, instant) == []
    assert table.invoices() == expected


ADVANCE_TO = datetime(2024, 3, 31, 10, tzinfo=UTC)  # the bound: two months from 31 January


def seed_clock(store: DynamoStore) -> tuple[TenantContext, str, RecordingInvoker]:
    """A test-mode contact on a clock at 31 January with a monthly in-advance and a monthly
    in-arrears subscription, its clock advance requested (held: the test delivers the event)."""
    ctx = setup_tenant(store)
    clock = FixedClock(datetime(2024, 1, 31, 10, tzinfo=UTC))
    contact = new_contact(store, ctx, clock, "Ann", "ann@example.com")
    contacts.create_test_clock(store, ctx, contact.id, clock.now())
    terms = [
        catalog.PriceTermsInput("31.00", "USD", Cycle.MONTH, BillingModel.ADVANCE),
        catalog.PriceTermsInput("10.00", "USD", Cycle.MONTH, BillingModel.ARREARS),
    ]
    product = catalog.create_product(store, ctx, name="Pro", description="", terms=terms, new_id=new_id)
    items = [ordering.OrderItemInput(product.id, t.id) for t in product.terms]
    ordering.place_order(store, ctx, contact.id, items, None, None, clock, new_id, InvoiceNumbers(store))
    invoker = RecordingInvoker()
    assert time_travel.request_advance(store, ctx, contact.id, ADVANCE_TO, invoker).status is ClockStatus.ADVANCING
    return ctx, contact.id, invoker


def deliver(store: DynamoStore, invoker: RecordingInvoker) -> None:
    """Run the clock-advance function on the last event handed to it, as Lambda would, in a fresh
    container (a crashed one is gone, with the invoice numbers it had reserved)."""
    import clock_advance.handler

    concern, event = invoker.events[-1]
    assert concern == "clock-advance"
    clock_advance.handler.numbers = InvoiceNumbers(store)
    invoke(handler_of(concern), event)


def test_an_interrupted_clock_advance_resumes_and_bills_each_period_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    """Crash the clock-advance function after each of its DynamoDB calls in turn; the client then
    asks for the same advance again (202: it resumes) and the invoices are exactly those of an
    uninterrupted advance, the clock ready."""
    store = DynamoStore()
    table = Table(dynamodb_local, local_table)
    ctx, contact_id, invoker = seed_clock(store)
    seeded = table.items()
    with crash_after(None) as calls:
        deliver(store, invoker)
    expected = table.invoices()
    assert len(expected) == 3 + 2  # in advance: Jan (at ordering), Feb, Mar; in arrears: Jan-Feb, Feb-Mar
    assert store.get_clock(ctx.scope, contact_id).status is ClockStatus.READY  # type: ignore[union-attr]
    for k in range(1, calls.made + 1):
        table.restore(seeded)
        with pytest.raises(Crash), crash_after(k):
            deliver(store, invoker)
        resumed = time_travel.request_advance(store, ctx, contact_id, ADVANCE_TO, invoker)
        if resumed.status is ClockStatus.ADVANCING:  # the crash came before the clock was marked ready
            deliver(store, invoker)
        assert table.invoices() == expected, f"crash after call {k} of {calls.made}"
        assert store.get_clock(ctx.scope, contact_id).status is ClockStatus.READY  # type: ignore[union-attr]
