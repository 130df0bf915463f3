"""A scheduled change that moves a service to the subscription of another cycle, executed by the
daily run on DynamoDB Local: crashed after any request and rerun, or delivered twice at once, it
moves the service exactly once (never in both subscriptions, never lost), credits the old
subscription once and bills the new one once."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.actions import Action, ServiceChange
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.change import CHANGE, Changed
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.rules import BillingRules
from billow.domain.tenants import TenantSettings
from billow.local.dynamodb import DynamoDBLocal
from billow.services.context import Scope
from billow.services.ordering import commit_order
from billow.storage import codec
from billow.storage.repository import DynamoStore

from tests.integration.test_fault_injection import Crash, Table, crash_after, run, run_twice_at_once

pytestmark = pytest.mark.integration

SHARDS = 2
LIVE = Scope("t1", "live")
MONTHLY = PriceTerms("terms_m", "prod_a", Money.parse("31.00", "USD"), Cycle.MONTH, BillingModel.ADVANCE)
QUARTERLY = PriceTerms("terms_q", "prod_a", Money.parse("90.00", "USD"), Cycle.QUARTER, BillingModel.ADVANCE)
OTHER = PriceTerms("terms_o", "prod_b", Money.parse("60.00", "USD"), Cycle.QUARTER, BillingModel.ADVANCE)
PRODUCTS = {"prod_a": Product("prod_a", "Pro").with_terms(MONTHLY), "prod_b": Product("prod_b", "Extra")}


def _place(store: DynamoStore, contact: str, terms: PriceTerms, start: date, *, move_on: date | None = None) -> None:
    counter = iter(range(100))
    product = PRODUCTS[terms.product_id]
    plan = plan_order(
        order_id=f"ord_{contact}_{terms.id}",
        contact_id=contact,
        reference=None,
        items=[OrderItem(product, terms, 1)],
        start_date=start,
        today=start,
        existing=store.subscriptions_of(LIVE, contact),
        new_id=lambda prefix: f"{prefix}_{contact}_{terms.id}_{next(counter)}",
        test_clock=False,
        rules=BillingRules(),
    )
    subscriptions = plan.subscriptions
    if move_on is not None:
        (subscription,) = subscriptions
        service = subscription.services[0]
        change = ServiceChange("prod_a", "Pro", QUARTERLY, 1)
        move = Action(f"act_{contact}", CHANGE, move_on, start, service.id, params=Changed(change))
        cancel = Action(f"act_{contact}_cancel", CANCEL, date(2025, 3, 10), start, service.id)
        subscriptions = (subscription.with_actions([move, cancel]),)
    commit_order(store, LIVE, replace(plan, subscriptions=subscriptions))


def seed(store: DynamoStore) -> datetime:
    """On 16 January, contact c1 moves to a new quarterly subscription and c2 into the quarterly
    one it has; each move carries a cancellation on 10 March along. Nothing has been billed: the
    run on 1 April catches up through all of it."""
    store.put_settings(TenantSettings("t1", "t1"))
    _place(store, "c1", MONTHLY, date(2025, 1, 1), move_on=date(2025, 1, 16))
    _place(store, "c2", OTHER, date(2025, 1, 1))
    _place(store, "c2", MONTHLY, date(2025, 1, 1), move_on=date(2025, 1, 16))
    return datetime(2025, 4, 1, 0, 5, tzinfo=UTC)


def state(table: Table) -> dict[str, Any]:
    """Every subscription (without its version) and every action log record."""
    found: dict[str, Any] = {}
    for item in table.items():
        sk, data = item["SK"]["S"], json.loads(item.get("data", {}).get("S", "{}"))
        if sk.startswith("SUB#"):
            found[sk] = replace(codec.subscription_in(data, 0), version=0)
        elif sk.startswith("ACT#"):
            found[sk] = codec.action_in(data)
    return found


def test_a_scheduled_move_runs_once_whatever_the_crash(local_table: str, dynamodb_local: DynamoDBLocal) -> None:
    store = DynamoStore(due_shards=SHARDS)
    table = Table(dynamodb_local, local_table)
    instant = seed(store)
    seeded = table.items()
    with crash_after(None) as calls:
        run(store, instant)
    expected_invoices, expected_state = table.invoices(), state(table)

    # What an uninterrupted run did: each service is in exactly one (quarterly) subscription.
    homes = {sk: [s.id for s in sub.services] for sk, sub in expected_state.items() if sk.startswith("SUB#")}
    moved = [sk for sk, ids in homes.items() if "svc_c1_terms_m_1" in ids or "svc_c2_terms_m_1" in ids]
    assert len(moved) == 2 and all(expected_state[sk].cycle is Cycle.QUARTER for sk in moved)
    totals = sorted(str(total) for *_, total in expected_invoices.values())
    # Both: January (31.00), then 16-31 January credited on the 16th (-16.00). c1: its quarter
    # from 16 January (90.00), 10 March - 16 April credited (37 of 90 days: -37.00). c2: its other
    # service's quarters (60.00 on 1 January and 1 April) and, on 1 April, the moved service's
    # 16 January - 10 March at 90.00 a quarter (53 of 90 days: 53.00).
    c1 = ["31.00", "-16.00", "90.00", "-37.00"]
    c2 = ["31.00", "-16.00", "60.00", "113.00"]
    assert totals == sorted(f"{amount} USD" for amount in c1 + c2)

    for k in range(1, calls.made + 1):
        table.restore(seeded)
        with pytest.raises(Crash), crash_after(k):
            run(store, instant)
        run(store, instant)
        assert table.invoices() == expected_invoices, f"crash after call {k} of {calls.made}"
        assert state(table) == expected_state, f"crash after call {k} of {calls.made}"


def test_a_move_delivered_twice_at_once_runs_once(local_table: str, dynamodb_local: DynamoDBLocal) -> None:
    store = DynamoStore(due_shards=SHARDS)
    table = Table(dynamodb_local, local_table)
    instant = seed(store)
    seeded = table.items()
    run(store, instant)
    expected_invoices, expected_state = table.invoices(), state(table)
    table.restore(seeded)
    assert run_twice_at_once(store, instant) == []
    assert table.invoices() == expected_invoices
    assert state(table) == expected_state
