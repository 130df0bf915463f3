"""The billing-run state machine CDK synthesizes, executed by moto's ASL interpreter, its Lambda
tasks running the real billing-run handler in-process against DynamoDB Local."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from billow.local.scheduler import scheduled_event
from billow.local.stepfunctions import LocalStepFunctions, resolve_definition
from billow.services.ports import DUE_SHARDS
from billow.storage.repository import DynamoStore

from tests.integration.test_billing_run import FixedClock, all_invoices, setup_tenant, subscribe

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cdk")]

HANDLER = "billing_run.handler.lambda_handler"


def _machine(template: dict[str, Any]) -> tuple[str, str, str]:
    """(definition, state machine name, billing-run function name) from the synthesized template."""
    resources = template["Resources"]
    [machine_id] = [
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::StepFunctions::StateMachine"
        and v["Properties"]["StateMachineName"] == "billow-test-billing-run"
    ]
    [function] = [
        v["Properties"]["FunctionName"]
        for v in resources.values()
        if v["Type"] == "AWS::Lambda::Function" and v["Properties"].get("Handler") == HANDLER
    ]
    return resolve_definition(template, machine_id), resources[machine_id]["Properties"]["StateMachineName"], function


def test_the_synthesized_state_machine_bills_every_due_subscription_once(
    local_table: str, synthesized_app: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import billing_run.handler as handler

    # One subscription per page and one page per invocation, so each shard loops through the
    # state machine's "ShardDone?" choice as a big shard would.
    monkeypatch.setattr(handler, "PAGE_SIZE", 1)
    monkeypatch.setattr(handler, "TIME_LEFT_MS", 10**9)
    store = DynamoStore()
    ctx = setup_tenant(store)
    contact_ids = subscribe(store, ctx, FixedClock(datetime(2024, 1, 10, 9, tzinfo=UTC)), 20)
    definition, name, function = _machine(synthesized_app[0])
    event = scheduled_event(datetime(2024, 2, 10, 0, 5, tzinfo=UTC), "billow-test-daily-billing")

    with LocalStepFunctions({function: HANDLER}) as sfn:
        machine = sfn.create(name, definition)
        run = sfn.run(machine, "billing-2024-02-10", event)
        assert run.status == "SUCCEEDED", (run.error, run.cause)
        assert run.output == {
            "time": "2024-02-10T00:05:00+00:00",
            "subscriptions": 20,
            "invoices_created": 20,
            "invoices_checked": 20,  # January's invoices, unpaid, overdue since 25 January
            "cards_expiring": 0,
        }
        billed_shards = {e["shard"] for _, e in sfn.invocations if e.get("shard") is not None}
        assert billed_shards == set(range(DUE_SHARDS))  # every shard was visited, empty or not
        assert sum(1 for _, e in sfn.invocations if e.get("cursor")) > 0  # some shard took several pages

        # The schedule delivering the same event again (a redrive) bills nothing more.
        again = sfn.run(machine, "billing-2024-02-10-redelivered", event)
        assert again.status == "SUCCEEDED" and again.output["invoices_created"] == 0

    invoices = all_invoices(store, ctx, contact_ids)
    assert len(invoices) == 40  # 20 on order (10 Jan) + 20 by the run (10 Feb), none twice
    assert [start for _, start, _ in invoices].count(date(2024, 2, 10)) == 20


def test_a_subscription_that_cannot_be_billed_fails_the_execution_after_the_others_are_billed(
    local_table: str, synthesized_app: tuple[dict[str, Any], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import billow.services.billing as billing

    store = DynamoStore()
    ctx = setup_tenant(store)
    contact_ids = subscribe(store, ctx, FixedClock(datetime(2024, 1, 10, 9, tzinfo=UTC)), 6)
    broken = store.subscriptions_of(ctx.scope, contact_ids[0])[0].id
    real = billing.bill_subscription

    def bill_or_fail(*args: Any, **kwargs: Any) -> Any:
        if args[3] == broken:
            raise ValueError("corrupt item")
        return real(*args, **kwargs)

    monkeypatch.setattr(billing, "bill_subscription", bill_or_fail)
    definition, name, function = _machine(synthesized_app[0])
    event = scheduled_event(datetime(2024, 2, 10, 0, 5, tzinfo=UTC), "billow-test-daily-billing")
    with LocalStepFunctions({function: HANDLER}) as sfn:
        run = sfn.run(sfn.create(name, definition), "billing-2024-02-10", event)
    assert run.status == "FAILED"
    assert "1 of 6 subscriptions and 6 invoices due not done" in json.dumps([run.error, run.cause])
    assert len(all_invoices(store, ctx, contact_ids)) == 6 + 5
