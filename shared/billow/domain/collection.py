"""Collection: whether and how much of a contact's invoices Billow charges on its payment rail, and
the record of each charge, a `PaymentAttempt` (docs/payments.md, "Collection").

A contact is collected in one of three modes (its own, else its tenant's default):
- `automatic`: each invoice is charged off-session when it is issued;
- `credit_limit` (CRM.COM): an invoice is charged only when the contact's balance in its currency,
  this invoice included, exceeds the contact's credit limit in that currency; with the tenant's
  `collect_whole_debt`, the charge then takes everything the contact owes in that currency;
- `manual`: nothing is charged; the customer pays by transfer and staff record it.

A payment attempt moves pending -> created (the rail's charge reference recorded) -> succeeded |
failed, or from pending to not_collectable (nothing could be charged: no payment method, below the
rail's minimum). Pending and created are live: a rerun resumes them; the others are final. An
attempt becomes failed only once its charge can no longer take money (cancelled on the rail), and
not_collectable from created only once its charge is cancelled (billow.services.collection).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from billow.domain.errors import Conflict, InvalidInput
from billow.domain.money import Money, sum_money

if TYPE_CHECKING:
    from billow.domain.invoices import Invoice


class CollectionMode(StrEnum):
    AUTOMATIC = "automatic"
    CREDIT_LIMIT = "credit_limit"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class CollectionSettings:
    """A tenant's collection rules (`TenantSettings.collection`)."""

    mode: CollectionMode = CollectionMode.AUTOMATIC
    """The mode of a contact that names none."""
    collect_whole_debt: bool = False
    """Under `credit_limit`: once the limit is crossed, charge everything the contact owes in the
    invoice's currency, not only the new invoice."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, CollectionMode):
            raise InvalidInput("collection.mode is automatic, credit_limit or manual", field="collection.mode")
        if not isinstance(self.collect_whole_debt, bool):
            raise InvalidInput("collection.collect_whole_debt is true or false", field="collection.collect_whole_debt")


DEFAULT_COLLECTION = CollectionSettings()


class AttemptStatus(StrEnum):
    PENDING = "pending"  # written before the rail is called: no charge recorded yet
    CREATED = "created"  # the rail's charge exists (unconfirmed, or confirmed and settling): its ref is recorded
    SUCCEEDED = "succeeded"  # money received: payments applied to the invoices it covers
    FAILED = "failed"  # declined: `decline_code`; dunning (not this attempt) retries
    NOT_COLLECTABLE = "not_collectable"  # nothing could be charged: `reason`


LIVE = frozenset({AttemptStatus.PENDING, AttemptStatus.CREATED})
"""Statuses of an attempt a rerun resumes; an invoice with a live attempt never gets a second."""


class NotCollectable(StrEnum):
    """Why nothing could be charged (`PaymentAttempt.reason`)."""

    NO_PAYMENT_METHOD = "no_payment_method"
    BELOW_MINIMUM = "below_minimum"
    AMOUNT_PRECISION = "amount_precision"
    """A fraction the rail cannot charge (a KWD amount not a multiple of 0.010: `rail.amount_precision`)."""
    ABOVE_MAXIMUM = "above_maximum"  # more than the rail takes in one charge (`rail.amount_too_large`)
    REFUSED = "refused"  # the rail refused to create the charge (its code in `decline_code`)
    NOT_PAYABLE = "invoice_not_payable"
    """An invoice it covers no longer owes what it charges (paid by other means, voided, written off,
    credited) before the charge was confirmed: its unconfirmed charge is cancelled, nothing is taken."""


def attempt_id(invoice_id: str, number: int) -> str:
    """Deterministic: attempt `number` of an invoice has one id, whoever writes it."""
    return f"att_{invoice_id}_{number}"


def attempt_number(attempt_id_: str) -> int:
    return int(attempt_id_.rsplit("_", 1)[1])


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    id: str
    invoice_id: str
    """The invoice whose issue started it (its key holds it)."""
    contact_id: str
    number: int
    amount: Money
    covers: tuple[tuple[str, Money], ...]
    """The invoices the charge pays and how much of each: the invoice alone, or (collecting the
    whole debt) every invoice the contact owed in that currency."""
    method_ref: str | None
    customer_ref: str | None
    status: AttemptStatus
    created_at: datetime
    updated_at: datetime
    charge_ref: str | None = None
    decline_code: str | None = None
    """The rail's decline code (`card_declined`, `expired_card`...), or Billow's code for a charge
    the rail cannot take (`rail.amount_too_small`, `rail.method_unusable`...); None when the rail
    was never asked (no payment method, an invoice no longer payable: `reason` says why)."""
    rail_hard_decline: bool = False
    """The rail's verdict on a declined charge: no retry with this method can succeed (stored as
    `hard_decline`; what the API and the events show is the `hard_decline` property)."""
    reason: str | None = None
    """not_collectable: a `NotCollectable` code."""
    version: int = 0
    """The stored item's version (0: not stored yet)."""
    made_on: date | None = None
    """The contact's day when the attempt was made (its test clock's, if it has one), which
    dunning counts its retry schedule from; `created_at` is real time. None: an attempt recorded
    before attempts kept their day."""
    on_session: bool = False
    """The customer confirms the charge (Stripe.js, with the client secret: a top-up bought
    on-session): Billow creates it and never confirms it; the webhook (or a sweep) records the
    outcome."""

    def __post_init__(self) -> None:
        if self.amount.minor <= 0:
            raise ValueError("an attempt charges a positive amount")
        if sum_money([m for _, m in self.covers], self.amount.currency) != self.amount:
            raise ValueError("an attempt's amount is the sum of what it covers")
        if self.created_at.tzinfo is None or self.updated_at.tzinfo is None:
            raise ValueError("attempt timestamps must be timezone-aware")

    @classmethod
    def start(
        cls,
        invoice: Invoice,
        number: int,
        covers: Iterable[tuple[str, Money]],
        *,
        customer_ref: str | None,
        method_ref: str | None,
        now: datetime,
        made_on: date,
        on_session: bool = False,
    ) -> PaymentAttempt:
        """Attempt `number` of `invoice`, made `now` (real time) on the contact's day `made_on`."""
        covered = tuple(covers)
        amount = sum_money([m for _, m in covered], invoice.currency)
        attempt = cls(
            attempt_id(invoice.id, number),
            invoice.id,
            invoice.contact_id,
            number,
            amount,
            covered,
            method_ref,
            customer_ref,
            AttemptStatus.PENDING,
            now,
            now,
            made_on=made_on,
            on_session=on_session,
        )
        if customer_ref is None or method_ref is None:
            return attempt.not_collectable(NotCollectable.NO_PAYMENT_METHOD, now)
        return attempt

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def hard_decline(self) -> bool:
        """No retry of this charge as it is can succeed: declined hard by the rail (a missing,
        expired, lost or stolen card), or nothing could be charged (not collectable: no payment
        method, an amount the rail cannot take). Dunning waits for a change (a new method, a new
        amount) instead of retrying. The one value the API's attempt and the payment events show."""
        if self.status is AttemptStatus.NOT_COLLECTABLE:
            return True
        return self.status is AttemptStatus.FAILED and self.rail_hard_decline

    def covered_ids(self) -> set[str]:
        return {invoice_id for invoice_id, _ in self.covers}

    def _to(
        self, status: AttemptStatus, now: datetime, allowed: Iterable[AttemptStatus], **changes: object
    ) -> PaymentAttempt:
        if self.status not in allowed:
            raise Conflict(
                f"payment attempt {self.id} is {self.status.value}; it cannot become {status.value}",
                code="payment_attempt.illegal_transition",
            )
        return replace(self, status=status, updated_at=now, **changes)  # type: ignore[arg-type]

    def created(self, charge_ref: str, now: datetime) -> PaymentAttempt:
        return self._to(AttemptStatus.CREATED, now, (AttemptStatus.PENDING,), charge_ref=charge_ref)

    def succeeded(self, charge_ref: str, now: datetime) -> PaymentAttempt:
        """Money received on `charge_ref` (recorded now if it was not: a success read before the
        collector recorded its charge). A failure read earlier does not stand: the rail's object
        says what happened (a failed charge confirmed again with another method, a 3-D Secure
        completed later); nor does an end for an invoice no longer payable whose charge another
        collector confirmed meanwhile, or whose cancel the rail did not take: money the rail took
        is always recorded."""
        self._check_ref(charge_ref)
        allowed = (*LIVE, AttemptStatus.FAILED, AttemptStatus.NOT_COLLECTABLE)
        return self._to(
            AttemptStatus.SUCCEEDED, now, allowed, charge_ref=charge_ref, decline_code=None, rail_hard_decline=False
        )

    def failed(self, charge_ref: str, decline_code: str | None, hard: bool, now: datetime) -> PaymentAttempt:
        self._check_ref(charge_ref)
        return self._to(
            AttemptStatus.FAILED,
            now,
            LIVE,
            charge_ref=charge_ref,
            decline_code=decline_code or "declined",
            rail_hard_decline=hard,
        )

    def not_collectable(self, reason: NotCollectable, now: datetime, decline_code: str | None = None) -> PaymentAttempt:
        """Nothing charged: from pending, or from created when its charge is not confirmed (it is
        then cancelled) because an invoice it covers is no longer payable."""
        allowed = LIVE if reason is NotCollectable.NOT_PAYABLE else (AttemptStatus.PENDING,)
        return self._to(AttemptStatus.NOT_COLLECTABLE, now, allowed, reason=reason.value, decline_code=decline_code)

    def payable(self, invoices: Mapping[str, Invoice]) -> bool:
        """Whether every invoice it covers (`invoices`: read now, by id) still owes at least what it
        charges of it: an invoice paid, voided, written off or credited meanwhile must not be
        charged (`NotCollectable.NOT_PAYABLE`)."""
        for invoice_id, amount in self.covers:
            invoice = invoices.get(invoice_id)
            if invoice is None or not invoice.owed or invoice.amount_due < amount:
                return False
        return True

    def _check_ref(self, charge_ref: str) -> None:
        if self.charge_ref is not None and self.charge_ref != charge_ref:
            raise Conflict(
                f"payment attempt {self.id} charges {self.charge_ref}, not {charge_ref}",
                code="payment_attempt.other_charge",
            )


