"""Submitting usage records (`POST /usage`, `billow.services.usage.ingest`) and reading them back,
through the real API handler in-process on moto: each record checked on its own, stored once per
service and period, answered per record; totals per service and per meter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from billow.domain.money import Money
from billow.domain.usage import BilledUsage
from billow.local.stack import add_tenant
from billow.services.context import Scope
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, advance_clock, make_contact, make_product

KEY = "bk_test_usage"
TENANT = "tenant-u"
SCOPE = Scope(TENANT, "test")
NOW = "2026-03-10T12:00:00+00:00"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant(TENANT, "Tenant U", KEY)
    yield InProcessClient(KEY)


def metered(
    api: InProcessClient,
    *,
    meter: str | None = "api_calls",
    contact: dict[str, Any] | None = None,
    items: int = 1,
    usage: dict[str, Any] | None = None,
    cycle: str = "month",
) -> dict[str, Any]:
    """A contact on a test clock at NOW with a subscription of `items` services on `meter` (monthly)."""
    terms: dict[str, Any] = {"price": "10.00", "currency": "USD", "cycle": cycle, "billing_model": "advance"}
    if meter is not None:
        terms["usage"] = {
            "meter": meter,
            "model": "per_unit",
            "unit_price": "0.10",
            **(usage or {"aggregation": "sum"}),
        }
    product = make_product(api, terms)
    if contact is None:
        contact = make_contact(api)
        api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": NOW})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item] * items})
    assert placed.status == 201, placed.body
    subscription = placed.body["subscriptions"][0] if "subscriptions" in placed.body else None
    if subscription is None:
        (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    services = [s for s in subscription["services"] if s["product_id"] == product["id"]]
    return {
        "contact_id": contact["id"],
        "subscription_id": subscription["id"],
        "service_id": services[0]["id"],
        "services": [s["id"] for s in services],
    }


def named(svc: dict[str, Any]) -> dict[str, str]:
    return {"subscription_id": svc["subscription_id"], "service_id": svc["service_id"]}


def post_batch(api: InProcessClient, records: list[dict[str, Any]]) -> Any:
    reply = api.post("/usage", {"records": records})
    assert reply.status == 200, reply.body
    return reply.body


def stored(svc: dict[str, Any], period_start: date = date(2026, 3, 10)) -> list[Any]:
    return list(DynamoStore().usage_records(SCOPE, svc["contact_id"], svc["service_id"], period_start))


def test_a_batch_sent_twice_is_stored_and_counted_once(api: InProcessClient) -> None:
    svc = metered(api)
    batch = [{"id": f"r-{i}", "quantity": "1.5", "at": "2026-03-10T11:00:00Z", **named(svc)} for i in range(40)]
    first = post_batch(api, batch)
    assert (first["accepted"], first["duplicates"], first["refused"]) == (40, 0, 0)
    assert first["records"][0] == {
        "id": "r-0",
        "status": "accepted",
        "service_id": svc["service_id"],
        "period": {"start": "2026-03-10", "end": "2026-04-10"},
        "late": False,
    }
    again = post_batch(api, batch)
    assert (again["accepted"], again["duplicates"], again["refused"]) == (0, 40, 0)
    assert len(stored(svc)) == 40
    usage = api.get(f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage").body
    assert (usage["total"], usage["count"], usage["aggregation"], usage["meter"]) == ("60.0", 40, "sum", "api_calls")


def test_a_retry_with_other_values_is_still_a_duplicate_and_the_first_values_stay(api: InProcessClient) -> None:
    svc = metered(api)
    post_batch(api, [{"id": "one", "quantity": "2", "at": "2026-03-10T11:00:00Z", **named(svc)}])
    again = post_batch(api, [{"id": "one", "quantity": "9", "at": "2026-03-10T11:30:00Z", **named(svc)}])
    assert again["records"][0]["status"] == "duplicate"
    (record,) = stored(svc)
    assert str(record.quantity) == "2"


def test_the_same_id_twice_in_one_batch_is_written_once(api: InProcessClient) -> None:
    svc = metered(api)
    body = post_batch(
        api, [{"id": "twice", "quantity": "1", **named(svc)}, {"id": "twice", "quantity": "5", **named(svc)}]
    )
    assert [r["status"] for r in body["records"]] == ["accepted", "duplicate"]
    assert [str(r.quantity) for r in stored(svc)] == ["1"]


def test_a_retry_stamped_in_the_next_period_is_a_duplicate_of_the_first(api: InProcessClient) -> None:
    # A sender that stamps `at` again when it retries, across the end of a billing period.
    svc = metered(api)
    advance_clock(api, svc["contact_id"], "2026-04-10T00:02:00+00:00")
    first = post_batch(api, [{"id": "retry-1", "quantity": "1", "at": "2026-04-09T23:59:00Z", **named(svc)}])
    again = post_batch(api, [{"id": "retry-1", "quantity": "1", "at": "2026-04-10T00:01:00Z", **named(svc)}])
    assert first["records"][0]["status"] == "accepted"
    assert again["records"][0]["status"] == "duplicate"
    assert again["records"][0]["period"] == {"start": "2026-03-10", "end": "2026-04-10"}  # where it is stored
    assert stored(svc, date(2026, 4, 10)) == [] and len(stored(svc)) == 1
    # the same within one batch, and with `at` left out (the contact's now) on the retry
    both = post_batch(
        api,
        [
            {"id": "retry-2", "quantity": "1", "at": "2026-04-09T23:58:00Z", **named(svc)},
            {"id": "retry-2", "quantity": "1", **named(svc)},
        ],
    )
    assert [r["status"] for r in both["records"]] == ["accepted", "duplicate"]
    assert stored(svc, date(2026, 4, 10)) == []


def test_a_weekly_service_finds_a_record_id_in_any_period_within_35_days(api: InProcessClient) -> None:
    svc = metered(api, cycle="week")
    assert (
        post_batch(api, [{"id": "w-1", "quantity": "1", "at": "2026-03-10T11:00:00Z", **named(svc)}])["accepted"] == 1
    )
    advance_clock(api, svc["contact_id"], "2026-04-13T12:00:00+00:00")  # 34 days later, 5 weeks on
    again = post_batch(api, [{"id": "w-1", "quantity": "1", **named(svc)}])
    assert again["records"][0]["status"] == "duplicate"
    assert again["records"][0]["period"]["start"] == "2026-03-10"


def test_a_record_id_reused_more_than_35_days_later_is_another_record(api: InProcessClient) -> None:
    # Documented: records are de-duplicated across periods for 35 days either side only.
    svc = metered(api, cycle="week")
    assert (
        post_batch(api, [{"id": "old", "quantity": "1", "at": "2026-03-10T11:00:00Z", **named(svc)}])["accepted"] == 1
    )
    # 43 days later: 35 days before it (17 March) is past the whole week the first record is in
    # (10-17 March), the earliest period checked
    advance_clock(api, svc["contact_id"], "2026-04-22T12:00:00+00:00")
    again = post_batch(api, [{"id": "old", "quantity": "1", **named(svc)}])
    assert again["records"][0]["status"] == "accepted"


def test_each_refused_record_names_its_reason_and_never_blocks_the_others(api: InProcessClient) -> None:
    svc = metered(api)
    plain = metered(api, meter=None, contact={"id": svc["contact_id"]})
    ok = {"quantity": "1", **named(svc)}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"id": "bad id!", **ok}, "usage.invalid_id", "records[0].id"),
        ({"id": "q1", **named(svc), "quantity": "-1"}, "usage.invalid_quantity", "records[1].quantity"),
        ({"id": "q2", **named(svc), "quantity": 1}, "usage.invalid_quantity", "records[2].quantity"),
        ({"id": "q3", **named(svc), "quantity": "0.1234567890123"}, "usage.invalid_quantity", "records[3].quantity"),
        ({"id": "q4", **named(svc), "value": "1e3"}, "usage.invalid_quantity", "records[4].value"),
        ({"id": "a1", **ok, "at": "2026-03-10T11:00:00"}, "usage.invalid_at", "records[5].at"),
        ({"id": "a2", **ok, "at": "2026-03-10T12:06:00+00:00"}, "usage.in_future", "records[6].at"),
        ({"id": "a3", **ok, "at": "2026-03-09T23:00:00+00:00"}, "usage.outside_service", "records[7].at"),
        ({"id": "p1", **ok, "properties": {"k": 1}}, "usage.invalid_properties", "records[8].properties"),
        (
            {"id": "p2", **ok, "properties": {f"k{i}": "v" for i in range(21)}},
            "usage.invalid_properties",
            "records[9].properties",
        ),
        ({"id": "s1", "quantity": "1"}, "usage.service_unnamed", "records[10].service_id"),
        ({"id": "s2", **ok, "meter": "api_calls"}, "usage.service_unnamed", "records[11].service_id"),
        (
            {"id": "s3", "quantity": "1", "subscription_id": svc["subscription_id"], "service_id": "nope"},
            "usage.unknown_service",
            "records[12].service_id",
        ),
        (
            {
                "id": "s4",
                "quantity": "1",
                "subscription_id": plain["subscription_id"],
                "service_id": plain["service_id"],
            },
            "usage.not_metered",
            "records[13].service_id",
        ),
        (
            {"id": "s5", "quantity": "1", "contact_id": svc["contact_id"], "meter": "storage_gb"},
            "usage.unknown_service",
            "records[14].meter",
        ),
        ({"id": "f1", **ok, "colour": "red"}, "usage.unknown_field", "records[15].colour"),
        ("not an object", "usage.invalid_record", "records[16]"),
    ]
    good = {"id": "good", "quantity": "3", **named(svc)}
    body = post_batch(api, [c[0] for c in cases] + [good])
    outcomes = body["records"]
    assert outcomes[-1]["status"] == "accepted"
    assert (body["accepted"], body["refused"]) == (1, len(cases))
    for (_, code, field), outcome in zip(cases, outcomes, strict=False):
        assert outcome["status"] == "refused"
        assert outcome["error"]["error"] == code, (field, outcome)
        assert outcome["error"]["fields"][0]["field"] == field
    assert [r.id for r in stored(svc)] == ["good"]


def test_a_single_refused_record_answers_its_own_4xx(api: InProcessClient) -> None:
    svc = metered(api)
    future = api.post("/usage", {"id": "x", "quantity": "1", "at": "2027-01-01T00:00:00Z", **named(svc)})
    assert future.status == 422 and future.body["error"] == "usage.in_future"
    assert future.body["fields"] == [{"field": "at", "reason": future.body["message"]}]
    missing = api.post(
        "/usage", {"id": "x", "quantity": "1", "subscription_id": svc["subscription_id"], "service_id": "no"}
    )
    assert missing.status == 404 and missing.body["error"] == "usage.unknown_service"
    one = api.post("/usage", {"id": "x", "quantity": "1", **named(svc)})
    assert one.status == 200 and one.body["records"][0]["status"] == "accepted"


def test_a_batch_over_1000_records_is_refused_whole(api: InProcessClient) -> None:
    svc = metered(api)
    reply = api.post("/usage", {"records": [{"id": f"r{i}", "quantity": "1", **named(svc)} for i in range(1001)]})
    assert reply.status == 422 and reply.body["error"] == "usage.batch_too_large"
    assert stored(svc) == []


def test_the_instant_defaults_to_the_contacts_clock_and_decides_the_period(api: InProcessClient) -> None:
    svc = metered(api)
    advance_clock(api, svc["contact_id"], "2026-04-12T08:00:00+00:00")
    body = post_batch(
        api,
        [
            {"id": "now", "quantity": "1", **named(svc)},
            {"id": "march", "quantity": "1", "at": "2026-04-09T23:59:59+00:00", **named(svc)},
        ],
    )
    assert [r["period"]["start"] for r in body["records"]] == ["2026-04-10", "2026-03-10"]
    # The advance billed March's usage on 2026-04-10: a March record now is late (docs/billing.md).
    assert [r["late"] for r in body["records"]] == [False, True]
    (now,) = stored(svc, date(2026, 4, 10))
    assert now.at.isoformat() == "2026-04-12T08:00:00+00:00" == now.received_at.isoformat()


def test_contact_and_meter_name_the_contacts_one_service_on_that_meter(api: InProcessClient) -> None:
    svc = metered(api)
    body = post_batch(api, [{"id": "m1", "quantity": "4", "contact_id": svc["contact_id"], "meter": "api_calls"}])
    assert body["records"][0]["service_id"] == svc["service_id"]
    two = metered(api, meter="seats", items=2)
    body = post_batch(api, [{"id": "m2", "quantity": "1", "contact_id": two["contact_id"], "meter": "seats"}])
    assert body["records"][0]["error"]["error"] == "usage.ambiguous_service"


def billed_march(service: Any) -> tuple[BilledUsage, ...]:
    """The history a billing run of the period 10 March - 10 April leaves: billed, with no usage."""
    return (BilledUsage(date(2026, 3, 10), Money.zero("USD"), Decimal(0), 0),)


def test_a_record_in_a_billed_period_is_stored_there_and_marked_late(api: InProcessClient) -> None:
    svc = metered(api)
    store = DynamoStore()
    subscription = store.get_subscription(SCOPE, svc["subscription_id"])
    assert subscription is not None
    services = tuple(
        replace(s, usage_billed_through=date(2026, 4, 10), usage_billed=billed_march(s))
        if s.id == svc["service_id"]
        else s
        for s in subscription.services
    )
    work = store.unit_of_work("test")
    work.save_subscription(SCOPE, replace(subscription, services=services), subscription.version)
    work.commit()
    body = post_batch(api, [{"id": "late-1", "quantity": "2", "at": "2026-03-10T11:00:00Z", **named(svc)}])
    assert body["records"][0]["late"] is True and body["records"][0]["status"] == "accepted"
    (marker,) = store.late_markers(SCOPE, svc["contact_id"], svc["service_id"])
    assert marker.period_start == date(2026, 3, 10)
    assert [r.id for r in stored(svc)] == ["late-1"]
    work = store.unit_of_work("billing")
    work.clear_late_marker(SCOPE, svc["contact_id"], marker)
    work.commit()
    assert store.late_markers(SCOPE, svc["contact_id"], svc["service_id"]) == []


def test_records_page_across_the_shards_with_a_checked_cursor(api: InProcessClient) -> None:
    svc = metered(api)
    ids = [f"rec-{i:03d}" for i in range(57)]
    post_batch(api, [{"id": i, "quantity": "1", **named(svc)} for i in ids])
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage"
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        reply = api.get(path + "?limit=10&period=2026-03-31" + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply.body
        assert reply.body["period"] == {"start": "2026-03-10", "end": "2026-04-10"}
        assert reply.body["count"] == 57
        seen += [r["id"] for r in reply.body["records"]]
        pages += 1
        cursor = reply.body["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ids and len(seen) == 57 and pages == 6
    other = metered(api)
    stranger = api.get(f"/subscriptions/{other['subscription_id']}/services/{other['service_id']}/usage?limit=10")
    assert stranger.body["records"] == []
    first = api.get(path + "?limit=10").body["cursor"]
    wrong = api.get(f"/subscriptions/{other['subscription_id']}/services/{other['service_id']}/usage?cursor={first}")
    assert wrong.status == 422 and wrong.body["error"] == "listing.invalid_cursor"
    assert api.get(path + "?cursor=garbage").body["error"] == "listing.invalid_cursor"


def test_a_contacts_totals_per_meter_for_the_periods_containing_a_day(api: InProcessClient) -> None:
    svc = metered(api)
    post_batch(api, [{"id": f"r{i}", "quantity": "2.5", **named(svc)} for i in range(4)])
    reply = api.get(f"/contacts/{svc['contact_id']}/usage")
    assert reply.status == 200
    (meter,) = reply.body["meters"]
    assert (meter["meter"], meter["total"], meter["count"]) == ("api_calls", "10.0", 4)
    assert meter["services"][0]["period"] == {"start": "2026-03-10", "end": "2026-04-10"}
    earlier = api.get(f"/contacts/{svc['contact_id']}/usage?on=2026-04-10").body["meters"]
    assert earlier[0]["total"] == "0" and earlier[0]["count"] == 0


def test_usage_of_another_tenants_contact_is_not_found(api: InProcessClient) -> None:
    svc = metered(api)
    add_tenant("tenant-v", "Tenant V", "bk_test_other")
    other = InProcessClient("bk_test_other")
    assert other.get(f"/contacts/{svc['contact_id']}/usage").status == 404
    usage = other.get(f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage")
    assert usage.status == 404
    refused = other.post("/usage", {"id": "x", "quantity": "1", **named(svc)})
    assert refused.status == 404 and refused.body["error"] == "usage.unknown_service"
    assert api.post("/usage", {"id": "x", "quantity": "1", **named(svc)}, key=None).status == 401


def test_the_total_is_the_aggregation_the_usage_price_names(api: InProcessClient) -> None:
    svc = metered(api, meter="active_users", usage={"aggregation": "unique_count", "property": "user"})
    users = ["ann", "bob", "ann", "cy", "bob"]
    post_batch(
        api, [{"id": f"u{i}", "quantity": "1", "properties": {"user": u}, **named(svc)} for i, u in enumerate(users)]
    )
    usage = api.get(f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/usage").body
    assert (usage["aggregation"], usage["total"], usage["count"]) == ("unique_count", "3", 5)
    (meter,) = api.get(f"/contacts/{svc['contact_id']}/usage").body["meters"]
    assert (meter["meter"], meter["total"]) == ("active_users", "3")


def test_a_bad_meter_in_an_allowance_path_answers_the_documented_code(api: InProcessClient) -> None:
    contact = make_contact(api)
    reply = api.request("PUT", f"/contacts/{contact['id']}/allowances/Bad-Meter", {"per_cycle": "10"})
    assert (reply.status, reply.body["error"]) == (422, "usage.invalid_meter"), reply.body
    assert reply.body["fields"][0]["field"] == "meter"


# Arabic-Indic digits, full-width digits, the Arabic decimal point
@pytest.mark.parametrize("quantity", ["\u0661\u0662\u0663", "\uff11\uff12", "1\u066b5"])
def test_a_quantity_takes_ascii_digits_only(api: InProcessClient, quantity: str) -> None:
    svc = metered(api)
    reply = api.post("/usage", {"id": "odd", "quantity": quantity, "at": NOW, **named(svc)})
    assert (reply.status, reply.body["error"]) == (422, "usage.invalid_quantity"), reply.body
    assert stored(svc) == []


def test_an_instant_out_of_the_calendar_is_refused_on_its_own(api: InProcessClient) -> None:
    svc = metered(api)
    body = post_batch(
        api,
        [
            {"id": "far", "quantity": "1", "at": "0001-01-01T00:00:00+01:00", **named(svc)},
            {"id": "fine", "quantity": "1", "at": NOW, **named(svc)},
        ],
    )
    assert [r["status"] for r in body["records"]] == ["refused", "accepted"]
    assert body["records"][0]["error"]["error"] == "usage.invalid_at"


def test_a_cancelled_service_takes_no_usage_from_its_cancellation(api: InProcessClient) -> None:
    svc = metered(api)
    cancel = api.post(f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/cancel", {})
    assert cancel.status in (200, 201, 202), cancel.body
    reply = api.post("/usage", {"id": "after", "quantity": "1", "at": NOW, **named(svc)})
    assert (reply.status, reply.body["error"]) == (422, "usage.outside_service"), reply.body
    assert stored(svc) == []


def test_a_subscription_with_a_metered_service_keeps_its_billing_day(api: InProcessClient) -> None:
    """Its usage records are kept by the billing period they fell in: moving the billing day would
    leave the open period's records where the new periods never look (billed 1.00 of 4.00)."""
    svc = metered(api)
    assert post_batch(api, [{"id": f"r{i}", "quantity": "10", **named(svc)} for i in range(3)])["accepted"] == 3
    changed = api.post(f"/subscriptions/{svc['subscription_id']}/billing-day", {"billing_day": 20})
    assert (changed.status, changed.body["error"]) == (409, "billing_day.metered"), changed.body


