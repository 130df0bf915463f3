"""The manual rail: bank transfer, confirmed by staff (`POST /invoices/{id}/payments`, which exists).

It saves no payment method and moves no money. Every charge it is asked for is `ChargeNotPossible`
with code `rail.not_collectable`, at once and without any request: collection by this rail records
that outcome and leaves the invoice open, to be paid by transfer. A contact whose collection mode is
manual, or a tenant with no Stripe account in that mode, is collected by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from billow.domain.errors import Conflict
from billow.domain.money import Money
from billow.services.gateway import (
    ChargeNotPossible,
    ChargeRequest,
    ChargeState,
    GatewayEvent,
    RefundState,
    SavedMethod,
    SetupStarted,
    SetupState,
    WebhookRejected,
)


class ManualGateway:
    name = "manual"

    def _no_methods(self) -> Conflict:
        return Conflict(
            "payments by bank transfer need no saved method; this tenant has no card rail in this mode",
            code="payment_method.no_rail",
        )

    def ensure_customer(
        self, *, existing_ref: str | None, email: str, name: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> str:
        raise self._no_methods()

    def start_setup(self, customer_ref: str, *, idempotency_key: str, metadata: Mapping[str, str]) -> SetupStarted:
        raise self._no_methods()

    def setup_state(self, setup_ref: str) -> SetupState:
        raise self._no_methods()

    def attach_method(self, method_ref: str, customer_ref: str) -> None:
        raise self._no_methods()

    def methods(self, customer_ref: str) -> list[SavedMethod]:
        return []

    def remove_method(self, method_ref: str) -> None:
        raise self._no_methods()

    def chargeable(self, amount: Money) -> None:
        raise ChargeNotPossible(
            f"{amount} is paid by bank transfer, confirmed by staff: the manual rail charges nothing",
            code="rail.not_collectable",
        )

    def refundable(self, amount: Money) -> None:
        raise ChargeNotPossible(
            f"the {self.name} rail refunds nothing: a payment by transfer is refunded outside Billow",
            code="rail.not_collectable",
        )

    def create_charge(self, request: ChargeRequest) -> ChargeState:
        self.chargeable(request.amount)
        raise AssertionError("unreachable")  # pragma: no cover

    def _no_charges(self, charge_ref: str) -> ChargeNotPossible:
        return ChargeNotPossible(f"the manual rail made no charge {charge_ref}", code="rail.not_collectable")

    def confirm_charge(self, charge_ref: str, *, idempotency_key: str) -> ChargeState:
        raise self._no_charges(charge_ref)

    def charge_state(self, charge_ref: str) -> ChargeState:
        raise self._no_charges(charge_ref)

    def cancel_charge(self, charge_ref: str) -> ChargeState:
        raise self._no_charges(charge_ref)

    def refund(
        self, charge_ref: str, amount: Money, *, idempotency_key: str, metadata: Mapping[str, str]
    ) -> RefundState:
        raise self._no_charges(charge_ref)

    def refunds_of(self, charge_ref: str) -> list[RefundState]:
        raise self._no_charges(charge_ref)

    def charges_of_attempt(self, customer_ref: str, attempt_id: str, *, since: datetime) -> list[ChargeState]:
        return []  # it makes no charges

    def verify_webhook(self, payload: bytes, signature: str, secret: str, *, now: datetime) -> GatewayEvent:
        raise WebhookRejected("the manual rail sends no webhooks")
