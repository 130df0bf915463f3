"""Events derived from stream records, the publisher's batch failures, and EventBridge pattern
matching (docs/events.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from billow.domain.calendar import Period
from billow.domain.invoices import Invoice, InvoiceStatus
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.gateways import events as gateway
from billow.local.events import matches
from billow.services.context import Scope
from billow.services.events import DERIVERS, EVENT_TYPES, Change, events_of
from billow.storage import codec
from billow.storage.stream import change_of

PK = "T#acme#corp#TEST#C#con_1"


def invoice(status: InvoiceStatus = InvoiceStatus.OPEN, paid: int = 0) -> Invoice:
    line = LineDraft(
        "recurring", "Pro", "svc_1", "prod_1", 1, Money(3100, "USD"), Fraction(1), Money(3100, "USD"), None
    )
    return Invoice(
        "inv_1", "INV-1", "con_1", "sub_1", "USD", date(2024, 1, 10), date(2024, 1, 10), date(2024, 1, 24),
        Period(date(2024, 1, 10), date(2024, 2, 10)), (line,), Money(paid, "USD"), status,
    )  # fmt: skip


def image(item: Invoice, version: int, **extra: Any) -> dict[str, Any]:
    return {
        "PK": {"S": PK}, "SK": {"S": f"INV#{item.id}"}, "type": {"S": "invoice"}, "version": {"N": str(version)},
        "data": {"S": json.dumps(codec.invoice_out(item))}, **extra,
    }  # fmt: skip


def record(new: dict[str, Any] | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ApproximateCreationDateTime": 1_700_000_000, "SequenceNumber": "1"}
    if new is not None:
        body["NewImage"] = new
    if old is not None:
        body["OldImage"] = old
    return {"eventName": "MODIFY" if old and new else "INSERT" if new else "REMOVE", "dynamodb": body}


def test_a_new_invoice_is_issued_once_with_tenant_mode_contact_and_a_stable_id() -> None:
    change = change_of(record(image(invoice(), 1)))
    assert change is not None and change.scope == Scope("acme#corp", "test") and change.contact_id == "con_1"
    [event] = events_of(change)
    assert event.type == "invoice.issued" and event.detail_type == "billow.invoice.issued"
    detail = event.detail()
    assert (detail["tenant_id"], detail["mode"], detail["contact_id"], detail["version"]) == (
        "acme#corp",
        "test",
        "con_1",
        1,
    )
    assert detail["data"]["total"] == {"amount": "31.00", "currency": "USD"}
    assert detail["time"] == datetime.fromtimestamp(1_700_000_000, UTC).isoformat()  # committed then
    assert [e.id for e in events_of(change_of(record(image(invoice(), 1))))] == [event.id]  # type: ignore[arg-type]
    other = replace(invoice(), id="inv_2")
    other_record = record({**image(other, 1), "SK": {"S": "INV#inv_2"}})
    assert [e.id for e in events_of(change_of(other_record))] != [event.id]  # type: ignore[arg-type]


def test_a_paid_invoice_is_paid_once_and_a_clock_time_stamp_is_the_events_time() -> None:
    stamp = {"clock_time": {"S": "2024-02-10T09:30:00+00:00"}}
    paid = change_of(record(image(invoice(InvoiceStatus.PAID, 3100), 2, **stamp), image(invoice(), 1)))
    assert paid is not None
    [event] = events_of(paid)
    assert event.type == "invoice.paid" and event.time == datetime(2024, 2, 10, 9, 30, tzinfo=UTC)
    same = change_of(record(image(invoice(), 3), image(invoice(), 2)))  # a write that changed nothing
    assert same is not None and events_of(same) == []


def test_removals_and_items_outside_contact_partitions_publish_nothing() -> None:
    assert change_of(record(None, image(invoice(), 1))) is not None
    assert events_of(change_of(record(None, image(invoice(), 1)))) == []  # type: ignore[arg-type]
    settings = {"PK": {"S": "T#acme"}, "SK": {"S": "SETTINGS"}, "type": {"S": "settings"}, "data": {"S": "{}"}}
    assert change_of(record(settings)) is None


def test_every_event_type_is_documented() -> None:
    assert {"invoice", "payment", "action", "subscription"} <= set(DERIVERS)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    for event_type in EVENT_TYPES:
        assert f"`billow.{event_type}`" in doc


class FlakyBus:
    def __init__(self, refusals: int) -> None:
        self.refusals, self.put_calls = refusals, []  # type: ignore[var-annotated]

    def put(self, entries: Any) -> list[Any]:
        self.put_calls.append(list(entries))
        if self.refusals:
            self.refusals -= 1
            return list(entries[:1])
        return []


def _events(n: int) -> list[Any]:
    change = Change(Scope("t", "live"), "c", "pk|sk", "x", None, object(), 1, datetime(2024, 1, 1, tzinfo=UTC))
    from billow.services.events import Event

    return [Event(f"evt_{i}", "invoice.issued", change.scope, "c", change.time, {}, 1) for i in range(n)]


def test_publishing_batches_by_ten_and_puts_refused_entries_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.time, "sleep", lambda _s: None)
    bus = FlakyBus(refusals=2)
    gateway.publish(bus, _events(23), "billow-test")
    sizes = [len(c) for c in bus.put_calls]
    assert sizes == [10, 1, 1, 10, 3]  # the refused entry alone, twice, then on
    with pytest.raises(gateway.PublishFailed):
        gateway.publish(FlakyBus(refusals=99), _events(1), "billow-test")


def test_the_publisher_reports_the_failed_record_and_every_later_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import events_publisher.handler as publisher
    from billow.local.lambda_runtime import invoke

    def put(entries: Any) -> list[Any]:
        return [e for e in entries if json.loads(e["Detail"])["data"]["invoice_id"] == "inv_2"]

    monkeypatch.setattr(publisher.bus, "put", put)
    monkeypatch.setattr(gateway.time, "sleep", lambda _s: None)
    records = []
    for n in (1, 2, 3):
        item = image(invoice(), 1)
        item["SK"] = {"S": f"INV#inv_{n}"}
        item["data"] = {"S": json.dumps({**codec.invoice_out(invoice()), "id": f"inv_{n}"})}
        rec = record(item)
        rec["dynamodb"]["SequenceNumber"] = str(n)
        rec["eventSourceARN"] = "arn:aws:dynamodb:us-east-1:1:table/t/stream/s"
        records.append(rec)
    answer = invoke("events_publisher.handler.lambda_handler", {"Records": records})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}


@pytest.mark.parametrize(
    ("pattern", "event", "matched"),
    [
        ({"source": ["billow"]}, {"source": "billow"}, True),
        ({"source": ["billow"]}, {"source": "other"}, False),
        ({"detail-type": [{"prefix": "billow.invoice."}]}, {"detail-type": "billow.invoice.paid"}, True),
        ({"detail-type": [{"prefix": "billow.invoice."}]}, {"detail-type": "billow.payment.received"}, False),
        ({"detail": {"mode": [{"anything-but": "test"}]}}, {"detail": {"mode": "live"}}, True),
        ({"detail": {"mode": [{"anything-but": ["test"]}]}}, {"detail": {"mode": "test"}}, False),
        ({"detail": {"rule": [{"exists": False}]}}, {"detail": {}}, True),
        ({"detail": {"rule": [{"exists": True}]}}, {"detail": {}}, False),
        ({"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"n": 5}}, True),
        ({"detail": {"n": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"n": 6}}, False),
        ({"detail": {"t": [{"equals-ignore-case": "PAID"}]}}, {"detail": {"t": "paid"}}, True),
        ({"detail": {"t": [{"suffix": ".paid"}]}}, {"detail": {"t": "invoice.paid"}}, True),
        ({"detail": {"t": [{"wildcard": "invoice.*"}]}}, {"detail": {"t": "invoice.paid"}}, True),
        ({"resources": ["a"]}, {"resources": ["b", "a"]}, True),
        ({"detail": {"x": [None]}}, {"detail": {"x": None}}, True),
        ({"detail": {"mode": ["live"]}}, {"detail": "live"}, False),
    ],
)
def test_event_patterns_match_as_eventbridge_does(
    pattern: dict[str, Any], event: dict[str, Any], matched: bool
) -> None:
    assert matches(pattern, event) is matched


def test_an_unknown_pattern_operator_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="not supported"):
        matches({"source": [{"cidr": "10.0.0.0/8"}]}, {"source": "10.0.0.1"})


def test_receivables_changes_are_their_events_once() -> None:
    """Overdue and write-off are status events; a draft is drafted, then issued when finalised; a
    credit application is applied once and reversed once; a refund is refunded once."""
    from dataclasses import replace

    from billow.domain.invoices import PaymentMethod
    from billow.domain.receivables import CreditApplication, Refund

    def types(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
        change = change_of(record(new, old))
        assert change is not None
        return [e.type for e in events_of(change)]

    opened = invoice()
    overdue = replace(opened, status=InvoiceStatus.OVERDUE, status_on=date(2024, 1, 25))
    assert types(image(overdue, 2), image(opened, 1)) == ["invoice.overdue"]
    written_off = replace(overdue, status=InvoiceStatus.UNCOLLECTIBLE)
    assert types(image(written_off, 3), image(overdue, 2)) == ["invoice.uncollectible"]
    draft = replace(opened, status=InvoiceStatus.DRAFT, number="")
    assert types(image(draft, 1)) == ["invoice.drafted"]
    assert types(image(opened, 2), image(draft, 1)) == ["invoice.issued"]
    assert types(image(replace(draft, status=InvoiceStatus.VOID), 2), image(draft, 1)) == ["invoice.voided"]

    now = datetime(2024, 1, 12, tzinfo=UTC)
    applied = CreditApplication("cap_1", "inv_2", "inv_1", Money(500, "USD"), date(2024, 1, 12), now)
    reversed_ = replace(applied, reversed_on=date(2024, 1, 20))

    def item(kind: str, sk: str, body: dict[str, Any], version: int) -> dict[str, Any]:
        return {
            "PK": {"S": PK}, "SK": {"S": sk}, "type": {"S": kind}, "version": {"N": str(version)},
            "data": {"S": json.dumps(body)},
        }  # fmt: skip

    app_sk = "CRAPP#inv_2#cap_1"
    new_application = item("credit_application", app_sk, codec.application_out(applied), 1)
    assert types(new_application) == ["credit_note.applied"]
    again = item("credit_application", app_sk, codec.application_out(reversed_), 2)
    assert types(again, new_application) == ["credit_note.application_reversed"]
    refund = Refund("ref_1", "inv_2", Money(500, "USD"), PaymentMethod.BANK_TRANSFER, "R-1", date(2024, 1, 12), now)
    assert types(item("refund", "REFUND#inv_2#ref_1", codec.refund_out(refund), 1)) == ["credit_note.refunded"]


def test_events_of_one_change_keep_their_order_when_the_bus_refuses_the_first_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An invoice written already paid is issued, then paid. The bus refuses the first entry once:
    # it lands after the second, and (sequence, position) puts them back in order.
    monkeypatch.setattr(gateway.time, "sleep", lambda _s: None)
    change = change_of(record(image(invoice(InvoiceStatus.PAID, 3100), 1)))
    assert change is not None
    derived = events_of(change)
    assert [e.type for e in derived] == ["invoice.issued", "invoice.paid"]
    bus = FlakyBus(refusals=1)
    delivered: list[dict[str, Any]] = []
    put = bus.put

    def accept(entries: Any) -> list[Any]:
        refused = put(entries)
        delivered.extend(json.loads(e["Detail"]) for e in entries if e not in refused)
        return refused

    monkeypatch.setattr(bus, "put", accept)
    gateway.publish(bus, derived, "billow-test")
    assert [d["type"] for d in delivered] == ["invoice.paid", "invoice.issued"]
    ordered = sorted(delivered, key=lambda d: (d["sequence"], d["position"]))
    assert [d["type"] for d in ordered] == ["invoice.issued", "invoice.paid"]
