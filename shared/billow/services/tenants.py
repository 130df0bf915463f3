"""Tenants and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from billow.domain.collection import CollectionMode, CollectionSettings
from billow.domain.errors import InvalidInput
from billow.domain.money import Money
from billow.domain.policy import SubscriptionPolicy
from billow.domain.rules import BillingRules
from billow.domain.tenants import TenantSettings
from billow.services.context import TenantContext, edit_versioned
from billow.services.ports import ApiKey, SettingsPorts, TenantStore

KEY_MODES = ("test", "live")


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_api_key(mode: str) -> str:
    if mode not in KEY_MODES:
        raise InvalidInput(f"mode is one of {', '.join(KEY_MODES)}", field="mode")
    return f"bk_{mode}_{secrets.token_urlsafe(24)}"


def provision_tenant(store: TenantStore, settings: TenantSettings, *, secret: str, mode: str, key_name: str) -> ApiKey:
    """Create (or update) a tenant's settings and register one API key for it."""
    if mode not in KEY_MODES:
        raise InvalidInput(f"mode is one of {', '.join(KEY_MODES)}", field="mode")
    existing = store.get_settings(settings.tenant_id)
    store.put_settings(replace(settings, version=existing.version if existing else 0))
    key = ApiKey(hash_api_key(secret), settings.tenant_id, mode, key_name)
    store.put_api_key(key)
    return key


def authenticate(store: TenantStore, secret: str | None) -> ApiKey | None:
    """The API key a presented secret belongs to, or None. Only the hash is ever looked up."""
    if not secret or len(secret) > 200:
        return None
    return store.find_api_key(hash_api_key(secret))


def tenant_context(store: TenantStore, tenant_id: str, mode: str) -> TenantContext:
    settings = store.get_settings(tenant_id) or TenantSettings(tenant_id=tenant_id, name=tenant_id)
    return TenantContext(tenant_id, mode, settings)


def update_settings(
    store: TenantStore, ctx: TenantContext, change: Callable[[TenantSettings], TenantSettings]
) -> TenantSettings:
    """Apply `change` to the tenant's settings as last stored and store them, conditioned on the
    version read: when another change was stored in between, read them again and apply `change`
    to those, so no acknowledged change is ever lost. Every change of settings goes through here."""
    return edit_versioned(
        lambda: store.get_settings(ctx.tenant_id) or ctx.settings, store.put_settings, change, "the settings"
    )


def update_billing_rules(store: TenantStore, ctx: TenantContext, changes: dict[str, Any]) -> TenantSettings:
    """Change some of the business's billing rules. Subscriptions created from now on are billed
    under the new rules; existing ones keep the rules they were created under (docs/billing.md)."""
    unknown = set(changes) - {f.name for f in fields(BillingRules)}
    if unknown:
        raise InvalidInput("not a billing rule", field=sorted(unknown)[0])
    return update_settings(store, ctx, lambda s: replace(s, billing=replace(s.billing, **changes)))


PROFILE_FIELDS = frozenset(
    {
        "name",
        "timezone",
        "invoice_prefix",
        "payment_terms_days",
        "invoice_review_days",
        "auto_apply_credit",
        "credit_overdraft",
        "credit_overdraft_price",
    }
)


def update_profile(store: TenantStore, ctx: TenantContext, changes: dict[str, Any]) -> TenantSettings:
    """Change the business profile (docs/billing.md#the-business-profile). A new time zone moves
    the hour each contact's day turns over from now on; billing dates, periods and due dates
    already set are calendar days and stay. New payment terms and a new invoice prefix apply to
    invoices issued from now on (numbers continue the one sequence); issued invoices keep theirs."""
    unknown = set(changes) - PROFILE_FIELDS
    if unknown:
        raise InvalidInput("not a profile field", field=sorted(unknown)[0])
    price = changes.get("credit_overdraft_price")
    if isinstance(price, dict):  # {"amount": "0.01", "currency": "USD"}: exact in the currency's exponent
        changes = {
            **changes,
            "credit_overdraft_price": Money.parse(
                str(price.get("amount")),
                str(price.get("currency")),
                field="credit_overdraft_price.amount",
                currency_field="credit_overdraft_price.currency",
            ),
        }
    # TenantSettings validates zone, prefix and terms
    return update_settings(store, ctx, lambda s: replace(s, **changes))


def update_subscription_policy(store: SettingsPorts, ctx: TenantContext, changes: dict[str, Any]) -> TenantSettings:
    """Change some of the business's subscription-management rules (JSON form, as the API shows
    them). They apply to the next action requested, for every subscription."""
    unknown = set(changes) - set(ctx.settings.subscriptions.as_json())
    if unknown:
        raise InvalidInput("not a subscription rule", field=sorted(unknown)[0])
    named = {
        "tier_paths": [p for path in changes.get("tier_paths", []) for p in path],
        "requires": [p for product, needs in changes.get("requires", {}).items() for p in (product, *needs)],
        "excludes": [p for pair in changes.get("excludes", []) for p in pair],
    }
    if any(named.values()):
        known = {p.id for p in store.list_products(ctx.tenant_id)}
        for name, products in named.items():
            missing = sorted(set(products) - known)
            if missing:
                raise InvalidInput(f"no product {missing[0]}", field=name)

    def change(settings: TenantSettings) -> TenantSettings:
        policy = SubscriptionPolicy.from_json({**settings.subscriptions.as_json(), **changes})
        return replace(settings, subscriptions=policy)

    return update_settings(store, ctx, change)


def update_collection(store: TenantStore, ctx: TenantContext, changes: dict[str, Any]) -> TenantSettings:
    """Change how invoices are collected (docs/payments.md): the default mode of contacts that name
    none, and whether crossing a credit limit collects the whole debt. Applies to invoices issued
    from now on."""
    unknown = set(changes) - {f.name for f in fields(CollectionSettings)}
    if unknown:
        raise InvalidInput("not a collection setting", field=sorted(unknown)[0])
    if "mode" in changes:
        changes = {**changes, "mode": CollectionMode(changes["mode"])}
    return update_settings(store, ctx, lambda s: replace(s, collection=replace(s.collection, **changes)))


def update_dunning_policy(store: TenantStore, ctx: TenantContext, changes: dict[str, Any]) -> TenantSettings:
    """Change some of the business's dunning rules (JSON form, as the API shows them;
    docs/dunning.md). A change makes the policy's next version; cases already open keep the
    version they were opened under, cases opened from now on follow the new one."""
    return update_settings(store, ctx, lambda s: replace(s, dunning=s.dunning.changed(changes)))
