"""Events out, on DynamoDB Local: the table's stream feeds the publisher handler, and the local bus
routes what it puts by the consumer rules CDK synthesizes (docs/events.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.actions import Days
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.pause import PAUSE
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.invoices import PaymentMethod
from billow.gateways.events import CONSUMER_RULES
from billow.local.dynamodb import DynamoDBLocal
from billow.local.events import StreamPoller, local_bus
from billow.services import actions, catalog, contacts, invoices, ordering, time_travel
from billow.services.actions import ActionRequest
from billow.services.billing import InvoiceNumbers
from billow.services.context import TenantContext, keyed_ids
from billow.storage.repository import DynamoStore

from tests.integration.test_billing_run import FixedClock, setup_tenant
from tests.integration.test_fault_injection import Crash, Table, crash_after, deliver
from tests.support import RecordingInvoker

pytestmark = pytest.mark.integration

RULE = next(iter(CONSUMER_RULES))
START = datetime(2024, 1, 10, 9, 30, tzinfo=UTC)


class Subscriber:
    """Everything the local bus routes to one rule, as a consumer would receive it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.received.append(event)

    def details(self) -> list[dict[str, Any]]:
        return [e["detail"] for e in self.received]

    def unique(self) -> dict[str, tuple[Any, ...]]:
        """By id, as a consumer de-duplicates: what each event says (its `sequence`, the item's
        version, depends on how many writes led there, and may differ after a crash)."""
        return {d["id"]: (d["type"], d["time"], d["contact_id"], _comparable(d["data"])) for d in self.details()}


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data, but the invoice number: numbers are unique, not gapless, so an invoice
    issued after a crash that lost a reserved block has another number (docs/billing.md)."""
    return {k: v for k, v in data.items() if k != "number"}


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    subscriber = Subscriber()
    unsubscribe = local_bus().subscribe(RULE, subscriber)
    yield subscriber
    unsubscribe()


def seed(store: DynamoStore) -> tuple[TenantContext, str, str]:
    """A test-mode contact on a test clock, and a monthly product billed in advance."""
    ctx = setup_tenant(store)
    clock = FixedClock(START)
    new_id = keyed_ids("seed", "events")
    contact = contacts.create_contact(
        store, ctx, name="Ann", email="ann@example.com", billing_address=None, classification=None,
        credit_limit=None, preferred_payment_method=None, clock=clock, new_id=new_id,
    )  # fmt: skip
    contacts.create_test_clock(store, ctx, contact.id, START)
    terms = [catalog.PriceTermsInput("31.00", "USD", Cycle.MONTH, BillingModel.ADVANCE)]
    product = catalog.create_product(store, ctx, name="Pro", description="", terms=terms, new_id=new_id)
    return ctx, contact.id, product.id


def begin(
    dynamodb_local: DynamoDBLocal, table: str
) -> tuple[DynamoStore, StreamPoller, tuple[TenantContext, str, str]]:
    store = DynamoStore()
    poller = StreamPoller(dynamodb_local.endpoint, table)
    return store, poller, seed(store)


def advance(store: DynamoStore, ctx: TenantContext, contact_id: str, to: datetime) -> None:
    """Advance the clock to `to` and run the advance, as the API and the clock-advance function do.
    A rerun finding the clock past `to` already goes on (a client retrying knows where it is)."""
    clock = store.get_clock(ctx.scope, contact_id)
    assert clock is not None
    if clock.frozen_time > to:
        return
    invoker = RecordingInvoker()
    time_travel.request_advance(store, ctx, contact_id, to, invoker)
    deliver(store, invoker)


CYCLES = [datetime(2024, m, 10, 9, 30, tzinfo=UTC) for m in (2, 3, 4)]


def scenario(store: DynamoStore, ctx: TenantContext, contact_id: str, product_id: str) -> None:
    """One order advanced over three cycles, with a payment, a pause and a cancel. Every step is
    idempotent (a reference or an idempotency key), so the whole of it can be run again after a
    crash anywhere, as a client retrying each request would."""
    clock = FixedClock(START)
    product = store.get_product(ctx.tenant_id, product_id)
    assert product is not None
    ordering.place_order(
        store, ctx, contact_id, [ordering.OrderItemInput(product.id, product.terms[0].id)], None, "order-1",
        clock, keyed_ids("t1", "order-1"), InvoiceNumbers(store),
    )  # fmt: skip
    subscription = store.subscriptions_of(ctx.scope, contact_id)[0]
    service_id = subscription.services[0].id
    first = store.invoices_of(ctx.scope, contact_id)[0]
    payment = invoices.ManualPaymentInput("31.00", "USD", PaymentMethod.BANK_TRANSFER, "bank-1", date(2024, 1, 10))
    invoices.record_manual_payment(store, ctx, first.id, payment, clock)
    advance(store, ctx, contact_id, CYCLES[0])
    pause = ActionRequest(PAUSE, service_id=service_id, params=Days(5))
    actions.request_action(
        store, ctx, subscription.id, pause, clock=clock, numbers=InvoiceNumbers(store),
        new_id=keyed_ids("t1", "pause-1"), keyed=True,
    )  # fmt: skip
    advance(store, ctx, contact_id, CYCLES[1])
    cancel = ActionRequest(CANCEL, service_id=service_id)
    actions.request_action(
        store, ctx, subscription.id, cancel, clock=clock, numbers=InvoiceNumbers(store),
        new_id=keyed_ids("t1", "cancel-1"), keyed=True,
    )  # fmt: skip
    advance(store, ctx, contact_id, CYCLES[2])


EXPECTED = [
    # placing the order on 10 January: the service and its subscription start, the first invoice
    ("service.state_changed", "effective"),
    ("subscription.state_changed", "active"),
    ("invoice.issued", "open"),
    # the payment
    ("invoice.paid", "paid"),
    ("payment.received", None),
    # the advance to 10 February, then a pause of 5 days
    ("invoice.issued", "open"),
    ("service.state_changed", "paused"),
    ("action.executed", "pause"),
    # the advance to 10 March: the pause's end, the March invoice, February's unpaid invoice overdue
    # since 25 February; then the cancel and its credit
    ("service.state_changed", "effective"),
    ("action.executed", "resume"),
    ("invoice.issued", "open"),
    ("invoice.overdue", "overdue"),
    ("service.state_changed", "cancelled"),
    ("subscription.state_changed", "churned"),
    ("action.executed", "cancel"),
    ("credit_note.issued", "issued"),
    # the advance to 10 April: nothing left to bill; March's unpaid invoice overdue since 25 March
    ("invoice.overdue", "overdue"),
]
"""The scenario's events in the order published, as docs/events.md lists them (with what each
changed to: a state, a status, an action's kind)."""


