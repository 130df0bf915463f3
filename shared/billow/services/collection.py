"""Collection use cases: charge an issued invoice on the payment rail exactly once, and apply what
the rail says about a charge (docs/payments.md, "Collection").

`collect_invoice` runs after billing (fed by the invoice.issued event, never inside the billing
transaction). Its exactly-once argument rests on Billow's records, not on the rail's idempotency keys
(localstripe ignores them; Stripe keeps them 24 h):

1. The attempt is written (pending) before the rail is called, in a transaction with the contact's
   version: two collectors deciding at once cannot both write an attempt for the same invoice.
2. The charge is created unconfirmed (no money moves) and its reference recorded on the attempt by
   a conditional write. A collector that loses that write cancels its own charge and goes on with
   the recorded one; a crash before the record leaves an unconfirmed charge that never moves money.
3. Only the recorded charge is ever confirmed. Confirming it again (a rerun, a second collector) is
   refused by the rail or finds it settled: the outcome is then read from the rail.
4. Success is one transaction: the attempt succeeded, a payment per covered invoice (its id derived
   from the charge reference, so the collector and a webhook applying the same charge write one
   payment) and the invoices paid down. Failure records the decline code, and only once the
   declined charge is cancelled on the rail (`_apply`): a failed attempt covers nothing, so its
   invoices may be charged again, which must never let the first charge take money too.

A rerun resumes the invoice's latest attempt from its recorded state; a final one (succeeded,
failed, not collectable) is not retried here (dunning retries failures).

`reconcile_charge` applies a charge's state as the rail reports it to its attempt (webhooks, a
sweep): idempotent and order-free, since it never trusts an event's content, only the rail's object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from billow.domain.collection import (
    AttemptStatus,
    CollectionMode,
    NotCollectable,
    PaymentAttempt,
    attempt_number,
    covered_by_attempts,
    to_charge,
)
from billow.domain.contacts import Contact
from billow.domain.errors import ConcurrentModification, NotFound
from billow.domain.invoices import Invoice, Payment, PaymentMethod
from billow.domain.money import Money
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.services.contacts import ContactTime, contact_time
from billow.services.context import Clock, Scope, SystemClock, TenantContext
from billow.services.gateway import (
    METHOD_UNUSABLE,
    ChargeNotPossible,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    GatewayUnavailable,
    PaymentGateway,
)
from billow.services.invoices import payment_id_for
from billow.services.ports import CollectionPorts, UnitOfWork

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
SETTLED = frozenset({ChargeStatus.SUCCEEDED, ChargeStatus.FAILED, ChargeStatus.CANCELED, ChargeStatus.REQUIRES_ACTION})
"""Charge states that end an attempt (off-session, a charge needing the customer's action failed)."""
OPEN = frozenset({ChargeStatus.CREATED, ChargeStatus.FAILED, ChargeStatus.REQUIRES_ACTION})
"""Charge states in which the rail can still take money (confirmed, or confirmed again: Stripe's
`requires_confirmation`, `requires_payment_method`, `requires_action`) and can still cancel it."""
OPEN_FAILURES = OPEN - {ChargeStatus.CREATED}
"""A failed charge still open: its attempt is recorded failed only once it is cancelled (`_apply`)."""
REFUSAL_REASONS = {
    "amount_too_small": NotCollectable.BELOW_MINIMUM,
    "rail.amount_too_small": NotCollectable.BELOW_MINIMUM,
    "rail.amount_precision": NotCollectable.AMOUNT_PRECISION,
    "rail.amount_too_large": NotCollectable.ABOVE_MAXIMUM,
    METHOD_UNUSABLE: NotCollectable.NO_PAYMENT_METHOD,  # detached or gone on the rail: as good as none
}
"""Why nothing was charged, by the code of the rail's refusal to create the charge
(`ChargeNotPossible`); any other code is `refused`."""
LEGACY_METHODS = frozenset(m.value for m in PaymentMethod)
"""A subscription's `payment_method` from before saved methods ("card", "bank_transfer"): not a
saved method's reference, so the contact's default applies."""


def charge_target(
    contact: Contact, subscription: Subscription | None, removed: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    """(the rail's customer, the saved method) an invoice of `subscription` is charged with: the
    subscription's own method, else the contact's default; None when there is none. A method
    recorded removed (`removed(ref)`) is never charged: a subscription still naming one (removal
    leaves subscriptions as they are) falls back to the contact's default."""
    own = None if subscription is None else subscription.payment_method
    for method in (own, contact.default_method_ref):
        if method and method not in LEGACY_METHODS and not removed(method):
            return contact.gateway_customer_ref, method
    return contact.gateway_customer_ref, None


def _removed(ports: CollectionPorts, scope: Scope, contact_id: str) -> Callable[[str], bool]:
    def removed(method_ref: str) -> bool:
        method = ports.get_payment_method(scope, contact_id, method_ref)
        return method is not None and method.removed

    return removed


def collection_mode(contact: Contact, settings: TenantSettings) -> CollectionMode:
    return contact.collection or settings.collection.mode


def _settings(ports: CollectionPorts, scope: Scope) -> TenantSettings:
    settings = ports.get_settings(scope.tenant_id)
    if settings is None:
        raise NotFound(f"no tenant {scope.tenant_id}", field="tenant_id")
    return settings


def collect_invoice(
    ports: CollectionPorts, gateway: PaymentGateway, scope: Scope, invoice_id: str, *, clock: Clock, number: int = 1
) -> PaymentAttempt | None:
    """Collect an issued invoice by its contact's mode: the attempt that charges it (resumed if
    one is live, as recorded if final), or None when nothing is to be charged (manual, under the
    credit limit, paid, a credit note, another attempt covers it). `GatewayUnavailable` leaves the
    attempt as recorded: the caller retries and resumes it.

    `number`: the attempt to make. Dunning retries a failed charge as attempt latest + 1; attempt
    `number` (or a later one) existing already is resumed or answered as recorded, and a live
    earlier one is resumed instead: one attempt per number, whoever asks and however often."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        invoice = ports.get_invoice(scope, invoice_id)
        if invoice is None:
            return None
        latest = ports.latest_attempt(scope, invoice.contact_id, invoice.id)
        if latest is not None and latest.number > number:
            latest = ports.get_attempt(scope, invoice.contact_id, invoice.id, number) or latest
        if latest is not None and (latest.number >= number or latest.live):
            return resume(ports, gateway, scope, latest, clock=clock) if latest.live else latest
        try:
            attempt = _start(ports, scope, invoice, clock, number)
        except ConcurrentModification:
            continue  # another collector (or a change of the contact) came first: decide again
        if attempt is None or not attempt.live:
            return attempt
        return resume(ports, gateway, scope, attempt, clock=clock, fresh=True)
    raise ConcurrentModification(f"collecting invoice {invoice_id} kept conflicting; try again")


def _start(ports: CollectionPorts, scope: Scope, invoice: Invoice, clock: Clock, number: int) -> PaymentAttempt | None:
    """Decide what to charge and write the attempt (pending, or not collectable) on the contact's
    day, conditioned on the contact's version read before its clock, invoices and attempts (a
    clock move changes that version); None: nothing to charge."""
    contact = ports.get_contact(scope, invoice.contact_id)
    if contact is None:
        return None
    settings = _settings(ports, scope)
    when = contact_time(ports, TenantContext(scope.tenant_id, scope.mode, settings), contact.id, clock)
    attempts = ports.attempts_of(scope, contact.id)
    # A top-up is bought now: charged at once whatever the contact's mode (docs/credits.md).
    mode = CollectionMode.AUTOMATIC if invoice.top_up is not None else collection_mode(contact, settings)
    # Only the credit limit weighs the contact's other invoices.
    owed = ports.invoices_of(scope, contact.id) if mode is CollectionMode.CREDIT_LIMIT else [invoice]
    covers = to_charge(
        invoice,
        mode,
        settings.collection,
        owed=owed,
        credit_limit=contact.credit_limit,
        covered=covered_by_attempts(attempts),
    )
    if not covers:
        return None
    subscription = ports.load_subscription(scope, contact.id, invoice.subscription_id)
    customer_ref, method_ref = charge_target(contact, subscription, _removed(ports, scope, contact.id))
    attempt = PaymentAttempt.start(
        invoice,
        number,
        covers,
        customer_ref=customer_ref,
        method_ref=method_ref,
        now=clock.now(),
        made_on=when.today,
        on_session=invoice.top_up is not None and invoice.top_up.on_session,
    )
    work = ports.unit_of_work(f"payment attempt of invoice {invoice.id}")
    saved = work.save_attempt(scope, attempt)
    work.touch_contact(scope, contact.id, contact.version)
    work.commit()
    return saved


def end_attempts_covering(
    ports: CollectionPorts, gateway: PaymentGateway, scope: Scope, invoice_id: str, *, clock: Clock
) -> list[PaymentAttempt]:
    """The contact's live attempts that cover `invoice_id`, resumed now that the invoice can no
    longer be charged (voided by staff or by its order's lapse, written off): each finds it not
    payable and ends not collectable, its charge cancelled on the rail first (`_end_not_payable`),
    so no PaymentIntent is left open for an invoice that owes nothing. A charge confirmed meanwhile
    records its outcome instead (money taken is kept as credit). `GatewayUnavailable` leaves an
    attempt live: the caller retries. Fed by the `invoice.voided` and `invoice.uncollectible` events
    (the collector). Answers the attempts as they end (none: nothing was live)."""
    invoice = ports.get_invoice(scope, invoice_id)
    if invoice is None or invoice.owed:
        return []
    live = [a for a in attempts_covering(ports, scope, invoice) if a.live]
    return [resume(ports, gateway, scope, attempt, clock=clock) for attempt in live]


def attempts_covering(ports: CollectionPorts, scope: Scope, invoice: Invoice) -> list[PaymentAttempt]:
    """Every payment attempt of the invoice's contact that charges (or charged, or tried to) the
    invoice: its own, and whole-debt attempts started by another invoice that cover it; oldest first."""
    covering = [a for a in ports.attempts_of(scope, invoice.contact_id) if invoice.id in a.covered_ids()]
    return sorted(covering, key=lambda a: (a.created_at, a.invoice_id, a.number))


def _request(scope: Scope, attempt: PaymentAttempt) -> ChargeRequest:
    assert attempt.customer_ref is not None and attempt.method_ref is not None
    return ChargeRequest(
        customer_ref=attempt.customer_ref,
        method_ref=attempt.method_ref,
        amount=attempt.amount,
        idempotency_key=f"{attempt.id}:create",
        metadata={
            "tenant_id": scope.tenant_id,
            "mode": scope.mode,
            "invoice_id": attempt.invoice_id,
            "attempt_id": attempt.id,
            "contact_id": attempt.contact_id,
        },
        description=f"Invoice {attempt.invoice_id}",
    )


def resume(
    ports: CollectionPorts,
    gateway: PaymentGateway,
    scope: Scope,
    attempt: PaymentAttempt,
    *,
    clock: Clock,
    fresh: bool = False,
) -> PaymentAttempt:
    """Take a live attempt on from its recorded state to a final one (or to created, when the rail
    is still settling the charge). `fresh`: the attempt was just written by this run, so no earlier
    run can have created a charge of it (`_orphans` are not looked for)."""
    state: ChargeState | None = None
    if attempt.status is AttemptStatus.PENDING:
        if not _still_payable(ports, scope, attempt):
            return _end_not_payable(ports, gateway, scope, attempt, clock)
        attempt, state = _create_charge(ports, gateway, scope, attempt, clock, fresh)
    if attempt.status is not AttemptStatus.CREATED:
        return attempt
    assert attempt.charge_ref is not None
    if state is None or state.ref != attempt.charge_ref:  # resumed, or another collector's charge
        state = gateway.charge_state(attempt.charge_ref)
    if state.status is ChargeStatus.CREATED:
        # Read the invoices again just before money moves: paid by transfer, voided by staff or by
        # a lapse while the attempt waited (the rail was out of reach, the message redelivered).
        if not _still_payable(ports, scope, attempt):
            return _end_not_payable(ports, gateway, scope, attempt, clock)
        if attempt.on_session:
            return attempt  # the customer confirms it (Stripe.js): its outcome comes by webhook or sweep
        state = _confirm(gateway, attempt)
    return _apply(ports, gateway, scope, attempt, state, clock)


def _apply(
    ports: CollectionPorts,
    gateway: PaymentGateway,
    scope: Scope,
    attempt: PaymentAttempt,
    state: ChargeState,
    clock: Clock,
) -> PaymentAttempt:
    """`apply_state`, a failure only once its charge can no longer take money. A declined charge
    (or one waiting for an authentication no one off-session will give) is still open on the rail:
    Stripe lets a PaymentIntent in `requires_payment_method` or `requires_action` be confirmed
    later (another card, a 3-D Secure completed), and a failed attempt covers nothing, so a later
    attempt could charge its invoices again. So the charge is cancelled first (`_cancel`), and the
    attempt recorded failed only once the rail says it is cancelled: the rail out of reach
    (`GatewayUnavailable`) leaves the attempt live, to be resumed by a retry or a sweep; a cancel
    refused because the charge succeeded after all applies that success."""
    open_failure = state.status in OPEN_FAILURES and attempt.charge_ref in (None, state.ref)
    if open_failure and attempt.on_session and attempt.live:
        return attempt  # the customer may try another card in Stripe.js: open until it lapses
    if open_failure and attempt.status is not AttemptStatus.SUCCEEDED:
        code = state.decline_code or (
            "authentication_required" if state.status is ChargeStatus.REQUIRES_ACTION else None
        )
        ended = _cancel(gateway, state.ref)
        if ended.status is ChargeStatus.CANCELED:
            hard = ended.hard_decline or state.hard_decline
            ended = replace(ended, decline_code=ended.decline_code or code, hard_decline=hard)
        state = ended
    return apply_state(ports, scope, attempt, state, clock=clock)


def _cancel(gateway: PaymentGateway, charge_ref: str) -> ChargeState:
    """Cancel the charge on the rail: the charge as it is after, cancelled, or what it became
    instead when the rail refused the cancel (succeeded after all, or settling). `GatewayUnavailable`
    propagates (nothing known changed); a refusal of a charge still open propagates too (the attempt
    stays live and a rerun tries again)."""
    try:
        return gateway.cancel_charge(charge_ref)
    except GatewayUnavailable:
        raise
    except Exception:
        state = gateway.charge_state(charge_ref)
        if state.status in OPEN:
            raise
        return state


def _still_payable(ports: CollectionPorts, scope: Scope, attempt: PaymentAttempt) -> bool:
    invoices = {i: ports.contact_invoice(scope, attempt.contact_id, i) for i in attempt.covered_ids()}
    return attempt.payable({i: invoice for i, invoice in invoices.items() if invoice is not None})


def _end_not_payable(
    ports: CollectionPorts, gateway: PaymentGateway, scope: Scope, attempt: PaymentAttempt, clock: Clock
) -> PaymentAttempt:
    """End a live attempt whose invoices no longer take its charge, the charge first: cancelled on
    the rail (`_cancel`; the rail out of reach leaves the attempt live, for a retry or a sweep to
    end), then the attempt recorded not collectable, conditioned on its version. A charge the rail
    would not cancel because another collector confirmed it meanwhile has its state applied
    instead (money taken is recorded as credit). A crash between the cancel and the record leaves
    a live attempt whose charge is cancelled: its rerun reads it so and ends it (`apply_state`)."""
    if attempt.charge_ref is not None:
        state = _cancel(gateway, attempt.charge_ref)
        if state.status is not ChargeStatus.CANCELED:
            return _apply(ports, gateway, scope, attempt, state, clock)
    try:
        ended = ports.save_attempt(scope, attempt.not_collectable(NotCollectable.NOT_PAYABLE, clock.now()))
    except ConcurrentModification:
        current = ports.get_attempt(scope, attempt.contact_id, attempt.invoice_id, attempt.number)
        assert current is not None
        return resume(ports, gateway, scope, current, clock=clock) if current.live else current
    log.info("payment attempt %s ended: an invoice it covers is no longer payable", attempt.id)
    return ended


def _cancel_orphan(gateway: PaymentGateway, charge_ref: str) -> None:
    """Cancel an unrecorded, unconfirmed charge, if the rail still allows it. No attempt records
    it, so no one ever confirms it and it moves no money: a cancel refused or out of reach is only
    logged (its webhook cancels it later, `reconcile_charge`)."""
    try:
        gateway.cancel_charge(charge_ref)
    except Exception:  # best effort: nothing will confirm it
        log.warning("charge %s could not be cancelled", charge_ref, exc_info=True)


CLOCK_SKEW = timedelta(minutes=5)
"""How much earlier than its attempt's `created_at` (Billow's clock) a charge (the rail's) may
appear to have been created."""


def _orphans(gateway: PaymentGateway, attempt: PaymentAttempt) -> list[ChargeState]:
    """The unconfirmed charges earlier runs created for this pending attempt and had not recorded
    (found on the rail by its metadata; none of them ever moved money: only a recorded charge is
    confirmed). The first is the one to record instead of creating another; the others are
    cancelled only once that record is won (`_create_charge`): until then one of them may be a
    live run's, about to be recorded and confirmed by it."""
    assert attempt.customer_ref is not None
    found = gateway.charges_of_attempt(attempt.customer_ref, attempt.id, since=attempt.created_at - CLOCK_SKEW)
    return [c for c in found if c.status is ChargeStatus.CREATED]


def _create_charge(
    ports: CollectionPorts, gateway: PaymentGateway, scope: Scope, attempt: PaymentAttempt, clock: Clock, fresh: bool
) -> tuple[PaymentAttempt, ChargeState]:
    """Create the charge unconfirmed (or, resuming, take the one an earlier run created: `_orphans`)
    and record its reference: the attempt as recorded after, and the charge created (not the
    recorded one when another collector's was recorded first)."""
    orphans = [] if fresh else _orphans(gateway, attempt)
    try:
        state = orphans[0] if orphans else gateway.create_charge(_request(scope, attempt))
    except ChargeNotPossible as refused:  # the rail cannot charge this amount (its minimum...): no charge made
        zero = Money.zero(attempt.amount.currency)
        state = ChargeState("", ChargeStatus.FAILED, attempt.amount, zero, decline_code=refused.code)
    if state.status is ChargeStatus.FAILED:  # refused outright (below the rail's minimum, say): no charge
        reason = REFUSAL_REASONS.get(state.decline_code or "", NotCollectable.REFUSED)
        recorded = attempt.not_collectable(reason, clock.now(), state.decline_code)
    else:
        recorded = attempt.created(state.ref, clock.now())
    try:
        saved = ports.save_attempt(scope, recorded)
    except ConcurrentModification:
        current = ports.get_attempt(scope, attempt.contact_id, attempt.invoice_id, attempt.number)
        assert current is not None
        if current.charge_ref != state.ref and state.status is ChargeStatus.CREATED:
            gateway.cancel_charge(state.ref)  # another collector's charge was recorded first
        return current, state
    for extra in orphans[1:]:  # the record is won: no one will ever confirm these
        _cancel_orphan(gateway, extra.ref)
    return saved, state


def _confirm(gateway: PaymentGateway, attempt: PaymentAttempt) -> ChargeState:
    assert attempt.charge_ref is not None
    try:
        return gateway.confirm_charge(attempt.charge_ref, idempotency_key=f"{attempt.id}:confirm")
    except GatewayUnavailable:
        raise
    except Exception:
        # Refused: another collector confirmed it between our read and our confirm. The rail's
        # object says what happened; still unconfirmed, the refusal was something else.
        state = gateway.charge_state(attempt.charge_ref)
        if state.status is ChargeStatus.CREATED:
            raise
        return state


def apply_state(
    ports: CollectionPorts, scope: Scope, attempt: PaymentAttempt, state: ChargeState, *, clock: Clock
) -> PaymentAttempt:
    """Record `state` (the rail's, read now) of the attempt's charge: success with its payments,
    failure with its decline code; a charge still settling changes nothing. Idempotent: applying a
    state twice, or a failure after a success, writes nothing."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        if attempt.charge_ref not in (None, state.ref):
            log.warning("charge %s is not the one recorded on attempt %s", state.ref, attempt.id)
            return attempt
        try:
            if state.status is ChargeStatus.SUCCEEDED:
                if attempt.status is AttemptStatus.SUCCEEDED:
                    return attempt
                return _record_success(ports, scope, attempt, state, clock)
            if attempt.on_session and attempt.live and state.status in OPEN_FAILURES:
                return attempt  # the customer is authenticating, or may try another card: still open
            if state.status in SETTLED:
                if not attempt.live:
                    return attempt
                if (
                    state.status is ChargeStatus.CANCELED
                    and state.decline_code is None
                    and not _still_payable(ports, scope, attempt)
                ):  # cancelled by `_end_not_payable`, which died before recording it
                    return ports.save_attempt(scope, attempt.not_collectable(NotCollectable.NOT_PAYABLE, clock.now()))
                code = state.decline_code or (
                    "authentication_required" if state.status is ChargeStatus.REQUIRES_ACTION else state.status.value
                )
                return ports.save_attempt(scope, attempt.failed(state.ref, code, state.hard_decline, clock.now()))
            if attempt.status is AttemptStatus.PENDING:  # settling, not recorded yet: record the charge
                return ports.save_attempt(scope, attempt.created(state.ref, clock.now()))
            return attempt
        except ConcurrentModification:
            reread = ports.get_attempt(scope, attempt.contact_id, attempt.invoice_id, attempt.number)
            assert reread is not None
            attempt = reread
    raise ConcurrentModification(f"payment attempt {attempt.id} kept changing; try again")


def _contact_time(ports: CollectionPorts, scope: Scope, contact_id: str, clock: Clock) -> ContactTime:
    return contact_time(ports, TenantContext(scope.tenant_id, scope.mode, _settings(ports, scope)), contact_id, clock)


def _take_charge(
    work: UnitOfWork,
    scope: Scope,
    invoice: Invoice,
    received: Money,
    charge_ref: str,
    when: ContactTime,
    clock: Clock,
    *,
    stray: bool = False,
) -> Payment:
    """Stage the card payment of `received` from the charge on `invoice` (its id hashed from the
    invoice and the charge, as every writer of it names it): what the invoice can take applied, the
    rest kept as unapplied credit (`Invoice.take_charge`)."""
    payment_id = payment_id_for(invoice.id, charge_ref, collected=True)
    paid = Payment(
        payment_id, invoice.id, received, PaymentMethod.CARD, charge_ref, when.today, clock.now(), stray_charge=stray
    )
    taken, payment = invoice.take_charge(paid)
    work.save_invoice(scope, taken, invoice.version)
    work.add_payment(scope, taken, payment)
    return payment


def _record_success(
    ports: CollectionPorts, scope: Scope, attempt: PaymentAttempt, state: ChargeState, clock: Clock
) -> PaymentAttempt:
    """One transaction: the attempt succeeded, and a payment of each invoice it covers for what the
    charge took for it. Money the rail took is always recorded: what an invoice can no longer take
    (paid by other means, voided, lapsed, credited while the charge was in flight, or a failed
    charge that succeeded later) stays on the payment and the invoice as unapplied, the contact's
    credit, refundable to the card (`Invoice.take_charge`)."""
    when = _contact_time(ports, scope, attempt.contact_id, clock)
    work = ports.unit_of_work(f"payment attempt {attempt.id} succeeded")
    saved = work.save_attempt(scope, attempt.succeeded(state.ref, clock.now()))
    kept: list[tuple[Money, str]] = []  # logged once committed: a writer that loses the race kept nothing
    for invoice_id, amount in attempt.covers:
        invoice = ports.contact_invoice(scope, attempt.contact_id, invoice_id)
        if invoice is None:
            log.error("charge %s: invoice %s is gone; %s not recorded on it", state.ref, invoice_id, amount)
            continue
        # No payment of this charge exists yet: it is written only with the attempt's success, and
        # a concurrent writer of that success makes this transaction fail on the attempt's version.
        payment = _take_charge(work, scope, invoice, amount, state.ref, when, clock)
        if payment.unapplied is not None and not payment.unapplied.is_zero:
            kept.append((payment.unapplied, invoice.id))
    when.guard(work, scope)
    work.commit()
    for unapplied, invoice_id in kept:
        log.warning("charge %s: %s of it kept as credit on invoice %s", state.ref, unapplied, invoice_id)
    return saved


def reconcile_charge(
    ports: CollectionPorts, gateway: PaymentGateway, scope: Scope, charge_ref: str, *, clock: Clock | None = None
) -> PaymentAttempt | None:
    """Read the charge from the rail and apply its state to its attempt (found by the charge's
    metadata). A charge of another tenant or mode than `scope`, or naming no invoice, changes
    nothing (None). A charge that is not its attempt's (`_attempts_charge`: a collector's that lost
    the race, one created before a crash, one made outside Billow with the attempt's metadata) is
    cancelled if it is still unconfirmed; one that succeeded, also naming no attempt or one that
    does not exist, is recorded (`_record_stray`): a charge the rail made is never lost. Called as a
    webhook applier (billow.services.webhooks.APPLIERS) without `clock`: now. Answers the attempt
    the charge names (None: none)."""
    clock = clock or SystemClock()
    state = gateway.charge_state(charge_ref)
    meta = state.metadata
    if meta.get("tenant_id") != scope.tenant_id or meta.get("mode") != scope.mode:
        return None
    invoice_id, attempt_ref = meta.get("invoice_id"), meta.get("attempt_id")
    if not invoice_id:
        return None
    invoice = None
    contact_id = meta.get("contact_id")
    if not contact_id:
        invoice = ports.get_invoice(scope, invoice_id)
        if invoice is None:
            return None
        contact_id = invoice.contact_id
    attempt = None
    if attempt_ref and attempt_ref.rsplit("_", 1)[-1].isdigit():
        attempt = ports.get_attempt(scope, contact_id, invoice_id, attempt_number(attempt_ref))
        attempt = attempt if attempt is not None and attempt.id == attempt_ref else None
    if attempt is not None and _attempts_charge(attempt, state):
        applied = _apply(ports, gateway, scope, attempt, state, clock)
        if state.status is not ChargeStatus.SUCCEEDED or applied.charge_ref == state.ref:
            return applied
        # Meanwhile its attempt recorded another charge (a collector's): this one's money is a stray.
        attempt = applied
    elif state.status is ChargeStatus.CREATED:
        # Not its attempt's charge, or its attempt ended without it: never to be confirmed by Billow.
        if attempt is not None:
            gateway.cancel_charge(state.ref)
        return attempt
    if state.status is ChargeStatus.SUCCEEDED:
        _record_stray(
            ports, scope, invoice or ports.contact_invoice(scope, contact_id, invoice_id), contact_id, state, clock
        )
    return attempt


def _attempts_charge(attempt: PaymentAttempt, state: ChargeState) -> bool:
    """Whether `state` is the charge of `attempt`: the one it recorded, or, while it is live and has
    recorded none, one for its customer and amount that is unconfirmed (a run's, about to record
    it) or succeeded (a success read before the collector recorded its charge). An unrecorded charge
    cancelled or declined is not: only a recorded charge is ever confirmed by Billow, so it is an
    extra a resumer cancelled, or one moved outside Billow, and must not end the attempt (it did:
    the attempt failed `canceled` while a run's charge of it was still to be confirmed)."""
    if attempt.charge_ref is not None:
        return attempt.charge_ref == state.ref
    unrecorded_ok = state.status in (ChargeStatus.CREATED, ChargeStatus.SUCCEEDED)
    return (
        attempt.live and unrecorded_ok and state.customer_ref == attempt.customer_ref and state.amount == attempt.amount
    )


def _record_stray(
    ports: CollectionPorts, scope: Scope, invoice: Invoice | None, contact_id: str, state: ChargeState, clock: Clock
) -> None:
    """Record a succeeded charge no attempt recorded, naming `invoice` of `contact_id` in its
    metadata, as a payment of that invoice (`Payment.stray_charge`): applied if the invoice still
    takes it, otherwise kept as unapplied credit (`Invoice.take_charge`), refundable. Its id is the
    one a collected payment of that charge would have (hash(invoice, charge ref)), written only if
    absent, with the invoice conditioned on its version: a duplicate webhook, a sweep or another
    process recording it at once write one payment. A charge for another customer than the
    contact's, or an invoice of another contact, is not this contact's money: ignored, logged."""
    for _ in range(MAX_CONFLICT_RETRIES + 1):
        if invoice is None or invoice.contact_id != contact_id:
            log.warning("charge %s names an invoice that is not contact %s's: ignored", state.ref, contact_id)
            return
        contact = ports.get_contact(scope, contact_id)
        if contact is None or state.customer_ref is None or contact.gateway_customer_ref != state.customer_ref:
            log.warning(
                "charge %s is for customer %s, not contact %s's: another customer's object, ignored",
                state.ref,
                state.customer_ref,
                contact_id,
            )
            return
        payment_id = payment_id_for(invoice.id, state.ref, collected=True)
        if ports.get_payment(scope, contact_id, invoice.id, payment_id) is not None:
            return  # recorded already (a duplicate delivery, a sweep)
        if state.received.is_zero or state.received.currency != invoice.currency:
            log.error("charge %s succeeded for %s: not recordable on invoice %s", state.ref, state.received, invoice.id)
            return
        when = _contact_time(ports, scope, contact_id, clock)
        work = ports.unit_of_work(f"recording charge {state.ref}")
        payment = _take_charge(work, scope, invoice, state.received, state.ref, when, clock, stray=True)
        when.guard(work, scope)
        try:
            work.commit()
        except ConcurrentModification:  # recorded meanwhile, or the invoice changed
            invoice = ports.contact_invoice(scope, contact_id, invoice.id)
            continue
        log.warning(
            "charge %s (%s) was recorded by no payment attempt: recorded as payment %s of invoice %s, %s of it"
            " kept as credit",
            state.ref,
            state.received,
            payment.id,
            invoice.id,
            payment.unapplied,
        )
        return
    raise ConcurrentModification(f"recording charge {state.ref} kept conflicting; try again")
