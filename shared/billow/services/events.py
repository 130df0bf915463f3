"""Events out: what a committed change of the table means to the world outside Billow.

The table's stream is the outbox (docs/events.md): every committed write arrives as a record with
the item before and after, decoded by `billow.storage.stream` into a `Change` of domain objects.
`events_of` turns a change into events, purely, by the deriver registered for the item's kind:
adding an event is one function here (or one more line in an existing one), nothing else.

Every event's id is derived from the item's key, the event type and what identifies the change:
by default the version the write gave the item; for a subscription, whose version also moves on
with writes that change nothing in it (a test clock's move), the transition itself (the service,
its states before and after, since when). A stream record delivered twice, or a change reached
again after a crash and a rerun, yields the same id, so consumers de-duplicate on `id`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billow.domain.actions import Action, ActionStatus
from billow.domain.collection import AttemptStatus, NotCollectable, PaymentAttempt
from billow.domain.contacts import Contact
from billow.domain.credits import EntryKind, LedgerEntry, is_top_up_grant
from billow.domain.dunning import DunningCase, Step, StepKind
from billow.domain.entitlements import entitlements, grantors_of
from billow.domain.invoices import Invoice, InvoiceKind, InvoiceStatus, Payment
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.pricing import allowance_json
from billow.domain.receivables import CreditApplication, Refund, RefundStatus
from billow.domain.subscriptions import Service, Subscription
from billow.domain.usage import billed_for
from billow.services.context import Scope
from billow.services.views import credit_parts, day, dunning_case, dunning_step, money, payment_attempt, period

Json = dict[str, Any]

SOURCE = "billow"
"""The `source` of every event Billow puts on its bus."""
SCHEMA_VERSION = 1
"""`detail.version`: raised only for a change a consumer could trip over (a field removed or its
meaning changed); new fields and new event types keep it (docs/events.md, versioning)."""


class NotABillowEvent(ValueError):
    pass


def billow_detail(
    envelope: Mapping[str, Any],
    what: str,
    *,
    of_type: str | tuple[str, ...] | None = None,
    naming: str = "invoice_id",
) -> Json:
    """The `detail` of a Billow event of this schema version as EventBridge delivers it (what a
    consumer's queue message holds) — of type `of_type` (or one of them) and naming its `naming`
    (its invoice, by default) when given (a consumer's rules route it only those); `NotABillowEvent`
    naming `what` (the message) otherwise."""
    detail = envelope.get("detail") or {}
    if envelope.get("source") != SOURCE or detail.get("version") != SCHEMA_VERSION or not detail.get("id"):
        raise NotABillowEvent(f"{what} is not a Billow event of version {SCHEMA_VERSION}")
    types = (of_type,) if isinstance(of_type, str) else of_type
    if types is not None and (detail.get("type") not in types or not (detail.get("data") or {}).get(naming)):
        raise NotABillowEvent(f"{what} is not {of_type} naming its {naming} (its rule routes only that)")
    return dict(detail)


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write of one item, as the stream reported it."""

    scope: Scope
    contact_id: str
    key: str  # "<PK>|<SK>": with `version`, names the write
    kind: str  # the item's `type` (invoice, payment, action, subscription, ...)
    old: Any  # the domain object before (None: the write created it)
    new: Any  # after (None: the item was removed)
    version: int  # the item's version after the write (before it, for a removal)
    time: datetime
    """The business time of the change: the contact's test-clock time when the write happened on
    one, else when the write was committed."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str  # "invoice.issued"
    scope: Scope
    contact_id: str
    time: datetime
    data: Json
    sequence: int
    """The changed item's version: orders the events of one entity (docs/events.md, ordering)."""
    position: int = 0
    """Its place among the events of one change (an invoice created paid: issued 0, paid 1)."""

    @property
    def detail_type(self) -> str:
        return f"{SOURCE}.{self.type}"

    def detail(self) -> Json:
        return {
            "id": self.id,
            "type": self.type,
            "version": SCHEMA_VERSION,
            "tenant_id": self.scope.tenant_id,
            "mode": self.scope.mode,
            "contact_id": self.contact_id,
            "time": self.time.isoformat(),
            "sequence": self.sequence,
            "position": self.position,
            "data": self.data,
        }


Derived = tuple[str, str | None, Json]
"""(event type, what identifies the change within the item (None: the item's version), data)."""
Deriver = Callable[[Change], Iterable[Derived]]
DERIVERS: dict[str, Deriver] = {}
"""Item kind -> the function deriving its events: the one place to add an event."""


def derives(kind: str) -> Callable[[Deriver], Deriver]:
    def register(deriver: Deriver) -> Deriver:
        DERIVERS[kind] = deriver
        return deriver

    return register


def event_id(change: Change, event_type: str, identity: str | None) -> str:
    which = f"v{change.version}" if identity is None else identity
    digest = hashlib.sha256("\x00".join((change.key, event_type, which)).encode())
    return "evt_" + digest.hexdigest()[:32]


def events_of(change: Change) -> list[Event]:
    """The events a committed change means (none for most: a version bump, a claim, a removal)."""
    deriver = DERIVERS.get(change.kind)
    if deriver is None or change.new is None:
        return []
    return [
        Event(
            event_id(change, kind, identity),
            kind,
            change.scope,
            change.contact_id,
            change.time,
            data,
            change.version,
            position,
        )
        for position, (kind, identity, data) in enumerate(deriver(change))
    ]


# -- invoices and credit notes ---------------------------------------------------------------------
def invoice_data(invoice: Invoice) -> Json:
    return {
        "invoice_id": invoice.id,
        "number": invoice.number,
        "kind": invoice.kind.value,
        "subscription_id": invoice.subscription_id,
        "status": invoice.status.value,
        "total": money(invoice.total),
        "amount_paid": money(invoice.amount_paid),
        "amount_credited": money(invoice.credited),
        "amount_due": money(invoice.amount_due),
        "issue_date": day(invoice.issue_date),
        "due_date": day(invoice.due_date),
        "period": period(invoice.period),
        "status_on": day(invoice.status_on),
        "status_reason": invoice.status_reason,
        **({"credit_remaining": money(invoice.credit_remaining)} if invoice.kind is InvoiceKind.CREDIT_NOTE else {}),
    }


INVOICE_STATUS_EVENTS = {
    InvoiceStatus.PAID: "invoice.paid",
    InvoiceStatus.OVERDUE: "invoice.overdue",
    InvoiceStatus.VOID: "invoice.voided",
    InvoiceStatus.UNCOLLECTIBLE: "invoice.uncollectible",
}
"""An invoice's status moving to one of these is that event."""


@derives("invoice")
def _invoice(change: Change) -> Iterator[Derived]:
    old: Invoice | None = change.old
    new: Invoice = change.new
    if old is None and new.status is InvoiceStatus.DRAFT:
        yield "invoice.drafted", None, invoice_data(new)
        return
    issued = old is None or (old.status is InvoiceStatus.DRAFT and new.status is not InvoiceStatus.DRAFT)
    if issued and new.status is not InvoiceStatus.VOID:  # created final, or a draft finalised (not voided)
        kind = "credit_note.issued" if new.kind is InvoiceKind.CREDIT_NOTE else "invoice.issued"
        yield kind, None, invoice_data(new)
        if new.kind is InvoiceKind.INVOICE and new.status is InvoiceStatus.PAID:  # nothing (left) to collect
            yield "invoice.paid", None, invoice_data(new)
        return
    if (old is None or old.status is not new.status) and new.status in INVOICE_STATUS_EVENTS:
        yield INVOICE_STATUS_EVENTS[new.status], None, invoice_data(new)
        if new.top_up is not None and new.status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
            yield "credits.top_up_failed", None, top_up_data(new)


def top_up_data(invoice: Invoice) -> Json:
    assert invoice.top_up is not None
    return {
        "top_up_id": invoice.id,
        "invoice_id": invoice.id,
        "pack": invoice.top_up.pack_id,
        "credits": invoice.top_up.credits,
        "amount": money(invoice.total),
        "request_id": invoice.top_up.request_id,
        "auto": invoice.top_up.auto,
        "reason": invoice.status_reason,
    }


# -- credit notes applied and refunded ------------------------------------------------------------
@derives("credit_application")
def _credit_application(change: Change) -> Iterator[Derived]:
    old: CreditApplication | None = change.old
    new: CreditApplication = change.new
    data = {
        "application_id": new.id,
        "credit_note_id": new.credit_note_id,
        "invoice_id": new.invoice_id,
        "amount": money(new.amount),
        "applied_on": day(new.applied_on),
        "reversed_on": day(new.reversed_on),
    }
    if old is None:
        yield "credit_note.applied", None, data
    if new.reversed_on is not None and (old is None or old.reversed_on is None):
        yield "credit_note.application_reversed", None, data


@derives("refund")
def _refund(change: Change) -> Iterator[Derived]:
    """A refund once it succeeded: a manual one when recorded, a card refund when the rail's
    outcome is recorded (pending, or failed, it returned nothing). A card refund is also the
    payment's: `payment.refunded`. A refund of a payment's unapplied money is only the payment's
    (`unapplied: true`, `credit_note_id` null)."""
    old: Refund | None = change.old
    refund: Refund = change.new
    if refund.status is not RefundStatus.SUCCEEDED or (old is not None and old.status is RefundStatus.SUCCEEDED):
        return
    data = {
        "refund_id": refund.id,
        "credit_note_id": None if refund.unapplied else refund.credit_note_id,
        "amount": money(refund.amount),
        "method": refund.method.value,
        "reference": refund.reference,
        "refunded_on": day(refund.refunded_on),
    }
    if not refund.unapplied:
        yield "credit_note.refunded", None, data
    if refund.payment_id is not None:
        paid = {"payment_id": refund.payment_id, "invoice_id": refund.invoice_id, "rail_ref": refund.rail_ref}
        yield "payment.refunded", None, {**data, **paid, "unapplied": refund.unapplied}


# -- payments -------------------------------------------------------------------------------------
@derives("payment")
def _payment(change: Change) -> Iterator[Derived]:
    if change.old is None:
        payment: Payment = change.new
        yield (
            "payment.received",
            None,
            {
                "payment_id": payment.id,
                "invoice_id": payment.invoice_id,
                "amount": money(payment.amount),
                "method": payment.method.value,
                "reference": payment.reference,
                "received_on": day(payment.received_on),
            },
        )
        if payment.stray_charge:
            yield "payment.succeeded", None, stray_charge_data(payment)


# -- payment attempts on the rail (collection) ---------------------------------------------------------
def attempt_data(attempt: PaymentAttempt) -> Json:
    """The attempt as the API shows it (`GET /invoices/{id}/payment-attempts`), with the names the
    events had first (`attempt_id`, `attempt`, `method_ref`: docs/events.md)."""
    legacy = {"attempt_id": attempt.id, "attempt": attempt.number, "method_ref": attempt.method_ref}
    return payment_attempt(attempt) | legacy


def stray_charge_data(payment: Payment) -> Json:
    """`payment.succeeded` of a charge no attempt recorded (`Payment.stray_charge`): the attempt's
    fields, those of an attempt null, and the payment's."""
    amount = money(payment.amount)
    return {
        **dict.fromkeys(("id", "attempt_id", "number", "attempt", "payment_method", "method_ref", "reason")),
        "invoice_id": payment.invoice_id,
        "status": "succeeded",
        "amount": amount,
        "invoices": [{"invoice_id": payment.invoice_id, "amount": amount}],
        "charge_ref": payment.reference,
        "decline_code": None,
        "hard_decline": False,
        "made_on": day(payment.received_on),
        "created_at": payment.recorded_at.isoformat(),
        "updated_at": payment.recorded_at.isoformat(),
        "payment_id": payment.id,
        "unapplied": money(payment.unapplied),
    }


PAYMENT_ATTEMPT_EVENTS = {
    AttemptStatus.SUCCEEDED: "payment.succeeded",
    AttemptStatus.FAILED: "payment.failed",
    AttemptStatus.NOT_COLLECTABLE: "payment.failed",
}
"""An attempt reaching one of these is that event: a declined charge, or one that could not be made
(`reason` says why, e.g. no_payment_method; `hard_decline`)."""


@derives("payment_attempt")
def _payment_attempt(change: Change) -> Iterator[Derived]:
    old: PaymentAttempt | None = change.old
    new: PaymentAttempt = change.new
    if new.status in PAYMENT_ATTEMPT_EVENTS and (old is None or old.status is not new.status):
        if new.reason == NotCollectable.NOT_PAYABLE:
            return  # its invoices were paid or cancelled otherwise: no failure for dunning to chase
        yield PAYMENT_ATTEMPT_EVENTS[new.status], new.status.value, attempt_data(new)


# -- payment methods ------------------------------------------------------------------------------
@derives("payment_method")
def _payment_method(change: Change) -> Iterator[Derived]:
    old: SavedPaymentMethod | None = change.old
    new: SavedPaymentMethod = change.new
    data = {
        "payment_method_id": new.id,
        "rail": new.rail,
        "kind": new.kind,
        "brand": new.brand,
        "last4": new.last4,
        "exp_month": new.exp_month,
        "exp_year": new.exp_year,
    }
    if old is None:
        yield "payment_method.saved", None, data
    if new.removed and (old is None or not old.removed):
        yield "payment_method.removed", None, data
    if new.expiring_announced_on is not None and (old is None or old.expiring_announced_on is None):
        yield "payment_method.expiring", None, data | {"expires_in": new.expires_in}


@derives("contact")
def _contact(change: Change) -> Iterator[Derived]:
    """The contact's default payment method changing (made the default, the first card saved, the
    default removed): what pays its subscriptions that name none changed. Its own allowance on a
    meter set, changed or removed: one event per meter (by the meter and the write's version)."""
    old: Contact | None = change.old
    new: Contact = change.new
    if old is not None and old.default_method_ref != new.default_method_ref:
        changed: Json = {
            "payment_method_id": new.default_method_ref,
            "previous_payment_method_id": old.default_method_ref,
        }
        yield "payment_method.default_changed", None, changed
    before = {} if old is None else old.allowances
    for meter in sorted(set(before) | set(new.allowances)):
        was, now = before.get(meter), new.allowances.get(meter)
        if was != now:
            data: Json = {
                "meter": meter,
                "allowance": None if now is None else allowance_json(now),
                "previous": None if was is None else allowance_json(was),
            }
            yield "contact.allowance_changed", f"{meter}:v{change.version}", data


# -- actions --------------------------------------------------------------------------------------
ACTION_EVENTS = {ActionStatus.EXECUTED: "action.executed", ActionStatus.REJECTED: "action.rejected"}


@derives("action")
def _action(change: Change) -> Iterator[Derived]:
    old: Action | None = change.old
    new: Action = change.new
    if new.status in ACTION_EVENTS and (old is None or old.status is not new.status):
        yield (
            ACTION_EVENTS[new.status],
            None,
            {
                "action_id": new.id,
                "subscription_id": change.key.rsplit("#", 2)[-2],
                "service_id": new.service_id,
                "kind": new.kind.name,
                "on": day(new.on),
                "requested_on": day(new.requested_on),
                "by": new.by.value,
                "outcome": new.outcome,
                "rule": new.rule,
                "moved_to": new.moved_to,
            },
        )


# -- subscriptions and their services ---------------------------------------------------------------
def _service_data(subscription: Subscription, service: Service, before: Service | None) -> Json:
    return {
        "subscription_id": subscription.id,
        "service_id": service.id,
        "product_id": service.product_id,
        "terms_id": service.terms.id,
        "from": None if before is None else before.state.value,
        "to": service.state.value,
        "since": day(service.state_since or service.start_date),
    }


@derives("subscription")
def _subscription(change: Change) -> Iterator[Derived]:
    old: Subscription | None = change.old
    new: Subscription = change.new
    before = {} if old is None else {s.id: s for s in old.services}
    for service in new.services:
        previous = before.get(service.id)
        if previous is None or previous.state is not service.state:
            data = _service_data(new, service, previous)
            # A service enters a state at most once a day, but for pauses (counted) on one day.
            identity = f"{service.id}:{data['from']}:{data['to']}:{data['since']}:{len(service.pauses)}"
            yield "service.state_changed", identity, data
    if old is None or old.state is not new.state:
        was = None if old is None else old.state.value
        since = max((day(s.state_since or s.start_date) or "" for s in new.services), default="")
        data = {"subscription_id": new.id, "from": was, "to": new.state.value, "since": since or None}
        yield "subscription.state_changed", f"{was}:{new.state.value}:{since}", data
    if old is not None and old.payment_method != new.payment_method:
        data = {"subscription_id": new.id, "payment_method": new.payment_method, "previous": old.payment_method}
        yield "subscription.payment_method_changed", None, data
    yield from _charge_limits(new, before)
    yield from _entitlements(old, new)


def _entitlements(old: Subscription | None, new: Subscription) -> Iterator[Derived]:
    """What the subscription grants changed (a service started, upgraded, deactivated, re-activated,
    paused, cancelled): the application enforcing access reads the contact's entitlements again."""
    was = entitlements(grantors_of(old)) if old is not None else entitlements(())
    now = entitlements(grantors_of(new))
    if was.as_key != now.as_key:
        data = {
            "subscription_id": new.id,
            "features": sorted(now.features),
            "limits": dict(now.limits),
            "previous": {"features": sorted(was.features), "limits": dict(was.limits)},
        }
        yield "entitlements.changed", None, data  # the write's version: a change back is another event


def _charge_limits(new: Subscription, before: Mapping[str, Service]) -> Iterator[Derived]:
    """A service's period billed by one more immediate invoice (its charge limit was crossed)."""
    for service in new.services:
        previous = before.get(service.id)
        for billed in service.usage_billed:
            was = None if previous is None else billed_for(previous.usage_billed, billed.period_start)
            if billed.progressive > (0 if was is None else was.progressive):
                data = {
                    "subscription_id": new.id,
                    "service_id": service.id,
                    "meter": service.terms.meter,
                    "period_start": day(billed.period_start),
                    "sequence": billed.progressive,
                    "billed": money(billed.amount),
                    "records": billed.records,
                }
                yield "usage.charge_limit_reached", f"{service.id}:{billed.period_start}:{billed.progressive}", data


# -- credits --------------------------------------------------------------------------------------------
CREDIT_EVENTS = {
    EntryKind.GRANT: "credits.granted",
    EntryKind.CONSUMPTION: "credits.consumed",
    EntryKind.EXPIRY: "credits.expired",
    EntryKind.REFUND: "credits.refunded",
    EntryKind.OVERDRAFT_INVOICED: "credits.overdraft_invoiced",
    EntryKind.LOW_BALANCE: "credits.low_balance",
}
"""A ledger entry booked is this event (docs/credits.md): one per entry, never changed after. A
top-up's grant is also `credits.top_up_succeeded`."""


@derives("credit_entry")
def _credit_entry(change: Change) -> Iterator[Derived]:
    if change.old is not None:
        return  # entries are immutable: only their booking is an event
    entry: LedgerEntry = change.new
    data: Json = {
        "entry_id": entry.id,
        "at": entry.at.isoformat(),
        "credits": entry.credits,
        "delta": entry.delta,
        "grant_id": entry.grant_id,
        "grant_kind": None if entry.grant_kind is None else entry.grant_kind.value,
        "reference": entry.reference,
    }
    if entry.kind is EntryKind.CONSUMPTION:
        data |= {
            "action": entry.action,
            "quantity": entry.quantity,
            "unit_cost": entry.unit_cost,
            "parts": credit_parts(entry),
            "overdrawn": entry.overdrawn,
        }
    if entry.kind is EntryKind.LOW_BALANCE:
        assert entry.low_balance is not None
        data |= {
            "balance": entry.balance,
            "threshold": entry.low_balance.threshold,
            "top_up_pack": entry.low_balance.top_up_pack,
        }
    yield CREDIT_EVENTS[entry.kind], None, data
    if entry.kind is EntryKind.GRANT and is_top_up_grant(entry.grant_id):
        yield "credits.top_up_succeeded", None, data | {"invoice_id": entry.reference}


# -- dunning cases ------------------------------------------------------------------------------------
DUNNING_STEP_EVENTS = {
    StepKind.OPEN: "dunning.case_opened",
    StepKind.RETRY: "dunning.retry_requested",
    StepKind.REMIND: "dunning.reminder_due",
    StepKind.DEACTIVATE: "dunning.services_deactivated",
    StepKind.CANCEL: "dunning.services_cancelled",
    StepKind.PAUSE: "dunning.case_paused",
    StepKind.RESUME: "dunning.case_resumed",
    StepKind.END: "dunning.case_ended",
}
"""A case's new step of this kind is that event (an end that reactivates services is also
`dunning.services_reactivated`, first)."""


def _step_data(case: DunningCase, step: Step) -> Json:
    """What every `dunning.*` event says: the case (as this write left it) and the step."""
    data: Json = {"case_id": case.id, "currency": case.currency, "step": dunning_step(step), "case": dunning_case(case)}
    match step.kind:
        case StepKind.OPEN:
            data |= {"cause": step.opened_by, "invoice_id": step.targets[0] if step.targets else None}
        case StepKind.RETRY:
            data["attempt_ids"] = list(step.targets)
        case StepKind.REMIND:
            data |= {
                "number": int(step.targets[0]),
                "owed": money(step.owed),
                "amount_due": money(step.due),
                "credit": money(step.credit),
            }
        case StepKind.DEACTIVATE | StepKind.CANCEL | StepKind.END:
            data["service_ids"] = list(step.targets)
    if step.kind == StepKind.END:
        data["why"] = step.why
    if step.kind in (StepKind.PAUSE, StepKind.RESUME) or step.by_operator:
        data["reason"] = step.outcome
    return data


@derives("dunning_case")
def _dunning_case(change: Change) -> Iterator[Derived]:
    """One event per step the write added to the case's history (append-only), its id derived from
    the step's place in it: a stream record delivered again gives the same ids, and a write adding
    no step (a wake, a park, a decision to wait) gives none."""
    old: DunningCase | None = change.old
    new: DunningCase = change.new
    known = 0 if old is None else len(old.history)
    for index, step in enumerate(new.history[known:], start=known):
        identity = f"{index}:{step.kind.value}:{step.on.isoformat()}"
        data = _step_data(new, step)
        if step.kind == StepKind.END and step.targets:
            yield "dunning.services_reactivated", identity, data
        yield DUNNING_STEP_EVENTS[step.kind], identity, data


EVENT_TYPES = (
    "invoice.drafted",
    "invoice.issued",
    "invoice.paid",
    "invoice.overdue",
    "invoice.voided",
    "invoice.uncollectible",
    "credit_note.issued",
    "credit_note.applied",
    "credit_note.application_reversed",
    "credit_note.refunded",
    "payment.received",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "payment_method.saved",
    "payment_method.removed",
    "payment_method.expiring",
    "payment_method.default_changed",
    "contact.allowance_changed",
    "action.executed",
    "action.rejected",
    "service.state_changed",
    "subscription.state_changed",
    "subscription.payment_method_changed",
    "usage.charge_limit_reached",
    "entitlements.changed",
    "credits.granted",
    "credits.consumed",
    "credits.expired",
    "credits.refunded",
    "credits.overdraft_invoiced",
    "credits.low_balance",
    "credits.top_up_succeeded",
    "credits.top_up_failed",
    "dunning.case_opened",
    "dunning.retry_requested",
    "dunning.reminder_due",
    "dunning.services_deactivated",
    "dunning.services_cancelled",
    "dunning.services_reactivated",
    "dunning.case_paused",
    "dunning.case_resumed",
    "dunning.case_ended",
)
"""Every event type Billow publishes (docs/events.md documents each; a test keeps them in step)."""
