"""The API's JSON and the stored JSON are written apart: renaming a field of the API must not
change what is stored (a storage migration), nor the reverse. And a listing does not run the
billing engine for every item unless asked."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from api import presenters
from billow.domain import timeline
from billow.domain.actions.cancel import CANCEL
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel
from billow.domain.contacts import Address, Contact
from billow.domain.money import Money
from billow.domain.ordering import Order, OrderedService
from billow.domain.policy import SubscriptionPolicy, Timing, TrialLimit
from billow.domain.rules import Alignment
from billow.domain.tenants import TenantSettings
from billow.local.stack import add_tenant
from billow.storage import codec

from tests.support import InProcessClient, make_contact, make_product

ROOT = Path(__file__).resolve().parents[2]
CODEC = ROOT / "shared/billow/storage/codec.py"
API_MODULES = sorted((ROOT / "functions/api").glob("*.py"))


def _functions_imported(path: Path) -> set[str]:
    """The functions a module imports by name (classes and constants left out), fully qualified."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("api"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                if inspect.isfunction(value):
                    found.add(f"{value.__module__}.{value.__qualname__}")
    return found


def _modules_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def _names_called(path: Path) -> set[str]:
    """The names of the methods and functions a module calls."""
    called = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            target = node.func
            called.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return called


def test_the_api_and_the_storage_codec_share_no_json_writer() -> None:
    """A function both import (a shared `terms_json`, `dataclasses.asdict` of a domain object)
    would tie an API field's name to a stored one."""
    api_functions = set().union(*(_functions_imported(path) for path in API_MODULES))
    assert _functions_imported(CODEC) & api_functions == set()
    for path in API_MODULES:
        assert "billow.storage.codec" not in _modules_imported(path), path.name
    assert not {m for m in _modules_imported(CODEC) if m.startswith(("api", "billow.services.views"))}
    # The domain's own JSON forms (`as_json`/`from_json`) are the API's; storage writes its own.
    assert {name for name in _names_called(CODEC) if "json" in name.lower()} == set()


def test_the_stored_forms_are_unchanged() -> None:
    """The stored JSON of a policy with every rule set, price terms, an address and an order, as
    Billow has always stored them (DynamoDB items of earlier releases are read back by this codec)."""
    policy = SubscriptionPolicy(
        trial_limit=TrialLimit.ONCE_PER_SERVICE,
        trial_extension=False,
        max_trial_extension_days=10,
        cancel_in_contract=Timing.IMMEDIATE,
        cancel_out_of_contract=Timing.END_OF_CYCLE,
        upgrade=Timing.END_OF_CYCLE,
        downgrade=Timing.IMMEDIATE,
        regret_days=7,
        pause_max_times=2,
        pause_max_days=60,
        grace_min_days=2,
        grace_max_days=20,
        debt_threshold={"JPY": Money.parse("100", "JPY"), "KWD": Money.parse("1.500", "KWD")},
        max_services={"smb": 3},
        reasons={CANCEL.name: ("too expensive", "moving")},
        tier_paths=(("basic", "pro"),),
        requires={"addon": ("basic",)},
        excludes=(("basic", "legacy"),),
        activate_on_payment=True,
        unpaid_order_lapse_days=5,
    )
    stored = codec.settings_out(TenantSettings("t1", "T1", subscriptions=policy))["subscriptions"]
    assert stored == {
        "trial_limit": "once_per_service",
        "trial_extension": False,
        "max_trial_extension_days": 10,
        "cancel_in_contract": "immediate",
        "cancel_out_of_contract": "end_of_cycle",
        "upgrade": "end_of_cycle",
        "downgrade": "immediate",
        "regret_days": 7,
        "pause_max_times": 2,
        "pause_max_days": 60,
        "grace_min_days": 2,
        "grace_max_days": 20,
        "debt_threshold": {"JPY": "100", "KWD": "1.500"},
        "max_services": {"smb": 3},
        "reasons": {"cancel": ["too expensive", "moving"]},
        "tier_paths": [["basic", "pro"]],
        "requires": {"addon": ["basic"]},
        "excludes": [["basic", "legacy"]],
        "activate_on_payment": True,
        "unpaid_order_lapse_days": 5,
    }
    settings = TenantSettings("t1", "T1", subscriptions=policy)
    assert codec.settings_in(json.loads(json.dumps(codec.settings_out(settings))), 1).subscriptions == policy
    assert codec.policy_in({"debt_threshold": 100}).debt_threshold == {}  # a bare amount of old: no debt allowed
    # Settings stored before access on payment: off, with the default lapse.
    older = codec.policy_in({"regret_days": 7})
    assert (older.activate_on_payment, older.unpaid_order_lapse_days) == (False, 14)

    terms = PriceTerms(
        "terms_1", "prod_1", Money.parse("9.99", "USD"), Cycle.MONTH, BillingModel.ADVANCE, PricingModel.FLAT,
        setup_fee=Money.parse("5", "USD"), alignment=Alignment.DELAYED,
    )  # fmt: skip
    assert codec.terms_out(terms) == {
        "id": "terms_1",
        "product_id": "prod_1",
        "price": codec.money_out(terms.price),
        "cycle": "month",
        "billing_model": "advance",
        "pricing_model": "flat",
        "setup_fee": codec.money_out(terms.setup_fee),
        "trial_days": 0,
        "alignment": "delayed",
        "usage": None,
        "term_cycles": None,
        "auto_renew": True,
        "contract_cycles": None,
        "cancellation_fee": None,
    }
    assert codec.terms_in(codec.terms_out(terms)) == terms

    address = Address("1 Main St", "Springfield", "US", "12345", "Suite 2", "IL")
    contact = Contact("con_1", "C", "c@example.com", address, None, {}, None, False, datetime(2024, 1, 1, tzinfo=UTC))
    assert codec.contact_out(contact)["billing_address"] == {
        "line1": "1 Main St",
        "city": "Springfield",
        "country": "US",
        "postal_code": "12345",
        "line2": "Suite 2",
        "region": "IL",
    }
    assert codec.contact_in(codec.contact_out(contact)).billing_address == address
    # A contact stored with one credit limit (a single amount) reads as that currency's limit.
    old = {**codec.contact_out(contact), "credit_limit": {"minor": 500000, "currency": "KWD"}}
    assert codec.contact_in(old).credit_limit == {"KWD": Money.parse("500.000", "KWD")}
    assert codec.contact_in({**old, "credit_limit": None}).credit_limit == {}

    order = Order(
        "ord_1", "con_1", "po-1", date(2024, 1, 1), (OrderedService("svc_1", "sub_1", "prod_1", "terms_1", 2),)
    )
    assert codec.order_out(order)["services"] == [
        {
            "service_id": "svc_1",
            "subscription_id": "sub_1",
            "product_id": "prod_1",
            "terms_id": "terms_1",
            "quantity": 2,
        }
    ]
    assert codec.order_in(codec.order_out(order)) == order


