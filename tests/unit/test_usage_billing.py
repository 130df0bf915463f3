"""The billing engine's usage side with a fake rater: what each invoice bills of a period's usage
(rated minus billed so far), progressive invoices, late differences, the bounded history, and
services that are never invoiced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import pytest
from billow.domain.billing import next_due_date, usage_so_far_step
from billow.domain.calendar import Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.ordering import OrderItem, plan_order
from billow.domain.pricing import EXAMPLE_USAGE_PRICE, Aggregation, UsageModel, UsagePrice
from billow.domain.rules import BillingRules
from billow.domain.subscriptions import Service, Subscription
from billow.domain.timeline import steps, upcoming_invoices
from billow.domain.usage import KEPT_BILLED_PERIODS, LateMarker, LateUsage, RatedUsage

D = date
CENT = Decimal("0.01")


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


@dataclass
class FakeRater:
    """Usage per day, one cent a unit; late markers as a test sets them."""

    units: dict[date, Decimal] = field(default_factory=dict)
    markers: list[LateMarker] = field(default_factory=list)
    calls: list[Period] = field(default_factory=list)

    def rate(self, subscription: Subscription, service: Service, period: Period) -> RatedUsage | None:
        self.calls.append(period)
        days = [d for d in self.units if period.start <= d < period.end]
        if not days:
            return None
        quantity = sum((self.units[d] for d in days), Decimal(0))
        return RatedUsage(Money.parse(str(quantity * CENT), "USD"), quantity, len(days), unit_price=usd("0.01"))

    def late(self, subscription: Subscription, service: Service) -> Sequence[LateUsage]:
        out = []
        for marker in self.markers:
            period = subscription.schedule.period_containing(marker.period_start)
            rated = self.rate(subscription, service, period) or RatedUsage(usd("0.00"), Decimal(0), 0)
            out.append(LateUsage(marker, period, rated))
        return out


def _metered(model: BillingModel = BillingModel.ADVANCE, price: str = "30.00", **extra: object) -> Subscription:
    usage = UsagePrice("api_calls", Aggregation.SUM, UsageModel.PER_UNIT, unit_price=CENT)
    terms = PriceTerms("t1", "p1", usd(price), Cycle.MONTH, model, usage=usage, **extra)  # type: ignore[arg-type]
    product = Product("p1", "API").with_terms(terms)
    counter = iter(range(1000))
    plan = plan_order(
        order_id="o1",
        contact_id="c1",
        reference=None,
        items=[OrderItem(product, terms, 1)],
        start_date=D(2024, 1, 1),
        today=D(2024, 1, 1),
        existing=[],
        new_id=lambda prefix: f"{prefix}_{next(counter)}",
        test_clock=False,
        rules=BillingRules(),
    )
    return plan.subscriptions[0]


def _run(subscription: Subscription, as_of: date, rater: FakeRater) -> tuple[Subscription, list[object]]:
    invoices = []
    current = subscription
    for step in steps(subscription, as_of, rater=rater):
        current = step.subscription
        if step.invoice is not None:
            invoices.append(step)
    return current, invoices


def _usage_lines(step: object) -> list[tuple[str, str, Period | None]]:
    invoice = step.invoice  # type: ignore[attr-defined]
    return [(line.description, line.amount.amount_str(), line.period) for line in invoice.lines if line.kind == "usage"]


def test_a_periods_usage_is_billed_at_its_end_and_recorded_on_the_service() -> None:
    rater = FakeRater({D(2024, 1, 5): Decimal(300), D(2024, 1, 20): Decimal(200)})
    sub, invoiced = _run(_metered(), D(2024, 2, 1), rater)
    assert _usage_lines(invoiced[-1]) == [("API usage (api_calls)", "5.00", Period(D(2024, 1, 1), D(2024, 2, 1)))]
    (billed,) = sub.services[0].usage_billed
    assert (billed.period_start, billed.amount, billed.quantity, billed.records) == (D(2024, 1, 1), usd("5.00"), 500, 2)


def test_the_final_invoice_bills_only_what_the_immediate_invoices_did_not() -> None:
    rater = FakeRater({D(2024, 1, 5): Decimal(300)})
    sub, _ = _run(_metered(), D(2024, 1, 10), rater)
    rated = rater.rate(sub, sub.services[0], Period(D(2024, 1, 1), D(2024, 1, 11)))
    assert rated is not None
    early = usage_so_far_step(sub, sub.services[0].id, Period(D(2024, 1, 1), D(2024, 2, 1)), rated, D(2024, 1, 10))
    assert early is not None and early.invoice is not None
    assert early.invoice.total == usd("3.00") and early.invoice.issue_date == D(2024, 1, 10)
    # nothing more to bill early until more usage arrives
    again = usage_so_far_step(
        early.subscription, sub.services[0].id, Period(D(2024, 1, 1), D(2024, 2, 1)), rated, D(2024, 1, 10)
    )
    assert again is None
    rater.units[D(2024, 1, 25)] = Decimal(450)
    after, invoiced = _run(early.subscription, D(2024, 2, 1), rater)
    (line,) = _usage_lines(invoiced[-1])
    assert line[1] == "4.50"  # 7.50 in all, 3.00 invoiced before
    assert "less 3.00 invoiced before" in line[0]
    (billed,) = after.services[0].usage_billed
    assert (billed.amount, billed.progressive) == (usd("7.50"), 1)


def test_a_late_record_is_billed_once_on_the_next_invoice_in_its_own_line() -> None:
    rater = FakeRater({D(2024, 1, 5): Decimal(100)})
    sub, _ = _run(_metered(), D(2024, 2, 1), rater)
    rater.units[D(2024, 1, 30)] = Decimal(250)  # recorded after January was billed
    marker = LateMarker(sub.services[0].id, D(2024, 1, 1), token=1)
    rater.markers.append(marker)
    sub2, invoiced = _run(sub, D(2024, 3, 1), rater)
    (step,) = invoiced
    assert _usage_lines(step) == [
        ("API: late usage for 2024-01-01 – 2024-02-01 (api_calls)", "2.50", Period(D(2024, 1, 1), D(2024, 2, 1)))  # noqa: RUF001
    ]
    assert step.cleared == (marker,)
    # even if the marker were still there, the difference is billed: nothing again
    _, later = _run(sub2, D(2024, 4, 1), rater)
    (next_step,) = later
    assert _usage_lines(next_step) == [] and next_step.cleared == (marker,)


def test_the_view_bill_shows_the_open_periods_usage_so_far() -> None:
    rater = FakeRater({D(2024, 1, 5): Decimal(120)})
    sub, _ = _run(_metered(), D(2024, 1, 10), rater)
    (upcoming,) = upcoming_invoices(sub, 1, rater=rater)
    assert [(x.kind, x.amount.amount_str()) for x in upcoming.lines] == [("recurring", "30.00"), ("usage", "1.20")]


def test_the_billed_usage_history_is_bounded() -> None:
    rater = FakeRater({D(2024, 1, 1) + (D(2024, 2, 1) - D(2024, 1, 1)) * k: Decimal(1) for k in range(24)})
    sub, _ = _run(_metered(), D(2026, 1, 1), rater)
    billed = sub.services[0].usage_billed
    assert len(billed) == KEPT_BILLED_PERIODS + 1
    assert billed[-1].period_start == D(2025, 12, 1)


def test_a_no_billing_service_is_never_invoiced() -> None:
    rater = FakeRater({D(2024, 1, 5): Decimal(100)})
    sub = _metered(BillingModel.NONE, price="0.00")
    assert next_due_date(sub) is None
    assert list(steps(sub, D(2024, 6, 1), rater=rater)) == [] or all(
        s.invoice is None for s in steps(sub, D(2024, 6, 1), rater=rater)
    )
    assert upcoming_invoices(sub, 3, rater=rater) == []
    assert rater.calls == []


@pytest.mark.parametrize("charge", [{"price": "5.00"}, {"price": "0.00", "setup_fee": usd("10.00")}])
def test_no_billing_terms_refuse_any_charge(charge: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as refused:
        _metered(BillingModel.NONE, **charge)  # type: ignore[arg-type]
    assert refused.value.code == "catalog.no_billing_charge"


GRADUATED = dict(EXAMPLE_USAGE_PRICE)


def _preview(records: list[dict[str, object]], **terms: object) -> dict[str, object]:
    from billow.services.preview import PreviewInput, preview

    body = {
        "terms": {
            "cycle": "month",
            "billing_model": "arrears",
            "price": "0.00",
            "currency": "USD",
            "usage": GRADUATED,
            **terms,
        },
        "start": "2026-03-01",
        "as_of": "2026-05-01",
        "usage": records,
    }
    return preview(PreviewInput.model_validate(body))


def test_the_dry_run_rates_each_periods_usage_with_the_engine() -> None:
    answer = _preview([{"units": "1500"}, {"period_start": "2026-04-01", "units": "1000"}])
    usage = [
        (line["period"], line["amount"]["amount"])  # type: ignore[index]
        for invoice in answer["invoices"]  # type: ignore[attr-defined]
        for line in invoice["lines"]
        if line["kind"] == "usage"
    ]
    # Stripe's example: 1,500 units graduated = 140.00; April exactly on the first tier's up_to
    assert usage == [
        ({"start": "2026-03-01", "end": "2026-04-01"}, "140.00"),
        ({"start": "2026-04-01", "end": "2026-05-01"}, "105.00"),
    ]


def test_the_dry_run_refuses_usage_given_twice_for_a_period() -> None:
    with pytest.raises(InvalidInput) as refused:
        _preview([{"units": "1", "events": [{"value": "2"}]}])
    assert (refused.value.code, refused.value.field) == ("usage.invalid_preview", "usage[0]")


def test_the_dry_run_refuses_usage_for_a_day_that_starts_no_period() -> None:
    with pytest.raises(InvalidInput) as refused:
        _preview([{"period_start": "2026-04-05", "units": "15"}])
    assert (refused.value.code, refused.value.field) == ("usage.invalid_preview", "usage[0].period_start")
    assert "its period starts 2026-04-01" in refused.value.message


def test_an_immediate_invoice_is_the_usage_charge_limit_reached_event_once() -> None:
    from datetime import UTC, datetime

    from billow.services.context import Scope
    from billow.services.events import Change, events_of

    rater = FakeRater({D(2024, 1, 5): Decimal(300)})
    sub, _ = _run(_metered(), D(2024, 1, 10), rater)
    rated = rater.rate(sub, sub.services[0], Period(D(2024, 1, 1), D(2024, 1, 11)))
    assert rated is not None
    step = usage_so_far_step(sub, sub.services[0].id, Period(D(2024, 1, 1), D(2024, 2, 1)), rated, D(2024, 1, 10))
    assert step is not None

    def types(old: Subscription, new: Subscription) -> list[str]:
        change = Change(
            Scope("t", "test"), "c1", "pk|sk", "subscription", old, new, 2, datetime(2024, 1, 10, tzinfo=UTC)
        )
        return [e.type for e in events_of(change)]

    assert types(sub, step.subscription) == ["usage.charge_limit_reached"]
    (event,) = events_of(
        Change(
            Scope("t", "test"),
            "c1",
            "pk|sk",
            "subscription",
            sub,
            step.subscription,
            2,
            datetime(2024, 1, 10, tzinfo=UTC),
        )
    )
    assert (event.data["sequence"], event.data["billed"]["amount"], event.data["period_start"]) == (
        1,
        "3.00",
        "2024-01-01",
    )
    # the period's final invoice moves the amount on, not the sequence: no event
    after, _ = _run(step.subscription, D(2024, 2, 1), rater)
    assert types(step.subscription, after) == []


def test_a_no_billing_service_is_orderable_records_usage_and_is_never_invoiced(moto_table: str) -> None:
    from billow.local.stack import add_tenant

    from tests.support import InProcessClient, advance_clock, make_contact

    add_tenant("tenant-nb", "No Billing", "bk_test_nobilling")
    api = InProcessClient("bk_test_nobilling")
    usage = {"meter": "events", "aggregation": "count", "model": "per_unit", "unit_price": "1.00"}
    terms = {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "none", "usage": usage}
    refused = api.post("/products", {"name": "Paid", "terms": [{**terms, "price": "5.00"}]})
    assert refused.status == 422 and refused.body["error"] == "catalog.no_billing_charge", refused.body
    created = api.post("/products", {"name": "Free", "terms": [terms]})
    assert created.status == 201, created.body
    contact = make_contact(api)
    assert api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    item = {"product_id": created.body["id"], "terms_id": created.body["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    record = {
        "id": "e-1",
        "contact_id": contact["id"],
        "meter": "events",
        "quantity": "1",
        "at": "2026-03-01T10:00:00Z",
    }
    assert api.post("/usage", record).body["accepted"] == 1
    advance_clock(api, contact["id"], "2026-05-02T12:00:00+00:00")
    invoices = api.get(f"/invoices?contact_id={contact['id']}")
    assert invoices.status == 200 and invoices.body["items"] == []


def test_event_models_rate_records_in_the_order_they_happened_whatever_order_storage_gives() -> None:
    """2.9 % + 0.30 per event, 0.50 to 10.00 an event, the first 50.00 free: 30 and 45 at 01:00
    and 02:00 use the free amount (25.00 of the 45 charged), then 5 and 1000: 11.525 -> 11.53,
    as `billow rate` says for the same events in that order."""
    from datetime import UTC, datetime

    from billow.domain.pricing import parse_usage_price, rate
    from billow.domain.usage import UsageRecord
    from billow.services.usage.rating import rate_records

    price = parse_usage_price(
        {
            "meter": "payments",
            "aggregation": "sum",
            "model": "percentage",
            "percentage": {"rate": "2.9", "fixed_price": "0.30", "min_per_event": "0.50", "max_per_event": "10.00"},
            "free_amount": "50.00",
        },
        "USD",
    )
    values = ["30", "45", "5", "1000"]
    records = [
        UsageRecord(
            f"{name}",
            "sub",
            "svc",
            "con",
            "payments",
            datetime(2026, 4, 2, hour, tzinfo=UTC),
            date(2026, 4, 2),
            Decimal(value),
            {},
            date(2026, 4, 1),
            datetime(2026, 4, 2, 5, tzinfo=UTC),
        )
        # ids sort against time: storage (by shard, then id) hands them over in another order
        for name, hour, value in zip(["z", "y", "b", "a"], [1, 2, 3, 4], values, strict=True)
    ]
    expected = rate(price, "USD", events=[Decimal(v) for v in values]).total
    assert expected == usd("11.53")
    for order in (records, records[::-1], sorted(records, key=lambda r: r.id)):
        assert rate_records(price, "USD", order, None).total == expected


def test_the_dry_run_takes_events_as_billow_rate_does() -> None:
    fee = {
        "meter": "payments",
        "aggregation": "sum",
        "model": "percentage",
        "percentage": {"rate": "2.9", "fixed_price": "0.30"},
    }
    events = [{"value": "100.00"}, {"value": "20.00"}]
    answer = _preview([{"period_start": "2026-03-01", "events": events}], usage=fee)
    (line,) = [
        line
        for invoice in answer["invoices"]  # type: ignore[attr-defined]
        for line in invoice["lines"]
        if line["kind"] == "usage"
    ]
    assert line["amount"]["amount"] == "4.08"  # 2.90 + 0.30 + 0.58 + 0.30


def test_huge_quantities_are_summed_and_rated_exactly() -> None:
    """Three records of 18 + 12 digits at a 15 + 12 digit unit price: 34 digits of money, exact (the
    default 28-digit context rounded the sum, and the line was off by 1,000.00)."""
    from datetime import UTC, datetime

    from billow.domain.pricing import parse_usage_price, rate
    from billow.domain.usage import UsageRecord, aggregate

    at = datetime(2026, 3, 1, tzinfo=UTC)
    q = Decimal("999999999999999999.999999999999")
    records = [UsageRecord(f"r{i}", "s", "v", "c", "m", at, at.date(), q, {}, at.date(), at) for i in range(3)]
    total = aggregate(Aggregation.SUM, records)
    assert total == Decimal("2999999999999999999.999999999997")
    price = parse_usage_price(
        {"meter": "m", "aggregation": "sum", "model": "per_unit", "unit_price": "999999999999999.999999999999"}, "USD"
    )
    assert rate(price, "USD", units=total).total.amount_str() == "2999999999999999999999999996997000.00"