# -- what to charge ---------------------------------------------------------------------------------
def covered_by_attempts(attempts: Iterable[PaymentAttempt]) -> set[str]:
    """Invoices a live or succeeded attempt charges: never charged again by another attempt."""
    covered: set[str] = set()
    for attempt in attempts:
        if attempt.live or attempt.status is AttemptStatus.SUCCEEDED:
            covered |= attempt.covered_ids()
    return covered


def to_charge(
    invoice: Invoice,
    mode: CollectionMode,
    settings: CollectionSettings,
    *,
    owed: Iterable[Invoice],
    credit_limit: Mapping[str, Money],
    covered: set[str],
) -> tuple[tuple[str, Money], ...]:
    """What collecting `invoice` charges, as (invoice id, amount) pairs; empty: nothing.

    `owed`: the contact's invoices (any status; this one included); `covered`: invoices some live
    or succeeded attempt already charges (`covered_by_attempts`). Under `credit_limit`, the
    contact's balance in the invoice's currency (what it owes there less its credit,
    `receivables.net_owed`, as the debt threshold is checked) must exceed its credit limit in that
    currency; a currency without a limit is never charged."""
    # Imported here, not with the module: tenant settings and contacts name the modes, and every
    # function's cold start (the authorizer's too) imports those, never the invoices.
    from billow.domain.invoices import InvoiceKind
    from billow.domain.receivables import net_owed

    if (
        mode is CollectionMode.MANUAL
        or invoice.kind is not InvoiceKind.INVOICE
        or not invoice.owed
        or invoice.amount_due.is_zero
        or invoice.id in covered
    ):
        return ()
    if mode is CollectionMode.AUTOMATIC:
        return ((invoice.id, invoice.amount_due),)
    currency = invoice.currency
    invoices = {i.id: i for i in owed}
    invoices[invoice.id] = invoice
    limit = credit_limit.get(currency)
    balance = net_owed(invoices.values()).get(currency, Money.zero(currency))
    if limit is None or not limit < balance:
        return ()
    if not settings.collect_whole_debt:
        return ((invoice.id, invoice.amount_due),)
    debt = sorted(
        (i for i in invoices.values() if i.currency == currency and i.owed and i.kind is InvoiceKind.INVOICE),
        key=lambda i: (i.issue_date, i.number, i.id),
    )
    return tuple((i.id, i.amount_due) for i in debt if i.id not in covered and not i.amount_due.is_zero)
