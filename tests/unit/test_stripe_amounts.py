"""Stripe's currency rules (billow.gateways.stripe_amounts) and its answers in the port's terms."""

from __future__ import annotations

import pytest
from billow.domain.money import Money
from billow.gateways.manual import ManualGateway
from billow.gateways.stripe_amounts import charge_refusal, from_stripe_units, to_stripe_units
from billow.services.gateway import ChargeNotPossible, ChargeRequest, ChargeStatus
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [
        ("19.99", "EUR", 1999),  # two decimals: cents
        ("500", "JPY", 500),  # zero-decimal: as it is, not times 100
        ("5.120", "KWD", 5120),  # three decimals, last digit 0
        ("1200", "ISK", 120000),  # ISK: two decimals in Stripe's API, whole krónur only
        ("250.00", "MGA", 250),  # MGA: ISO gives it two decimals, Stripe none
    ],
)
def test_amounts_in_stripe_units(amount: str, currency: str, units: int) -> None:
    money = Money.parse(amount, currency)
    assert to_stripe_units(money) == units
    assert from_stripe_units(units, currency.lower()) == money


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        ("5.124", "KWD", "rail.amount_precision"),  # not a multiple of 10 fils
        ("1.005", "BHD", "rail.amount_precision"),
        ("250.50", "MGA", "rail.amount_precision"),  # a fraction of an ariary Stripe cannot charge
        ("0.49", "USD", "rail.amount_too_small"),
        ("0.29", "GBP", "rail.amount_too_small"),
        ("49", "JPY", "rail.amount_too_small"),
        ("174.99", "HUF", "rail.amount_too_small"),
        ("1000000.00", "EUR", "rail.amount_too_large"),  # 9 digits of cents
        ("0.00", "EUR", "rail.amount_not_positive"),
    ],
)
def test_amounts_stripe_cannot_charge_have_a_code(amount: str, currency: str, code: str) -> None:
    refusal = charge_refusal(Money.parse(amount, currency))
    assert refusal is not None and refusal.code == code
    assert currency in refusal.message


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("0.50", "USD"), ("0.30", "GBP"), ("50", "JPY"), ("0.010", "KWD"), ("999999.99", "EUR"), ("0.01", "IDR")],
)
def test_amounts_at_the_limits_are_chargeable(amount: str, currency: str) -> None:
    assert charge_refusal(Money.parse(amount, currency)) is None


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(["EUR", "JPY", "KWD", "ISK", "MGA", "USD"]))
def test_conversion_is_exact_or_refused(minor: int, currency: str) -> None:
    """Never rounded: an amount either converts and back to itself, or is not chargeable."""
    money = Money(minor, currency)
    units = to_stripe_units(money)
    if units is None:
        assert charge_refusal(money) is not None
    else:
        assert from_stripe_units(units, currency) == money


def test_the_manual_rail_charges_nothing() -> None:
    rail = ManualGateway()
    with pytest.raises(ChargeNotPossible) as refused:
        rail.chargeable(Money.parse("10.00", "EUR"))
    assert refused.value.code == "rail.not_collectable"
    request = ChargeRequest("cus_1", "pm_1", Money.parse("10.00", "EUR"), "k", {"tenant_id": "t"})
    with pytest.raises(ChargeNotPossible):
        rail.create_charge(request)
    assert rail.methods("cus_1") == []


def test_a_declined_intent_is_a_failed_state_with_its_code() -> None:
    from billow.gateways.stripe import charge_state

    declined = {
        "id": "pi_1",
        "status": "requires_payment_method",
        "amount": 1000,
        "currency": "eur",
        "metadata": {"invoice_id": "inv_1"},
        "last_payment_error": {"code": "card_declined", "decline_code": "expired_card", "message": "expired"},
    }
    state = charge_state(declined)
    assert state.status is ChargeStatus.FAILED
    assert state.decline_code == "expired_card" and state.hard_decline
    assert state.received == Money.zero("EUR") and state.amount == Money.parse("10.00", "EUR")
    soft = charge_state(
        {**declined, "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline"}}
    )
    assert soft.status is ChargeStatus.FAILED and not soft.hard_decline
    created = charge_state({**declined, "status": "requires_confirmation", "last_payment_error": None})
    assert created.status is ChargeStatus.CREATED and created.decline_code is None
    paid = charge_state({**declined, "status": "succeeded", "last_payment_error": None, "amount_received": 1000})
    assert paid.status is ChargeStatus.SUCCEEDED and paid.received == Money.parse("10.00", "EUR")
    yen = charge_state({**declined, "status": "succeeded", "currency": "jpy", "last_payment_error": None})
    assert yen.received == Money(1000, "JPY")  # localstripe sends no amount_received


def test_stripe_unreachable_or_overloaded_is_unavailable() -> None:
    import stripe
    from billow.gateways.stripe import _translated
    from billow.services.gateway import GatewayUnavailable

    def failing(error: Exception) -> object:
        def call() -> object:
            raise error

        return call

    for error in (
        stripe.RateLimitError("slow down", http_status=429),
        stripe.APIError("boom", http_status=500),
        stripe.APIConnectionError("no route"),
    ):
        with pytest.raises(GatewayUnavailable):
            _translated(failing(error))
    with pytest.raises(stripe.InvalidRequestError):  # a refusal is not "try later"
        _translated(failing(stripe.InvalidRequestError("bad", param="amount", http_status=400)))