def test_a_refuse_override_set_mid_cycle_counts_the_usage_before_it(api: InProcessClient) -> None:
    """Terms: overage, 10 per cycle; 8 used (never counted: overage counts nothing). The contact then
    gets its own `refuse` allowance of 10: a record of 5 (13 > 10) is refused, one of 2 fits."""
    svc = metered(api, usage={"aggregation": "sum", "allowance": {"per_cycle": "10", "beyond": "overage"}})
    assert post_batch(api, [{"id": "a", "quantity": "8", **named(svc)}])["accepted"] == 1
    put = api.request(
        "PUT", f"/contacts/{svc['contact_id']}/allowances/api_calls", {"per_cycle": "10", "beyond": "refuse"}
    )
    assert put.status == 200, put.body
    body = post_batch(api, [{"id": "b", "quantity": "5", **named(svc)}, {"id": "c", "quantity": "2", **named(svc)}])
    assert [r["status"] for r in body["records"]] == ["refused", "accepted"], body
    assert "2 of 10 remain" in body["records"][0]["error"]["message"]


def test_a_cancelled_metered_service_with_usage_to_bill_keeps_the_billing_day(api: InProcessClient) -> None:
    svc = metered(api)
    assert post_batch(api, [{"id": "r", "quantity": "10", **named(svc)}])["accepted"] == 1
    cancel = api.post(f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/cancel", {})
    assert cancel.status in (200, 201, 202), cancel.body
    changed = api.post(f"/subscriptions/{svc['subscription_id']}/billing-day", {"billing_day": 20})
    assert (changed.status, changed.body["error"]) == (409, "billing_day.metered"), changed.body
