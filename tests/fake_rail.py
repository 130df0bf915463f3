"""A payment rail for tests, implementing `billow.services.gateway.PaymentGateway` the way
localstripe models Stripe (../shared/LOCAL-ENGINES.md), with fault injection.

Faithful where collection's safety is at stake:
- idempotency keys are IGNORED (as localstripe does): every create makes a new charge;
- a created charge is unconfirmed (no money moves) until `confirm_charge`;
- confirming a charge that is not unconfirmed is an error (Stripe's `payment_intent_unexpected_state`);
- a method in `DECLINING` declines at confirmation (4000000000000341's behaviour), `EXPIRED` hard;
- an amount below `MINIMUM_MINOR` cannot be charged: `chargeable` and `create_charge` raise
  `ChargeNotPossible` (`rail.amount_too_small`) without recording a charge, as StripeGateway does;
- refunds are kept (`refunds_of` lists a charge's, with their metadata, as Stripe's
  `Refund.list(payment_intent=...)` does) and, as localstripe, OVER-REFUNDS ARE ACCEPTED: a refund
  of a charge that never succeeded is refused, any amount of one that did is not.

Its state lives in a SQLite file, so collectors in separate processes share one rail, as separate
Lambda containers share Stripe. Faults: `crash_after` raises `Crash` (a BaseException: the process
dies) right after the k-th request took effect; `unavailable_at` = k raises `GatewayUnavailable`
instead of the k-th request (it takes no effect).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from billow.domain.money import Money
from billow.gateways.stripe_amounts import refund_refusal
from billow.services.gateway import (
    ChargeNotPossible,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    GatewayEvent,
    GatewayUnavailable,
    RailRefused,
    RefundState,
    SavedMethod,
    SetupStarted,
    SetupState,
    UnknownObject,
    WebhookRejected,
)

DECLINING = "pm_card_chargeDeclinedAfterAttach"  # Stripe's test method for 4000000000000341
EXPIRED = "pm_card_chargeDeclinedExpiredCard"
MINIMUM_MINOR = 50


class Crash(BaseException):
    """The process dies."""


class UnexpectedState(Exception):
    """The rail refused a request on an object in the wrong state."""


class FakeRail:
    name = "fake"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.crash_after: int | None = None
        self.unavailable_at: int | None = None
        self.interleave: dict[str, Callable[[], None]] = {}
        """op -> what another process does right after this rail answered that op (once)."""
        self.attempted = 0
        self.requests = 0
        self.refund_failure: str | None = None
        """A refund this rail object makes fails with this reason (a closed card account, say)."""
        self.refund_refused: str | None = None
        """A refund this rail object is asked for is refused as an invalid request with this message
        (Stripe's `charge_already_refunded` after a refund made on its dashboard, say): `RailRefused`."""
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS charges (ref TEXT PRIMARY KEY, seq INTEGER, customer TEXT, method TEXT,"
                " minor INTEGER, currency TEXT, status TEXT, metadata TEXT, decline TEXT, hard INTEGER,"
                " idempotency_key TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS log (op TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS methods (ref TEXT PRIMARY KEY, customer TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS refunds (ref TEXT PRIMARY KEY, seq INTEGER, charge TEXT, minor INTEGER,"
                " currency TEXT, metadata TEXT, idempotency_key TEXT)"
            )

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    # -- faults and counting -------------------------------------------------------------------------
    def _request(self, op: str) -> None:
        self.attempted += 1
        if self.attempted == self.unavailable_at:
            raise GatewayUnavailable(f"{op}: the rail answered 503")

    def _answered(self, op: str) -> None:
        self.requests += 1
        with self._db() as db:
            db.execute("INSERT INTO log VALUES (?)", (op,))
        meanwhile = self.interleave.pop(op, None)
        if meanwhile is not None:
            meanwhile()
        if self.requests == self.crash_after:
            raise Crash(f"after rail request {self.requests} ({op})")

    def request_count(self) -> int:
        """Requests every process made to this rail."""
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM log").fetchone()[0])

    def succeeded_per_invoice(self) -> dict[str, int]:
        """Successful charges per invoice id (its metadata's): more than one is a double charge."""
        counts: dict[str, int] = {}
        for state in self.charges():
            if state.status is ChargeStatus.SUCCEEDED:
                invoice_id = state.metadata["invoice_id"]
                counts[invoice_id] = counts.get(invoice_id, 0) + 1
        return counts

    def charges(self) -> list[ChargeState]:
        with self._db() as db:
            rows = db.execute("SELECT ref FROM charges ORDER BY seq").fetchall()
        return [self._state(ref) for (ref,) in rows]

    # -- charges -------------------------------------------------------------------------------------
    def _state(self, ref: str) -> ChargeState:
        with self._db() as db:
            row = db.execute(
                "SELECT minor, currency, status, metadata, decline, hard, customer FROM charges WHERE ref = ?", (ref,)
            ).fetchone()
        if row is None:
            raise UnknownObject(f"no such payment intent {ref}")
        minor, currency, status, metadata, decline, hard, customer = row
        amount = Money(minor, currency)
        received = amount if status == ChargeStatus.SUCCEEDED.value else Money.zero(currency)
        meta = json.loads(metadata)
        return ChargeState(ref, ChargeStatus(status), amount, received, meta, decline, None, bool(hard), customer)

    def chargeable(self, amount: Money) -> None:
        if amount.minor < MINIMUM_MINOR:
            raise ChargeNotPossible(f"{amount} is below the minimum charge", code="rail.amount_too_small")

    def create_charge(self, request: ChargeRequest) -> ChargeState:
        self.chargeable(request.amount)
        self._request("create_charge")
        ref = "pi_" + uuid.uuid4().hex[:24]
        status, decline = ChargeStatus.CREATED, None
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (seq,) = db.execute("SELECT COUNT(*) FROM charges").fetchone()
            db.execute(
                "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    ref,
                    seq,
                    request.customer_ref,
                    request.method_ref,
                    request.amount.minor,
                    request.amount.currency,
                    status.value,
                    json.dumps(dict(request.metadata)),
                    decline,
                    request.idempotency_key,  # kept, never honoured: localstripe ignores it
                ),
            )
            db.execute("COMMIT")
        state = self._state(ref)
        self._answered("create_charge")
        return state

    def confirm_charge(self, charge_ref: str, *, idempotency_key: str) -> ChargeState:
        self._request("confirm_charge")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT status, method FROM charges WHERE ref = ?", (charge_ref,)).fetchone()
            if row is None or row[0] != ChargeStatus.CREATED.value:
                db.execute("ROLLBACK")
                self._answered("confirm_charge")
                raise UnexpectedState(f"payment intent {charge_ref} cannot be confirmed in status {row and row[0]}")
            status, decline, hard = ChargeStatus.SUCCEEDED.value, None, 0
            if row[1] == DECLINING:
                status, decline = ChargeStatus.FAILED.value, "card_declined"
            elif row[1] == EXPIRED:
                status, decline, hard = ChargeStatus.FAILED.value, "expired_card", 1
            db.execute(
                "UPDATE charges SET status = ?, decline = ?, hard = ? WHERE ref = ?",
                (status, decline, hard, charge_ref),
            )
            db.execute("COMMIT")
        state = self._state(charge_ref)
        self._answered("confirm_charge")
        return state

    def charge_state(self, charge_ref: str) -> ChargeState:
        self._request("charge_state")
        state = self._state(charge_ref)
        self._answered("charge_state")
        return state

    def cancel_charge(self, charge_ref: str) -> ChargeState:
        self._request("cancel_charge")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (status,) = db.execute("SELECT status FROM charges WHERE ref = ?", (charge_ref,)).fetchone()
            if status == ChargeStatus.SUCCEEDED.value:
                db.execute("ROLLBACK")
                raise UnexpectedState(f"payment intent {charge_ref} succeeded: it cannot be canceled")
            db.execute("UPDATE charges SET status = ? WHERE ref = ?", (ChargeStatus.CANCELED.value, charge_ref))
            db.execute("COMMIT")
        state = self._state(charge_ref)
        self._answered("cancel_charge")
        return state

    def settle(self, charge_ref: str, status: ChargeStatus, decline: str | None = None) -> None:
        """Move a charge as the rail would on its own (a test's webhook-side change)."""
        with self._db() as db:
            db.execute("UPDATE charges SET status = ?, decline = ? WHERE ref = ?", (status.value, decline, charge_ref))

    # -- customers and methods: what collection does not exercise, kept real and small ----------------
    def ensure_customer(
        self, *, existing_ref: str | None, email: str, name: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        return existing_ref or "cus_" + uuid.uuid4().hex[:14]

    def start_setup(self, customer_ref: str, *, idempotency_key: str, metadata: Mapping[str, str]) -> SetupStarted:
        ref = "seti_" + uuid.uuid4().hex[:14]
        with self._db() as db:
            db.execute("INSERT INTO methods VALUES (?, ?)", (ref.replace("seti_", "pm_"), customer_ref))
        return SetupStarted(ref, ref + "_secret")

    def setup_state(self, setup_ref: str) -> SetupState:
        method_ref = setup_ref.replace("seti_", "pm_")
        with self._db() as db:
            (customer,) = db.execute("SELECT customer FROM methods WHERE ref = ?", (method_ref,)).fetchone()
        return SetupState(
            setup_ref, customer, True, SavedMethod(method_ref, customer, "card", "visa", "4242", 12, 2034)
        )

    def attach_method(self, method_ref: str, customer_ref: str) -> None:
        """Its methods are attached when made: nothing to do."""

    def methods(self, customer_ref: str) -> list[SavedMethod]:
        with self._db() as db:
            rows = db.execute("SELECT ref FROM methods WHERE customer = ?", (customer_ref,)).fetchall()
        return [SavedMethod(ref, customer_ref, "card") for (ref,) in rows]

    def remove_method(self, method_ref: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM methods WHERE ref = ?", (method_ref,))

    # -- refunds -------------------------------------------------------------------------------------
    def refund(
        self, charge_ref: str, amount: Money, *, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundState:
        self.refundable(amount)
        self._request("refund")
        if self.refund_refused is not None:
            raise RailRefused(self.refund_refused)
        try:  # Stripe's InvalidRequestError, as StripeGateway reports it
            succeeded = self._state(charge_ref).status is ChargeStatus.SUCCEEDED
        except UnexpectedState as unknown:
            raise RailRefused(str(unknown)) from unknown
        if not succeeded:
            raise RailRefused(f"payment intent {charge_ref} did not succeed: nothing to refund")
        ref = "re_" + uuid.uuid4().hex[:14]
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (seq,) = db.execute("SELECT COUNT(*) FROM refunds").fetchone()
            db.execute(  # no check of what the charge received: localstripe accepts over-refunds
                "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ref, seq, charge_ref, amount.minor, amount.currency, json.dumps(dict(metadata)), idempotency_key),
            )
            db.execute("COMMIT")
        status = "succeeded" if self.refund_failure is None else "failed"
        state = RefundState(ref, charge_ref, amount, status, dict(metadata), self.refund_failure)
        self._answered("refund")
        return state

    def refundable(self, amount: Money) -> None:
        """Stripe's units (a KWD refund in multiples of 0.010), as StripeGateway checks them."""
        refusal = refund_refusal(amount)
        if refusal is not None:
            raise ChargeNotPossible(refusal.message, code=refusal.code)

    def charges_of_attempt(self, customer_ref: str, attempt_id: str, *, since: datetime) -> list[ChargeState]:
        self._request("charges_of_attempt")
        found = [c for c in reversed(self.charges()) if c.metadata.get("attempt_id") == attempt_id]
        self._answered("charges_of_attempt")
        return found

    def refunds_of(self, charge_ref: str) -> list[RefundState]:
        self._request("refunds_of")
        with self._db() as db:
            rows = db.execute(
                "SELECT ref, minor, currency, metadata FROM refunds WHERE charge = ? ORDER BY seq DESC", (charge_ref,)
            ).fetchall()
        found = [RefundState(ref, charge_ref, Money(m, c), "succeeded", json.loads(md)) for ref, m, c, md in rows]
        self._answered("refunds_of")
        return found

    def refunded(self, charge_ref: str) -> list[Money]:
        """The amounts of the charge's refunds (a test's look at the rail, not counted as a request)."""
        with self._db() as db:
            rows = db.execute("SELECT minor, currency FROM refunds WHERE charge = ? ORDER BY seq", (charge_ref,))
            return [Money(m, c) for m, c in rows.fetchall()]

    def verify_webhook(self, payload: bytes, signature: str, secret: str, *, now: datetime) -> GatewayEvent:
        raise WebhookRejected("the fake rail signs no webhooks")
