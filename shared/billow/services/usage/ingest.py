"""`POST /usage`: usage records submitted by other systems, one or a batch of up to 1,000.

Each record is validated on its own: a refused record never blocks the others, and the answer
names each record's outcome (`accepted`, `duplicate`, `refused` with its error). A record names its
service in exactly one way: `subscription_id` + `service_id`, or `contact_id` + `meter` (the
contact's one billable service on that meter). It belongs to the billing period of that service
containing its day (its instant in the tenant's time zone), and is stored under that period
whatever the time it arrives, so a retry, even days later, finds it: the record id is unique per
service and period, and a record sent again is a `duplicate` whose first values stay (docs/billing.md).

Per service: the subscription is read once (consistently), the records written, each with its own
conditional PutItem, and the subscription read again (consistently). A record accepted into a
period whose usage is already billed (`usage_billed_through`), as seen on either read, gets that
period's late marker: its usage goes on the next usage invoice as a late line. Checking after the
write as well narrows the race with a billing run that moved on in between; marking every record of
a period that has ended closes it (the run reads the markers before the records and clears a marker
only if no record marked it since). A service that bills no more usage periods (ended) has no next
usage invoice: its late usage is billed at once (`_bill_ended`).

Before writing, a record id already stored for the service in another period within 35 days either
side is answered `duplicate` too (`_stored_elsewhere`: a sender that stamps `at` again on a retry);
this read is not atomic with the put (docs/billing.md, "Duplicates").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal, Protocol

from billow.domain.allowances import Counted
from billow.domain.billing import billable_end, usage_pieces
from billow.domain.calendar import Period, local_date, tenant_zone
from billow.domain.contacts import Contact
from billow.domain.errors import DomainError, InvalidInput, NotFound
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service, Subscription
from billow.domain.usage import (
    KEPT_BILLED_PERIODS,
    UsageRecord,
    billed_for,
    parse_properties,
    parse_quantity,
    record_id,
)
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.contacts import ContactTime, contact_time, contact_today
from billow.services.context import Clock, TenantContext
from billow.services.ports import AllowanceStore
from billow.services.usage import allowances, limits
from billow.services.usage.limits import LimitPorts

MAX_BATCH = 1000
"""Records in one `POST /usage`."""
DEDUP_WINDOW = timedelta(days=35)
"""A record id already stored for the service in another period within this many days of the
record's day is a duplicate too (a sender that stamps `at` again on a retry across a period's end)."""
MAX_AHEAD = timedelta(minutes=5)
"""How far past the contact's now a record's instant may be (clock skew of the sender)."""

_DAY = timedelta(days=1)

Status = Literal["accepted", "duplicate", "refused"]


class IngestPorts(LimitPorts, AllowanceStore, Protocol):
    """Submitting usage: the contact's clock, its subscriptions, and the records."""


@dataclass(frozen=True, slots=True)
class RecordInput:
    """One record as the caller sent it (a JSON object): checked by `submit_usage`, record by record."""

    raw: Mapping[str, Any]
    field: str = ""
    """Where it sits in the request (`records[3]`, or "" for a single record): prefixes error fields."""


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    id: str | None
    """The record id as given (None when it was not a string)."""
    status: Status
    service_id: str | None = None
    period: Period | None = None
    late: bool = False
    error: DomainError | None = None
    """Why it was refused (its `code`, `message` and `field`)."""


@dataclass(slots=True)
class _Pending:
    """A record checked so far, waiting for its service's write."""

    index: int
    record: UsageRecord
    period: Period
    late: bool
    copies: list[_Pending] = field(default_factory=list)
    """Later records of the batch with the same id (`_same_record`): answered `duplicate` of this
    one, unless it is refused at its write; then the first of them is written in its place."""


@dataclass(slots=True)
class _ServiceBatch:
    contact_id: str
    subscription_id: str
    service_id: str
    pending: list[_Pending] = field(default_factory=list)


_RECORD_FIELDS = frozenset(
    {"id", "subscription_id", "service_id", "contact_id", "meter", "quantity", "value", "at", "properties"}
)


