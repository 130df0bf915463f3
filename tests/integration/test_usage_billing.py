"""Usage billing on DynamoDB Local: charge limits issue one immediate invoice even when two
processes cross the limit at once, a rerun after it issues nothing more, the period's final
invoice bills only the rest, and a late record is billed once, on the next invoice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from billow.domain.errors import ConcurrentModification
from billow.domain.invoices import Invoice
from billow.domain.usage import UsageRecord
from billow.local.stack import add_tenant
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.context import SystemClock, TenantContext
from billow.services.usage.ingest import RecordInput, submit_usage
from billow.services.usage.limits import after_accept, charge_usage_so_far
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, in_processes, make_contact, make_product

KEY = "bk_test_usage_billing"
TENANT = "tenant-ub"
MARCH = date(2026, 3, 1)
USAGE = {
    "meter": "api_calls",
    "aggregation": "sum",
    "model": "per_unit",
    "unit_price": "0.10",
    "charge_limit": {"amount": "50.00"},
}


@pytest.fixture
def api(local_table: str) -> Iterator[InProcessClient]:
    add_tenant(TENANT, "Tenant UB", KEY)
    yield InProcessClient(KEY)


def context() -> TenantContext:
    settings = DynamoStore().get_settings(TENANT)
    assert settings is not None
    return TenantContext(TENANT, "test", settings)


def metered(api: InProcessClient) -> dict[str, str]:
    """A contact on a test clock (1 March 2026) with a monthly service billed 0.10 per API call
    in arrears, charge limit 50.00 of unbilled usage."""
    terms = {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "usage": USAGE}
    product = make_product(api, terms)
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    placed = api.post(
        "/orders",
        {
            "contact_id": contact["id"],
            "items": [{"product_id": product["id"], "terms_id": product["terms"][0]["id"]}],
        },
    )
    assert placed.status == 201, placed.body
    (subscription,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    return {
        "contact_id": contact["id"],
        "subscription_id": subscription["id"],
        "service_id": subscription["services"][0]["id"],
    }


def records(
    svc: dict[str, str], prefix: str, count: int, quantity: str, at: str = "2026-03-01T10:00:00Z"
) -> list[dict[str, Any]]:
    named = {"subscription_id": svc["subscription_id"], "service_id": svc["service_id"]}
    return [{"id": f"{prefix}-{i}", "quantity": quantity, "at": at, **named} for i in range(count)]


def submit(batch: list[dict[str, Any]]) -> list[Any]:
    return submit_usage(DynamoStore(), context(), SystemClock(), [RecordInput(r) for r in batch])


def usage_invoices(svc: dict[str, str]) -> list[Invoice]:
    store = DynamoStore()
    found = [store.get_invoice(context().scope, i) for i in _invoice_ids(svc)]
    return [i for i in found if i is not None and any(line.kind == "usage" for line in i.lines)]


def _invoice_ids(svc: dict[str, str]) -> list[str]:
    client = InProcessClient(KEY)
    reply = client.get(f"/invoices?contact_id={svc['contact_id']}&limit=100")
    assert reply.status == 200, reply.body
    return [i["id"] for i in reply.body["items"]]


def stored(svc: dict[str, str], prefix: str, count: int, quantity: str) -> None:
    """Records written straight to storage (the ingest's own write), without its limit check."""
    at = datetime(2026, 3, 1, 10, tzinfo=UTC)
    DynamoStore().put_usage_records(
        context().scope,
        [
            UsageRecord(
                f"{prefix}-{i}",
                svc["subscription_id"],
                svc["service_id"],
                svc["contact_id"],
                "api_calls",
                at,
                at.date(),
                Decimal(quantity),
                {},
                MARCH,
                at,
            )
            for i in range(count)
        ],
    )


def _charge(table: str, endpoint: str, svc: dict[str, str], go: Any, out: Any, met: Any) -> None:
    """One process (a separate Lambda container) that found the limit crossed: it reads, rates and
    charges the usage so far, released at the same moment as the other."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    try:
        store = DynamoStore()
        subscription = store.load_subscription(context().scope, svc["contact_id"], svc["subscription_id"])
        assert subscription is not None
        go.wait(60)
        met.wait(60)
        invoice = charge_usage_so_far(store, context(), SystemClock(), subscription, svc["service_id"], MARCH)
        out.put(None if invoice is None else invoice.id)
    except Exception as crash:  # reported, so the test fails with it instead of waiting on the queue
        out.put(f"crashed: {crash!r}")


def test_two_processes_crossing_the_limit_at_once_issue_one_immediate_invoice(
    api: InProcessClient, local_table: str, dynamodb_local: Any
) -> None:
    svc = metered(api)
    stored(svc, "r", 300, "2")  # 60.00: over the 50.00 limit
    results = in_processes(_charge, [(local_table, dynamodb_local.endpoint, svc)] * 2, meet=2)
    issued = [invoice_id for invoice_id in results if invoice_id is not None]
    (invoice,) = usage_invoices(svc)
    assert issued == [invoice.id], results  # one process issued it; the other found it issued
    assert invoice.total.amount_str() == "60.00" and invoice.number  # numbered, issued like any invoice
    subscription = DynamoStore().load_subscription(context().scope, svc["contact_id"], svc["subscription_id"])
    assert subscription is not None
    (billed,) = subscription.services[0].usage_billed
    assert (billed.amount.amount_str(), billed.records, billed.progressive) == ("60.00", 300, 1)


def test_a_rerun_after_the_immediate_invoice_issues_nothing_and_the_final_invoice_bills_the_rest(
    api: InProcessClient,
) -> None:
    svc = metered(api)
    first = records(svc, "r", 300, "2")  # 60.00: over the limit
    assert [o.status for o in submit(first)] == ["accepted"] * 300  # ingest's own check issues it
    (immediate,) = usage_invoices(svc)
    assert immediate.total.amount_str() == "60.00"
    # the process "crashed" after the invoice, before answering: the rerun of the same batch
    # answers duplicates, and even the check run again over it issues nothing more
    assert [o.status for o in submit(first)] == ["duplicate"] * 300
    store = DynamoStore()
    subscription = store.load_subscription(context().scope, svc["contact_id"], svc["subscription_id"])
    assert subscription is not None
    accepted = list(store.usage_records(context().scope, svc["contact_id"], svc["service_id"], MARCH))
    assert after_accept(store, context(), SystemClock(), subscription, subscription.services[0], accepted) == []
    assert len(usage_invoices(svc)) == 1
    # 25 more calls (2.50): under the limit, billed at the period's end with the rest
    assert [o.status for o in submit(records(svc, "s", 25, "1"))] == ["accepted"] * 25
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 4, 1), InvoiceNumbers(store)
    )
    final = [i for i in usage_invoices(svc) if i.id != immediate.id]
    (line,) = [x for i in final for x in i.lines if x.kind == "usage"]
    assert line.amount.amount_str() == "2.50"  # 62.50 in all, 60.00 invoiced before


def test_a_late_record_is_billed_once_on_the_next_invoice(api: InProcessClient) -> None:
    svc = metered(api)
    store = DynamoStore()
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10  # 1.00 in March
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 4, 1), InvoiceNumbers(store)
    )
    (march,) = usage_invoices(svc)
    # a record of March arrives after March was billed: the next invoice bills it, in its own line
    (late,) = submit(records(svc, "late", 1, "7"))
    assert late.status == "accepted" and late.late
    assert store.late_markers(context().scope, svc["contact_id"], svc["service_id"])
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 5, 1), InvoiceNumbers(store)
    )
    april = [i for i in usage_invoices(svc) if i.id != march.id]
    lines = [(x.description, x.amount.amount_str()) for i in april for x in i.lines if x.kind == "usage"]
    assert lines == [("Pro: late usage for 2026-03-01 – 2026-04-01 (api_calls)", "0.70")]  # noqa: RUF001
    assert store.late_markers(context().scope, svc["contact_id"], svc["service_id"]) == []
    # and not again on the invoice after
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 6, 1), InvoiceNumbers(store)
    )
    assert [i.id for i in usage_invoices(svc)] == [march.id, *(i.id for i in april)]


def test_a_late_marker_is_not_cleared_over_a_late_batch_marked_after_billing_read_it(api: InProcessClient) -> None:
    svc = metered(api)
    store = DynamoStore()
    scope = context().scope
    store.put_late_marker(scope, svc["contact_id"], svc["service_id"], MARCH)
    (read,) = store.late_markers(scope, svc["contact_id"], svc["service_id"])
    store.put_late_marker(scope, svc["contact_id"], svc["service_id"], MARCH)  # a late batch lands meanwhile
    work = store.unit_of_work("billing")
    work.clear_late_marker(scope, svc["contact_id"], read)
    with pytest.raises(ConcurrentModification):
        work.commit()
    (kept,) = store.late_markers(scope, svc["contact_id"], svc["service_id"])
    work = store.unit_of_work("billing again")
    work.clear_late_marker(scope, svc["contact_id"], kept)
    work.commit()
    assert store.late_markers(scope, svc["contact_id"], svc["service_id"]) == []


class RecordLandsWhileBillingRates(DynamoStore):
    """The billing run's store: right after the run has read a period's records, a sender (another
    process: its own store) submits a record (by default of March, ended but not billed yet)."""

    def __init__(self, svc: dict[str, str], quantity: str = "7", at: str = "2026-03-31T23:59:00Z") -> None:
        super().__init__()
        self.svc, self.quantity, self.at = svc, quantity, at
        self.landed: list[Any] = []

    def usage_records(self, scope: Any, contact_id: str, service_id: str, period_start: date) -> Iterator[UsageRecord]:
        read = list(super().usage_records(scope, contact_id, service_id, period_start))
        if not self.landed:
            self.landed = submit(records(self.svc, "racing", 1, self.quantity, at=self.at))
        return iter(read)


def test_a_record_of_an_ended_period_landing_while_billing_rates_it_is_billed_on_the_next_invoice(
    api: InProcessClient,
) -> None:
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10  # 1.00 in March
    store = DynamoStore()
    clock = store.get_clock(context().scope, svc["contact_id"])
    assert clock is not None  # its day is 1 April: March has ended, its usage may be billed any moment
    store.save_clock(context().scope, replace(clock, frozen_time=datetime(2026, 4, 1, 0, 5, tzinfo=UTC)))
    racing = RecordLandsWhileBillingRates(svc)
    bill_subscription(
        racing, context(), svc["contact_id"], svc["subscription_id"], date(2026, 4, 1), InvoiceNumbers(racing)
    )
    (landed,) = racing.landed
    assert landed.status == "accepted"
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 5, 1), InvoiceNumbers(store)
    )
    billed = [x.amount.amount_str() for i in usage_invoices(svc) for x in i.lines if x.kind == "usage"]
    assert sorted(billed) == ["0.70", "1.00"] or billed == ["1.70"]  # the racing record billed, once


def test_a_late_record_of_a_period_billed_with_no_usage_is_billed_on_the_next_invoice(api: InProcessClient) -> None:
    svc = metered(api)
    store = DynamoStore()
    bill_subscription(  # March billed with no usage at all
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 4, 1), InvoiceNumbers(store)
    )
    (late,) = submit(records(svc, "late", 1, "7"))
    assert late.status == "accepted" and late.late
    bill_subscription(
        store, context(), svc["contact_id"], svc["subscription_id"], date(2026, 5, 1), InvoiceNumbers(store)
    )
    lines = [(x.description, x.amount.amount_str()) for i in usage_invoices(svc) for x in i.lines if x.kind == "usage"]
    assert lines == [("Pro: late usage for 2026-03-01 – 2026-04-01 (api_calls)", "0.70")]  # noqa: RUF001


class _HeldRun(DynamoStore):
    """The billing run's store: says when it has read the period's records, and holds its commit
    until ingest has re-read the subscription after its write."""

    def __init__(self, read: Any, reread: Any) -> None:
        super().__init__()
        self.read, self.reread = read, reread

    def usage_records(self, *args: Any, **kwargs: Any) -> Iterator[UsageRecord]:
        out = list(super().usage_records(*args, **kwargs))
        self.read.set()
        return iter(out)

    def unit_of_work(self, what: str) -> Any:
        work = super().unit_of_work(what)
        commit = work.commit

        def held() -> None:
            self.reread.wait(30)
            commit()

        work.commit = held  # type: ignore[method-assign]
        return work


class _SlowIngest(DynamoStore):
    """Ingest's store: says when it has read the contact's clock (its now: the period's last
    minute), writes only once the run has read the records, says when it re-read the subscription."""

    def __init__(self, timed: Any, read: Any, reread: Any) -> None:
        super().__init__()
        self.timed, self.read, self.reread = timed, read, reread

    def get_clock(self, *args: Any, **kwargs: Any) -> Any:
        found = super().get_clock(*args, **kwargs)
        self.timed.set()
        return found

    def put_usage_records(self, scope: Any, records: list[Any]) -> list[bool]:
        self.read.wait(30)
        return super().put_usage_records(scope, records)

    def load_subscription(self, *args: Any, **kwargs: Any) -> Any:
        found = super().load_subscription(*args, **kwargs)
        if self.read.is_set():
            self.reread.set()
        return found


def test_a_record_received_in_the_periods_last_minute_while_the_run_bills_it_is_billed_once(
    api: InProcessClient,
) -> None:
    """Ingest reads the contact's now at 23:59:30 on the period's last day (not ended: nothing to
    mark yet); the clock moves to the next day and the run reads the period's records; ingest
    writes its record and re-reads the subscription (not billed yet: the run holds its commit);
    the run commits. The record, missed by the run, is marked (ingest reads the contact's day again
    after its write) and billed on the next invoice: 1.00 + 0.70, once."""
    import threading

    svc = metered(api)
    assert [o.status for o in submit(records(svc, "pre", 10, "1"))] == ["accepted"] * 10
    store = DynamoStore()
    clock = store.get_clock(context().scope, svc["contact_id"])
    assert clock is not None
    store.save_clock(context().scope, replace(clock, frozen_time=datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)))
    timed, read, reread = threading.Event(), threading.Event(), threading.Event()

    def run() -> None:
        timed.wait(30)
        moved = store.get_clock(context().scope, svc["contact_id"])
        assert moved is not None
        store.save_clock(context().scope, replace(moved, frozen_time=datetime(2026, 4, 1, 0, 0, 5, tzinfo=UTC)))
        held = _HeldRun(read, reread)
        bill_subscription(
            held, context(), svc["contact_id"], svc["subscription_id"], date(2026, 4, 1), InvoiceNumbers(held)
        )

    billing = threading.Thread(target=run)
    billing.start()
    ingest = _SlowIngest(timed, read, reread)
    (outcome,) = submit_usage(
        ingest, context(), SystemClock(), [RecordInput(r) for r in records(svc, "edge", 1, "7", "2026-03-31T23:59:00Z")]
    )
    billing.join(60)
    assert outcome.status == "accepted"
    for day in (date(2026, 5, 1), date(2026, 6, 1)):
        bill_subscription(store, context(), svc["contact_id"], svc["subscription_id"], day, InvoiceNumbers(store))
    billed = sorted(x.amount.amount_str() for i in usage_invoices(svc) for x in i.lines if x.kind == "usage")
    assert billed == ["0.70", "1.00"]


def _move_clock(svc: dict[str, str], to: datetime) -> None:
    store = DynamoStore()
    clock = store.get_clock(context().scope, svc["contact_id"])
    assert clock is not None
    store.save_clock(context().scope, replace(clock, frozen_time=to))


def _bill(svc: dict[str, str], as_of: date) -> None:
    store = DynamoStore()
    bill_subscription(store, context(), svc["contact_id"], svc["subscription_id"], as_of, InvoiceNumbers(store))


@pytest.mark.parametrize("cancelled_on", [1, 10])
def test_late_usage_of_a_cancelled_service_is_billed_once(api: InProcessClient, cancelled_on: int) -> None:
    # Cancelled on 1 April (the day March is billed), the service bills no more usage periods:
    # its late usage used to wait for a next usage invoice that never came.
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10  # 1.00 in March
    _move_clock(svc, datetime(2026, 4, cancelled_on, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, cancelled_on))
    (before,) = submit(records(svc, "late-a", 1, "7"))  # March, after March was billed
    assert before.status == "accepted" and before.late
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}"
    cancelled = api.post(f"{path}/cancel", {})
    assert cancelled.status in (200, 201, 202), cancelled.body
    _bill(svc, date(2026, 4, cancelled_on))
    (after,) = submit(records(svc, "late-b", 1, "5"))  # March again, the service now ended
    assert after.status == "accepted" and after.late
    now = [x.amount.amount_str() for i in usage_invoices(svc) for x in i.lines if "late usage" in x.description]
    if cancelled_on == 1:  # billed at once: no billing run visits a service that bills nothing more
        assert sorted(now) in (["1.20"], ["0.50", "0.70"]), now
    else:  # its last usage period (1-10 April) is invoiced on 1 May: the late lines go there
        assert now == []
    _move_clock(svc, datetime(2026, 5, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 5, 1))
    _bill(svc, date(2026, 6, 1))
    lines = [(x.description, x.amount.amount_str()) for i in usage_invoices(svc) for x in i.lines if x.kind == "usage"]
    late = [amount for description, amount in lines if "late usage for 2026-03-01" in description]
    assert sorted(late) in (["1.20"], ["0.50", "0.70"]), lines  # both late records billed, once
    store = DynamoStore()
    assert store.late_markers(context().scope, svc["contact_id"], svc["service_id"]) == []


def test_a_late_record_landing_while_an_ended_service_late_usage_is_billed_is_billed_once(
    api: InProcessClient,
) -> None:
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10  # 1.00 in March
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    (first,) = submit(records(svc, "late-a", 1, "7"))
    assert first.late
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}"
    assert api.post(f"{path}/cancel", {}).status in (200, 201, 202)
    # the cancellation, executed at once, billed late-a; late-c is billed at its submission, and
    # while that rates March, another late record lands (submitted by another sender)
    racing = RecordLandsWhileBillingRates(svc, "5", "2026-03-20T10:00:00Z")
    (third,) = submit_usage(racing, context(), SystemClock(), [RecordInput(r) for r in records(svc, "late-c", 1, "3")])
    (landed,) = racing.landed
    assert third.late and landed.status == "accepted" and landed.late
    _bill(svc, date(2026, 6, 1))
    late = [x.amount.amount_str() for i in usage_invoices(svc) for x in i.lines if "late usage" in x.description]
    total = sum(Decimal(amount) for amount in late)
    assert total == Decimal("1.50"), late  # 0.70 + 0.30 + 0.50: each late record billed, once
    assert DynamoStore().late_markers(context().scope, svc["contact_id"], svc["service_id"]) == []


def test_a_retry_stamped_across_the_period_end_is_counted_and_billed_once(api: InProcessClient) -> None:
    svc = metered(api)
    _move_clock(svc, datetime(2026, 4, 1, 0, 2, tzinfo=UTC))
    (first,) = submit(records(svc, "retry", 1, "3", at="2026-03-31T23:59:00Z"))
    (again,) = submit(records(svc, "retry", 1, "3", at="2026-04-01T00:01:00Z"))  # re-stamped on retry
    assert (first.status, again.status) == ("accepted", "duplicate")
    assert again.period is not None and again.period.start == MARCH
    store = DynamoStore()
    assert list(store.usage_records(context().scope, svc["contact_id"], svc["service_id"], date(2026, 4, 1))) == []
    _move_clock(svc, datetime(2026, 5, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 5, 1))
    billed = [x.amount.amount_str() for i in usage_invoices(svc) for x in i.lines if x.kind == "usage"]
    assert billed == ["0.30"]


def _usage_lines(svc: dict[str, str]) -> list[tuple[str, str]]:
    return [(x.description, x.amount.amount_str()) for i in usage_invoices(svc) for x in i.lines if x.kind == "usage"]


@pytest.mark.parametrize("limit", [None, "5.00"])
def test_a_downgrade_at_the_cycle_end_bills_the_ended_cycles_usage_at_the_old_price(
    api: InProcessClient, limit: str | None
) -> None:
    # The change is executed on 1 April before that day's billing: the usage of March was rated on
    # the new terms (0.60, and with a charge limit the final line credited the immediate invoice).
    old = (
        {**USAGE, "charge_limit": {"amount": limit}}
        if limit
        else {k: v for k, v in USAGE.items() if k != "charge_limit"}
    )
    pro = make_product(
        api, {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "usage": old}
    )
    cheap = {"meter": "api_calls", "aggregation": "sum", "model": "per_unit", "unit_price": "0.01"}
    basic = make_product(
        api, {"price": "5.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "usage": cheap}, "Basic"
    )
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    item = {"product_id": pro["id"], "terms_id": pro["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    (sub,) = api.get(f"/contacts/{contact['id']}/subscriptions").body["items"]
    svc = {"contact_id": contact["id"], "subscription_id": sub["id"], "service_id": sub["services"][0]["id"]}
    assert [o.status for o in submit(records(svc, "m", 60, "1"))] == ["accepted"] * 60
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}/change"
    change = api.post(path, {"product_id": basic["id"], "terms_id": basic["terms"][0]["id"]})
    assert change.status == 202 and change.body["action"]["on"] == "2026-04-01", change.body
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    assert [o.status for o in submit(records(svc, "a", 10, "1", at="2026-04-01T10:00:00Z"))] == ["accepted"] * 10
    _move_clock(svc, datetime(2026, 5, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 5, 1))
    march = "Pro usage so far (api_calls): charge limit reached" if limit else "Pro usage (api_calls)"
    assert _usage_lines(svc) == [(march, "6.00"), ("Basic usage (api_calls)", "0.10")]  # never a credit


def test_an_allowance_raised_after_an_immediate_invoice_never_credits_it(api: InProcessClient) -> None:
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "r", 300, "2"))] == ["accepted"] * 300  # 60.00: invoiced at once
    path = f"/contacts/{svc['contact_id']}/allowances/api_calls"
    assert api.request("PUT", path, {"per_cycle": "1000", "beyond": "overage"}).status == 200
    assert [o.status for o in submit(records(svc, "s", 25, "10"))] == ["accepted"] * 25  # 850 in all: 0 beyond
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    # 850 calls rate 0.00 under the new allowance: what was invoiced stands, nothing is credited
    assert _usage_lines(svc) == [("Pro usage so far (api_calls): charge limit reached", "60.00")]
    assert [o.status for o in submit(records(svc, "t", 100, "10"))] == ["accepted"] * 100  # late: 1,850
    _move_clock(svc, datetime(2026, 5, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 5, 1))
    # rated 85.00 now (850 beyond the 1,000): 25.00 more than the 60.00 invoiced
    assert _usage_lines(svc)[1:] == [("Pro: late usage for 2026-03-01 – 2026-04-01 (api_calls)", "25.00")]  # noqa: RUF001


def test_late_usage_of_an_ended_service_is_invoiced_the_day_it_is_found_not_born_overdue(
    api: InProcessClient,
) -> None:
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}"
    assert api.post(f"{path}/cancel", {}).status in (200, 201, 202)
    _bill(svc, date(2026, 4, 1))
    _move_clock(svc, datetime(2026, 4, 20, 12, tzinfo=UTC))
    (late,) = submit(records(svc, "late", 1, "7"))  # March's, submitted on 20 April
    assert late.status == "accepted" and late.late
    (invoice,) = [i for i in usage_invoices(svc) if any("late usage" in x.description for x in i.lines)]
    assert invoice.issue_date == date(2026, 4, 20) and invoice.due_date is not None
    assert invoice.due_date >= date(2026, 4, 20)


def test_the_view_bill_of_a_cancelled_service_with_late_usage_pending_shows_its_late_invoice_once(
    api: InProcessClient,
) -> None:
    svc = metered(api)
    assert [o.status for o in submit(records(svc, "m", 10, "1"))] == ["accepted"] * 10
    _move_clock(svc, datetime(2026, 4, 1, 12, tzinfo=UTC))
    _bill(svc, date(2026, 4, 1))
    assert [o.late for o in submit(records(svc, "late", 1, "7"))] == [True]  # marked for the next invoice
    path = f"/subscriptions/{svc['subscription_id']}"
    assert api.post(f"{path}/services/{svc['service_id']}/cancel", {"on": "2026-04-10"}).status in (200, 201, 202)
    # the view bill simulates the steps ahead: the late usage's step used to repeat forever (422)
    upcoming = api.get(f"{path}/upcoming?count=3")
    assert upcoming.status == 200, upcoming.body
    lines = [x for i in upcoming.body["invoices"] for x in i["lines"] if "late usage" in x["description"]]
    assert [x["amount"]["amount"] for x in lines] == ["0.70"]


def test_usage_named_by_contact_and_meter_reaches_a_paused_service(api: InProcessClient) -> None:
    svc = metered(api)
    path = f"/subscriptions/{svc['subscription_id']}/services/{svc['service_id']}"
    paused = api.post(f"{path}/pause", {})
    assert paused.status in (200, 201, 202), paused.body
    by_meter = {"id": "p-1", "contact_id": svc["contact_id"], "meter": "api_calls", "quantity": "3"}
    (outcome,) = submit([by_meter])
    assert outcome.status == "accepted" and outcome.service_id == svc["service_id"], outcome
