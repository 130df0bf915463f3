"""Usage records on DynamoDB Local: each record id is stored exactly once per service and period,
whether a batch is sent twice, retried after its period was billed, cut short by a process dying
mid-batch and sent again, or sent by 8 processes (separate Lambda containers) at once; and a record
accepted while the billing run moves on is marked late."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from billow.local.dynamodb import DynamoDBLocal
from billow.local.stack import add_tenant
from billow.services.context import TenantContext
from billow.services.usage.ingest import RecordInput, submit_usage
from billow.storage.models import configure
from billow.storage.repository import DynamoStore, usage_shard

from tests.support import InProcessClient, advance_clock, in_processes
from tests.unit.test_usage_ingest import KEY, SCOPE, TENANT, billed_march, metered, named, post_batch, stored

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(local_table: str) -> InProcessClient:
    add_tenant(TENANT, "Tenant U", KEY)
    return InProcessClient(KEY)


def batch_of(svc: dict[str, Any], ids: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "quantity": "1", "at": "2026-03-10T11:00:00Z", **named(svc)} for i in ids]


def test_a_batch_sent_again_and_a_record_retried_after_its_period_was_billed_count_once(api: InProcessClient) -> None:
    svc = metered(api)
    ids = [f"evt-{i:04d}" for i in range(200)]
    assert post_batch(api, batch_of(svc, ids))["accepted"] == 200
    assert post_batch(api, batch_of(svc, ids))["duplicates"] == 200
    # Weeks later, March billed (usage_billed_through moved on), a sender retries one record.
    advance_clock(api, svc["contact_id"], "2026-04-20T09:00:00+00:00")
    retried = post_batch(api, batch_of(svc, ids[:1]))["records"][0]
    assert (retried["status"], retried["period"]["start"]) == ("duplicate", "2026-03-10")
    assert sorted(r.id for r in stored(svc)) == ids


_CRASHING_SENDER = """
import json, os, sys
sys.path[:0] = [sys.argv[1] + "/shared", sys.argv[1] + "/functions", sys.argv[1]]
from billow.local.lambda_runtime import prepare_environment
prepare_environment()
from billow.storage.models import configure, connection
configure(table_name=sys.argv[2], endpoint=sys.argv[3], region="us-east-1")
from tests.support import InProcessClient
writes = {"n": 0}
def die_after(model, parsed, **_):
    if model.name == "PutItem":
        writes["n"] += 1
        if writes["n"] == int(sys.argv[4]):
            os._exit(137)  # the container dies mid-batch: no answer, no cleanup