def submit_usage(
    store: IngestPorts, ctx: TenantContext, clock: Clock, records: Sequence[RecordInput]
) -> list[RecordOutcome]:
    """Every record's outcome, in the order given (see the module's docstring)."""
    if len(records) > MAX_BATCH:
        raise InvalidInput(
            f"a batch holds at most {MAX_BATCH} records; got {len(records)}",
            field="records",
            code="usage.batch_too_large",
        )
    outcomes: list[RecordOutcome | None] = [None] * len(records)
    reader = _Reader(store, ctx, clock)
    batches: dict[tuple[str, str, str], _ServiceBatch] = {}
    seen: dict[tuple[str, str], list[_Pending]] = {}
    for index, given in enumerate(records):
        try:
            pending, subscription, service = reader.check(index, given)
        except DomainError as error:
            outcomes[index] = _refused(given, error)
            continue
        record = pending.record
        firsts = seen.setdefault((record.service_id, record.id), [])
        first = next((f for f in firsts if _same_record(f, pending)), None)
        if first is not None:  # the same record twice in one batch (maybe stamped in another period)
            first.copies.append(pending)
            continue
        firsts.append(pending)
        key = (subscription.contact_id, subscription.id, service.id)
        batches.setdefault(key, _ServiceBatch(*key)).pending.append(pending)
    while batches:
        # A first copy refused at its write (beyond a `refuse` allowance) is not stored: its next
        # copy is written in a round of its own, as if sent alone after it.
        retry: dict[tuple[str, str, str], _ServiceBatch] = {}
        for key, batch in batches.items():
            copies = {p.index: p.copies for p in batch.pending if p.copies}
            for index, outcome in _write_service(store, ctx, clock, reader, batch):
                outcomes[index] = outcome
                later = copies.get(index)
                if not later:
                    continue
                if outcome.status == "refused":
                    later[0].copies = later[1:]
                    retry.setdefault(key, _ServiceBatch(*key)).pending.append(later[0])
                else:
                    for copy in later:
                        outcomes[copy.index] = replace(outcome, status="duplicate")
        batches = retry
    return [o for o in outcomes if o is not None]


def within_window(period: Period, day: date) -> bool:
    """Whether a record id stored in `period` makes a record of `day` with that id a duplicate:
    the period overlaps [day - 35 days, day + 35 days] (`DEDUP_WINDOW`)."""
    return period.start <= day + DEDUP_WINDOW and period.end > day - DEDUP_WINDOW


def _same_record(first: _Pending, later: _Pending) -> bool:
    """Whether `later` is a copy of `first` (same service and id): by the rule a copy stored before
    it would be found by (`_stored_elsewhere`), so one batch and two batches answer alike."""
    return first.period.start == later.period.start or within_window(first.period, later.record.day)


def _refused(given: RecordInput, error: DomainError) -> RecordOutcome:
    if given.field:  # where it sits in the batch: `records[3].quantity`
        name = f"{given.field}.{error.field}" if error.field else given.field
        error = type(error)(error.message, field=name, code=error.code)
    raw_id = given.raw.get("id") if isinstance(given.raw, Mapping) else None
    return RecordOutcome(raw_id if isinstance(raw_id, str) else None, "refused", error=error)


def _outcome(pending: _Pending, status: Status) -> RecordOutcome:
    record = pending.record
    return RecordOutcome(record.id, status, record.service_id, pending.period, pending.late)


