"""Request bodies of the REST API. Unknown fields are refused, amounts are decimal strings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PricingModel
from billow.domain.collection import CollectionMode
from billow.domain.invoices import InvoiceKind, InvoiceStatus, PaymentMethod
from billow.domain.pricing import EXAMPLE_USAGE_PRICE
from billow.domain.rules import Alignment
from billow.services.inputs import Amount, BillingDay, BillingInstant, Body, Currency, Day, FromString, Name

__all__ = ["Amount", "BillingDay", "Body", "Currency", "Cursor", "Id", "InvoiceKind", "InvoiceStatus", "Limit"]
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticKnownError

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


def _digits(value: Any) -> Any:
    """A query parameter is text: a count is ASCII digits only (pydantic would take " 5" or "5_0")."""
    if (isinstance(value, str) and not value.isascii()) or (isinstance(value, str) and not value.isdigit()):
        raise PydanticKnownError("int_parsing")
    return value


Limit = Annotated[int, Field(ge=1, le=100), BeforeValidator(_digits), Query(description="most items on one page")]
Cursor = Annotated[
    str | None,
    Query(max_length=2000, description="the `cursor` of the previous page; a page may be short, follow until null"),
]


UsageJson = Annotated[
    dict[str, Any] | None,
    Field(
        description="how the service's usage is priced (metered terms; always billed in arrears): meter, "
        "aggregation (sum, count, max, unique_count, latest), model (per_unit, graduated, volume, package, "
        "percentage, graduated_percentage) and the model's prices as decimal strings; see docs/billing.md, "
        '"Usage pricing". Checked strictly (usage.* codes); on an edit it replaces the whole usage price, null '
        "removes it",
        examples=[dict(EXAMPLE_USAGE_PRICE)],
    ),
]


class PriceTermsBody(Body):
    price: Amount
    currency: Currency
    cycle: FromString[Cycle]
    billing_model: FromString[BillingModel] = BillingModel.ADVANCE
    pricing_model: FromString[PricingModel] = PricingModel.FLAT
    setup_fee: Amount | None = None
    trial_days: int = Field(default=0, ge=0, le=366, description="days at the start that are not charged")
    alignment: FromString[Alignment] | None = Field(
        default=None, description="overrides the business's alignment when added to an existing subscription"
    )
    usage: UsageJson = None
    term_cycles: int | None = Field(
        default=None, ge=1, le=120, description="termed period in cycles: then auto-renews or expires"
    )
    auto_renew: bool = Field(default=True, description="whether a termed service renews at the end of its term")
    contract_cycles: int | None = Field(
        default=None, ge=1, le=120, description="contract period in cycles (cancellation rules and fee apply)"
    )
    cancellation_fee: Amount | None = Field(default=None, description="charged on cancelling inside the contract")
    included_credits: int = Field(
        default=0,
        ge=0,
        le=10**15,
        description="credits the plan includes each billing cycle (they reset, never roll over)",
    )
    prepaid_credits: int = Field(
        default=0,
        ge=0,
        le=10**15,
        description="payment-driven: credits taken from the wallet for each period instead of an invoice (price 0)",
    )
    features: list[str] = Field(
        default_factory=list, max_length=50, description="features its effective services grant (entitlements)"
    )
    limits: dict[str, int] = Field(
        default_factory=dict, max_length=50, description="limits its effective services grant: name to a whole number"
    )


class ProductBody(Body):
    multiline = frozenset({"description"})

    name: Name = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    terms: list[PriceTermsBody] = Field(default_factory=list, max_length=50)


class ProductPatchBody(Body):
    """Only the fields given change."""

    multiline = frozenset({"description"})

    name: Name | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


class PriceTermsPatchBody(Body):
    """Only the fields given change; the result is a new version of the terms (a new id)."""

    price: Amount | None = None
    currency: Currency | None = None
    cycle: FromString[Cycle] | None = None
    billing_model: FromString[BillingModel] | None = None
    pricing_model: FromString[PricingModel] | None = None
    setup_fee: Amount | None = None
    trial_days: int | None = Field(default=None, ge=0, le=366)
    alignment: FromString[Alignment] | None = None
    usage: UsageJson = None
    term_cycles: int | None = Field(default=None, ge=1, le=120)
    auto_renew: bool | None = None
    contract_cycles: int | None = Field(default=None, ge=1, le=120)
    cancellation_fee: Amount | None = None
    included_credits: int | None = Field(default=None, ge=0, le=10**15)
    prepaid_credits: int | None = Field(default=None, ge=0, le=10**15)
    features: list[str] | None = None
    limits: dict[str, int] | None = None


class AddressBody(Body):
    line1: str = Field(min_length=1, max_length=200)
    line2: str = Field(default="", max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(default="", max_length=20)
    region: str = Field(default="", max_length=100)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


CreditLimit = Annotated[
    dict[Currency, Amount] | None,
    Field(
        max_length=50,
        description="per currency, the most the contact may owe in it and still have services activated "
        "(a currency not listed has no limit); replaces the previous map, null clears it",
        examples=[{"EUR": "100.00", "JPY": "10000"}],
    ),
]


COLLECTION_HELP = (
    "how the contact's invoices are collected: automatic (charged when issued), credit_limit (charged once its "
    "balance exceeds its credit limit) or manual (paid by transfer); null: the tenant's default"
)


DUNNING_EXCLUDED_HELP = (
    "excluded from dunning: no dunning case opens for the contact, and its open case behaves as paused (no "
    "retry, reminder, deactivation or cancellation; it still ends once nothing is owed)"
)


class ContactBody(Body):
    name: Name = Field(min_length=1, max_length=200)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    billing_address: AddressBody | None = None
    classification: str | None = Field(default=None, max_length=50)
    credit_limit: CreditLimit = None
    preferred_payment_method: FromString[PaymentMethod] | None = None
    collection: FromString[CollectionMode] | None = Field(default=None, description=COLLECTION_HELP)
    dunning_excluded: bool = Field(default=False, description=DUNNING_EXCLUDED_HELP)


AllowanceQuantity = Annotated[
    str | None,
    Field(
        pattern=r"^[0-9]+(\.[0-9]+)?$",
        max_length=40,
        examples=["1000"],
        description="a decimal string; absent: no such window",
    ),
]


class AllowanceBody(Body):
    """A contact's own allowance on one meter (the `allowance` of a usage price, docs/billing.md
    "Allowances"): at least one window."""

    per_record: AllowanceQuantity = None
    per_day: AllowanceQuantity = None
    per_cycle: AllowanceQuantity = None
    beyond: Literal["refuse", "overage"] = Field(
        default="overage",
        description="refuse: usage beyond a window is refused at submission (409 usage.allowance_exceeded); "
        "overage: it is accepted and billed by the usage price",
    )


class ContactPatchBody(Body):
    """Only the fields given change; `null` clears an optional one (billing_address,
    classification, credit_limit, preferred_payment_method)."""

    name: Name | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    billing_address: AddressBody | None = None
    classification: str | None = Field(default=None, max_length=50)
    credit_limit: CreditLimit = None
    preferred_payment_method: FromString[PaymentMethod] | None = None
    collection: FromString[CollectionMode] | None = Field(default=None, description=COLLECTION_HELP)
    dunning_excluded: bool | None = Field(default=None, description=DUNNING_EXCLUDED_HELP)


class OrderItemBody(Body):
    product_id: Id
    terms_id: Id
    quantity: int = Field(default=1, ge=1, le=1_000_000)


class OrderBody(Body):
    contact_id: Id
    items: list[OrderItemBody] = Field(min_length=1, max_length=50)
    start_date: BillingDay | None = Field(default=None, description="default: today on the contact's clock")
    reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="your idempotency key: repeating it returns the first order",
    )
    activate_on_payment: bool | None = Field(
        default=None,
        description="access on payment: the services whose first charge is invoiced with the order stay draft "
        "until that invoice is paid, and lapse if it is still unpaid after the business's unpaid_order_lapse_days "
        "(default: the business's activate_on_payment setting)",
    )


class QuoteBody(Body):
    contact_id: Id
    items: list[OrderItemBody] = Field(min_length=1, max_length=50)
    start_date: BillingDay | None = None


class TestClockBody(Body):
    frozen_time: BillingInstant


class AdvanceClockBody(Body):
    to: BillingInstant


class ManualPaymentBody(Body):
    amount: Amount
    currency: Currency
    method: FromString[PaymentMethod] = PaymentMethod.BANK_TRANSFER
    reference: str = Field(min_length=1, max_length=100, description="bank reference; idempotency key")
    received_on: Day


Reason = Annotated[str, Field(min_length=1, max_length=500)]


class VoidBody(Body):
    reason: Reason = Field(description="why the invoice is cancelled (kept on the invoice)")


class FinalizeBody(Body):
    """No fields: an empty object (or no body at all); anything in it is refused."""


class WriteOffBody(Body):
    reason: Reason | None = Field(default=None, description="why it is written off")


class ApplyCreditBody(Body):
    invoice_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    amount: Amount | None = Field(
        default=None, description="in the credit note's currency; default: as much as remains and is due"
    )
    currency: Currency | None = Field(default=None, description="default: the credit note's")


class UnappliedRefundBody(Body):
    amount: Amount | None = Field(default=None, description="default: all the payment's unapplied money")
    currency: Currency | None = Field(default=None, description="default: the payment's")
    reference: str = Field(
        min_length=1, max_length=100, description="the refund's reference (a ticket); idempotency key (per payment)"
    )


class RefundBody(Body):
    amount: Amount | None = Field(default=None, description="default: all that remains of the credit note")
    currency: Currency | None = Field(default=None, description="default: the credit note's")
    method: FromString[PaymentMethod] | None = Field(
        default=None,
        description="card: refunded through the card processor to a card payment of an invoice the credit "
        "note credits; bank_transfer, cash or check: money returned outside Billow, recorded. Default: "
        "bank_transfer, unless an invoice the credit note credits was paid by a card charge Billow collected "
        "(422 refund.method_required: choose)",
    )
    reference: str = Field(
        min_length=1,
        max_length=100,
        description="the refund's reference (a bank reference, a ticket); idempotency key (per credit note)",
    )
    payment_id: Id | None = Field(
        default=None,
        description="card: the payment to refund (default: the newest card payment of an invoice the credit note "
        "credits that can take the whole amount); not with another method (422 refund.payment_not_card)",
    )


def _shown_as(schema: dict[str, Any], description: str) -> Any:
    """A field the route checks itself, record by record (a refused record never blocks the
    others): any JSON value passes the body's validation; the document shows what is expected."""
    return Field(default=None, description=description, json_schema_extra=schema)


