"""Top-ups (docs/credits.md, "Top-ups"): a contact buys a credit pack of the price list, charged to
its saved card off-session; its credits are granted once the payment succeeded, exactly once.

A top-up is an **invoice** of one line selling the pack (`Invoice.top_up` says what it sells; its
id is derived from the contact and the caller's request id, so the same request is one invoice),
issued due on the contact's today and collected at once through the path every invoice takes
(`billow.services.collection.collect_invoice`: one attempt, one charge, whoever collects and however
often), whatever the contact's collection mode. Its credits are one purchased grant whose id is
derived from the invoice (`topup_<invoice id>`), booked by whoever first sees the invoice paid:
this request once its charge succeeded, or the consumer of `invoice.paid` (a webhook that applied
the charge first, the sweep, a retry of the request): the same grant, booked once by `change_wallet`.

A declined charge (or nothing to charge it with) voids the invoice: the purchase failed, nothing is
owed, nothing is granted, and the same request answers that failure again (a new purchase is a new
request id). A charge still settling answers `pending`; its outcome is applied when the rail tells
(webhook, sweep). An invoice left unpaid (the request died before the charge) is voided the next
day by the daily run (its `lapses_on`, as an unpaid first invoice of access on payment lapses)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.collection import AttemptStatus, PaymentAttempt
from billow.domain.credits import (
    ACTION_PATTERN,
    LINE_KIND,
    Change,
    EntryKind,
    Grant,
    GrantKind,
    LedgerEntry,
    Wallet,
    check_request_id,
    entry_id,
    grant,
    top_up_grant_id,
)
from billow.domain.errors import ConcurrentModification, Conflict, InvalidInput, NotFound, RuleViolation
from billow.domain.invoices import Invoice, InvoiceStatus, TopUp
from billow.domain.lines import LineDraft
from billow.services.billing import InvoiceNumbers
from billow.services.collection import collect_invoice
from billow.services.contacts import check_orderable, contact_time, get_contact
from billow.services.context import Clock, TenantContext
from billow.services.credits import prepaid
from billow.services.credits.grants import MAX_LIVE_GRANTS
from billow.services.credits.prepaid import PrepaidPorts
from billow.services.credits.wallet import change_wallet_now
from billow.services.gateway import GatewayUnavailable, PaymentGateway
from billow.services.idempotency import key_reused
from billow.services.ports import CollectionStore, PaymentMethodStore, TenantStore
from billow.services.receivables import void_invoice

INVOICE_PREFIX = "inv_top_"
AUTO_PREFIX = "auto_"
"""Request ids of the auto top-up's purchases (`auto_<low-balance entry id>`): refused from callers."""
FAILED_ATTEMPTS = frozenset({AttemptStatus.FAILED, AttemptStatus.NOT_COLLECTABLE})


class TopUpPorts(PrepaidPorts, TenantStore, CollectionStore, PaymentMethodStore, Protocol):
    """The wallet, the top-up's invoice and its payment attempts."""


class TopUpStatus(StrEnum):
    PENDING = "pending"  # the charge is settling (or the rail was out of reach): answered again later
    SUCCEEDED = "succeeded"  # paid: the credits are granted
    FAILED = "failed"  # declined, or nothing to charge: the invoice is void, nothing granted


@dataclass(frozen=True, slots=True)
class TopUpState:
    """A top-up as it stands: its invoice, its latest payment attempt, and the grant once paid."""

    invoice: Invoice
    status: TopUpStatus
    attempt: PaymentAttempt | None
    grant: LedgerEntry | None
    wallet: Wallet | None
    replayed: bool = False
    client_secret: str | None = field(default=None, repr=False)
    """On-session and not paid yet: what Stripe.js confirms the charge with (read from the rail)."""
    credit_note_id: str | None = None
    """Refunded: the credit note its refund went through (`top_up_refunds`)."""

    @property
    def top_up(self) -> TopUp:
        assert self.invoice.top_up is not None
        return self.invoice.top_up


def invoice_id_of(contact_id: str, request_id: str) -> str:
    """The top-up's invoice id: the same contact and request id, the same invoice."""
    return INVOICE_PREFIX + hashlib.sha256(f"{contact_id}\n{request_id}".encode()).hexdigest()[:24]


