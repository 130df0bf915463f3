"""Per-tenant settings: the business rules one Billow deployment keeps for each tenant."""

from __future__ import annotations

from dataclasses import dataclass

from billow.domain.calendar import tenant_zone
from billow.domain.collection import DEFAULT_COLLECTION, CollectionSettings
from billow.domain.dunning import DEFAULT_DUNNING, DunningPolicy
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.policy import DEFAULT_POLICY, SubscriptionPolicy
from billow.domain.rules import DEFAULT_RULES, BillingRules

MAX_REVIEW_DAYS = 30


@dataclass(frozen=True, slots=True)
class TenantSettings:
    tenant_id: str
    name: str
    timezone: str = "UTC"
    """Billing days are calendar days in this zone."""
    payment_terms_days: int = 14
    """An invoice is due this many days after its billing date (0 = due on receipt)."""
    invoice_prefix: str = "INV"
    invoice_review_days: int = 0
    """Days a new invoice stays a draft (unnumbered, not owed) for review before it is finalised;
    0 finalises it at once."""
    auto_apply_credit: bool = False
    """New invoices consume the contact's credit balance (its credit notes' remaining credit, oldest
    first) as they are finalised; off, credit notes are applied or refunded by hand."""
    credit_overdraft: int = 0
    """Credits a contact may consume beyond its balance (docs/credits.md, "Overdraft"): owed, and
    invoiced at the cycle's end; 0 refuses any consumption the balance cannot cover (402)."""
    credit_overdraft_price: Money | None = None
    """What one overdrawn credit is invoiced at (exact in its currency's exponent): the next invoice
    of the contact in that currency bills what it owes (docs/credits.md, "Overdraft"). None: what is
    owed stays owed, never invoiced."""
    billing: BillingRules = DEFAULT_RULES
    """Billing rules new subscriptions are created under."""
    subscriptions: SubscriptionPolicy = DEFAULT_POLICY
    """Subscription-management rules, checked when actions are requested."""
    collection: CollectionSettings = DEFAULT_COLLECTION
    """How invoices are collected: the default mode of a contact that names none (docs/payments.md)."""
    dunning: DunningPolicy = DEFAULT_DUNNING
    """What is done about unpaid debt: retries, reminders, grace, deactivation (docs/dunning.md)."""
    version: int = 0
    """The stored item's version (0: never stored); a write is conditioned on it."""

    def __post_init__(self) -> None:
        tenant_zone(self.timezone)
        if not 0 <= self.payment_terms_days <= 365:
            raise InvalidInput("payment_terms_days is 0 to 365", field="payment_terms_days")
        if not 0 <= self.invoice_review_days <= MAX_REVIEW_DAYS:
            raise InvalidInput(f"invoice_review_days is 0 to {MAX_REVIEW_DAYS}", field="invoice_review_days")
        if not 0 <= self.credit_overdraft <= 10**15:
            raise InvalidInput("credit_overdraft is 0 to 10^15 credits", field="credit_overdraft")
        if self.credit_overdraft_price is not None and self.credit_overdraft_price.minor <= 0:
            raise InvalidInput(
                "credit_overdraft_price is above zero", field="credit_overdraft_price", code="settings.overdraft_price"
            )
        if not self.invoice_prefix.isalnum() or len(self.invoice_prefix) > 10:
            raise InvalidInput("invoice_prefix is 1 to 10 letters or digits", field="invoice_prefix")

    def invoice_number(self, sequence: int) -> str:
        return f"{self.invoice_prefix}-{sequence:06d}"