class UsageRecordBody(BaseModel):
    """One usage record (docs/billing.md, "Usage records"). Each field is checked by the route
    itself, so that in a batch a refused record is answered on its own."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    id: Any = _shown_as({"type": "string", "maxLength": 128}, "the caller's record id: its idempotency key")
    subscription_id: Any = _shown_as({"type": "string"}, "with service_id: the metered service")
    service_id: Any = _shown_as({"type": "string"}, "with subscription_id: the metered service")
    contact_id: Any = _shown_as({"type": "string"}, "with meter: the contact's one billable service on that meter")
    meter: Any = _shown_as({"type": "string"}, "with contact_id")
    quantity: Any = _shown_as({"type": "string"}, "a decimal string, at most 12 decimal places")
    value: Any = _shown_as({"type": "string"}, "instead of quantity: the event's value (percentage models)")
    at: Any = _shown_as(
        {"type": "string", "format": "date-time"}, "when it happened, with its offset; default: the contact's now"
    )
    properties: Any = _shown_as({"type": "object", "additionalProperties": {"type": "string"}}, "up to 20 string pairs")

    @model_validator(mode="before")
    @classmethod
    def _any(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}  # not an object: refused on its own, by the route


class UsageBatchBody(BaseModel):
    """A batch of up to 1,000 records, each answered on its own."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    records: list[UsageRecordBody] = Field(json_schema_extra={"maxItems": 1000})