def outline(detail: dict[str, Any]) -> tuple[str, str | None]:
    data = detail["data"]
    return detail["type"], data.get("to") or data.get("status") or data.get(
        "kind"
    ) if "payment_id" not in data else None


def entity(detail: dict[str, Any]) -> str:
    data = detail["data"]
    for key in ("invoice_id", "payment_id", "action_id", "service_id"):
        if key in data and not (key == "invoice_id" and "payment_id" in data):
            return f"{key}={data[key]}"
    return f"subscription_id={data['subscription_id']}"


def assert_per_entity_order(details: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    for detail in details:
        key = entity(detail)
        assert detail["sequence"] >= last.get(key, 0), f"{detail['type']} of {key} published out of order"
        last[key] = detail["sequence"]


def test_one_order_over_three_cycles_publishes_exactly_the_documented_events_once_each(
    local_table: str, dynamodb_local: DynamoDBLocal, subscriber: Subscriber
) -> None:
    store, poller, (ctx, contact_id, product_id) = begin(dynamodb_local, local_table)
    scenario(store, ctx, contact_id, product_id)
    poller.drain()
    details = subscriber.details()
    assert [outline(d) for d in details] == EXPECTED
    assert len(subscriber.unique()) == len(details)  # every id once
    assert {(d["tenant_id"], d["mode"], d["contact_id"], d["version"]) for d in details} == {
        ("t1", "test", contact_id, 1)
    }
    assert_per_entity_order(details)
    # The stream read again from the start (a redelivery) publishes the very same ids.
    StreamPoller(dynamodb_local.endpoint, local_table).drain()
    assert len(subscriber.details()) == 2 * len(details) and len(subscriber.unique()) == len(details)


def test_a_test_clock_advance_publishes_events_stamped_with_the_clocks_time(
    local_table: str, dynamodb_local: DynamoDBLocal, subscriber: Subscriber
) -> None:
    store, poller, (ctx, contact_id, product_id) = begin(dynamodb_local, local_table)
    terms = store.get_product(ctx.tenant_id, product_id).terms[0]  # type: ignore[union-attr]
    ordering.place_order(
        store, ctx, contact_id, [ordering.OrderItemInput(product_id, terms.id)], None, None,
        FixedClock(START), keyed_ids("t1", "o"), InvoiceNumbers(store),
    )  # fmt: skip
    poller.drain()
    assert {d["time"] for d in subscriber.details()} == {START.isoformat()}
    subscriber.received.clear()
    to = datetime(2024, 2, 10, 17, 45, 12, tzinfo=UTC)
    advance(store, ctx, contact_id, to)
    poller.drain()
    # February's invoice, and January's unpaid one overdue (its business day: the day after its due date)
    assert [d["type"] for d in subscriber.details()] == ["invoice.issued", "invoice.overdue"]
    assert {d["time"] for d in subscriber.details()} == {to.isoformat()}
    assert subscriber.details()[1]["data"]["status_on"] == "2024-01-25"
    assert subscriber.received[0]["time"] == "2024-02-10T17:45:12Z"  # EventBridge's own `time` too


CHUNKS = 4


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_a_crash_after_any_dynamodb_request_then_a_rerun_publishes_the_same_events(
    local_table: str, dynamodb_local: DynamoDBLocal, subscriber: Subscriber, chunk: int
) -> None:
    """Crash the scenario after its k-th DynamoDB request (the request took effect), for every k,
    and run it again: consumers de-duplicating by id see exactly the events of an uninterrupted
    run, none lost, none twice under another id, each entity's in order."""
    store = DynamoStore()
    table = Table(dynamodb_local, local_table)
    poller = StreamPoller(dynamodb_local.endpoint, local_table)
    ctx, contact_id, product_id = seed(store)
    seeded = table.items()
    poller.skip()
    with crash_after(None) as calls:
        scenario(store, ctx, contact_id, product_id)
    poller.drain()
    expected = subscriber.unique()
    assert [outline(d) for d in subscriber.details()] == EXPECTED
    for k in (k for k in range(1, calls.made + 1) if k % CHUNKS == chunk):
        table.restore(seeded)
        poller.skip()
        subscriber.received.clear()
        with pytest.raises(Crash), crash_after(k):
            scenario(store, ctx, contact_id, product_id)
        scenario(store, ctx, contact_id, product_id)
        poller.drain()
        assert subscriber.unique() == expected, f"crash after request {k} of {calls.made}"
        assert_per_entity_order(subscriber.details())