def buy_top_up(
    store: TopUpPorts,
    gateway: PaymentGateway | None,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    contact_id: str,
    pack_id: object,
    request_id: object,
    *,
    auto: bool = False,
    on_session: bool = False,
) -> TopUpState:
    """Buy the pack `pack_id` for the contact, once per `request_id`: its invoice issued, charged,
    and its credits granted once paid. The same request again answers the same top-up (`replayed`),
    resuming it where it stopped; the same id with another pack is refused (422
    `idempotency.key_reused`). `on_session`: the charge is created for the saved card but the
    customer confirms it with Stripe.js (the answer's `client_secret`); its outcome comes by
    webhook."""
    request_id = check_request_id(request_id, "purchase", reserved=() if auto else (AUTO_PREFIX,))
    contact = get_contact(store, ctx, contact_id)  # 404 before anything else
    if gateway is None:
        raise RuleViolation(
            "the business has no payment rail in this mode: a top-up is charged to a saved card",
            rule="credits.no_payment_rail",
        )
    if not isinstance(pack_id, str) or not ACTION_PATTERN.match(pack_id):
        raise InvalidInput("pack names a credit pack of the price list", field="pack", code="credits.unknown_pack")
    invoice_id = invoice_id_of(contact_id, request_id)
    invoice = store.get_invoice(ctx.scope, invoice_id)
    replayed = invoice is not None
    if invoice is None:
        check_orderable(contact)  # an archived contact buys nothing (409 contact.archived)
        if contact.gateway_customer_ref is None or contact.default_method_ref is None:
            raise Conflict(
                f"contact {contact_id} has no saved card to charge a top-up to: save one first "
                f"(POST /contacts/{contact_id}/payment-methods/setup)",
                field="contact_id",
                code="credits.no_payment_method",
            )
        live = store.get_wallet(ctx.scope, contact_id).wallet.live_grants
        if live >= MAX_LIVE_GRANTS:  # its grant could not be booked once paid: refused before any charge
            raise RuleViolation(
                f"the wallet holds {live} grants with credits left: no more until some are spent",
                rule="credits.too_many_grants",
                field="contact_id",
            )
        top_up = TopUp(pack_id, 0, request_id, auto, on_session)
        invoice, replayed = _issue(store, ctx, clock, numbers, contact_id, top_up, invoice_id)
    if (
        invoice.top_up is None
        or invoice.contact_id != contact_id
        or (invoice.top_up.pack_id, invoice.top_up.on_session) != (pack_id, on_session)
    ):
        raise key_reused("request_id", request_id)
    if invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.OVERDUE):
        # The rail out of reach, or other collectors of the contact's invoices winning every race: the
        # attempt stays as recorded (or is yet to be made), answered pending; the sweep, or the
        # collector fed by the invoice's invoice.issued, takes it on.
        with contextlib.suppress(GatewayUnavailable, ConcurrentModification):
            collect_invoice(store, gateway, ctx.scope, invoice.id, clock=clock)
    state = settle_top_up(store, ctx, clock, numbers, invoice.id)
    return replace(_with_secret(state, gateway), replayed=replayed)


def _with_secret(state: TopUpState, gateway: PaymentGateway | None) -> TopUpState:
    """An on-session top-up not paid yet, with the client secret Stripe.js confirms it with."""
    attempt = state.attempt
    if gateway is None or state.status is not TopUpStatus.PENDING or attempt is None or not attempt.on_session:
        return state
    if not attempt.charge_ref:
        return state
    with contextlib.suppress(GatewayUnavailable):
        return replace(state, client_secret=gateway.charge_state(attempt.charge_ref).client_secret)
    return state


def _issue(
    store: TopUpPorts,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    contact_id: str,
    asked: TopUp,
    invoice_id: str,
) -> tuple[Invoice, bool]:
    """The top-up's invoice, issued on the contact's today and due then, and False; a racing copy of
    the same request that wrote it first: that one, and True (this request is a replay of it)."""
    time = contact_time(store, ctx, contact_id, clock)
    pack = store.get_credit_prices(ctx.tenant_id)[0].pack_on(asked.pack_id, time.today)
    today = time.today
    # The line names the invoice as its "service" over its issue day: a refund's credit note credits
    # that line, which is how it finds the payment it refunds (`credited_invoices`).
    day = Period(today, today + timedelta(days=1))
    line = LineDraft(
        LINE_KIND, f"{pack.credits:,} credits ({pack.id})", invoice_id, "", 1, pack.price, Fraction(1), pack.price, day
    )
    draft = InvoiceDraft("", contact_id, pack.price.currency, today, today, day, (line,))
    invoice = Invoice.issue(
        draft,
        invoice_id=invoice_id,
        number=numbers.next(ctx),
        payment_terms_days=0,
        test_clock=time.on_test_clock,
        lapses_on=today + timedelta(days=1),
    )
    invoice = replace(invoice, top_up=replace(asked, credits=pack.credits))
    work = store.unit_of_work(f"top-up {invoice_id}")
    work.add_invoice(ctx.scope, invoice)
    time.guard(work, ctx.scope)
    try:
        work.commit()
    except ConcurrentModification:
        found = store.get_invoice(ctx.scope, invoice_id)
        if found is None:
            raise  # the contact's clock moved: sent again, it reads the new day
        return found, True
    return store.get_invoice(ctx.scope, invoice_id) or invoice, False


