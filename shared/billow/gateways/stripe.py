"""The Stripe rail: `billow.services.gateway.PaymentGateway` on the official `stripe` SDK.

One `stripe.StripeClient` per tenant API key (a tenant's test and live keys are two gateways), its
base address configurable so the local stack points it at localstripe. What Stripe answers is
reduced to the port's terms here and nowhere else:
- a decline is a FAILED `ChargeState` with Stripe's `decline_code` (or error code), never an
  exception; `hard_decline` when no retry with that method can succeed;
- 429, 5xx, a connection error or a timeout is `GatewayUnavailable` (retry later: nothing known
  changed); a refund Stripe refuses as invalid is `RailRefused` (a coded 409); any other refusal of
  Stripe's is a programming or configuration error and raises as is;
- amounts go through `billow.gateways.stripe_amounts` (Stripe's units, its minimum charges):
  an amount Stripe cannot charge is `ChargeNotPossible` before any request.

Charges are PaymentIntents created unconfirmed (`confirm=False`: no money moves) with the request's
metadata and idempotency key, then confirmed off-session once Billow recorded their id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import stripe

from billow.domain.money import Money
from billow.gateways.stripe_amounts import charge_refusal, from_stripe_units, refund_refusal, to_stripe_units
from billow.services.gateway import (
    METHOD_UNUSABLE,
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
)

HARD_DECLINES = frozenset(
    {
        "card_not_supported",
        "currency_not_supported",
        "do_not_try_again",
        "expired_card",
        "fraudulent",
        "incorrect_number",
        "invalid_account",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
        "payment_method_not_available",
    }
)
"""Decline codes no retry with the same method can turn into a payment (Stripe's "hard declines"):
dunning waits for a new method instead of retrying."""

_STATUSES = {
    "requires_confirmation": ChargeStatus.CREATED,
    "requires_payment_method": ChargeStatus.CREATED,  # FAILED when it carries a last_payment_error
    "requires_action": ChargeStatus.REQUIRES_ACTION,
    "requires_capture": ChargeStatus.PROCESSING,
    "processing": ChargeStatus.PROCESSING,
    "succeeded": ChargeStatus.SUCCEEDED,
    "canceled": ChargeStatus.CANCELED,
}

TIMEOUT_SECONDS = 20
"""Per request: a Lambda invocation must outlive its calls (the API's is 29 s)."""


_METHOD_CODES = frozenset({"resource_missing", "payment_method_unexpected_state", "payment_method_not_available"})


def _method_unusable(error: stripe.InvalidRequestError) -> bool:
    return error.http_status == 404 or getattr(error, "param", None) == "payment_method" or error.code in _METHOD_CODES


def _unavailable(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return True
    return error.http_status is not None and (error.http_status == 429 or error.http_status >= 500)


def _translated(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Stripe's answer as a plain dict; unreachable or overloaded Stripe as `GatewayUnavailable`."""
    try:
        return dict(call(*args, **kwargs).to_dict())
    except stripe.StripeError as error:
        if _unavailable(error):
            raise GatewayUnavailable(f"Stripe: {error.user_message or error}") from error
        raise


def _refused(error: stripe.InvalidRequestError) -> RailRefused:
    """Stripe's refusal of an invalid request (no such object, a wrong state...) as a coded refusal."""
    reason = error.code or "invalid_request"
    return RailRefused(f"Stripe refused the request ({reason}): {error.user_message or error}")


def refund_state(refund: Mapping[str, Any], charge_ref: str) -> RefundState:
    """A Refund (as a dict) in the port's terms."""
    return RefundState(
        ref=str(refund["id"]),
        charge_ref=charge_ref,
        amount=from_stripe_units(int(refund["amount"]), str(refund["currency"])),
        status=str(refund.get("status") or "succeeded"),
        metadata={str(k): str(v) for k, v in (refund.get("metadata") or {}).items()},
        failure=refund.get("failure_reason"),
    )


def charge_state(intent: Mapping[str, Any]) -> ChargeState:
    """A PaymentIntent (as a dict) in the port's terms."""
    currency = str(intent["currency"])
    amount = from_stripe_units(int(intent["amount"]), currency)
    error = intent.get("last_payment_error") or None
    status = _STATUSES.get(str(intent["status"]), ChargeStatus.PROCESSING)
    if status is ChargeStatus.CREATED and intent["status"] == "requires_payment_method" and error:
        status = ChargeStatus.FAILED  # declined: Stripe wants another method
    received = intent.get("amount_received")
    if received is None:  # localstripe leaves it out: what a succeeded intent received is its amount
        received = intent["amount"] if status is ChargeStatus.SUCCEEDED else 0
    decline = None
    # A declined intent cancelled since (Billow cancels it before recording the failure) keeps the
    # decline while Stripe keeps `last_payment_error` (localstripe always; Stripe clears it on updates).
    if status in (ChargeStatus.FAILED, ChargeStatus.CANCELED) and error:
        decline = error.get("decline_code") or error.get("code") or "card_declined"
    return ChargeState(
        ref=str(intent["id"]),
        status=status,
        amount=amount,
        received=from_stripe_units(int(received), currency),
        metadata=dict(intent.get("metadata") or {}),
        decline_code=decline,
        failure_message=None if not error else error.get("message"),
        hard_decline=decline in HARD_DECLINES,
        customer_ref=_ref(intent.get("customer")),
        client_secret=None if intent.get("client_secret") is None else str(intent["client_secret"]),
    )


def _saved_method(method: Mapping[str, Any], customer_ref: str) -> SavedMethod:
    card = method.get("card") or {}
    return SavedMethod(
        ref=str(method["id"]),
        customer_ref=str(method.get("customer") or customer_ref),
        kind=str(method.get("type") or "card"),
        brand=card.get("brand"),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
    )


def _ref(value: Any) -> str | None:
    """An id Stripe may send expanded (an object) or not (localstripe expands `latest_charge`...)."""
    if value is None or isinstance(value, str):
        return value
    return str(value["id"])


class StripeGateway:
    """`PaymentGateway` on Stripe for one API key (one tenant, one mode).

    `localstripe`: the API at `api_base` is localstripe, which takes `off_session` only when a
    PaymentIntent is created and confirmed at once, not on a later confirm (real Stripe takes it
    on confirm): the confirm then leaves it out (docs/payments.md, the local stack)."""

    name = "stripe"

    def __init__(self, api_key: str, *, api_base: str | None = None, localstripe: bool = False) -> None:
        base = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=0,  # retried by Billow's own records, not behind its back
            http_client=stripe.new_default_http_client(timeout=TIMEOUT_SECONDS),
        )
        self._localstripe = localstripe

    # -- customers and payment methods --------------------------------------------------------
    def ensure_customer(
        self, *, existing_ref: str | None, email: str, name: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        if existing_ref is not None:
            return existing_ref
        params = {"email": email, "name": name, "metadata": dict(metadata)}
        created = _translated(self._client.v1.customers.create, params, {"idempotency_key": idempotency_key})
        return str(created["id"])

    def start_setup(self, customer_ref: str, *, idempotency_key: str, metadata: Mapping[str, str]) -> SetupStarted:
        params = {
            "customer": customer_ref,
            "usage": "off_session",
            "payment_method_types": ["card"],
            "metadata": dict(metadata),
        }
        intent = _translated(self._client.v1.setup_intents.create, params, {"idempotency_key": idempotency_key})
        return SetupStarted(str(intent["id"]), str(intent["client_secret"]))

    def setup_state(self, setup_ref: str) -> SetupState:
        try:
            intent = _translated(self._client.v1.setup_intents.retrieve, setup_ref)
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:
                raise
            return SetupState(setup_ref, "", False, None)  # no such setup: nobody's
        customer = _ref(intent.get("customer")) or ""
        succeeded = intent.get("status") == "succeeded"
        method_ref = _ref(intent.get("payment_method"))
        metadata = dict(intent.get("metadata") or {})
        secret = None if intent.get("client_secret") is None else str(intent["client_secret"])
        if not succeeded or method_ref is None:
            return SetupState(str(intent["id"]), customer, False, None, metadata, secret)
        method = _translated(self._client.v1.payment_methods.retrieve, method_ref)
        return SetupState(str(intent["id"]), customer, True, _saved_method(method, customer), metadata, secret)

    def attach_method(self, method_ref: str, customer_ref: str) -> None:
        """Stripe attaches a SetupIntent's method to its customer itself; localstripe does not, so
        the method is attached here when it is still nobody's (a method attached is left as it is)."""
        method = _translated(self._client.v1.payment_methods.retrieve, method_ref)
        if not method.get("customer"):
            _translated(self._client.v1.payment_methods.attach, method_ref, {"customer": customer_ref})

    def methods(self, customer_ref: str) -> list[SavedMethod]:
        listed = _translated(self._client.v1.payment_methods.list, {"customer": customer_ref, "type": "card"})
        return [_saved_method(m, customer_ref) for m in listed.get("data") or ()]

    def remove_method(self, method_ref: str) -> None:
        try:
            _translated(self._client.v1.payment_methods.detach, method_ref)
        except stripe.InvalidRequestError as error:
            if "not attached" not in str(error) and error.http_status != 404:
                raise  # already detached (a retry) or gone: removed either way

    # -- charges ------------------------------------------------------------------------------
    def chargeable(self, amount: Money) -> None:
        refusal = charge_refusal(amount)
        if refusal is not None:
            raise ChargeNotPossible(refusal.message, code=refusal.code)

    def create_charge(self, request: ChargeRequest) -> ChargeState:
        self.chargeable(request.amount)
        params: dict[str, Any] = {
            "amount": to_stripe_units(request.amount),
            "currency": request.amount.currency.lower(),
            "customer": request.customer_ref,
            "payment_method": request.method_ref,
            "payment_method_types": ["card"],
            "confirm": False,
            "metadata": dict(request.metadata),
        }
        if request.description and not self._localstripe:
            params["description"] = request.description
        try:
            intent = _translated(
                self._client.v1.payment_intents.create, params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            if error.code == "amount_too_small":  # a currency whose minimum Billow cannot know
                raise ChargeNotPossible(str(error.user_message or error), code="rail.amount_too_small") from error
            if _method_unusable(error):
                raise ChargeNotPossible(str(error.user_message or error), code=METHOD_UNUSABLE) from error
            raise
        return charge_state(intent)

    def confirm_charge(self, charge_ref: str, *, idempotency_key: str) -> ChargeState:
        params: dict[str, Any] = {} if self._localstripe else {"off_session": True}
        try:
            intent = _translated(
                self._client.v1.payment_intents.confirm, charge_ref, params, {"idempotency_key": idempotency_key}
            )
        except stripe.CardError:
            return self.charge_state(charge_ref)  # declined: the intent carries the decline
        except stripe.InvalidRequestError as error:
            if not _method_unusable(error):
                raise
            # The method was detached (removed) or is gone since the charge was created: no retry
            # with it can succeed, a hard failure, not an error that leaves the attempt live.
            state = self.charge_state(charge_ref)
            if state.status is not ChargeStatus.CREATED:
                return state
            return replace(state, status=ChargeStatus.FAILED, decline_code=METHOD_UNUSABLE, hard_decline=True)
        return charge_state(intent)

    def charge_state(self, charge_ref: str) -> ChargeState:
        if not charge_ref.startswith("pi_"):  # another kind's id (a webhook's): no request
            raise UnknownObject(f"{charge_ref!r} is not a PaymentIntent")
        try:
            return charge_state(_translated(self._client.v1.payment_intents.retrieve, charge_ref))
        except stripe.InvalidRequestError as error:
            if error.http_status == 404 or error.code == "resource_missing":
                raise UnknownObject(f"Stripe has no PaymentIntent {charge_ref}") from error
            raise

    def cancel_charge(self, charge_ref: str) -> ChargeState:
        try:
            return charge_state(_translated(self._client.v1.payment_intents.cancel, charge_ref))
        except stripe.InvalidRequestError:
            state = self.charge_state(charge_ref)  # succeeded or canceled already: say what it is
            if state.status in (ChargeStatus.SUCCEEDED, ChargeStatus.CANCELED):
                return state
            raise

    def verify_webhook(self, payload: bytes, signature: str, secret: str, *, now: datetime) -> GatewayEvent:
        """billow.gateways.stripe_webhooks.verify: one place verifies Stripe's signatures."""
        from billow.gateways.stripe_webhooks import verify

        return verify(payload, signature, secret, now=now)

    def refund(
        self, charge_ref: str, amount: Money, *, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundState:
        self.refundable(amount)
        params = {"payment_intent": charge_ref, "amount": to_stripe_units(amount), "metadata": dict(metadata)}
        try:
            refund = _translated(self._client.v1.refunds.create, params, {"idempotency_key": idempotency_key})
        except stripe.InvalidRequestError as error:
            raise _refused(error) from error
        return refund_state(refund, charge_ref)

    def refundable(self, amount: Money) -> None:
        refusal = refund_refusal(amount)
        if refusal is not None:
            raise ChargeNotPossible(refusal.message, code=refusal.code)

    def charges_of_attempt(self, customer_ref: str, attempt_id: str, *, since: datetime) -> list[ChargeState]:
        """The customer's PaymentIntents created since `since` (a minute earlier: clocks differ),
        all pages, those whose metadata names the attempt. localstripe filters lists by neither
        customer nor creation: there, every PaymentIntent is listed."""
        found: list[ChargeState] = []
        params: dict[str, Any] = {"limit": 100}
        if not self._localstripe:
            params |= {"customer": customer_ref, "created": {"gte": int(since.timestamp()) - 60}}
        while True:
            page = _translated(self._client.v1.payment_intents.list, params)
            found += [
                charge_state(i) for i in page["data"] if (i.get("metadata") or {}).get("attempt_id") == attempt_id
            ]
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def refunds_of(self, charge_ref: str) -> list[RefundState]:
        """Every refund of the PaymentIntent, newest first, all pages (`Refund.list(payment_intent=)`,
        which localstripe supports too), with the metadata each was created with."""
        found: list[RefundState] = []
        params: dict[str, Any] = {"payment_intent": charge_ref, "limit": 100}
        while True:
            try:
                page = _translated(self._client.v1.refunds.list, params)
            except stripe.InvalidRequestError as error:
                raise _refused(error) from error
            found += [refund_state(r, charge_ref) for r in page["data"]]
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]
