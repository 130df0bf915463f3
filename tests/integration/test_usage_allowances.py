"""Allowances at submission on DynamoDB Local: the record and its cycle's counter in one
transaction (docs/billing.md, "Allowances")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from billow.domain.allowances import Window
from billow.domain.calendar import Period
from billow.domain.pricing import Allowance, Beyond
from billow.domain.usage import UsageRecord
from billow.local.dynamodb import DynamoDBLocal
from billow.local.stack import add_tenant
from billow.services.context import Scope
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, advance_clock, in_processes, make_contact, make_product

SCOPE = Scope("t1", "test")
CYCLE = Period(date(2026, 3, 1), date(2026, 4, 1))


def _record(record_id: str, quantity: str = "1", day: date = date(2026, 3, 4), cycle: Period = CYCLE) -> UsageRecord:
    at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    return UsageRecord(
        id=record_id,
        subscription_id="sub_1",
        service_id="svc_1",
        contact_id="c1",
        meter="api_calls",
        at=at,
        day=day,
        quantity=Decimal(quantity),
        properties={},
        period_start=cycle.start,
        received_at=at,
    )


def test_the_counter_counts_what_is_accepted_and_refuses_past_the_window(local_table: str) -> None:
    store = DynamoStore()
    allowance = Allowance(per_cycle=Decimal("10"), beyond=Beyond.REFUSE)
    assert store.add_counted_usage(SCOPE, _record("r1", "4"), allowance, CYCLE).status == "accepted"
    assert store.add_counted_usage(SCOPE, _record("r2", "5.5"), allowance, CYCLE).status == "accepted"
    refused = store.add_counted_usage(SCOPE, _record("r3", "1"), allowance, CYCLE)
    assert refused.status == "refused" and refused.refusal is not None
    assert (refused.refusal.window, refused.refusal.remaining, refused.refusal.limit) == (
        Window.PER_CYCLE,
        Decimal("0.5"),
        Decimal("10"),
    )
    assert refused.refusal.message == (
        "per_cycle allowance for 2026-03-01..2026-04-01: 0.5 of 10 remain; this record carries 1"
    )
    assert store.add_counted_usage(SCOPE, _record("r4", "0.5"), allowance, CYCLE).status == "accepted"
    used = store.allowance_used(SCOPE, "c1", "svc_1", CYCLE.start)
    assert used.cycle == Decimal("10") and used.on(date(2026, 3, 4)) == Decimal("10")
    stored = sorted(r.id for r in store.usage_records(SCOPE, "c1", "svc_1", CYCLE.start))
    assert stored == ["r1", "r2", "r4"]  # the refused one is not stored


def test_a_duplicate_record_is_counted_once(local_table: str) -> None:
    store = DynamoStore()
    allowance = Allowance(per_cycle=Decimal("10"), beyond=Beyond.REFUSE)
    assert store.add_counted_usage(SCOPE, _record("r1", "3"), allowance, CYCLE).status == "accepted"
    assert store.add_counted_usage(SCOPE, _record("r1", "3"), allowance, CYCLE).status == "duplicate"
    assert store.allowance_used(SCOPE, "c1", "svc_1", CYCLE.start).cycle == Decimal("3")


def test_a_duplicate_of_an_accepted_record_is_a_duplicate_even_once_the_window_is_full(local_table: str) -> None:
    store = DynamoStore()
    allowance = Allowance(per_cycle=Decimal("3"), beyond=Beyond.REFUSE)
    assert store.add_counted_usage(SCOPE, _record("r1", "3"), allowance, CYCLE).status == "accepted"
    assert store.add_counted_usage(SCOPE, _record("r1", "3"), allowance, CYCLE).status == "duplicate"
    assert store.allowance_used(SCOPE, "c1", "svc_1", CYCLE.start).cycle == Decimal("3")


def test_the_per_day_window_resets_the_next_day_and_the_cycle_window_with_the_next_cycle(local_table: str) -> None:
    store = DynamoStore()
    allowance = Allowance(per_day=Decimal("5"), per_cycle=Decimal("8"), beyond=Beyond.REFUSE)
    first, second = date(2026, 3, 4), date(2026, 3, 5)
    assert store.add_counted_usage(SCOPE, _record("a", "5", first), allowance, CYCLE).status == "accepted"
    refused = store.add_counted_usage(SCOPE, _record("b", "1", first), allowance, CYCLE)
    assert refused.refusal is not None and refused.refusal.window is Window.PER_DAY
    assert refused.refusal.message == "per_day allowance for 2026-03-04: 0 of 5 remain; this record carries 1"
    assert store.add_counted_usage(SCOPE, _record("b", "1", second), allowance, CYCLE).status == "accepted"
    # 6 of 8 used in the cycle: the next day's window (5) is not the binding one, the cycle's is
    refused = store.add_counted_usage(SCOPE, _record("c", "3", second), allowance, CYCLE)
    assert refused.refusal is not None and refused.refusal.window is Window.PER_CYCLE
    assert refused.refusal.remaining == Decimal("2")
    april = Period(date(2026, 4, 1), date(2026, 5, 1))
    fresh = _record("c", "3", date(2026, 4, 1), april)
    assert store.add_counted_usage(SCOPE, fresh, allowance, april).status == "accepted"
    assert store.allowance_used(SCOPE, "c1", "svc_1", april.start).cycle == Decimal("3")
    march = store.allowance_used(SCOPE, "c1", "svc_1", CYCLE.start)
    assert march.cycle == Decimal("6") and march.days == {first: Decimal("5"), second: Decimal("1")}


def test_a_record_beyond_the_per_record_window_is_refused_without_a_write(local_table: str) -> None:
    store = DynamoStore()
    allowance = Allowance(per_record=Decimal("10"), beyond=Beyond.REFUSE)
    refused = store.add_counted_usage(SCOPE, _record("big", "11"), allowance, CYCLE)
    assert refused.refusal is not None and refused.refusal.window is Window.PER_RECORD
    assert refused.refusal.message == "per_record allowance: a record may carry at most 10; this one carries 11"
    assert store.add_counted_usage(SCOPE, _record("ok", "10"), allowance, CYCLE).status == "accepted"
    assert [r.id for r in store.usage_records(SCOPE, "c1", "svc_1", CYCLE.start)] == ["ok"]


# -- 32 processes against one allowance ----------------------------------------------------------------
PROCESSES = 32
EACH = 50
LIMIT = 1000


def _submit(table: str, endpoint: str, worker: int, go: Any, out: Any, met: Any) -> None:
    """One process (a separate Lambda container): EACH records of quantity 1, one after another."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    allowance = Allowance(per_cycle=Decimal(LIMIT), beyond=Beyond.REFUSE)
    go.wait()
    answers = []
    for n in range(EACH):
        counted = store.add_counted_usage(SCOPE, _record(f"w{worker}-{n}"), allowance, CYCLE)
        remaining = None if counted.refusal is None else str(counted.refusal.remaining)
        answers.append((f"w{worker}-{n}", counted.status, remaining))
    out.put(answers)


