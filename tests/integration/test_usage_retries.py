"""Retries on DynamoDB Local (the attacker's review of issue 14): a retry of a stored record is a
`duplicate`, whatever its quantity and the allowance now (docs/billing.md, "Duplicates"); a batch
written but not counted against its charge limit (a crash in between) is caught when it is sent again."""

from __future__ import annotations

from typing import Any

import pytest
from billow.local.stack import add_tenant
from billow.storage.repository import DynamoStore

from tests.integration.test_usage_billing import KEY as UB_KEY
from tests.integration.test_usage_billing import TENANT as UB_TENANT
from tests.integration.test_usage_billing import metered as billing_metered
from tests.integration.test_usage_billing import records, submit, usage_invoices
from tests.support import InProcessClient
from tests.unit.test_usage_ingest import KEY, TENANT, metered, named, post_batch, stored


@pytest.fixture
def api(local_table: str) -> InProcessClient:
    add_tenant(TENANT, "Tenant U", KEY)
    return InProcessClient(KEY)


def rec(svc: dict[str, Any], rid: str, quantity: str) -> dict[str, Any]:
    return {"id": rid, "quantity": quantity, "at": "2026-03-10T11:00:00Z", **named(svc)}


def test_a_retry_with_another_quantity_over_per_record_is_a_duplicate(api: InProcessClient) -> None:
    svc = metered(api, usage={"aggregation": "sum", "allowance": {"per_record": "100", "beyond": "refuse"}})
    assert post_batch(api, [rec(svc, "x", "50")])["records"][0]["status"] == "accepted"
    again = post_batch(api, [rec(svc, "x", "150")])["records"][0]
    assert again["status"] == "duplicate", again  # stored with 50 and billed: never "refused"
    assert [str(r.quantity) for r in stored(svc)] == ["50"]


def test_a_retry_after_a_per_record_override_is_a_duplicate(api: InProcessClient) -> None:
    svc = metered(api)  # no allowance: a record of 150 is accepted
    assert post_batch(api, [rec(svc, "y", "150")])["records"][0]["status"] == "accepted"
    put = api.request(
        "PUT", f"/contacts/{svc['contact_id']}/allowances/api_calls", {"per_record": "100", "beyond": "refuse"}
    )
    assert put.status == 200, put.body
    again = post_batch(api, [rec(svc, "y", "150")])["records"][0]
    assert again["status"] == "duplicate", again  # it IS stored, and will be billed
    single = api.post("/usage", rec(svc, "y", "150"))
    assert single.status == 200, (single.status, single.body)


@pytest.fixture
def billing_api(local_table: str) -> InProcessClient:
    add_tenant(UB_TENANT, "Tenant UB", UB_KEY)
    return InProcessClient(UB_KEY)


def test_a_batch_written_but_not_counted_is_caught_when_it_is_sent_again(
    billing_api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = billing_metered(billing_api)  # 0.10 a call, limit 50.00
    real = DynamoStore.count_usage

    def dies(self: Any, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("the container dies (Lambda timeout) after the puts, before the counter")

    monkeypatch.setattr(DynamoStore, "count_usage", dies)
    with pytest.raises(RuntimeError):
        submit(records(svc, "a", 300, "2"))  # 60.00 written: over the limit
    monkeypatch.setattr(DynamoStore, "count_usage", real)
    assert {o.status for o in submit(records(svc, "a", 300, "2"))} == {"duplicate"}  # the sender's retry
    (invoice,) = usage_invoices(svc)  # the retry's precise check: 60.00 over the 50.00 limit
    assert invoice.total.amount_str() == "60.00"
