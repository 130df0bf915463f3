"""Every handler answers its sample event in events/ (moto table)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from billow.local.lambda_runtime import invoke
from billow.local.stack import add_tenant
from billow.services.billing import RunReport

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
    assert listed["statusCode"] == 200 and json.loads(listed["body"]) == {"items": []}


def test_billing_run_event(moto_table: str) -> None:
    result = invoke("billing_run.handler.lambda_handler", load("billing_run_scheduled"))
    assert result == {"as_of": "2026-12-01", "subscriptions": 0, "invoices_created": 0}


def test_billing_run_refuses_shards_outside_the_index(moto_table: str) -> None:
    import pytest
    from billow.services.ports import DUE_SHARDS
    from pydantic import ValidationError

    event = {**load("billing_run_scheduled"), "shards": [DUE_SHARDS]}
    with pytest.raises(ValidationError):
        invoke("billing_run.handler.lambda_handler", event)


def test_a_run_with_failures_fails_after_billing_the_rest_so_the_schedule_retries(
    moto_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import billing_run.handler as module

    partial = RunReport(
        as_of_utc=date(2026, 12, 1),
        subscriptions_seen=3,
        invoices_created=2,
        failures=[("sub_x", "ValueError: corrupt item")],
    )
    monkeypatch.setattr(module, "bill_due_subscriptions", lambda *args, **kwargs: partial)
    with pytest.raises(module.BillingRunIncomplete, match="1 of 3 subscriptions not billed"):
        invoke("billing_run.handler.lambda_handler", load("billing_run_scheduled"))
