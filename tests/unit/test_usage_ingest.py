"""Submitting usage records (`billow.services.usage.ingest`) on moto: each record checked on its
own, stored once per service and period, and its outcome answered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from billow.domain.pricing import Aggregation
from billow.domain.usage import aggregate
from billow.local.stack import add_tenant
from billow.services.context import TenantContext
from billow.services.usage.ingest import RecordInput, submit_usage
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_usage"
TENANT = "tenant-u"


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant(TENANT, "Tenant U", KEY)
    yield InProcessClient(KEY)


def metered_service(
    api: InProcessClient, *, clock: str = "2026-03-10T12:00:00+00:00", meter: str = "api_calls"
) -> dict[str, Any]:
    product = make_product(
        api, {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "meter": meter}
    )
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": clock})
    placed = api.post(
        "/orders",
        {"contact_id": contact["id"], "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}]},
    )
    assert placed.status == 201, placed.body
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    return {
        "contact_id": contact["id"],
        "subscription_id": subscription["id"],
        "service_id": subscription["services"][0]["id"],
    }


def context() -> TenantContext:
    store = DynamoStore()
    settings = store.get_settings(TENANT)
    assert settings is not None
    return TenantContext(TENANT, "test", settings)


def submit(records: list[dict[str, Any]]) -> list[Any]:
    return submit_usage(DynamoStore(), context(), FixedClock(datetime.now(UTC)), [RecordInput(r) for r in records])


def test_a_batch_is_stored_once_and_answered_per_record(api: InProcessClient) -> None:
    svc = metered_service(api)
    named = {"subscription_id": svc["subscription_id"], "service_id": svc["service_id"]}
    batch = [{"id": f"r-{i}", "quantity": "1.5", "at": "2026-03-10T11:00:00Z", **named} for i in range(40)]
    first = submit(batch)
    assert [o.status for o in first] == ["accepted"] * 40
    again = submit(batch)
    assert [o.status for o in again] == ["duplicate"] * 40
    stored = list(
        DynamoStore().usage_records(context().scope, svc["contact_id"], svc["service_id"], first[0].period.start)
    )
    assert len(stored) == 40
    assert aggregate(Aggregation.SUM, stored) == Decimal("60.0")