# -- credits (docs/credits.md) ------------------------------------------------------------------------
CreditCount = Annotated[int, Field(ge=0, le=10**15, description="a whole number of credits")]
CreditRef = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
ActionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class CreditPricesBody(Body):
    """A new version of the credit price list: each billable action's cost in credits (0 = free),
    from `effective_from` (the contact's day; after the last version's day)."""

    effective_from: Day
    costs: dict[ActionName, CreditCount] = Field(min_length=1, max_length=500)
    packs: Any = _shown_as(
        {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "credits": {"type": "integer", "minimum": 1},
                    "price": {"type": "string", "examples": ["10.00"]},
                    "currency": {"type": "string", "examples": ["USD"]},
                },
            },
        },
        "credit packs for sale from that day, by id: credits, price (a decimal string), currency",
    )


class ConsumeBody(Body):
    """Spend credits on a billable action: all or nothing, once per `request_id`. Its fields are
    checked by the use case, with the `credits.*` codes of docs/errors.md."""

    action: Any = _shown_as({"type": "string", "maxLength": 64}, "the billable action (on the price list)")
    quantity: Any = Field(
        default=1,
        description="how many of the action, 1 to 10^9 (cost times quantity)",
        json_schema_extra={"type": "integer", "minimum": 1, "maximum": 10**9},
    )
    request_id: Any = _shown_as(
        {"type": "string", "maxLength": 128}, "the caller's id of this consumption: its idempotency key"
    )


