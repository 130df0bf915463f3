"""payment_method.saved / payment_method.removed, derived from the stream record of a saved method."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime

from billow.domain.payment_methods import SavedPaymentMethod
from billow.services.events import events_of
from billow.storage import codec
from billow.storage.stream import change_of

SAVED = SavedPaymentMethod(
    "pm_1", "con_1", "stripe", "cus_1", "seti_1", "card", "visa", "4242", 12, 2034, datetime(2026, 1, 5, tzinfo=UTC)
)


def _image(method: SavedPaymentMethod, version: int) -> dict[str, dict[str, str]]:
    return {
        "PK": {"S": "T#acme#TEST#C#con_1"},
        "SK": {"S": "PM#pm_1"},
        "type": {"S": "payment_method"},
        "version": {"N": str(version)},
        "data": {"S": json.dumps(codec.payment_method_out(method))},
    }


def _record(old: SavedPaymentMethod | None, new: SavedPaymentMethod, version: int) -> dict[str, object]:
    stream: dict[str, object] = {"NewImage": _image(new, version), "ApproximateCreationDateTime": 1767600000}
    if old is not None:
        stream["OldImage"] = _image(old, version - 1)
    return {"eventName": "MODIFY" if old else "INSERT", "dynamodb": stream}


def test_saving_then_removing_a_method_are_two_events_each_once() -> None:
    saved = change_of(_record(None, SAVED, 1))
    assert saved is not None
    [event] = events_of(saved)
    assert event.type == "payment_method.saved" and event.contact_id == "con_1"
    assert event.data == {
        "payment_method_id": "pm_1",
        "rail": "stripe",
        "kind": "card",
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2034,
    }
    removed_method = replace(SAVED, removed_at=datetime(2026, 2, 1, tzinfo=UTC))
    removed = change_of(_record(SAVED, removed_method, 2))
    assert removed is not None
    assert [e.type for e in events_of(removed)] == ["payment_method.removed"]
    assert events_of(removed)[0].id == events_of(change_of(_record(SAVED, removed_method, 2)))[0].id  # type: ignore[arg-type]


def test_a_method_announced_expiring_is_one_event_once() -> None:
    announced = replace(SAVED, expiring_announced_on=date(2034, 11, 1))
    change = change_of(_record(SAVED, announced, 2))
    assert change is not None
    [event] = events_of(change)
    assert (event.type, event.data["payment_method_id"], event.data["expires_in"]) == (
        "payment_method.expiring",
        "pm_1",
        "2034-12",
    )
    assert events_of(change_of(_record(SAVED, announced, 2)))[0].id == event.id  # type: ignore[arg-type]
    later = replace(announced, removed_at=datetime(2034, 11, 5, tzinfo=UTC))
    assert [e.type for e in events_of(change_of(_record(announced, later, 3)))] == ["payment_method.removed"]  # type: ignore[arg-type]
