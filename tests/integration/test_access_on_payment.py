"""Access on payment exactly once, on DynamoDB Local (docs/payments.md, "Access on payment").

The invoice.paid consumer (functions/activation) is crashed after each of its DynamoDB requests in
turn, then the message is delivered again: the services are activated once, with one log record.
The same message is delivered by several separate processes at once (separate Lambda containers)
and then again and again: one activation. A payment and the lapse racing from two processes: either
the payment lands (and the services are activated) or the lapse does (and the payment is refused),
never both, never neither."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.errors import Conflict
from billow.domain.invoices import Invoice, InvoiceStatus, PaymentMethod
from billow.domain.money import Money
from billow.domain.policy import SubscriptionPolicy
from billow.domain.rules import ServiceState
from billow.domain.tenants import TenantSettings
from billow.gateways.invoke import handler_of
from billow.local.dynamodb import DynamoDBLocal
from billow.local.lambda_runtime import invoke, prepare_environment
from billow.services import ordering
from billow.services.billing import InvoiceNumbers, bill_due_subscriptions
from billow.services.contacts import create_contact
from billow.services.context import SystemClock, TenantContext, new_id
from billow.services.invoices import ManualPaymentInput, record_manual_payment
from billow.services.ordering import OrderItemInput
from billow.services.receivables import move_due_invoice
from billow.services.tenants import tenant_context
from billow.storage.models import BillowItem, configure
from billow.storage.repository import DynamoStore, tenant_pk

from tests.integration.test_fault_injection import Crash, Table, crash_after
from tests.support import separate_processes

pytestmark = pytest.mark.integration

TENANT = "t-aop"
PROCESSES = 4


@dataclass(frozen=True)
class Ordered:
    ctx: TenantContext
    invoice: Invoice
    subscription_id: str
    contact_id: str


def order_waiting_for_payment(store: DynamoStore) -> Ordered:
    """A live contact (no test clock: real today) with a monthly service ordered today, kept draft
    until its first invoice is paid (the business's setting)."""
    policy = SubscriptionPolicy(activate_on_payment=True, unpaid_order_lapse_days=7)
    store.put_settings(TenantSettings(TENANT, TENANT, subscriptions=policy))
    ctx = tenant_context(store, TENANT, "live")
    terms = PriceTerms("terms_aop", "prod_aop", Money.parse("31.00", "USD"), Cycle.MONTH, BillingModel.ADVANCE)
    work = store.unit_of_work("the catalog")
    work.add_product(TENANT, Product("prod_aop", "Pro").with_terms(terms))
    work.commit()
    contact = create_contact(
        store,
        ctx,
        name="Ann",
        email="ann@example.com",
        billing_address=None,
        classification=None,
        credit_limit={},
        preferred_payment_method=None,
        clock=SystemClock(),
        new_id=new_id,
    )
    items = [OrderItemInput("prod_aop", "terms_aop")]
    placed = ordering.place_order(
        store, ctx, contact.id, items, None, None, SystemClock(), new_id, InvoiceNumbers(store)
    )
    (invoice,) = placed.invoices
    assert invoice.lapses_on is not None
    return Ordered(ctx, invoice, invoice.subscription_id, contact.id)


def pay(store: DynamoStore, ordered: Ordered, reference: str = "bank-1") -> Invoice:
    spec = ManualPaymentInput("31.00", "USD", PaymentMethod.BANK_TRANSFER, reference, datetime.now(UTC).date())
    return record_manual_payment(store, ordered.ctx, ordered.invoice.id, spec, SystemClock()).invoice


def paid_order(store: DynamoStore) -> tuple[Ordered, int]:
    """An order waiting for payment, its invoice just paid (no event delivered yet), and the
    subscription's version then."""
    ordered = order_waiting_for_payment(store)
    pay(store, ordered)
    state, kinds, mark, version = outcome(store, ordered)
    assert (state, kinds, mark) == (ServiceState.DRAFT, [], ordered.invoice.lapses_on)
    return ordered, version


def message(ordered: Ordered) -> dict[str, Any]:
    """The SQS event the activation function receives for the invoice.paid event of the order's invoice."""
    detail = {
        "id": f"evt_{ordered.invoice.id}_paid",
        "type": "invoice.paid",
        "version": 1,
        "tenant_id": TENANT,
        "mode": "live",
        "contact_id": ordered.contact_id,
        "data": {"invoice_id": ordered.invoice.id},
    }
    body = {"source": "billow", "detail-type": "billow.invoice.paid", "detail": detail}
    record = {"messageId": "m-1", "receiptHandle": "r", "body": json.dumps(body), "attributes": {}}
    return {"Records": [{**record, "messageAttributes": {}, "eventSource": "aws:sqs", "md5OfBody": ""}]}


def deliver(event: dict[str, Any]) -> None:
    answer = invoke(handler_of("activation"), event)
    assert answer == {"batchItemFailures": []}, answer


def outcome(store: DynamoStore, ordered: Ordered) -> tuple[ServiceState, list[str], date | None, int]:
    """The service's state, the log's activations and lapses, the invoice's mark, the subscription's version."""
    subscription = store.load_subscription(ordered.ctx.scope, ordered.contact_id, ordered.subscription_id)
    assert subscription is not None
    (service,) = subscription.services
    log = store.actions_of(ordered.ctx.scope, ordered.contact_id, ordered.subscription_id)
    invoice = store.get_invoice(ordered.ctx.scope, ordered.invoice.id)
    assert invoice is not None
    kinds = [f"{a.kind.name}:{a.status.value}" for a in log if a.kind.name in ("activate_on_payment", "lapse")]
    return service.state, kinds, invoice.lapses_on, subscription.version


def test_a_crash_after_any_request_of_the_consumer_then_a_redelivery_activates_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    ordered, version = paid_order(store)
    table = Table(dynamodb_local, local_table)
    paid = table.items()
    with crash_after(None) as calls:
        deliver(message(ordered))
    expected = outcome(store, ordered)
    assert expected == (ServiceState.EFFECTIVE, ["activate_on_payment:executed"], None, version + 1)
    assert calls.made > 3
    for k in range(1, calls.made + 1):
        table.restore(paid)
        with pytest.raises(Crash), crash_after(k):
            deliver(message(ordered))
        deliver(message(ordered))  # SQS delivers it again (the crashed one was never acknowledged)
        deliver(message(ordered))  # and once more, late
        assert outcome(store, ordered) == expected, f"crashed after request {k}"


def test_an_event_for_a_tenant_that_does_not_exist_is_refused_and_applied_nowhere(local_table: str) -> None:
    """The consumer never runs on guessed settings: an invoice.paid event of a tenant without
    settings (gone, or never made) is a failed batch item (SQS redelivers it, then dead-letters it),
    as the collector refuses one; its services stay as they were."""
    store = DynamoStore()
    ordered, version = paid_order(store)
    BillowItem(tenant_pk(TENANT), "SETTINGS").delete()  # the tenant is gone
    answer = invoke(handler_of("activation"), message(ordered))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert outcome(store, ordered) == (ServiceState.DRAFT, [], ordered.invoice.lapses_on, version)


def _deliver_in_own_process(table: str, endpoint: str, event: dict[str, Any], go: Any) -> None:
    prepare_environment()
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    go.wait(60)
    deliver(event)


def test_the_same_event_delivered_by_separate_processes_at_once_and_again_activates_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    ordered, version = paid_order(store)
    spawn = separate_processes()
    go = spawn.Event()
    event = message(ordered)
    processes = [
        spawn.Process(target=_deliver_in_own_process, args=(local_table, dynamodb_local.endpoint, event, go))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    go.set()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    for _ in range(5):  # and again, days later
        deliver(event)
    assert outcome(store, ordered) == (ServiceState.EFFECTIVE, ["activate_on_payment:executed"], None, version + 1)


def _store_in_own_process(table: str, endpoint: str, go: Any) -> DynamoStore:
    """This process's store on the test's table, once every process is ready to go."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    go.wait(60)
    return store


def _pay_in_own_process(table: str, endpoint: str, ordered: Ordered, go: Any, answers: Any) -> None:
    store = _store_in_own_process(table, endpoint, go)
    try:
        pay(store, ordered, reference="racing")
        answers.put("paid")
    except Conflict as refused:
        answers.put(refused.code)


def _lapse_in_own_process(table: str, endpoint: str, ordered: Ordered, go: Any) -> None:
    store = _store_in_own_process(table, endpoint, go)
    assert ordered.invoice.lapses_on is not None
    move_due_invoice(
        store, ordered.ctx, ordered.contact_id, ordered.invoice.id, ordered.invoice.lapses_on, InvoiceNumbers(store)
    )


@pytest.mark.parametrize("attempt", range(3))  # three independent races
def test_a_payment_racing_the_lapse_either_activates_or_is_refused(
    local_table: str, dynamodb_local: DynamoDBLocal, attempt: int
) -> None:
    store = DynamoStore()
    ordered = order_waiting_for_payment(store)
    spawn = separate_processes()
    go, answers = spawn.Event(), spawn.Queue()
    endpoint = dynamodb_local.endpoint
    processes = [
        spawn.Process(target=_pay_in_own_process, args=(local_table, endpoint, ordered, go, answers)),
        spawn.Process(target=_lapse_in_own_process, args=(local_table, endpoint, ordered, go)),
    ]
    for process in processes:
        process.start()
    go.set()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0, 0]
    paid = answers.get(timeout=10) == "paid"
    deliver(message(ordered))  # the consumer of the invoice.paid the payment would have published
    state, kinds, mark, _ = outcome(store, ordered)
    invoice = store.get_invoice(ordered.ctx.scope, ordered.invoice.id)
    assert invoice is not None and mark is None
    if paid:  # the payment landed first: the lapse found the invoice paid and activated instead
        assert (state, kinds, invoice.status) == (
            ServiceState.EFFECTIVE,
            ["activate_on_payment:executed"],
            InvoiceStatus.PAID,
        )
    else:  # the lapse landed first: the payment was refused, nothing was taken
        assert (state, kinds, invoice.status) == (ServiceState.CANCELLED, ["lapse:executed"], InvoiceStatus.VOID)
        assert invoice.amount_paid.is_zero


def test_the_daily_run_lapses_an_unpaid_order_on_its_day_through_the_due_index(local_table: str) -> None:
    store = DynamoStore()
    ordered = order_waiting_for_payment(store)
    lapses_on = ordered.invoice.lapses_on
    assert lapses_on is not None
    day_before = datetime(lapses_on.year, lapses_on.month, lapses_on.day, 0, 5, tzinfo=UTC) - timedelta(days=1)
    bill_due_subscriptions(store, day_before, InvoiceNumbers(store))
    assert outcome(store, ordered)[:3] == (ServiceState.DRAFT, [], lapses_on)
    report = bill_due_subscriptions(store, day_before + timedelta(days=1), InvoiceNumbers(store))
    assert report.failures == [] and report.invoices_created == 0
    assert outcome(store, ordered)[:3] == (ServiceState.CANCELLED, ["lapse:executed"], None)
    invoice = store.get_invoice(ordered.ctx.scope, ordered.invoice.id)
    assert invoice is not None and (invoice.status, invoice.status_on) == (InvoiceStatus.VOID, lapses_on)
    # Run again, and a month later: nothing more is billed or changed.
    bill_due_subscriptions(store, day_before + timedelta(days=40), InvoiceNumbers(store))
    assert outcome(store, ordered)[:3] == (ServiceState.CANCELLED, ["lapse:executed"], None)
    assert [i.id for i in store.invoices_of(ordered.ctx.scope, ordered.contact_id)] == [ordered.invoice.id]