class TopUpBody(Body):
    """Buy a credit pack, charged at once to the contact's saved card; once per `request_id`."""

    pack: Any = _shown_as({"type": "string", "maxLength": 64}, "a credit pack of the price list")
    request_id: Any = _shown_as(
        {"type": "string", "maxLength": 128}, "the caller's id of this purchase: its idempotency key"
    )
    confirm: Literal["off_session", "client"] = Field(
        default="off_session",
        description="off_session: Billow charges the saved card now; client: the customer confirms the charge "
        "with Stripe.js (the answer's payment.client_secret), its outcome comes by webhook",
    )


class RefundTopUpBody(Body):
    """Nothing to give (the body may be left out): an unknown field is refused like on every route."""


class LowBalanceBody(Body):
    """The contact's low-balance threshold, and the pack its auto top-up buys when the balance falls
    below it (none: the event only)."""

    threshold: Any = _shown_as({"type": "integer", "minimum": 1}, "a whole number of credits")
    top_up_pack: Any = _shown_as({"type": "string", "maxLength": 64}, "the pack an auto top-up buys (or null)")


class GrantBody(Body):
    """Credits given by staff: promotional (with an expiry) or purchased (paid outside Billow). Its
    fields are checked by the use case, with the `credits.*` codes of docs/errors.md."""

    id: Any = _shown_as({"type": "string", "maxLength": 128}, "the grant's id: its idempotency key")
    kind: Any = _shown_as({"type": "string", "enum": ["promotional", "purchased"]}, "promotional or purchased")
    credits: Any = _shown_as({"type": "integer", "minimum": 0}, "a whole number of credits")
    expires_at: Any = _shown_as(
        {"type": "string", "format": "date-time"}, "ISO 8601 with a UTC offset; required for promotional"
    )
