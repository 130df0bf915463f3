"""The business's settings: read them, and change its billing rules."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from billow.domain.actions import kinds
from billow.domain.calendar import WEEKDAYS
from billow.domain.collection import CollectionMode
from billow.domain.money import AMOUNT_PATTERN
from billow.domain.policy import Timing, TrialLimit
from billow.domain.rules import Alignment, BillingRules, CalendarMode, ServiceState, weekday_number
from billow.domain.tenants import TenantSettings
from billow.services.inputs import FromString, Name, coded
from billow.services.tenants import (
    update_billing_rules,
    update_collection,
    update_dunning_policy,
    update_profile,
    update_subscription_policy,
)
from billow.services.views import money
from pydantic import BeforeValidator, Field, Strict
from pydantic_core import PydanticCustomError
from runtime import store

from api.context import current_tenant
from api.schemas import Amount, Body, Currency

if TYPE_CHECKING:
    ActionKind = str
else:  # the API's schema lists every kind of action registered (billow.domain.actions)
    ActionKind = StrEnum("ActionKind", {kind.name.upper(): kind.name for kind in kinds()})

router = APIGatewayRouter()

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class BillingRulesBody(Body):
    """Only the rules given change; `null` clears an optional one (threshold, cut-off)."""

    calendar: FromString[CalendarMode] | None = None
    period_day: int | None = Field(default=None, ge=1, le=31)
    period_weekday: Weekday | None = None
    threshold_day: int | None = Field(default=None, ge=1, le=31)
    threshold_weekday: Weekday | None = None
    alignment: FromString[Alignment] | None = None
    bill_days_before: int | None = Field(default=None, ge=0, le=28)
    post_bill_cutoff_day: int | None = Field(default=None, ge=1, le=31)
    billable_states: list[FromString[ServiceState]] | None = Field(default=None, min_length=1)
    non_creditable_states: list[FromString[ServiceState]] | None = None


_CLEARABLE = {"threshold_day", "threshold_weekday", "post_bill_cutoff_day"}


def _changes(body: BillingRulesBody) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None and name not in _CLEARABLE:
            continue
        if name in ("period_weekday", "threshold_weekday") and value is not None:
            value = weekday_number(value, name)
        if name in ("billable_states", "non_creditable_states"):
            value = frozenset(ServiceState(v) for v in value)
        changes[name] = value
    return changes


def _rules(r: BillingRules) -> dict[str, Any]:
    return {
        "calendar": r.calendar.value,
        "period_day": r.period_day,
        "period_weekday": WEEKDAYS[r.period_weekday],
        "threshold_day": r.threshold_day,
        "threshold_weekday": None if r.threshold_weekday is None else WEEKDAYS[r.threshold_weekday],
        "alignment": r.alignment.value,
        "bill_days_before": r.bill_days_before,
        "post_bill_cutoff_day": r.post_bill_cutoff_day,
        "billable_states": sorted(s.value for s in r.billable_states),
        "non_creditable_states": sorted(s.value for s in r.non_creditable_states),
    }


def _settings(s: TenantSettings) -> dict[str, Any]:
    return {
        "name": s.name,
        "timezone": s.timezone,
        "payment_terms_days": s.payment_terms_days,
        "invoice_prefix": s.invoice_prefix,
        "invoice_review_days": s.invoice_review_days,
        "auto_apply_credit": s.auto_apply_credit,
        "credit_overdraft": s.credit_overdraft,
        "credit_overdraft_price": money(s.credit_overdraft_price),
        "billing": _rules(s.billing),
        "subscriptions": s.subscriptions.as_json(),
        "collection": {"mode": s.collection.mode.value, "collect_whole_debt": s.collection.collect_whole_debt},
        "dunning": s.dunning.as_json(),
    }


ProductId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Days = Annotated[int, Field(ge=0, le=3660)]


class SubscriptionPolicyBody(Body):
    """Only the rules given change; `null` clears a pause limit."""

    trial_limit: FromString[TrialLimit] | None = None
    trial_extension: bool | None = None
    max_trial_extension_days: Days | None = None
    cancel_in_contract: FromString[Timing] | None = None
    cancel_out_of_contract: FromString[Timing] | None = None
    upgrade: FromString[Timing] | None = None
    downgrade: FromString[Timing] | None = None
    regret_days: Days | None = None
    pause_max_times: Days | None = None
    pause_max_days: Days | None = None
    grace_min_days: Days | None = None
    grace_max_days: Days | None = None
    debt_threshold: dict[Currency, Amount] | None = Field(
        default=None,
        max_length=200,
        description="per currency, the most a contact may owe and still have services activated; replaces "
        "the previous map; a currency not listed allows no debt",
        examples=[{"USD": "100.00", "JPY": "10000"}],
    )
    max_services: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0)]] | None = Field(
        default=None, max_length=50, description="account classification -> most non-churned services"
    )
    reasons: (
        dict[
            FromString[ActionKind],
            Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1)],
        ]
        | None
    ) = Field(default=None, description="per action, the reasons a request must choose from (at least one)")
    tier_paths: list[list[ProductId]] | None = Field(default=None, max_length=50)
    requires: dict[ProductId, list[ProductId]] | None = Field(default=None, max_length=200)
    excludes: list[Annotated[tuple[ProductId, ProductId], Strict(False)]] | None = Field(default=None, max_length=200)
    activate_on_payment: bool | None = Field(
        default=None,
        description="access on payment: a new order's services whose first charge is invoiced with the order stay "
        "draft until that invoice is paid (an order's activate_on_payment overrides it)",
    )
    unpaid_order_lapse_days: int | None = Field(
        default=None,
        ge=1,
        le=365,
        description="such an order whose first invoice is still unpaid this many days after the order day lapses: "
        "its services are cancelled and the invoice voided",
    )


_POLICY_CLEARABLE = frozenset({"pause_max_times", "pause_max_days"})


@router.patch(
    "/settings/subscriptions",
    summary="Change subscription-management rules (trials, cancellations, changes, pauses, grace, regret...)",
)
def patch_subscription_policy(body: SubscriptionPolicyBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _settings(update_subscription_policy(store, ctx, _given(body, _POLICY_CLEARABLE)))


def _given(body: Body, clearable: frozenset[str]) -> dict[str, Any]:
    """The rules a body gives, in their JSON form; a `null` only for those it clears."""
    given = body.model_dump(mode="json", exclude_unset=True).items()
    return {name: value for name, value in given if value is not None or name in clearable}


class OverdraftPrice(Body):
    """A price per credit: an exact amount in the currency's exponent."""

    amount: Amount
    currency: Currency


