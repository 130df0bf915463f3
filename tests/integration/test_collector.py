"""The collector function on DynamoDB Local: fed by the `invoice-issued` rule (the local bus routes
it as EventBridge would), it charges each issued invoice; a message the rail could not serve fails
alone and is redelivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runtime
from billow.domain.invoices import InvoiceStatus
from billow.gateways.events import CONSUMER_RULES, MAX_CONCURRENCY, consumer_of, max_concurrency
from billow.gateways.invoke import handler_of
from billow.local.dynamodb import DynamoDBLocal
from billow.local.events import StreamPoller, local_bus, sqs_message, sqs_target
from billow.local.lambda_runtime import invoke
from billow.services.context import Scope
from billow.storage.repository import DynamoStore

from tests.collection_support import SCOPE, seed_contact, seed_invoice, seed_tenant, stored_invoice
from tests.fake_rail import FakeRail

pytestmark = pytest.mark.integration

COLLECTOR = handler_of(consumer_of("invoice-issued"))


@pytest.fixture
def rail(tmp_path: Path) -> Iterator[FakeRail]:
    """The fake rail as every tenant's gateway (runtime's factory, injected)."""
    rail = FakeRail(tmp_path / "rail.sqlite")
    runtime.payment_gateway = lambda scope: rail if scope == SCOPE else None  # type: ignore[attr-defined]
    yield rail
    del runtime.payment_gateway  # type: ignore[attr-defined]


def _issued(invoice_id: str, scope: Scope = SCOPE, kind: str = "invoice.issued") -> dict[str, Any]:
    detail = {
        "id": f"evt_{invoice_id}_{kind}",
        "type": kind,
        "version": 1,
        "tenant_id": scope.tenant_id,
        "mode": scope.mode,
        "contact_id": "con_1",
        "data": {"invoice_id": invoice_id},
    }
    return {"source": "billow", "detail-type": f"billow.{kind}", "detail": detail}


def test_the_invoice_issued_rule_feeds_the_collector() -> None:
    assert COLLECTOR == "collector.handler.lambda_handler"
    assert MAX_CONCURRENCY["collector"] == 10
    routed = [n for n, p in local_bus().rules.items() if n in CONSUMER_RULES and p == CONSUMER_RULES[n]]
    assert "invoice-issued" in routed
    assert consumer_of("invoice-ended") == "collector" and "invoice-ended" in routed
    assert max_concurrency("invoice-ended") == 2 and max_concurrency("invoice-issued") == 10


def test_a_message_the_rail_could_not_serve_fails_alone_and_its_redelivery_charges_once(
    local_table: str, rail: FakeRail
) -> None:
    store = DynamoStore()
    seed_tenant(store)
    for i in (1, 2):
        seed_contact(store, f"con_{i}")
        seed_invoice(store, f"con_{i}", f"inv_{i}", "30.00")
    rail.unavailable_at = 1  # the first rail request (inv_1's create) answers 503
    messages = [sqs_message(_issued("inv_1")), sqs_message(_issued("inv_2")), sqs_message({"source": "elsewhere"})]
    answer = invoke(COLLECTOR, {"Records": messages})
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    assert failed == {messages[0]["messageId"], messages[2]["messageId"]}
    assert stored_invoice(store, "inv_2").status is InvoiceStatus.PAID
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.OPEN
    redelivered = [sqs_message(_issued("inv_1")), sqs_message(_issued("inv_2"))]  # and inv_2's again
    assert invoke(COLLECTOR, {"Records": redelivered})["batchItemFailures"] == []
    assert rail.succeeded_per_invoice() == {"inv_1": 1, "inv_2": 1}
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.PAID


def test_a_tenant_without_a_rail_is_left_to_pay_by_transfer(local_table: str, rail: FakeRail) -> None:
    other = Scope("t2", "test")
    answer = invoke(COLLECTOR, {"Records": [sqs_message(_issued("inv_9", other))]})
    assert answer["batchItemFailures"] == []
    assert rail.charges() == []


def test_an_invoice_issued_on_the_table_is_collected_through_the_stream_bus_and_queue(
    local_table: str, dynamodb_local: DynamoDBLocal, rail: FakeRail
) -> None:
    store = DynamoStore()
    seed_tenant(store)
    seed_contact(store, "con_1")
    poller = StreamPoller(dynamodb_local.endpoint, local_table)
    poller.skip()
    unsubscribe = local_bus().subscribe("invoice-issued", sqs_target(COLLECTOR))
    try:
        seed_invoice(store, "con_1", "inv_1", "30.00")  # committed: invoice.issued on the stream
        poller.drain()
    finally:
        unsubscribe()
    assert stored_invoice(store, "inv_1").status is InvoiceStatus.PAID
    assert rail.succeeded_per_invoice() == {"inv_1": 1}


@pytest.mark.parametrize("ended_by", ["invoice.voided", "invoice.uncollectible"])
def test_an_invoice_voided_or_written_off_ends_its_live_attempt_and_cancels_its_charge_once(
    local_table: str, dynamodb_local: DynamoDBLocal, rail: FakeRail, ended_by: str
) -> None:
    """The attempt left live by a rail outage at its confirm (created, its charge unconfirmed); the
    invoice then voided or written off on the table: the stream's event reaches the collector through
    the `invoice-ended` rule, which ends the attempt and cancels the charge; a duplicate does nothing."""
    from billow.domain.collection import AttemptStatus
    from billow.services.collection import collect_invoice
    from billow.services.context import TenantContext
    from billow.services.gateway import ChargeStatus, GatewayUnavailable
    from billow.services.receivables import mark_uncollectible, void_invoice

    from tests.collection_support import FixedClock

    store = DynamoStore()
    seed_tenant(store)
    seed_contact(store, "con_1")
    seed_invoice(store, "con_1", "inv_1", "30.00")
    outage = FakeRail(rail.path)
    outage.unavailable_at = 2  # the confirm
    with pytest.raises(GatewayUnavailable):
        collect_invoice(store, outage, SCOPE, "inv_1", clock=FixedClock())
    (charge,) = rail.charges()
    assert charge.status is ChargeStatus.CREATED
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    ctx = TenantContext(SCOPE.tenant_id, SCOPE.mode, settings)
    poller = StreamPoller(dynamodb_local.endpoint, local_table)
    poller.skip()
    unsubscribe = local_bus().subscribe("invoice-ended", sqs_target(COLLECTOR))
    try:
        end = void_invoice if ended_by == "invoice.voided" else mark_uncollectible
        end(store, ctx, "inv_1", "ordered by mistake", clock=FixedClock())
        poller.drain()
    finally:
        unsubscribe()
    attempt = store.latest_attempt(SCOPE, "con_1", "inv_1")
    assert attempt is not None and (attempt.status, attempt.reason) == (
        AttemptStatus.NOT_COLLECTABLE,
        "invoice_not_payable",
    )
    assert rail.charge_state(charge.ref).status is ChargeStatus.CANCELED
    requests = rail.request_count()
    again = invoke(COLLECTOR, {"Records": [sqs_message(_issued("inv_1", kind=ended_by))]})
    assert again["batchItemFailures"] == [] and rail.request_count() == requests  # nothing live: no request