connection().client.meta.events.register("after-call.dynamodb", die_after)
InProcessClient(sys.argv[5]).post("/usage", json.loads(sys.stdin.read()))
sys.exit(3)  # never reached: the batch has more records than the crash point
"""


def test_a_sender_dying_mid_batch_then_resending_stores_each_record_once(
    api: InProcessClient, local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    import json

    svc = metered(api)
    ids = [f"crash-{i:04d}" for i in range(300)]
    body = json.dumps({"records": batch_of(svc, ids)})
    args = [sys.executable, "-c", _CRASHING_SENDER, str(ROOT), local_table, dynamodb_local.endpoint, "120", KEY]
    died = subprocess.run(args, input=body, text=True, capture_output=True, timeout=300, check=False)
    assert died.returncode == 137, died.stderr[-2000:]
    assert 120 <= len(stored(svc)) < 300  # cut short: some written, others not
    # Puts in flight when it died may still land: the resend answers each record one way or the other.
    again = post_batch(api, json.loads(body)["records"])
    assert again["accepted"] + again["duplicates"] == 300 and again["duplicates"] >= 120
    assert sorted(r.id for r in stored(svc)) == ids


def _sender(table: str, endpoint: str, records: list[dict[str, Any]], go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    client = InProcessClient(KEY)
    go.wait()
    met.wait()
    reply = client.post("/usage", {"records": records})
    out.put((reply.status, [(r["id"], r["status"]) for r in reply.body["records"]]))


def test_eight_processes_sending_overlapping_batches_store_each_record_once(
    api: InProcessClient, local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    svc = metered(api)
    ids = [f"race-{i:03d}" for i in range(120)]
    # Each process sends 60 records: a window sliding by 10, so every record is in several batches.
    windows = [[ids[(start + k) % len(ids)] for k in range(60)] for start in range(0, 80, 10)]
    each = [(local_table, dynamodb_local.endpoint, batch_of(svc, window)) for window in windows]
    results = in_processes(_sender, each, meet=len(each))
    assert [status for status, _ in results] == [200] * 8
    accepted = [rid for _, outcomes in results for rid, status in outcomes if status == "accepted"]
    sent = {rid for window in windows for rid in window}
    assert sorted(accepted) == sorted(sent)  # each accepted by exactly one sender, the others duplicates
    assert all(status in ("accepted", "duplicate") for _, outcomes in results for _, status in outcomes)
    assert sorted(r.id for r in stored(svc)) == sorted(sent)
    assert len({usage_shard(i) for i in sent}) == 16  # spread over every shard


class BillingMovesOnDuringTheWrite(DynamoStore):
    """A store whose billing run bills the period between ingest's read and its write: the
    subscription's `usage_billed_through` moves past the period just before the records land."""

    def __init__(self, subscription_id: str, billed_through: date) -> None:
        super().__init__()
        self.subscription_id, self.billed_through = subscription_id, billed_through

    def put_usage_records(self, scope: Any, records: list[Any]) -> list[bool]:
        subscription = self.get_subscription(scope, self.subscription_id)
        assert subscription is not None
        services = tuple(
            replace(s, usage_billed_through=self.billed_through, usage_billed=billed_march(s))
            for s in subscription.services
        )
        work = self.unit_of_work("billing run")
        work.save_subscription(scope, replace(subscription, services=services), subscription.version)
        work.commit()
        return super().put_usage_records(scope, records)


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 4, 10, 0, 30, tzinfo=UTC)


def test_a_record_accepted_while_billing_moves_on_is_marked_late(api: InProcessClient) -> None:
    svc = metered(api)
    store = BillingMovesOnDuringTheWrite(svc["subscription_id"], date(2026, 4, 10))
    settings = store.get_settings(TENANT)
    assert settings is not None
    ctx = TenantContext(TENANT, "test", settings)
    (outcome,) = submit_usage(store, ctx, FixedClock(), [RecordInput(r) for r in batch_of(svc, ["racing"])])
    assert (outcome.status, outcome.late) == ("accepted", True)
    assert [m.period_start for m in store.late_markers(SCOPE, svc["contact_id"], svc["service_id"])] == [
        date(2026, 3, 10)
    ]


def test_a_forged_usage_cursor_is_a_422_never_a_dynamodb_refusal(api: InProcessClient) -> None:
    import base64
    import json

    svc = metered(api)
    post_batch(api, batch_of(svc, [f"c{i}" for i in range(5)]))
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage?limit=2"
    real = api.get(path).body["cursor"]
    digest = json.loads(base64.urlsafe_b64decode(real))["of"]
    for after in ["16#REC#c1", "99#REC#c1", "00#REC#", "00#REC#" + "x" * 129, "00#INV#c1", "0#REC#c1", "00#REC#c 1"]:
        forged = base64.urlsafe_b64encode(json.dumps({"after": after, "of": digest}).encode()).decode()
        reply = api.get(f"{path}&cursor={forged}")
        assert (reply.status, reply.body["error"]) == (422, "listing.invalid_cursor"), after
    edge = base64.urlsafe_b64encode(json.dumps({"after": "15#REC#" + "z" * 128, "of": digest}).encode()).decode()
    assert api.get(f"{path}&cursor={edge}").body["records"] == []