class _Reader:
    """What a batch reads once: each contact's time, each subscription (consistently)."""

    def __init__(self, store: IngestPorts, ctx: TenantContext, clock: Clock) -> None:
        self.store, self.ctx, self.clock = store, ctx, clock
        self.zone = tenant_zone(ctx.settings.timezone)
        self._times: dict[str, ContactTime] = {}
        self._subscriptions: dict[str, Subscription | None] = {}
        self._contacts: dict[str, Contact | None] = {}
        self._of_contact: dict[str, list[Subscription]] = {}

    def time_of(self, contact_id: str) -> ContactTime:
        if contact_id not in self._times:
            self._times[contact_id] = contact_time(self.store, self.ctx, contact_id, self.clock)
        return self._times[contact_id]

    def contact(self, contact_id: str) -> Contact | None:
        """The contact (its allowance overrides), read once per batch, when its records are written."""
        if contact_id not in self._contacts:
            self._contacts[contact_id] = self.store.get_contact(self.ctx.scope, contact_id)
        return self._contacts[contact_id]

    def subscription(self, subscription_id: str) -> Subscription | None:
        if subscription_id not in self._subscriptions:
            self._subscriptions[subscription_id] = self.store.get_subscription(self.ctx.scope, subscription_id)
        return self._subscriptions[subscription_id]

    def subscriptions_of(self, contact_id: str) -> list[Subscription]:
        if contact_id not in self._of_contact:
            found = self.store.subscriptions_of(self.ctx.scope, contact_id)
            self._of_contact[contact_id] = found
            for subscription in found:
                self._subscriptions.setdefault(subscription.id, subscription)
        return self._of_contact[contact_id]

    def check(self, index: int, given: RecordInput) -> tuple[_Pending, Subscription, Service]:
        """The record as it will be stored, with its service; a `DomainError` refuses it."""
        raw = given.raw
        if not isinstance(raw, Mapping):
            raise InvalidInput("a usage record is a JSON object", code="usage.invalid_record")
        unknown = sorted(str(k) for k in raw if k not in _RECORD_FIELDS)
        if unknown:
            raise InvalidInput(
                f"unknown field '{unknown[0]}' in a usage record", field=unknown[0], code="usage.unknown_field"
            )
        rid = record_id(raw.get("id"))
        subscription, service = self.service_of(raw)
        meter = service.terms.meter
        if meter is None:
            raise InvalidInput(
                f"service {service.id} has no meter: it takes no usage", field="service_id", code="usage.not_metered"
            )
        if "quantity" in raw and "value" in raw:
            raise InvalidInput("give either quantity or value, not both", field="value", code="usage.invalid_quantity")
        name = "value" if "value" in raw else "quantity"
        quantity = parse_quantity(raw.get(name), field=name)
        properties = parse_properties(raw.get("properties"))
        now = self.time_of(subscription.contact_id).now
        at = _instant(raw.get("at"), now)
        if at > now + MAX_AHEAD:
            raise InvalidInput(
                f"the record's instant {at.isoformat()} is later than the contact's now "
                f"({now.isoformat()}) plus 5 minutes",
                field="at",
                code="usage.in_future",
            )
        day = local_date(at, self.zone)
        if day < service.start_date or (service.end_date is not None and day >= service.end_date):
            ends = "" if service.end_date is None else f", ending {service.end_date.isoformat()}"
            raise InvalidInput(
                f"the record's day {day.isoformat()} is outside service {service.id} "
                f"(starting {service.start_date.isoformat()}{ends})",
                field="at",
                code="usage.outside_service",
            )
        if service.state in ENDED_STATES and day >= (service.state_since or service.start_date):
            raise InvalidInput(
                f"service {service.id} is {service.state.value} since "
                f"{(service.state_since or service.start_date).isoformat()}: it takes no usage of "
                f"{day.isoformat()}",
                field="at",
                code="usage.outside_service",
            )
        period = subscription.schedule.period_containing(day)
        if _billed(service, period.start) and billed_for(service.usage_billed, period.start) is None:
            raise InvalidInput(
                f"the usage of the billing period {period.start.isoformat()} – {period.end.isoformat()} was "  # noqa: RUF001 - a date range
                f"invoiced longer ago than the {KEPT_BILLED_PERIODS} periods kept for late usage",
                field="at",
                code="usage.period_closed",
            )
        record = UsageRecord(
            id=rid,
            subscription_id=subscription.id,
            service_id=service.id,
            contact_id=subscription.contact_id,
            meter=meter,
            at=at,
            day=day,
            quantity=quantity,
            properties=properties,
            period_start=period.start,
            received_at=now,
        )
        return _Pending(index, record, period, _billed(service, period.start)), subscription, service

    def service_of(self, raw: Mapping[str, Any]) -> tuple[Subscription, Service]:
        """The service a record names: by subscription and service id, or by contact and meter."""
        by_service = "subscription_id" in raw or "service_id" in raw
        by_meter = "contact_id" in raw or "meter" in raw
        if by_service == by_meter:
            raise InvalidInput(
                "name the service in exactly one way: subscription_id and service_id, or contact_id and meter",
                field="service_id",
                code="usage.service_unnamed",
            )
        names = ("subscription_id", "service_id") if by_service else ("contact_id", "meter")
        for name in names:
            if not isinstance(raw.get(name), str) or not raw[name]:
                raise InvalidInput(
                    f"{name} is required with {' and '.join(names)}", field=name, code="usage.service_unnamed"
                )
        if by_service:
            subscription = self.subscription(raw["subscription_id"])
            service = (
                None
                if subscription is None
                else next((s for s in subscription.services if s.id == raw["service_id"]), None)
            )
            if subscription is None or service is None:
                raise NotFound(
                    f"no service {raw['service_id']} in subscription {raw['subscription_id']}",
                    field="service_id",
                    code="usage.unknown_service",
                )
            return subscription, service
        contact_id, meter = raw["contact_id"], raw["meter"]
        on_meter = [
            (subscription, service)
            for subscription in self.subscriptions_of(contact_id)
            for service in subscription.services
            if service.terms.meter == meter and service.state is not ServiceState.DRAFT
        ]
        # Its running services (effective, paused, deactivated: usage is billed whatever the state);
        # if it has none, its ended ones (late usage of their days before the end)
        found = [(sub, svc) for sub, svc in on_meter if svc.state not in ENDED_STATES and not svc.expired]
        found = found or on_meter
        if not found:
            raise NotFound(
                f"contact {contact_id} has no started service on meter '{meter}'",
                field="meter",
                code="usage.unknown_service",
            )
        if len(found) > 1:
            ids = ", ".join(f"{sub.id}/{svc.id}" for sub, svc in found)
            raise InvalidInput(
                f"contact {contact_id} has {len(found)} billable services on meter '{meter}' ({ids}): name one by "
                "subscription_id and service_id",
                field="meter",
                code="usage.ambiguous_service",
            )
        return found[0]