class ProfileBody(Body):
    """Only the fields given change."""

    name: Name | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, min_length=1, max_length=64, description="an IANA time zone name")
    invoice_prefix: str | None = Field(default=None, min_length=1, max_length=10, pattern=r"^[A-Za-z0-9]+$")
    payment_terms_days: int | None = Field(default=None, ge=0, le=365)
    invoice_review_days: int | None = Field(
        default=None, ge=0, le=30, description="days a new invoice stays a draft for review (0: finalised at once)"
    )
    auto_apply_credit: bool | None = Field(
        default=None, description="new invoices consume the contact's credit balance as they are finalised"
    )
    credit_overdraft: int | None = Field(
        default=None,
        ge=0,
        le=10**15,
        description="credits a contact may consume beyond its balance, invoiced at the cycle end (0: none)",
    )
    credit_overdraft_price: OverdraftPrice | None = Field(
        default=None, description="what one overdrawn credit is invoiced at, on the contact's next invoice"
    )


@router.patch(
    "/settings/profile",
    summary="Change the business profile: name, time zone, invoice prefix, payment terms, invoice review "
    "window, automatic use of credit (they apply from now on; issued invoices keep theirs)",
)
def patch_profile(body: ProfileBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return _settings(update_profile(store, ctx, changes))


@router.get("/settings", summary="The business's settings, billing and subscription rules included")
def get_settings() -> dict[str, Any]:
    return _settings(current_tenant(router.current_event).settings)


@router.patch(
    "/settings/billing",
    summary="Change billing rules (new subscriptions are billed under them; existing ones keep theirs)",
)
def patch_billing_rules(body: BillingRulesBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _settings(update_billing_rules(store, ctx, _changes(body)))


class CollectionBody(Body):
    """Only the fields given change."""

    mode: FromString[CollectionMode] | None = Field(
        default=None,
        description="how the invoices of a contact that names no mode are collected: automatic (charged when "
        "issued), credit_limit (charged once the contact's balance exceeds its credit limit) or manual",
    )
    collect_whole_debt: bool | None = Field(
        default=None,
        description="under credit_limit: once the limit is crossed, charge everything the contact owes in that "
        "currency, not only the new invoice",
    )


@router.patch(
    "/settings/collection",
    summary="Change how invoices are collected: the default mode (automatic, credit_limit, manual) and whether "
    "crossing a credit limit collects the whole debt (invoices issued from now on)",
)
def patch_collection(body: CollectionBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _settings(update_collection(store, ctx, body.model_dump(exclude_unset=True, exclude_none=True)))


# Each rule's violation answers the domain's code for it (docs/dunning.md, the policy's table), the
# bounds shown in the schema; the domain checks them again (`DunningPolicy`).
_SCHEDULE = "lists at most 10 days, strictly increasing, each"
RetryDays = Annotated[
    list[Annotated[int, Field(ge=1, le=365)]],
    Field(max_length=10),
    coded("dunning.retry_days", f"retry_days {_SCHEDULE} 1 to 365"),
]
ReminderDays = Annotated[
    list[Annotated[int, Field(ge=0, le=365)]],
    Field(max_length=10),
    coded("dunning.reminder_days", f"reminder_days {_SCHEDULE} 0 to 365"),
]
Classifications = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(max_length=50),
    coded("dunning.classifications", "lists at most 50 different, non-empty classifications (up to 64 characters)"),
]


def _not_negative(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("-") and re.fullmatch(AMOUNT_PATTERN, value[1:]):
        raise PydanticCustomError("dunning.threshold", "a deactivation threshold is not negative")
    return value


Threshold = Annotated[Amount, BeforeValidator(_not_negative)]


class DunningBody(Body):
    """Only the rules given change; `null` clears `cancel_after_days` (never cancel). A change makes
    the policy's next `version`: cases already open keep theirs."""

    retry_days: RetryDays | None = Field(
        default=None,
        description="days after an invoice's first failed charge on which it is retried (1 to 365, strictly "
        "increasing); a hard decline waits for a new payment method instead",
        examples=[[1, 3, 5, 7]],
    )
    reminder_days: ReminderDays | None = Field(
        default=None,
        description="days after the case opened on which the customer is reminded (0 to 365, strictly increasing)",
    )
    grace_days: Annotated[int, Field(ge=0, le=365), coded("dunning.grace_days", "grace_days is 0 to 365")] | None = (
        Field(default=None, description="days after the case opened before any service is deactivated")
    )
    deactivation_threshold: dict[Currency, Threshold] | None = Field(
        default=None,
        max_length=200,
        description="per currency, services billed to the debt are deactivated only while it is over this amount "
        "(0: any debt); replaces the previous map; a currency not listed is never deactivated",
        examples=[{"USD": "50.00"}],
    )
    cancel_after_days: (
        Annotated[
            int,
            Field(ge=1, le=365),
            coded("dunning.cancel_after_days", "cancel_after_days is 1 to 365, or null (never cancel)"),
        ]
        | None
    ) = Field(default=None, description="days deactivated before dunning cancels a service; null: never")
    excluded_from_deactivation: Classifications | None = Field(
        default=None, description="account classifications never deactivated (nor cancelled)"
    )
    excluded_from_cancellation: Classifications | None = Field(
        default=None, description="account classifications whose services are never cancelled"
    )
    cancel_with_fees: bool | None = Field(
        default=None, description="a cancellation by dunning charges the usual fees (a cancellation fee in contract)"
    )


@router.get("/settings/dunning", summary="The dunning policy: retries, reminders, grace, deactivation, cancellation")
def get_dunning_policy() -> dict[str, Any]:
    return current_tenant(router.current_event).settings.dunning.as_json()


@router.patch(
    "/settings/dunning",
    summary="Change the dunning policy (cases opened from now on follow it; open cases keep the version they "
    "were opened under)",
)
def patch_dunning_policy(body: DunningBody) -> dict[str, Any]:
    ctx = current_tenant(router.current_event)
    return _settings(update_dunning_policy(store, ctx, _given(body, frozenset({"cancel_after_days"}))))