def settle_top_up(
    store: TopUpPorts,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    invoice_id: str,
    read: Invoice | None = None,
) -> TopUpState:
    """Bring the top-up to what its invoice and payment say: paid, its credits granted (once);
    its charge declined or nothing to charge it with, the invoice voided; else pending. `read`:
    the invoice as just read (the first attempt does not read it again)."""
    for _ in range(3):
        invoice, read = read or store.get_invoice(ctx.scope, invoice_id), None
        if invoice is None or invoice.top_up is None:
            raise NotFound(f"no top-up {invoice_id}", field="top_up_id")
        attempt = store.latest_attempt(ctx.scope, invoice.contact_id, invoice.id)
        if invoice.status is InvoiceStatus.PAID:
            entry, wallet = grant_paid_top_up(store, ctx, clock, numbers, invoice)
            return TopUpState(invoice, TopUpStatus.SUCCEEDED, attempt, entry, wallet)
        if invoice.status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
            return TopUpState(invoice, TopUpStatus.FAILED, attempt, None, None)
        if attempt is not None and attempt.status in FAILED_ATTEMPTS and invoice.amount_paid.is_zero:
            why = attempt.decline_code or attempt.reason or attempt.status.value
            try:
                voided = void_invoice(store, ctx, invoice.id, f"top-up failed: {why}", clock=clock, replay=True)
            except (Conflict, RuleViolation, ConcurrentModification):
                continue  # paid (or changed) meanwhile: read it again
            return TopUpState(voided, TopUpStatus.FAILED, attempt, None, None)
        return TopUpState(invoice, TopUpStatus.PENDING, attempt, None, None)
    raise ConcurrentModification(f"top-up {invoice_id} kept changing; try again")


def grant_paid_top_up(
    store: PrepaidPorts,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    invoice: Invoice,
    *,
    recover: bool = False,
    reactivate: bool = True,
) -> tuple[LedgerEntry | None, Wallet | None]:
    """Grant the credits a paid top-up's invoice sold (purchased credits: they roll over), at most
    once: the grant's id is derived from the invoice; then re-activate the payment-driven services
    the wallet can pay again (`prepaid.reactivate_paid`), when the grant is new, or with `recover`
    (the invoice's mark is still set: a caller died between the grant and the re-activation).
    Anything else: nothing."""
    top_up = invoice.top_up
    if top_up is None or invoice.status is not InvoiceStatus.PAID:
        return None, None
    own = entry_id(EntryKind.GRANT, top_up_grant_id(invoice.id))
    done = store.get_credit_entry(ctx.scope, invoice.contact_id, own)
    if done is not None:
        if recover and reactivate:
            prepaid.reactivate_paid(store, ctx, clock, invoice.contact_id, numbers)
        return done, None

    def operation(wallet: Wallet, now: datetime) -> Change:
        return grant(
            wallet, Grant(top_up_grant_id(invoice.id), GrantKind.PURCHASED, top_up.credits, now, source=invoice.id)
        )

    applied = change_wallet_now(store, ctx, invoice.contact_id, clock, own, operation)
    if reactivate and (not applied.replayed or recover):
        prepaid.reactivate_paid(store, ctx, clock, invoice.contact_id, numbers)
    return applied.entry, applied.wallet


def credit_note_id_of(invoice_id: str) -> str:
    """The credit note a top-up's refund goes through (one per top-up)."""
    return "cn_" + invoice_id.removeprefix("inv_")


def get_top_up(
    store: TopUpPorts,
    ctx: TenantContext,
    clock: Clock,
    numbers: InvoiceNumbers,
    contact_id: str,
    top_up_id: str,
    gateway: PaymentGateway | None = None,
) -> TopUpState:
    """A contact's top-up by its id (its invoice's), settled to what its payment says now: with the
    client secret while an on-session one waits for the customer, the credit note once refunded."""
    invoice = store.get_invoice(ctx.scope, top_up_id)
    if invoice is None or invoice.top_up is None or invoice.contact_id != contact_id:
        get_contact(store, ctx, contact_id)
        raise NotFound(f"contact {contact_id} has no top-up {top_up_id}", field="top_up_id")
    state = _with_secret(settle_top_up(store, ctx, clock, numbers, top_up_id, invoice), gateway)
    if state.status is TopUpStatus.SUCCEEDED:
        note = store.get_invoice(ctx.scope, credit_note_id_of(top_up_id))
        state = replace(state, credit_note_id=None if note is None else note.id)
    return state
