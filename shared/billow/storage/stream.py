"""The table's stream records (NEW_AND_OLD_IMAGES) as `billow.services.events.Change`s.

A record is what Lambda hands an event source mapping of a DynamoDB stream (and what the local
stream poller builds the same way): `eventName`, and under `dynamodb` the item's images in DynamoDB
JSON and `ApproximateCreationDateTime` (epoch seconds). Only items of a contact's partition
(`T#<tenant>#<MODE>#C#<contact>`) of a kind in `DECODERS` become changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from billow.services.context import Scope
from billow.services.events import Change
from billow.storage import codec, credits
from billow.storage.table import CLOCK_TIME

Image = dict[str, dict[str, Any]]

DECODERS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "invoice": codec.invoice_in,
    "payment": codec.payment_in,
    "credit_application": codec.application_in,
    "refund": codec.refund_in,
    "action": lambda body, _version: codec.action_in(body),
    "subscription": codec.subscription_in,
    "payment_attempt": codec.attempt_in,
    "payment_method": codec.payment_method_in,
    "contact": codec.contact_in,
    "dunning_case": lambda body, version: codec.case_in(body["case"], version),  # its flow fields left out
    "credit_entry": lambda body, _version: credits.entry_in(body),
}
"""Item kind -> its domain object from (body, version): the kinds events are derived from."""

EVENT_KINDS = tuple(sorted(DECODERS))
"""The item kinds whose stream records can become events: the stream's event source mapping lets
only these reach the publisher (usage records, counters, claims and markers never invoke it)."""


def contact_of(pk: str) -> tuple[Scope, str] | None:
    """The scope and contact of a contact partition key (read from the right: a tenant id may
    hold '#'); None for any other partition."""
    if not pk.startswith("T#") or "#C#" not in pk:
        return None
    owner, contact_id = pk[2:].rsplit("#C#", 1)
    contact_id = contact_id.split("#", 1)[0]  # a contact's own partitions: its ledger `#L`
    tenant_id, _, mode = owner.rpartition("#")
    if mode not in ("LIVE", "TEST") or not tenant_id or not contact_id:
        return None
    return Scope(tenant_id, mode.lower()), contact_id


def _decoded(image: Image | None, kind: str) -> tuple[Any, int]:
    if not image or "data" not in image:
        return None, 0
    version = int(image.get("version", {}).get("N", "0"))
    return DECODERS[kind](json.loads(image["data"]["S"]), version), version


def change_of(record: dict[str, Any]) -> Change | None:
    """The change a stream record reports, or None when no event can come of it."""
    stream = record.get("dynamodb") or {}
    new_image: Image | None = stream.get("NewImage")
    old_image: Image | None = stream.get("OldImage")
    image = new_image or old_image or {}
    kind = image.get("type", {}).get("S", "")
    owner = contact_of(image.get("PK", {}).get("S", ""))
    if kind not in DECODERS or owner is None:
        return None
    old, old_version = _decoded(old_image, kind)
    new, new_version = _decoded(new_image, kind)
    stamped = (new_image or {}).get(CLOCK_TIME, {}).get("S")
    time = (
        datetime.fromisoformat(stamped)
        if stamped
        else datetime.fromtimestamp(float(stream["ApproximateCreationDateTime"]), UTC)
    )
    return Change(
        scope=owner[0],
        contact_id=owner[1],
        key=f"{image['PK']['S']}|{image['SK']['S']}",
        kind=kind,
        old=old,
        new=new,
        version=new_version if new is not None else old_version,
        time=time,
    )