def test_renaming_an_api_field_changes_no_stored_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's form of the same objects can change on its own."""
    address = Address("1 Main St", "Springfield", "US")
    contact = Contact("con_1", "C", "c@example.com", address, None, {}, None, False, datetime(2024, 1, 1, tzinfo=UTC))
    stored = codec.contact_out(contact)
    monkeypatch.setattr(presenters, "address", lambda a: {"street": a.line1})
    assert presenters.contact(contact)["billing_address"] == {"street": "1 Main St"}
    assert codec.contact_out(contact) == stored


# -- a listing does not run the billing engine per item -------------------------------------------
KEY = "bk_test_json_forms"
ADVANCE = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-jf", "Tenant JF", KEY)
    yield InProcessClient(KEY)


def _engine_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    runs: list[Any] = []
    real = timeline.upcoming_invoices

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(presenters, "upcoming_invoices", counted)
    return runs


def test_a_subscription_listing_leaves_the_next_billing_date_out_unless_asked(
    api: InProcessClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact = make_contact(api)
    for currency in ("USD", "EUR", "GBP"):
        product = make_product(api, {**ADVANCE, "currency": currency})
        item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
        assert api.post("/orders", {"contact_id": contact["id"], "items": [item]}).status == 201
    runs = _engine_runs(monkeypatch)

    listed = api.get(f"/contacts/{contact['id']}/subscriptions")
    assert listed.status == 200, listed.body
    assert len(listed.body["items"]) == 3
    assert all("next_billing_date" not in s for s in listed.body["items"])
    assert runs == []

    asked = api.get(f"/contacts/{contact['id']}/subscriptions?include=next_billing_date")
    assert asked.status == 200, asked.body
    one = api.get(f"/subscriptions/{asked.body['items'][0]['id']}")
    assert one.status == 200 and one.body["next_billing_date"] is not None
    assert asked.body["items"][0]["next_billing_date"] == one.body["next_billing_date"]
    assert len(runs) == 3 + 1

    refused = api.get(f"/contacts/{contact['id']}/subscriptions?include=everything")
    assert refused.status == 422 and refused.body["fields"], refused.body
