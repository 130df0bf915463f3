"""Set the payment method that pays the subscription: one the subscription's contact saved (its
`POST /contacts/{id}/payment-methods`) and has not removed, or none (`null`): the subscription is
then paid with the contact's default method. Removing a saved method sets every subscription naming
it back to none, logged as this action by the system (billow.services.payment_methods.remove_method)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billow.domain.actions import Action, Asked, SubscriptionKind, register
from billow.domain.effects import Effect
from billow.domain.errors import RuleViolation
from billow.domain.subscriptions import Subscription


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    payment_method: str | None = None


class ChangePaymentMethod(SubscriptionKind[PaymentMethod, PaymentMethod]):
    name = "change_payment_method"
    asks = holds = PaymentMethod

    def check(self, asked: Asked[PaymentMethod], action: Action) -> Action:
        method = asked.params.payment_method
        if method is not None and not asked.lookups.has_saved_method(method):
            raise RuleViolation(
                f"contact {asked.subscription.contact_id} has no saved payment method {method}: "
                "save it first (POST /contacts/{contact_id}/payment-methods)",
                rule="payment_method.not_saved",
                field="payment_method",
            )
        return action

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        method = self.params(effect.action).payment_method
        shown = "the contact's default" if method is None else method
        return replace(effect.subscription, payment_method=method), f"payment method {shown}"


CHANGE_PAYMENT_METHOD = register(ChangePaymentMethod())