def test_32_processes_never_overdraw_one_allowance_and_the_count_is_exact(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    results = in_processes(
        _submit, [(local_table, dynamodb_local.endpoint, w) for w in range(PROCESSES)], meet=PROCESSES
    )
    answers = [a for each in results for a in each]
    assert len(answers) == PROCESSES * EACH  # 1600 offered
    accepted = {rid for rid, status, _ in answers if status == "accepted"}
    refused = [(rid, remaining) for rid, status, remaining in answers if status == "refused"]
    assert len(accepted) == LIMIT  # exactly the allowance: never more, and nothing lost
    assert len(refused) == PROCESSES * EACH - LIMIT
    assert {remaining for _, remaining in refused} == {"0"}  # each refusal says what remains
    store = DynamoStore()
    assert store.allowance_used(SCOPE, "c1", "svc_1", CYCLE.start).cycle == LIMIT
    assert {r.id for r in store.usage_records(SCOPE, "c1", "svc_1", CYCLE.start)} == accepted


# -- over HTTP: submission, override, reset with the contact's clock --------------------------------
KEY = "bk_test_allowance"
TENANT = "tenant-a"
NOW = "2026-03-10T12:00:00+00:00"


def _metered(api: InProcessClient, allowance: dict[str, Any] | None) -> dict[str, str]:
    """A contact on a test clock at NOW with one monthly service on meter api_calls."""
    usage: dict[str, Any] = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.01"}
    if allowance is not None:
        usage["allowance"] = allowance
    terms = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "usage": usage}
    product = make_product(api, terms)
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": NOW}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
    assert placed.status == 201, placed.body
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    return {
        "subscription_id": subscription["id"],
        "service_id": subscription["services"][0]["id"],
        "contact_id": contact["id"],
    }


def _records(svc: dict[str, str], *quantities: str, prefix: str = "r") -> list[dict[str, Any]]:
    named = {"subscription_id": svc["subscription_id"], "service_id": svc["service_id"]}
    return [{"id": f"{prefix}-{n}", "quantity": q, **named} for n, q in enumerate(quantities)]


