"""Collection rules (which invoices a contact's mode charges, the credit limit) and the payment
attempt's states, pure; the collection settings and a contact's mode through the API (moto)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from billow.domain.collection import (
    AttemptStatus,
    CollectionMode,
    CollectionSettings,
    PaymentAttempt,
    attempt_id,
    attempt_number,
    covered_by_attempts,
    to_charge,
)
from billow.domain.contacts import Contact
from billow.domain.errors import Conflict
from billow.domain.invoices import Invoice, InvoiceStatus
from billow.domain.money import Money
from billow.local.stack import add_tenant
from billow.services.collection import charge_target

from tests.collection_support import make_invoice
from tests.support import InProcessClient, make_contact

NOW = datetime(2024, 5, 1, tzinfo=UTC)
AUTOMATIC = CollectionSettings()
LIMIT = {"USD": Money.parse("50.00", "USD")}


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def invoice(invoice_id: str, amount: str, currency: str = "USD", status: InvoiceStatus = InvoiceStatus.OPEN) -> Invoice:
    return make_invoice("con_1", invoice_id, amount, currency, status)


def charge(
    new: Invoice, owed: list[Invoice], settings: CollectionSettings, covered: set[str] | None = None
) -> dict[str, str]:
    pairs = to_charge(new, settings.mode, settings, owed=owed, credit_limit=LIMIT, covered=covered or set())
    return {invoice_id: m.amount_str() for invoice_id, m in pairs}


def test_automatic_charges_the_invoice_and_manual_nothing() -> None:
    new = invoice("inv_2", "30.00")
    assert charge(new, [invoice("inv_1", "10.00")], AUTOMATIC) == {"inv_2": "30.00"}
    assert charge(new, [], CollectionSettings(CollectionMode.MANUAL)) == {}


def test_nothing_is_charged_twice_or_on_what_is_not_owed() -> None:
    assert charge(invoice("inv_1", "30.00"), [], AUTOMATIC, covered={"inv_1"}) == {}
    assert charge(invoice("inv_1", "30.00", status=InvoiceStatus.PAID), [], AUTOMATIC) == {}
    assert charge(invoice("inv_1", "30.00", status=InvoiceStatus.DRAFT), [], AUTOMATIC) == {}
    assert charge(invoice("cn_1", "-30.00", status=InvoiceStatus.ISSUED), [], AUTOMATIC) == {}


@pytest.mark.parametrize(
    ("earlier", "new", "expected"),
    [
        ([], "30.00", {}),  # 30 owed, limit 50
        (["20.00"], "30.00", {}),  # 50: at the limit is not over it
        (["20.00"], "30.01", {"inv_new": "30.01"}),  # 50.01: over
        ([], "50.01", {"inv_new": "50.01"}),  # the invoice alone crosses it
    ],
)
def test_credit_limit_charges_only_when_the_balance_with_the_invoice_exceeds_the_limit(
    earlier: list[str], new: str, expected: dict[str, str]
) -> None:
    owed = [invoice(f"inv_{i}", amount) for i, amount in enumerate(earlier)]
    assert charge(invoice("inv_new", new), owed, CollectionSettings(CollectionMode.CREDIT_LIMIT)) == expected


def test_credit_limit_counts_only_the_invoices_currency_and_the_contacts_credit() -> None:
    settings = CollectionSettings(CollectionMode.CREDIT_LIMIT)
    eur = invoice("inv_eur", "500.00", "EUR")
    assert charge(invoice("inv_new", "40.00"), [eur], settings) == {}
    assert charge(invoice("eur_new", "10.00", "EUR"), [eur], settings) == {}  # no EUR limit: never charged
    credit = invoice("cn_1", "-20.00", status=InvoiceStatus.ISSUED)
    owed = [invoice("inv_1", "30.00"), credit]
    assert charge(invoice("inv_new", "30.00"), owed, settings) == {}  # 60 owed - 20 credit = 40
    assert charge(invoice("inv_new", "30.00"), owed[:1], settings) == {"inv_new": "30.00"}


def test_credit_limit_with_the_whole_debt_charges_every_unpaid_invoice_of_that_currency_not_already_charged() -> None:
    whole = CollectionSettings(CollectionMode.CREDIT_LIMIT, collect_whole_debt=True)
    owed = [
        invoice("inv_1", "20.00"),
        invoice("inv_2", "25.00"),
        invoice("inv_paid", "99.00", status=InvoiceStatus.PAID),
        invoice("inv_eur", "10.00", "EUR"),
    ]
    assert charge(invoice("inv_3", "10.00"), owed, whole) == {"inv_1": "20.00", "inv_2": "25.00", "inv_3": "10.00"}
    assert charge(invoice("inv_3", "10.00"), owed, whole, covered={"inv_2"}) == {"inv_1": "20.00", "inv_3": "10.00"}


def _attempt(method: str | None = "pm_1") -> PaymentAttempt:
    return PaymentAttempt.start(
        invoice("inv_1", "30.00"),
        1,
        [("inv_1", usd("30.00"))],
        customer_ref="cus_1",
        method_ref=method,
        now=NOW,
        made_on=NOW.date(),
    )


def test_an_attempt_moves_pending_created_then_succeeded_or_failed() -> None:
    pending = _attempt()
    assert (pending.status, pending.id, attempt_number(pending.id)) == (
        AttemptStatus.PENDING,
        attempt_id("inv_1", 1),
        1,
    )
    created = pending.created("pi_1", NOW)
    assert created.live and created.charge_ref == "pi_1"
    failed = created.failed("pi_1", "card_declined", False, NOW)
    assert (failed.status, failed.decline_code, failed.live) == (AttemptStatus.FAILED, "card_declined", False)
    succeeded = created.succeeded("pi_1", NOW)
    assert succeeded.status is AttemptStatus.SUCCEEDED
    # A success read for a pending attempt records its charge; one after a failure stands (the rail's object).
    assert pending.succeeded("pi_1", NOW).charge_ref == "pi_1"
    assert failed.succeeded("pi_1", NOW).decline_code is None


@pytest.mark.parametrize(
    "move",
    [
        lambda a: a.created("pi_1", NOW).created("pi_2", NOW),  # a second charge recorded
        lambda a: a.created("pi_1", NOW).succeeded("pi_2", NOW),  # another charge's outcome
        lambda a: a.created("pi_1", NOW).succeeded("pi_1", NOW).failed("pi_1", "card_declined", False, NOW),
        lambda a: a.created("pi_1", NOW).failed("pi_1", "x", False, NOW).failed("pi_1", "y", False, NOW),
    ],
)
def test_an_attempt_refuses_every_other_move(move: object) -> None:
    with pytest.raises(Conflict):
        move(_attempt())  # type: ignore[operator]


def test_an_attempt_without_a_payment_method_is_not_collectable_and_covers_nothing_live() -> None:
    attempt = _attempt(method=None)
    assert (attempt.status, attempt.reason, attempt.live) == (AttemptStatus.NOT_COLLECTABLE, "no_payment_method", False)
    assert covered_by_attempts([attempt]) == set()
    assert covered_by_attempts([_attempt(), attempt]) == {"inv_1"}


def test_the_charge_target_is_the_subscriptions_saved_method_else_the_contacts_default() -> None:
    from billow.domain.subscriptions import Subscription

    contact = Contact("con_1", "A", "a@x.io", None, None, {}, None, True, NOW, gateway_customer_ref="cus_1")
    kept = lambda ref: False  # noqa: E731 - no method removed
    assert charge_target(contact, None, kept) == ("cus_1", None)
    with_default = replace(contact, default_method_ref="pm_default")
    assert charge_target(with_default, None, kept) == ("cus_1", "pm_default")
    subscription = Subscription.__new__(Subscription)
    for own, expected in (("pm_own", "pm_own"), ("card", "pm_default"), (None, "pm_default")):
        object.__setattr__(subscription, "payment_method", own)
        assert charge_target(with_default, subscription, kept) == ("cus_1", expected)
    # a removed method is never charged: the subscription's falls back to the default, and none is left
    object.__setattr__(subscription, "payment_method", "pm_own")
    assert charge_target(with_default, subscription, lambda ref: ref == "pm_own") == ("cus_1", "pm_default")
    assert charge_target(with_default, subscription, lambda ref: True) == ("cus_1", None)


# -- through the API -----------------------------------------------------------------------------------
KEY = "bk_test_collection"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("tenant-c", "Tenant C", KEY)
    yield InProcessClient(KEY)


def test_the_collection_settings_are_read_changed_and_validated(api: InProcessClient) -> None:
    assert api.get("/settings").body["collection"] == {"mode": "automatic", "collect_whole_debt": False}
    changed = api.patch("/settings/collection", {"mode": "credit_limit", "collect_whole_debt": True})
    assert changed.status == 200, changed.body
    assert changed.body["collection"] == {"mode": "credit_limit", "collect_whole_debt": True}
    assert api.patch("/settings/collection", {"collect_whole_debt": False}).body["collection"]["mode"] == "credit_limit"
    refused = api.patch("/settings/collection", {"mode": "sometimes"})
    assert refused.status == 422 and refused.body["fields"][0]["field"].endswith("mode")
    assert api.get("/settings").body["collection"] == {"mode": "credit_limit", "collect_whole_debt": False}


def test_a_contact_names_its_own_collection_mode_or_none(api: InProcessClient) -> None:
    contact = make_contact(api)
    assert contact["collection"] is None
    manual = api.patch(f"/contacts/{contact['id']}", {"collection": "manual"})
    assert manual.status == 200 and manual.body["collection"] == "manual"
    assert api.get(f"/contacts/{contact['id']}").body["collection"] == "manual"
    assert api.patch(f"/contacts/{contact['id']}", {"collection": "often"}).status == 422
    assert api.patch(f"/contacts/{contact['id']}", {"collection": None}).body["collection"] is None
    created = api.post("/contacts", {"name": "B", "email": "b@example.com", "collection": "credit_limit"})
    assert created.status == 201 and created.body["collection"] == "credit_limit"
