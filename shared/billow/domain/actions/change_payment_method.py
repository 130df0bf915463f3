"""Set the payment method that pays the subscription."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billow.domain.actions import Action, Asked, SubscriptionKind, register
from billow.domain.effects import Effect
from billow.domain.subscriptions import Subscription


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    payment_method: str | None = None


class ChangePaymentMethod(SubscriptionKind[PaymentMethod, PaymentMethod]):
    name = "change_payment_method"
    asks = holds = PaymentMethod

    def check(self, asked: Asked[PaymentMethod], action: Action) -> Action:
        self.needed(asked.params.payment_method, "payment_method")
        return action

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        method = self.params(effect.action).payment_method
        return replace(effect.subscription, payment_method=method), f"payment method {method}"


CHANGE_PAYMENT_METHOD = register(ChangePaymentMethod())
