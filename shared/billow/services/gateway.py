"""The payment gateway port: what Billow asks of a payment rail (save a payment method, charge it
off-session, refund a charge, verify and read a webhook), in Billow's terms. Amounts are `Money`;
the rail's own units and rules (Stripe's minor units, zero- and three-decimal currencies, minimum
charges) stay inside its implementation in `billow.gateways`. Nothing above `billow.gateways`
imports a rail's SDK.

Implementations: `billow.gateways.stripe.StripeGateway` (the official `stripe` SDK; locally pointed
at localstripe) and `billow.gateways.manual.ManualGateway` (bank transfer confirmed by staff: it
saves no card and charges nothing, so collection by it leaves the invoice to be paid by transfer).

Exactly-once charging does not rest on the rail's idempotency keys (localstripe ignores them; real
Stripe keeps them 24 h): a charge is created unconfirmed, its reference recorded on Billow's attempt,
and only a recorded charge is ever confirmed (docs/payments.md). The keys are still sent, so real
Stripe de-duplicates a retried request too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from billow.domain.errors import Conflict
from billow.domain.money import Money


class ChargeStatus(StrEnum):
    """A charge's state on the rail, reduced to what Billow acts on."""

    CREATED = "created"  # exists, not confirmed: no money moved
    PROCESSING = "processing"  # confirmed, outcome not known yet (some methods settle later)
    REQUIRES_ACTION = "requires_action"  # the customer must authenticate (3-D Secure): not off-session
    SUCCEEDED = "succeeded"  # money received
    FAILED = "failed"  # declined or errored: `decline_code` says why
    CANCELED = "canceled"  # will never move money


@dataclass(frozen=True, slots=True)
class ChargeState:
    """A charge as the rail reports it now."""

    ref: str  # the rail's id (a Stripe PaymentIntent id)
    status: ChargeStatus
    amount: Money
    received: Money  # what was actually captured (0 unless SUCCEEDED)
    metadata: Mapping[str, str] = field(default_factory=dict)  # what Billow attached when creating it
    decline_code: str | None = None  # "card_declined", "insufficient_funds", "expired_card"...
    failure_message: str | None = None
    hard_decline: bool = False
    """No retry can succeed with this method (missing, expired, lost or stolen card): dunning waits
    for a new method instead of retrying."""
    customer_ref: str | None = None
    """The rail's customer the charge is for (a Stripe customer id): a charge naming a contact's
    invoice is that contact's only when it is for the contact's customer (`reconcile_charge`)."""
    client_secret: str | None = field(default=None, repr=False)
    """What Stripe.js confirms the charge with, on-session (never stored by Billow, never logged)."""


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    customer_ref: str
    method_ref: str
    amount: Money
    idempotency_key: str
    metadata: Mapping[str, str]
    """Always carries `tenant_id`, `mode`, `invoice_id`, `attempt_id`: the rail's objects name the
    Billow records they belong to, so a webhook finds them and a tenant never reaches another's."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class RefundState:
    ref: str  # the rail's refund id
    charge_ref: str
    amount: Money
    status: str  # "succeeded", "pending", "failed"
    metadata: Mapping[str, str] = field(default_factory=dict)
    """What Billow attached when creating it: `tenant_id`, `mode`, `refund_id` (Billow's)."""
    failure: str | None = None  # why it failed (status "failed")


@dataclass(frozen=True, slots=True)
class SavedMethod:
    """A payment method saved on the rail for a customer (a card: brand, last 4, expiry)."""

    ref: str  # a Stripe PaymentMethod id
    customer_ref: str
    kind: str  # "card"
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True, slots=True)
class SetupStarted:
    """A method being saved: the client confirms it with `client_secret` (Stripe.js), then Billow
    reads the outcome with `SetupState`."""

    ref: str  # a Stripe SetupIntent id
    client_secret: str


@dataclass(frozen=True, slots=True)
class SetupState:
    ref: str
    customer_ref: str
    succeeded: bool
    method: SavedMethod | None  # the saved method once `succeeded`
    metadata: Mapping[str, str] = field(default_factory=dict)  # what Billow attached (tenant, mode, contact)
    client_secret: str | None = None
    """What Stripe.js confirms it with (as `SetupStarted` gave it): a replayed setup request answers it again."""


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """A verified webhook event: its id (de-duplication), type, whether live, and the object it is
    about (a charge's state, a setup's, a refund's), as sent: Billow re-reads the object from the
    rail before acting, so the order events arrive in never matters."""

    id: str
    type: str  # "payment_intent.succeeded", "payment_intent.payment_failed", "setup_intent.succeeded"...
    live: bool
    created: datetime
    object_ref: str
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RailSecrets:
    """A tenant's secrets for one mode on a rail: the API key Billow calls it with, and the secret
    its webhooks are signed with. Never logged, never stored in the table."""

    api_key: str
    webhook_secret: str


class SecretsSource(Protocol):
    """Where rail secrets live: Secrets Manager on AWS (one secret per tenant, read once per
    container), the local stack's configuration locally."""

    def rail_secrets(self, rail: str, tenant_id: str, mode: str) -> RailSecrets | None:
        """None: the tenant has no account on that rail in that mode."""
        ...


class GatewayUnavailable(Exception):
    """The rail could not be reached or answered 5xx/429: retry later (nothing known changed)."""


METHOD_UNUSABLE = "rail.method_unusable"
"""The charge names a payment method the rail cannot use for the customer: detached (removed), never
attached, or gone. A refused create is `ChargeNotPossible` with this code; a refused confirm is a
hard FAILED `ChargeState` with it as the decline code (collection records either; never retried)."""