def test_over_http_a_refuse_allowance_refuses_with_what_remains_and_resets_the_next_day(local_table: str) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, {"per_day": "100", "beyond": "refuse"})
    assert api.post("/usage", _records(svc, "60", prefix="a")[0]).status == 200
    refused = api.post("/usage", _records(svc, "50", prefix="b")[0])
    assert refused.status == 409, refused.body
    assert refused.body == {
        "error": "usage.allowance_exceeded",
        "message": "per_day allowance for 2026-03-10: 40 of 100 remain; this record carries 50",
        "fields": [
            {
                "field": "quantity",
                "reason": "per_day allowance for 2026-03-10: 40 of 100 remain; this record carries 50",
            }
        ],
    }
    # a batch crossing the allowance: in order, what fits is accepted and the rest refused
    batch = api.post(
        "/usage", {"records": [*_records(svc, "30", "20", "10", prefix="c"), _records(svc, "60", prefix="a")[0]]}
    )
    assert batch.status == 200, batch.body
    assert [r["status"] for r in batch.body["records"]] == ["accepted", "refused", "accepted", "duplicate"]
    assert batch.body["records"][1]["error"]["message"].startswith("per_day allowance for 2026-03-10: 10 of 100 remain")
    used = DynamoStore().allowance_used(Scope(TENANT, "test"), svc["contact_id"], svc["service_id"], date(2026, 3, 10))
    assert used.on(date(2026, 3, 10)) == Decimal(100)  # the duplicate counted once
    advance_clock(api, svc["contact_id"], "2026-03-11T12:00:00+00:00")
    assert api.post("/usage", _records(svc, "100", prefix="d")[0]).status == 200  # a new day's window


def test_over_http_the_contacts_override_replaces_the_terms_and_the_cycle_resets_with_its_clock(
    local_table: str,
) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, None)  # no allowance on the terms: nothing refused
    assert api.post("/usage", _records(svc, "500", prefix="a")[0]).status == 200
    path = f"/contacts/{svc['contact_id']}/allowances/api_calls"
    put = api.request("PUT", path, {"per_cycle": "10", "beyond": "refuse"})
    assert put.status == 200, put.body
    assert put.body["allowances"] == {
        "api_calls": {"per_record": None, "per_day": None, "per_cycle": "10", "beyond": "refuse"}
    }
    assert api.get(f"/contacts/{svc['contact_id']}").body["allowances"] == put.body["allowances"]
    # the counter opens with what the cycle used before the override: 500 of 10, nothing remains
    refused = api.post("/usage", _records(svc, "1", prefix="c")[0])
    assert refused.status == 409
    assert (
        refused.body["message"]
        == "per_cycle allowance for 2026-03-10..2026-04-10: 0 of 10 remain; this record carries 1"
    )
    advance_clock(api, svc["contact_id"], "2026-04-10T12:00:00+00:00")  # the next billing cycle
    assert api.post("/usage", _records(svc, "10", prefix="d")[0]).status == 200
    assert api.post("/usage", _records(svc, "1", prefix="e")[0]).status == 409
    removed = api.delete(path)
    assert removed.status == 200 and removed.body["allowances"] == {}
    assert api.post("/usage", _records(svc, "1", prefix="e")[0]).status == 200  # held to the terms again: none
    bad = api.request("PUT", path, {"beyond": "refuse"})
    assert bad.status == 422 and bad.body["error"] == "usage.allowance_empty"


def _stored_ids(svc: dict[str, str], cycle_start: date = date(2026, 3, 10)) -> list[str]:
    scope = Scope(TENANT, "test")
    return sorted(r.id for r in DynamoStore().usage_records(scope, svc["contact_id"], svc["service_id"], cycle_start))


def test_a_copy_after_a_refused_first_copy_in_one_batch_is_written_in_its_place(local_table: str) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, {"per_cycle": "10", "beyond": "refuse"})
    too_big, fits = _records(svc, "20", prefix="x")[0], _records(svc, "5", prefix="x")[0]
    batch = api.post("/usage", {"records": [too_big, fits, fits]})
    assert batch.status == 200, batch.body
    # the first copy is refused (beyond the allowance): the second is written as if sent alone,
    # the third is its duplicate; before, both were answered duplicate of a record never stored
    assert [r["status"] for r in batch.body["records"]] == ["refused", "accepted", "duplicate"]
    assert _stored_ids(svc) == ["x-0"]
    used = DynamoStore().allowance_used(Scope(TENANT, "test"), svc["contact_id"], svc["service_id"], date(2026, 3, 10))
    assert used.cycle == Decimal(5)