EARLIEST_YEAR, LATEST_YEAR = 1970, 9998
ENDED_STATES = frozenset({ServiceState.CANCELLED, ServiceState.REGRETTED})
"""A service in these states takes no usage of the days from the day it entered them (a cancelled
service with no end date: cancelled at once)."""


def _instant(value: object, now: datetime) -> datetime:
    """The record's instant: ISO 8601 with an offset, or the contact's now when not given."""
    if value is None:
        return now
    parsed: datetime | None = None
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput(
            'at is an ISO 8601 instant with a UTC offset, e.g. "2026-03-01T12:00:00Z"',
            field="at",
            code="usage.invalid_at",
        )
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:  # any zone's day of it is a date (no overflow)
        raise InvalidInput(
            f"at is an instant of the years {EARLIEST_YEAR} to {LATEST_YEAR}", field="at", code="usage.invalid_at"
        )
    return parsed


def _billed(service: Service, period_start: date) -> bool:
    """Whether the usage of the period starting on `period_start` is already invoiced."""
    return service.usage_billed_through is not None and period_start < service.usage_billed_through


def _write_service(
    store: IngestPorts, ctx: TenantContext, clock: Clock, reader: _Reader, batch: _ServiceBatch
) -> list[tuple[int, RecordOutcome]]:
    """Write one service's records, then re-read its subscription for the late check."""
    scope = ctx.scope
    subscription = reader.subscription(batch.subscription_id)
    assert subscription is not None  # checked when its records were
    service = next(s for s in subscription.services if s.id == batch.service_id)
    contact = reader.contact(batch.contact_id)
    elsewhere = _stored_elsewhere(store, ctx, subscription, service, batch.pending)
    fresh = [p for p in batch.pending if p.index not in elsewhere]
    fresh_written = _write(store, ctx, contact, service, [(p.record, p.period) for p in fresh])
    by_index = {p.index: c for p, c in zip(fresh, fresh_written, strict=True)}
    written: list[Counted] = []
    for number, pending in enumerate(batch.pending):
        start = elsewhere.get(pending.index)
        if start is None:
            written.append(by_index[pending.index])
            continue
        # answered as the record stored in its first period (marked there if that one is late)
        period = subscription.schedule.period_containing(start)
        record = replace(pending.record, period_start=start)
        batch.pending[number] = _Pending(pending.index, record, period, _billed(service, start))
        written.append(Counted("duplicate"))
    after = store.load_subscription(scope, batch.contact_id, batch.subscription_id)
    # The contact's day read again, after the write: a run billing a period runs on or after the
    # day it ends, so a record of a period that has ended by now may have been missed by it.
    today_after = contact_time(store, ctx, batch.contact_id, clock).today
    service_after = None if after is None else next((s for s in after.services if s.id == service.id), None)
    late_periods: set[date] = set()
    results: list[tuple[int, RecordOutcome]] = []
    accepted: list[UsageRecord] = []
    duplicates: list[UsageRecord] = []  # a retry: its first write may have stopped before counting
    for pending, counted in zip(batch.pending, written, strict=True):
        if counted.refusal is not None:  # beyond a `refuse` allowance: nothing stored or counted
            refused = RecordOutcome(
                pending.record.id, "refused", service.id, pending.period, False, counted.refusal.error()
            )
            results.append((pending.index, refused))
            continue
        if service_after is not None and _billed(service_after, pending.period.start):
            pending.late = True
        if pending.late or pending.period.end <= today_after:
            # A duplicate too: its first write may have stopped before its marker (a marker too
            # many only makes billing find nothing more to bill for that period). A record of a
            # period that has ended is marked even when that period reads unbilled: the billing
            # run may be rating it right now, having read its records before this one was written
            # (billing reads the markers first and clears them only if unchanged; docs/billing.md).
            late_periods.add(pending.period.start)
        if counted.status == "accepted":
            accepted.append(pending.record)
        elif counted.status == "duplicate":
            duplicates.append(pending.record)
        results.append((pending.index, _outcome(pending, counted.status)))
    for period_start in sorted(late_periods):
        store.put_late_marker(scope, batch.contact_id, service.id, period_start)
    if late_periods and service_after is not None and after is not None:
        _bill_ended(store, ctx, clock, after, service_after)
    if accepted or duplicates:
        limits.after_accept(store, ctx, clock, after or subscription, service_after or service, accepted, duplicates)
    return results