class UnknownObject(Exception):
    """The rail has no such object of the kind asked for (a reference Billow never made, or another
    kind's id, a SetupIntent's given as a PaymentIntent's): nothing to apply, now or later. A webhook
    about it is acknowledged and ignored, never retried."""


class ChargeNotPossible(Conflict):
    """This rail cannot charge this amount or this contact at all, whatever is retried: an outcome
    collection records (with `code`) without calling the rail, not a failure to retry. Codes:
    `rail.amount_too_small` (below the rail's minimum charge in that currency),
    `rail.amount_too_large`, `rail.amount_precision` (a fraction the rail cannot charge: a KWD
    amount not a multiple of 0.010), `rail.amount_not_positive`, `rail.method_unusable`
    (`METHOD_UNUSABLE`), and `rail.not_collectable`
    (the manual rail: the invoice is paid by transfer). A `Conflict` (409) if a route surfaces it,
    naming `amount` in its `fields` for the `rail.amount_*` codes (the amount is at fault)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, field="amount" if code.startswith("rail.amount_") else None)


class RailRefused(Conflict):
    """The rail refused a request as invalid, whatever is retried (Stripe's `InvalidRequestError`:
    no such charge, a charge already refunded in full, a charge of another account): a coded
    refusal (`rail.refused`, 409), never a failure to retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="rail.refused")


class WebhookRejected(Exception):
    """A webhook whose signature does not verify (`webhook.bad_signature`), or whose timestamp is
    outside the tolerance (`webhook.stale`), or that is no event at all (`webhook.malformed`,
    `billow.services.webhooks.MalformedDelivery`): answered 400 with `code`, nothing stored or applied."""

    code = "webhook.bad_signature"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PaymentGateway(Protocol):
    name: str  # "stripe", "manual"

    def chargeable(self, amount: Money) -> None:
        """Nothing if this rail can charge `amount` as it is; else `ChargeNotPossible` with its code.
        Local and free (no request): collection asks before writing an attempt. `create_charge`
        checks it again."""
        ...

    def refundable(self, amount: Money) -> None:
        """Nothing if this rail can refund `amount` exactly; else `ChargeNotPossible` with its code
        (`rail.amount_precision`, `rail.amount_not_positive`). Local and free (no request): a card
        refund asks before reserving anything. `refund` checks it again."""
        ...

    def ensure_customer(
        self, *, existing_ref: str | None, email: str, name: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        """The rail's customer for a contact: `existing_ref` when it has one, else a new one."""
        ...

    def start_setup(self, customer_ref: str, *, idempotency_key: str, metadata: Mapping[str, str]) -> SetupStarted:
        """Begin saving a method for off-session use (a SetupIntent, `usage=off_session`)."""
        ...

    def setup_state(self, setup_ref: str) -> SetupState:
        """The setup as the rail has it: a read, with no side effect (a method Billow recorded
        removed, read again by a replayed webhook or a refused re-record, stays detached)."""
        ...

    def attach_method(self, method_ref: str, customer_ref: str) -> None:
        """The saved method attached to the customer, if it is not yet (Stripe attaches a
        SetupIntent's method itself; localstripe does not). Called only to record a method Billow
        has not recorded before, never for one it recorded removed."""
        ...

    def methods(self, customer_ref: str) -> list[SavedMethod]: ...

    def remove_method(self, method_ref: str) -> None:
        """Detach it from its customer: it can no longer be charged."""
        ...

    def create_charge(self, request: ChargeRequest) -> ChargeState:
        """Create the charge, unconfirmed (no money moves): its `ref` is recorded before `confirm`."""
        ...

    def confirm_charge(self, charge_ref: str, *, idempotency_key: str) -> ChargeState:
        """Confirm it off-session; a decline is a FAILED state with its code, not an exception."""
        ...

    def charge_state(self, charge_ref: str) -> ChargeState:
        """The charge as the rail has it now; `UnknownObject` when it has no such charge."""
        ...

    def cancel_charge(self, charge_ref: str) -> ChargeState: ...

    def charges_of_attempt(self, customer_ref: str, attempt_id: str, *, since: datetime) -> list[ChargeState]:
        """The charges of the customer created since `since` whose metadata names `attempt_id`,
        newest first, all pages (Stripe: `PaymentIntent.list(customer=, created[gte]=)`, read after
        write, unlike its search). An attempt resumed from pending looks here for a charge an
        earlier run created and died before recording, since the rail's idempotency keys cannot be
        relied on (localstripe ignores them; Stripe keeps them 24 h)."""
        ...

    def refund(
        self, charge_ref: str, amount: Money, *, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundState:
        """Refund `amount` of the charge. The rail may accept more than the charge received
        (localstripe does): Billow checks that before calling. An amount it cannot take is
        `ChargeNotPossible`; a request it refuses as invalid (an unknown charge...) `RailRefused`."""
        ...

    def refunds_of(self, charge_ref: str) -> list[RefundState]:
        """Every refund of the charge with its metadata (Stripe: `Refund.list(payment_intent=...)`,
        all pages). A card refund resumed after a crash looks here for its `refund_id` before
        refunding, since the rail's idempotency keys cannot be relied on (localstripe ignores
        them; Stripe keeps them 24 h)."""
        ...

    def verify_webhook(self, payload: bytes, signature: str, secret: str, *, now: datetime) -> GatewayEvent:
        """The event, if `signature` verifies against `secret` and its timestamp is within 5
        minutes of `now`; else `WebhookRejected`."""
        ...
