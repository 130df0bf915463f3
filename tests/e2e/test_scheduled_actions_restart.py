"""Scheduled actions are data: they outlive a restart of the local stack (kept in its data
directory), and the daily schedule executes them once, even when it fires twice at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from billow.local import stack
from billow.local.scheduler import run_billing

from tests.support import HttpClient, make_contact, make_product

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
KEY = "bk_test_restart"
TABLE = "billow-e2e-restart"


def test_a_scheduled_pause_survives_a_restart_and_runs_once_when_the_schedule_fires_twice(tmp_path: Path) -> None:
    data = tmp_path / "dynamodb"
    first = stack.start(schedule=False, table_name=TABLE, data_dir=data)
    try:
        assert first.fresh
        stack.add_tenant("restart", "Restart Tenant", KEY)
        api = HttpClient(first.url, KEY)
        product = make_product(api, {"price": "30.00", "currency": "EUR", "cycle": "month", "billing_model": "advance"})
        contact = make_contact(api)  # no test clock: the daily schedule bills it
        item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
        placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]}).body["order"]["services"][0]
        subscription_id, service_id = placed["subscription_id"], placed["service_id"]
        pause = api.post(f"/subscriptions/{subscription_id}/services/{service_id}/pause", {"in_days": 2, "days": 5})
        assert pause.status == 202, pause.body
    finally:
        first.stop()

    second = stack.start(schedule=False, table_name=TABLE, data_dir=data)
    try:
        assert not second.fresh
        api = HttpClient(second.url, KEY)
        pending = api.get(f"/subscriptions/{subscription_id}").body["pending_actions"]
        assert [(a["action"], a["on"]) for a in pending] == [("pause", pause.body["action"]["on"])]

        # The daily schedule fires twice at the same moment, two days on
        instant = datetime.now(UTC) + timedelta(days=2)
        runs: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: runs.append(run_billing(instant))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all("error" not in run for run in runs), runs

        log = api.get(f"/subscriptions/{subscription_id}/actions").body["actions"]
        assert [(a["action"], a["status"]) for a in log] == [("pause", "executed"), ("resume", "scheduled")]
        assert api.get(f"/subscriptions/{subscription_id}").body["services"][0]["state"] == "paused"
        invoices = api.get(f"/contacts/{contact['id']}/invoices").body["items"]
        assert len(invoices) == 1  # the first month's, billed when ordering; nothing billed twice
    finally:
        second.stop()