def _stored_elsewhere(
    store: IngestPorts, ctx: TenantContext, subscription: Subscription, service: Service, pending: list[_Pending]
) -> dict[int, date]:
    """The records whose id is already stored for the service in another of its billing periods
    overlapping [day - 35 days, day + 35 days] (up to the contact's tomorrow: no later period holds
    records yet), by index, with the earliest such period's start. One BatchGetItem (100 keys a
    request, keys only) over every record's same-shard keys in those periods: ~2 keys a record for a
    monthly cycle, up to ~10 for a weekly one. Two copies of one id stamped in different periods and
    sent at the same moment by separate processes can both be stored: no condition spans two items."""
    schedule = subscription.schedule
    keys: dict[tuple[date, str], list[int]] = {}
    for p in pending:
        day, tomorrow = p.record.day, local_date(p.record.received_at, tenant_zone(ctx.settings.timezone)) + _DAY
        begin, last = max(day - DEDUP_WINDOW, service.start_date), min(day + DEDUP_WINDOW, tomorrow)
        while begin <= last:
            period = schedule.period_containing(begin)
            if period.start != p.period.start:
                keys.setdefault((period.start, p.record.id), []).append(p.index)
            begin = period.end
    if not keys:
        return {}
    found: dict[int, date] = {}
    for start, rid in sorted(store.stored_record_ids(ctx.scope, subscription.contact_id, service.id, keys)):
        for index in keys[(start, rid)]:
            found.setdefault(index, start)  # sorted: the earliest period first
    return found


def _bill_ended(
    store: IngestPorts, ctx: TenantContext, clock: Clock, subscription: Subscription, service: Service
) -> None:
    """Late usage of a service that has ended: no next usage invoice will take it, so it is billed
    now, by the billing run's own steps as of the contact's today (a late line dated the service's
    end; `billow.domain.billing`), each written on the subscription's version and clearing the
    markers it read only if unchanged. Also when the service's last usage period is due but not
    billed yet: the run may be billing it right now, having read the markers before this batch's,
    so billing it here too makes sure the marker is seen (two steps from one version: one write
    wins, the other reloads and finds it billed)."""
    end, _ = billable_end(service, subscription)
    if end is None or not (service.state in ENDED_STATES or service.expired):
        return  # a next usage invoice will bill it (a paused service's, once resumed)
    today = contact_today(store, ctx, subscription.contact_id, clock)
    left = list(usage_pieces(service, subscription, end))
    if any(piece.billing_date > today for piece in left):
        return  # its last usage period is still to come: that invoice bills the late usage
    bill_subscription(store, ctx, subscription.contact_id, subscription.id, today, InvoiceNumbers(store))


def _write(
    store: IngestPorts,
    ctx: TenantContext,
    contact: Contact | None,
    service: Service,
    records: list[tuple[UsageRecord, Period]],
) -> list[Counted]:
    """THE place a service's records are written (each with its billing period): each with its own
    conditional put (accepted, or duplicate). A service whose allowance (the contact's override for
    its meter, else its terms') refuses usage beyond it writes through
    `billow.services.usage.allowances.write` instead (record + counter in one transaction, in order)."""
    terms_allowance = None if service.terms.usage is None else service.terms.usage.allowance
    allowance = allowances.effective(contact, service.terms.meter, terms_allowance)
    if allowance is not None and allowances.refuses(allowance):
        return allowances.write(store, ctx.scope, allowance, records, allowances.basis(contact, service))
    written = store.put_usage_records(ctx.scope, [record for record, _ in records])
    return [Counted("accepted" if new else "duplicate") for new in written]
