"""Every handler answers its sample event in events/ (moto table)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from billow.local.lambda_runtime import invoke
from billow.local.stack import add_tenant

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def test_authorizer_allows_the_sample_key_and_names_its_tenant(moto_table: str) -> None:
    add_tenant("sample", "Sample", "bk_test_sample_key")
    policy = invoke("authorizer.handler.lambda_handler", load("authorizer_request"))
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert policy["context"] == {"tenantId": "sample", "mode": "test"}


def test_api_events(moto_table: str) -> None:
    add_tenant("sample", "Sample", "bk_test_sample_key")
    created = invoke("api.handler.lambda_handler", load("api_create_contact"))
    assert created["statusCode"] == 201
    assert json.loads(created["body"])["name"] == "Ann Example"
    listed = invoke("api.handler.lambda_handler", load("api_list_products"))
    assert listed["statusCode"] == 200 and json.loads(listed["body"]) == {"items": [], "cursor": None}


def test_billing_run_events(moto_table: str) -> None:
    shard = invoke("billing_run.handler.lambda_handler", load("billing_run_shard"))
    assert shard == {
        "time": "2026-12-01T00:05:00+00:00",
        "shard": 0,
        "cursor": None,
        "done": True,
        "totals": {"subscriptions": 0, "invoices": 0, "invoices_checked": 0, "failures": 0, "cards_expiring": 0},
    }
    summary = invoke("billing_run.handler.lambda_handler", load("billing_run_summary"))
    assert summary == {
        "time": "2026-12-01T00:05:00+00:00",
        "subscriptions": 5,
        "invoices_created": 5,
        "invoices_checked": 0,
        "cards_expiring": 0,
    }


def test_the_state_machine_input_is_the_scheduled_event() -> None:
    from billow.local.scheduler import scheduled_event

    sample = load("billing_run_scheduled")
    assert set(sample) == set(scheduled_event(datetime(2026, 12, 1, tzinfo=UTC), "rule"))


def test_billing_run_refuses_shards_outside_the_index(moto_table: str) -> None:
    import pytest
    from billow.services.ports import DUE_SHARDS
    from pydantic import ValidationError

    for event in ({**load("billing_run_shard"), "shard": DUE_SHARDS}, {"time": "2026-12-01T00:05:00Z"}):
        with pytest.raises(ValidationError):
            invoke("billing_run.handler.lambda_handler", event)


def test_a_run_with_failures_fails_in_the_summary_so_the_execution_fails(moto_table: str) -> None:
    import billing_run.handler as module

    event = {"time": "2026-12-01T00:05:00Z", "results": [{"subscriptions": 3, "invoices": 2, "failures": 1}]}
    with pytest.raises(module.BillingRunIncomplete, match="1 of 3 subscriptions and 0 invoices due not done"):
        invoke("billing_run.handler.lambda_handler", event)


def test_clock_advance_event(moto_table: str) -> None:
    """An advance that is not under way (here: no such clock) is a no-op, as a duplicate is."""
    add_tenant("sample", "Sample", "bk_test_sample_key")
    assert invoke("clock_advance.handler.lambda_handler", load("clock_advance")) == {
        "done": True,
        "invoices_created": 0,
    }
    from pydantic import ValidationError

    with pytest.raises(ValidationError):  # test clocks exist only in test mode
        invoke("clock_advance.handler.lambda_handler", {**load("clock_advance"), "mode": "live"})