def test_copies_in_one_batch_are_duplicates_by_the_rule_of_copies_sent_apart(local_table: str) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, None)
    advance_clock(api, svc["contact_id"], "2026-05-01T12:00:00+00:00")
    named = {"subscription_id": svc["subscription_id"], "service_id": svc["service_id"]}
    # 40 days apart, in two billing periods (10 March - 10 April, 10 April - 10 May): the second
    # copy's 35-day window reaches into the first copy's period
    first = {"id": "same", "quantity": "1", "at": "2026-03-12T12:00:00Z", **named}
    second = {"id": "same", "quantity": "1", "at": "2026-04-21T12:00:00Z", **named}
    together = api.post("/usage", {"records": [first, second]})
    assert [r["status"] for r in together.body["records"]] == ["accepted", "duplicate"], together.body
    svc_apart = _metered(api, None)
    advance_clock(api, svc_apart["contact_id"], "2026-05-01T12:00:00+00:00")
    named = {"subscription_id": svc_apart["subscription_id"], "service_id": svc_apart["service_id"]}
    assert api.post("/usage", {**first, **named}).body["records"][0]["status"] == "accepted"
    assert api.post("/usage", {**second, **named}).body["records"][0]["status"] == "duplicate"  # the same answer


def test_an_override_refusing_again_after_an_overage_spell_counts_what_was_accepted_meanwhile(
    local_table: str,
) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, None)
    path = f"/contacts/{svc['contact_id']}/allowances/api_calls"
    assert api.request("PUT", path, {"per_cycle": "10", "beyond": "refuse"}).status == 200
    assert api.post("/usage", _records(svc, "8", prefix="a")[0]).status == 200  # counted: 8 of 10
    assert api.request("PUT", path, {"per_cycle": "10", "beyond": "overage"}).status == 200
    assert api.post("/usage", _records(svc, "5", prefix="b")[0]).status == 200  # overage: not counted
    assert api.request("PUT", path, {"per_cycle": "10", "beyond": "refuse"}).status == 200
    refused = api.post("/usage", _records(svc, "1", prefix="c")[0])
    assert refused.status == 409, refused.body  # 13 used of 10: the counter counted b-0 when reopened
    assert "0 of 10 remain" in refused.body["message"]
    used = DynamoStore().allowance_used(Scope(TENANT, "test"), svc["contact_id"], svc["service_id"], date(2026, 3, 10))
    assert used.cycle == Decimal(13)
    assert _stored_ids(svc) == ["a-0", "b-0"]


def test_a_record_of_zero_is_accepted_even_when_the_window_is_already_past_its_limit(local_table: str) -> None:
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, None)
    assert api.post("/usage", _records(svc, "4", prefix="a")[0]).status == 200
    path = f"/contacts/{svc['contact_id']}/allowances/api_calls"
    assert api.request("PUT", path, {"per_cycle": "2", "beyond": "refuse"}).status == 200  # 4 used of 2
    refused = api.post("/usage", _records(svc, "1", prefix="b")[0])
    assert refused.status == 409 and "0 of 2 remain" in refused.body["message"]
    zero = api.post("/usage", _records(svc, "0", prefix="z")[0])  # was a 503, forever: it uses nothing
    assert zero.status == 200 and zero.body["records"][0]["status"] == "accepted", zero.body
    tiny = api.post("/usage", _records(svc, "0.000000000001", prefix="t")[0])
    assert tiny.status == 409 and "carries 0.000000000001" in tiny.body["message"]  # never "1E-12"


def test_read_backs_of_impossible_days_and_a_101st_override_are_refused(local_table: str) -> None:
    # the attacker's review: 502 on period=0001-01-01, and overrides piling up past an item's 400 KB
    add_tenant(TENANT, "Tenant A", KEY)
    api = InProcessClient(KEY)
    svc = _metered(api, None)
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage"
    for day in ("0001-01-01", "9999-12-31"):
        reply = api.get(f"{path}?period={day}")
        assert reply.status == 422 and reply.body["error"] == "usage.invalid_day", reply.body
    assert api.get(f"/contacts/{svc['contact_id']}/usage?on=9999-12-31").body["error"] == "usage.invalid_day"
    for n in range(100):
        assert api.request("PUT", f"/contacts/{svc['contact_id']}/allowances/m{n}", {"per_cycle": "1"}).status == 200
    extra = api.request("PUT", f"/contacts/{svc['contact_id']}/allowances/m100", {"per_cycle": "1"})
    assert extra.status == 422 and extra.body["error"] == "usage.too_many_allowances", extra.body
    assert api.request("PUT", f"/contacts/{svc['contact_id']}/allowances/m7", {"per_cycle": "2"}).status == 200
