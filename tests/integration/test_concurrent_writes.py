"""Storage-level guarantees under concurrency, on DynamoDB Local: an action's log record, once
executed, cancelled or rejected, is never written over; and settings changed by separate processes
at once (separate Lambda containers) all survive."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from billow.domain.actions import Action, ActionStatus, Days, NoParams
from billow.domain.actions.cancel import CANCEL
from billow.domain.actions.pause import PAUSE
from billow.domain.errors import ConcurrentModification
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.rules import BillingRules
from billow.domain.tenants import TenantSettings
from billow.local.dynamodb import DynamoDBLocal
from billow.services.billing import commit_step
from billow.services.context import Scope
from billow.services.ordering import commit_order
from billow.services.tenants import tenant_context, update_subscription_policy
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.integration.test_fault_injection import _products
from tests.support import SETTINGS_CHANGES, separate_processes

T1 = Scope("t1", "test")

pytestmark = pytest.mark.integration

DAY = date(2025, 3, 1)


def test_a_final_log_record_is_never_written_over(local_table: str) -> None:
    store = DynamoStore()
    basic = _products()[0]
    counter = iter(range(100))
    plan = plan_order(
        order_id="ord_1",
        contact_id="con_1",
        reference=None,
        items=[OrderItem(basic, basic.terms[0], 1)],
        start_date=DAY,
        today=DAY,
        existing=[],
        new_id=lambda prefix: f"{prefix}_{next(counter)}",
        test_clock=False,
        rules=BillingRules(),
    )
    commit_order(store, T1, plan)
    (subscription,) = store.subscriptions_of(T1, "con_1")
    action = Action("act_1", CANCEL, DAY, DAY, subscription.services[0].id, params=NoParams())

    commit_step(store, T1, subscription, subscription.version, None, [action.executed("cancelled")])
    with pytest.raises(ConcurrentModification):  # a retry's refusal does not replace the executed record
        work = store.unit_of_work("a refusal")
        work.log_action(T1, subscription, action.rejected("already cancelled", "lifecycle"), only_new=True)
        work.commit()
    current = store.load_subscription(T1, "con_1", subscription.id)
    assert current is not None
    with pytest.raises(ConcurrentModification):  # nor does a retry's scheduling, even at the current version
        commit_step(store, T1, current, current.version, None, [action])
    (record,) = store.actions_of(T1, "con_1", subscription.id)
    assert (record.id, record.status) == ("act_1", ActionStatus.EXECUTED)

    scheduled = Action("act_2", PAUSE, DAY, DAY, subscription.services[0].id, params=Days())
    commit_step(store, T1, current, current.version, None, [scheduled])  # new: written
    again = store.load_subscription(T1, "con_1", subscription.id)
    assert again is not None
    commit_step(store, T1, again, again.version, None, [scheduled.cancelled("withdrawn")])  # was scheduled
    assert {a.id: a.status for a in store.actions_of(T1, "con_1", subscription.id)} == {
        "act_1": ActionStatus.EXECUTED,
        "act_2": ActionStatus.CANCELLED,
    }


def _change_settings(table: str, endpoint: str, change: dict[str, Any], barrier: Any) -> None:
    """One process (a separate Lambda container): read the settings, then change one rule."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    ctx = tenant_context(store, "t1", "test")
    barrier.wait()
    update_subscription_policy(store, ctx, change)


def test_settings_changed_by_separate_processes_at_once_all_survive(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    store.put_settings(TenantSettings("t1", "Tenant One"))
    spawn = separate_processes()
    barrier = spawn.Barrier(len(SETTINGS_CHANGES))
    processes = [
        spawn.Process(target=_change_settings, args=(local_table, dynamodb_local.endpoint, change, barrier))
        for change in SETTINGS_CHANGES
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * len(SETTINGS_CHANGES)
    settings = store.get_settings("t1")
    assert settings is not None
    stored = settings.subscriptions.as_json()
    assert {k: stored[k] for c in SETTINGS_CHANGES for k in c} == {k: v for c in SETTINGS_CHANGES for k, v in c.items()}
    assert settings.version == 1 + len(SETTINGS_CHANGES)  # each change one write, none lost
