"""Credit top-ups and auto top-up against a real localstripe and DynamoDB Local (docs/credits.md,
"Top-ups"): the pack charged off-session to the saved card through the collection path, its
credits granted exactly once whoever sees the payment first (this request, a webhook delivered five
times before it answers, the `invoice.paid` consumer, separate processes sending the same request),
never for a declined card; an auto top-up bought once per crossing of the threshold."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest
from billow.domain.credits import CreditPack, CreditPriceList, EntryKind, InsufficientCredits, PriceListVersion
from billow.domain.errors import Conflict, InvalidInput, RuleViolation
from billow.domain.invoices import InvoiceStatus
from billow.domain.money import Money
from billow.gateways.stripe import StripeGateway
from billow.gateways.stripe_webhooks import StripeWebhooks
from billow.local.dynamodb import DynamoDBLocal
from billow.local.secrets import ENV as SECRETS_ENV
from billow.local.secrets import LocalSecrets, configured
from billow.local.stack import add_tenant
from billow.local.stripe import TEST_API_KEY, LocalStripe
from billow.services import webhooks
from billow.services.activation import activate_paid
from billow.services.billing import InvoiceNumbers
from billow.services.contacts import set_contact_archived
from billow.services.context import SystemClock, TenantContext
from billow.services.credits.consume import consume_credits
from billow.services.credits.grants import give_credits
from billow.services.credits.low_balance import set_low_balance, top_up_on_low_balance
from billow.services.credits.top_ups import TopUpStatus, buy_top_up, get_top_up, invoice_id_of
from billow.services.gateway import ChargeState, GatewayUnavailable, RailSecrets
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.collection_support import SCOPE, card_holder, seed_contact, seed_tenant
from tests.stripe_support import DECLINES_AT_CHARGE, intents_of, stripe_client
from tests.support import InProcessClient, advance_clock, in_processes, unique
from tests.webhook_support import sign

pytestmark = pytest.mark.integration

SECRET = "whsec_t1_localstripe"
KEY = "bk_test_top_ups"
CLOCK = SystemClock()
PACK = CreditPack("pack_500", 500, Money.parse("10.00", "USD"))
SMALL = CreditPack("pack_10", 10, Money.parse("1.00", "USD"))


@pytest.fixture
def store(local_table: str, monkeypatch: pytest.MonkeyPatch) -> DynamoStore:
    monkeypatch.setenv(SECRETS_ENV, configured({("stripe", "t1", "test"): RailSecrets(TEST_API_KEY, SECRET)}))
    store = DynamoStore()
    seed_tenant(store)
    prices = CreditPriceList((PriceListVersion(date(2020, 1, 1), {"sms": 1}, {PACK.id: PACK, SMALL.id: SMALL}),))
    store.save_credit_prices("t1", prices, 0)
    return store


@pytest.fixture
def rail(local_stripe: LocalStripe) -> StripeGateway:
    return StripeGateway(TEST_API_KEY, api_base=local_stripe.url, localstripe=True)


def context(store: DynamoStore) -> TenantContext:
    settings = store.get_settings("t1")
    assert settings is not None
    return TenantContext("t1", "test", settings)


def grants_of(store: DynamoStore, contact_id: str) -> list[Any]:
    return [e for e in store.credit_ledger(SCOPE, contact_id) if e.kind is EntryKind.GRANT]


def succeeded_charges(server: LocalStripe, invoice_id: str) -> int:
    return Counter(p.status for p in intents_of(server, invoice_id))["succeeded"]


def test_a_top_up_charges_the_saved_card_once_and_grants_its_credits_once(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    bought = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")
    assert bought.status is TopUpStatus.SUCCEEDED and not bought.replayed
    assert bought.invoice.status is InvoiceStatus.PAID and bought.invoice.total == PACK.price
    (line,) = bought.invoice.lines  # an invoice line records the top-up
    assert (line.kind, line.description, line.amount) == ("credits", "500 credits (pack_500)", PACK.price)
    assert bought.grant is not None and bought.grant.credits == 500
    again = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")  # a retry
    assert again.status is TopUpStatus.SUCCEEDED and again.replayed and again.grant == bought.grant
    assert succeeded_charges(local_stripe, bought.invoice.id) == 1
    assert [g.credits for g in grants_of(store, contact)] == [500]
    assert store.get_wallet(SCOPE, contact).wallet.balance(datetime.now(UTC)).purchased == 500
    with pytest.raises(InvalidInput) as reused:
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_other", "buy-1")
    assert reused.value.code == "idempotency.key_reused"


def test_a_declining_card_grants_nothing_and_voids_the_top_up(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail, card=DECLINES_AT_CHARGE)
    failed = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")
    assert failed.status is TopUpStatus.FAILED and failed.grant is None
    assert failed.invoice.status is InvoiceStatus.VOID and "declined" in (failed.invoice.status_reason or "")
    assert failed.attempt is not None and failed.attempt.decline_code
    again = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")  # retried: still failed
    assert again.status is TopUpStatus.FAILED and again.replayed
    assert len(intents_of(local_stripe, failed.invoice.id)) == 1  # charged once, not retried by the retry
    assert succeeded_charges(local_stripe, failed.invoice.id) == 0
    assert grants_of(store, contact) == []
    assert get_top_up(store, ctx, CLOCK, numbers, contact, failed.invoice.id).status is TopUpStatus.FAILED


def test_no_rail_and_unknown_packs_are_refused_before_anything_is_written(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    with pytest.raises(RuleViolation) as no_rail:
        buy_top_up(store, None, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")
    assert no_rail.value.code == "credits.no_payment_rail"
    with pytest.raises(InvalidInput) as unknown:
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_9", "buy-2")
    assert unknown.value.code == "credits.unknown_pack"
    assert store.get_invoice(SCOPE, invoice_id_of(contact, "buy-2")) is None
    with pytest.raises(InvalidInput) as reserved:  # the auto top-up's request ids are its own
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "auto_crd_low_7")
    assert reserved.value.code == "credits.request_id"
    cardless = seed_contact(store, "con-no-card", method=None)
    with pytest.raises(Conflict) as no_card:  # refused before an invoice is issued (none voided)
        buy_top_up(store, rail, ctx, CLOCK, numbers, cardless.id, "pack_500", "buy-3")
    assert no_card.value.code == "credits.no_payment_method"
    assert store.get_invoice(SCOPE, invoice_id_of(cardless.id, "buy-3")) is None
    set_contact_archived(store, ctx, contact, True)
    with pytest.raises(Conflict) as archived:
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy-4")
    assert archived.value.code == "contact.archived"


# -- the webhook first, five times ------------------------------------------------------------------
def _deliver(rail: StripeGateway, intent: dict[str, Any]) -> None:
    store = DynamoStore()
    ports = webhooks.WebhookPorts(
        events=store, store=store, secrets=LocalSecrets(), verifier=StripeWebhooks(), gateway_for=lambda scope: rail
    )
    now = datetime.now(UTC)
    body = {
        "id": unique("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(now.timestamp()),
        "livemode": False,
        "type": "payment_intent.succeeded",
        "data": {"object": intent},
    }
    payload = json.dumps(body).encode()
    webhooks.receive(ports, "stripe", "t1", payload, sign(payload, SECRET, now), now=now)


class WebhookFirst(StripeGateway):
    """Stripe's webhook for the charge arrives five times, and the `invoice.paid` consumer runs after
    each, before the confirmation's response reaches the request."""

    def confirm_charge(self, charge_ref: str, *, idempotency_key: str) -> ChargeState:
        state = super().confirm_charge(charge_ref, idempotency_key=idempotency_key)
        store = DynamoStore()
        ctx = context(store)
        intent = self._client.v1.payment_intents.retrieve(charge_ref).to_dict()
        for _ in range(5):
            _deliver(self, intent)
            invoice_id = intent["metadata"]["invoice_id"]
            activate_paid(store, ctx, invoice_id, clock=CLOCK, numbers=InvoiceNumbers(store))
        self.granted_before_the_answer = [g.credits for g in grants_of(store, intent["metadata"]["contact_id"])]
        return state


def test_the_webhook_five_times_before_the_response_grants_the_credits_once(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    first = WebhookFirst(TEST_API_KEY, api_base=local_stripe.url, localstripe=True)
    bought = buy_top_up(store, first, ctx, CLOCK, numbers, contact, "pack_500", "buy-1")
    assert bought.status is TopUpStatus.SUCCEEDED and bought.grant is not None
    assert first.granted_before_the_answer == [500]  # the consumer granted them on the webhook's payment
    assert [g.credits for g in grants_of(store, contact)] == [500]  # and the request found them granted
    (payment,) = store.payments_of(SCOPE, contact, bought.invoice.id)
    assert payment.amount == PACK.price
    assert store.get_wallet(SCOPE, contact).wallet.booked == 500
    assert succeeded_charges(local_stripe, bought.invoice.id) == 1


# -- separate processes sending the same purchase --------------------------------------------------
def _buyer(table: str, endpoint: str, api_base: str, contact: str, worker: int, go: Any, out: Any, met: Any) -> None:
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    try:
        store = DynamoStore()
        rail = StripeGateway(TEST_API_KEY, api_base=api_base, localstripe=True)
        go.wait()
        met.wait()
        state = buy_top_up(store, rail, context(store), CLOCK, InvoiceNumbers(store), contact, "pack_500", "same")
        out.put((state.status.value, state.replayed))
    except Exception as crash:
        out.put(f"crashed: {crash!r}")


def test_8_processes_sending_the_same_top_up_charge_once_and_grant_once(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe, local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    contact = card_holder(store, local_stripe, rail)
    each = [(local_table, dynamodb_local.endpoint, local_stripe.url, contact, w) for w in range(8)]
    results = in_processes(_buyer, each, meet=8)
    assert not [r for r in results if isinstance(r, str)], results
    invoice_id = invoice_id_of(contact, "same")
    assert succeeded_charges(local_stripe, invoice_id) == 1
    assert [g.credits for g in grants_of(store, contact)] == [500]
    # a process that answered before the charge settled says pending; asked again it has succeeded
    assert {status for status, _ in results} <= {"succeeded", "pending"}
    assert sum(1 for _, replayed in results if not replayed) == 1, results  # one purchase, seven replays
    assert (
        get_top_up(store, context(store), CLOCK, InvoiceNumbers(store), contact, invoice_id).status
        is TopUpStatus.SUCCEEDED
    )


# -- auto top-up ----------------------------------------------------------------------------------
def _low_entries(store: DynamoStore, contact: str) -> list[Any]:
    return [e for e in store.credit_ledger(SCOPE, contact) if e.kind is EntryKind.LOW_BALANCE]


def test_an_auto_top_up_buys_the_pack_once_per_crossing_of_the_threshold(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    assert buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "first").status is TopUpStatus.SUCCEEDED
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_500"})
    assert _low_entries(store, contact) == []  # 500 is not low
    consume_credits(store, ctx, CLOCK, contact, "sms", 350, "a")  # 150 left
    consume_credits(store, ctx, CLOCK, contact, "sms", 100, "b")  # 50: crosses
    consume_credits(store, ctx, CLOCK, contact, "sms", 10, "c")  # still below: no second crossing
    (crossing,) = _low_entries(store, contact)
    assert (crossing.balance, crossing.reference) == (50, "crd_use_b")
    # the event delivered three times (and by two consumers): one top-up
    states = [top_up_on_low_balance(store, rail, ctx, CLOCK, numbers, contact, crossing.id) for _ in range(3)]
    assert all(s is not None and s.status is TopUpStatus.SUCCEEDED for s in states)
    assert len({s.invoice.id for s in states if s is not None}) == 1
    assert states[0] is not None and states[0].top_up.auto
    assert store.get_wallet(SCOPE, contact).wallet.booked == 540  # 40 + 500
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_10"})
    redelivered = top_up_on_low_balance(store, rail, ctx, CLOCK, numbers, contact, crossing.id)
    assert redelivered is not None and redelivered.invoice.id == states[0].invoice.id  # that purchase, not a new one
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_500"})
    assert [g.credits for g in grants_of(store, contact)] == [500, 500]
    consume_credits(store, ctx, CLOCK, contact, "sms", 460, "d")  # 80: a new crossing (re-armed at 540)
    assert len(_low_entries(store, contact)) == 2
    for threshold in (100, 100, 90):  # the setting sent again, or changed, while below: no new crossing
        set_low_balance(store, ctx, CLOCK, contact, {"threshold": threshold, "top_up_pack": "pack_500"})
    assert len(_low_entries(store, contact)) == 2
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 50, "top_up_pack": "pack_500"})  # 80 is not below 50
    set_low_balance(
        store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_500"}
    )  # below again: a crossing
    assert len(_low_entries(store, contact)) == 3


def test_a_declined_auto_top_up_is_not_retried_until_the_next_crossing(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail, card=DECLINES_AT_CHARGE)
    give_credits(store, ctx, CLOCK, contact, {"id": "g", "kind": "purchased", "credits": 200}, source="staff")
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_500"})
    consume_credits(store, ctx, CLOCK, contact, "sms", 150, "a")
    (crossing,) = _low_entries(store, contact)
    state = top_up_on_low_balance(store, rail, ctx, CLOCK, numbers, contact, crossing.id)
    assert state is not None and state.status is TopUpStatus.FAILED
    for n in range(5):  # consuming on below the threshold: no storm of purchases
        consume_credits(store, ctx, CLOCK, contact, "sms", 1, f"more-{n}")
    assert len(_low_entries(store, contact)) == 1
    assert len(intents_of(local_stripe, state.invoice.id)) == 1


# -- what the next day does to a top-up left unfinished ---------------------------------------------
class RailDown(StripeGateway):
    def create_charge(self, request: Any) -> ChargeState:
        raise GatewayUnavailable("the rail is out of reach")


class DiesAtTheGrant(DynamoStore):
    """A container that dies when it would book the credits (after the payment was recorded)."""

    def commit_wallet(self, *args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the container died")


def test_the_next_day_voids_a_top_up_left_unpaid_and_grants_one_paid_but_not_granted(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    add_tenant("t1", "Tenant One", KEY)
    api = InProcessClient(KEY)
    ctx, numbers = context(store), InvoiceNumbers(store)
    unpaid, ungranted = card_holder(store, local_stripe, rail), card_holder(store, local_stripe, rail)
    for contact in (unpaid, ungranted):
        assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    down = RailDown(TEST_API_KEY, api_base=local_stripe.url, localstripe=True)
    pending = buy_top_up(store, down, ctx, CLOCK, numbers, unpaid, "pack_500", "r")
    assert pending.status is TopUpStatus.PENDING and pending.invoice.lapses_on == date(2026, 3, 2)
    with pytest.raises(RuntimeError):
        buy_top_up(DiesAtTheGrant(), rail, ctx, CLOCK, numbers, ungranted, "pack_500", "r")
    paid = store.get_invoice(SCOPE, invoice_id_of(ungranted, "r"))
    assert paid is not None and paid.status is InvoiceStatus.PAID and grants_of(store, ungranted) == []
    for contact in (unpaid, ungranted):
        advance_clock(api, contact, "2026-03-02T12:00:00+00:00")
    voided = store.get_invoice(SCOPE, pending.invoice.id)
    assert voided is not None and voided.status is InvoiceStatus.VOID
    assert voided.status_reason == "top-up unpaid on 2026-03-02" and grants_of(store, unpaid) == []
    assert [g.credits for g in grants_of(store, ungranted)] == [500]  # the backstop granted them, once
    late = buy_top_up(store, rail, ctx, CLOCK, numbers, unpaid, "pack_500", "r")  # the rail back, the request again
    assert late.status is TopUpStatus.FAILED and intents_of(local_stripe, pending.invoice.id) == []


# -- payment-driven services ---------------------------------------------------------------------
def test_a_payment_driven_service_runs_while_the_wallet_pays_stops_and_comes_back_on_a_top_up(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    add_tenant("t1", "Tenant One", KEY)
    api = InProcessClient(KEY)
    ctx, numbers = context(store), InvoiceNumbers(store)
    terms = {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "advance", "prepaid_credits": 300}
    product = api.post("/products", {"name": "Wallet plan", "terms": [terms]}).body
    assert product["terms"][0]["prepaid_credits"] == 300, product
    contact = card_holder(store, local_stripe, rail)
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    give_credits(store, ctx, CLOCK, contact, {"id": "g", "kind": "purchased", "credits": 400}, source="staff")
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact, "items": [item]}).status == 201

    def state() -> tuple[str, int]:
        (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
        return subscription["services"][0]["state"], api.get(f"/contacts/{contact}/credits").body["balance"]["total"]

    assert state() == ("effective", 100)  # March paid with 300 credits
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")
    assert state() == ("not_effective", 100)  # April: 100 cannot pay 300, nothing taken
    bought = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "refill")
    assert bought.status is TopUpStatus.SUCCEEDED
    assert state() == ("effective", 300)  # the top-up paid April (600 - 300) and re-activated it
    again = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "refill")  # a retry: nothing more
    assert again.replayed and state() == ("effective", 300)
    advance_clock(api, contact, "2026-05-01T12:00:00+00:00")
    assert state() == ("effective", 0)  # May paid
    advance_clock(api, contact, "2026-06-01T12:00:00+00:00")
    assert state() == ("not_effective", 0)
    paid = [
        (e.reference, e.credits)
        for e in store.credit_ledger(SCOPE, contact)
        if e.kind is EntryKind.CONSUMPTION and e.action == "service_period"
    ]
    (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    service, terms_id = subscription["services"][0]["id"], product["terms"][0]["id"]
    assert paid == [(f"prepaid_{service}_{terms_id}_2026-0{m}-01", 300) for m in (3, 4, 5)]  # each period once
    actions = api.get(f"/subscriptions/{subscription['id']}/actions").body["actions"]
    executed = [
        (a["action"], a["on"], a["requested_by"])
        for a in actions
        if a["status"] == "executed" and a["action"] in ("activate", "deactivate")
    ]
    assert sorted(executed) == [
        ("activate", "2026-04-01", "system"),  # the top-up's re-activation
        ("deactivate", "2026-04-01", "system"),
        ("deactivate", "2026-06-01", "system"),
    ], actions
    owed = [i for i in api.get(f"/invoices?contact_id={contact}").body["items"] if i["amount_due"]["amount"] != "0.00"]
    assert owed == []  # nothing invoiced for the service: the wallet paid


def test_a_top_up_losing_every_race_is_pending_and_a_full_wallet_is_refused_before_any_charge(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billow.domain.credits import Grant, GrantKind, Holding, Wallet
    from billow.domain.errors import ConcurrentModification
    from billow.services.credits import top_ups

    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)

    def busy(*args: Any, **kwargs: Any) -> None:
        raise ConcurrentModification("other collectors of the contact won every race")

    with monkeypatch.context() as patched:
        patched.setattr(top_ups, "collect_invoice", busy)
        raced = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "raced")
    assert raced.status is TopUpStatus.PENDING and raced.invoice.status is InvoiceStatus.OPEN  # not a 409
    assert buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "raced").status is TopUpStatus.SUCCEEDED
    now = datetime.now(UTC)
    full = Wallet(tuple(Holding(Grant(f"g{n}", GrantKind.PURCHASED, 1, now), 1) for n in range(500)))
    stored = store.get_wallet(SCOPE, contact)
    store.commit_wallet(SCOPE, contact, full, stored.version, ())
    with pytest.raises(RuleViolation) as too_many:
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "one-more")
    assert too_many.value.code == "credits.too_many_grants"
    assert store.get_invoice(SCOPE, invoice_id_of(contact, "one-more")) is None


def test_a_top_up_confirmed_by_the_customer_with_the_client_secret_is_granted_once_by_its_webhook(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    from billow.services.collection import collect_invoice

    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    started = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "web", on_session=True)
    assert started.status is TopUpStatus.PENDING and started.attempt is not None and started.attempt.on_session
    secret, intent_id = started.client_secret, started.attempt.charge_ref
    assert intent_id is not None and secret is not None and secret.startswith(intent_id)
    collect_invoice(store, rail, SCOPE, started.invoice.id, clock=CLOCK)  # a sweep, the collector: never confirm it
    again = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "web", on_session=True)
    assert again.replayed and again.status is TopUpStatus.PENDING and again.client_secret == secret
    client = stripe_client(local_stripe)
    assert client.v1.payment_intents.retrieve(intent_id).status == "requires_confirmation"
    with pytest.raises(InvalidInput) as reused:  # the same purchase off-session is another request
        buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "web")
    assert reused.value.code == "idempotency.key_reused"
    confirmed = client.v1.payment_intents.confirm(intent_id)  # the customer, in Stripe.js
    for _ in range(3):  # Stripe's webhook, delivered three times, each followed by invoice.paid's consumer
        _deliver(rail, confirmed.to_dict())
        activate_paid(store, ctx, started.invoice.id, clock=CLOCK, numbers=numbers)
    assert [g.credits for g in grants_of(store, contact)] == [500]
    done = get_top_up(store, ctx, CLOCK, numbers, contact, started.invoice.id)
    assert done.status is TopUpStatus.SUCCEEDED and done.grant is not None
    assert succeeded_charges(local_stripe, started.invoice.id) == 1


def _wallet_plan(api: InProcessClient, credits: int = 300) -> tuple[dict[str, Any], dict[str, Any]]:
    terms = {"price": "0.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}
    product = api.post("/products", {"name": "Wallet plan", "terms": [{**terms, "prepaid_credits": credits}]}).body
    return product, {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}


def _service(api: InProcessClient, contact: str) -> tuple[str, str, str]:
    (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    service = subscription["services"][0]
    return subscription["id"], service["id"], service["state"]


def test_payment_driven_periods_are_paid_on_their_own_day_and_a_restart_pays_its_period_at_once(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    add_tenant("t1", "Tenant One", KEY)
    api = InProcessClient(KEY)
    ctx = context(store)
    product, item = _wallet_plan(api)
    jumper = card_holder(store, local_stripe, rail)
    assert api.post(f"/contacts/{jumper}/test-clock", {"frozen_time": "2026-01-10T09:00:00+00:00"}).status == 201
    give_credits(store, ctx, CLOCK, jumper, {"id": "g", "kind": "purchased", "credits": 500}, source="staff")
    assert api.post("/orders", {"contact_id": jumper, "items": [item]}).status == 201  # January: 200 left
    promo = {"id": "p", "kind": "promotional", "credits": 300, "expires_at": "2026-02-20T00:00:00+00:00"}
    give_credits(store, ctx, CLOCK, jumper, promo, source="staff")
    advance_clock(api, jumper, "2026-03-10T09:00:00+00:00")  # one jump over February's renewal
    paid = {
        e.reference.rsplit("_", 1)[-1]: [p.grant_id for p in e.parts]
        for e in store.credit_ledger(SCOPE, jumper)
        if e.action == "service_period"
    }
    # February was paid on 10 February, from the promotional credits live that day; March found 200
    assert paid == {"2026-01-10": ["g"], "2026-02-10": ["p"]}
    assert _service(api, jumper)[2] == "not_effective"

    # a service re-activated by staff part-way through a period pays that period at once, or stops
    restart = card_holder(store, local_stripe, rail)
    assert api.post(f"/contacts/{restart}/test-clock", {"frozen_time": "2026-01-10T09:00:00+00:00"}).status == 201
    assert api.post("/orders", {"contact_id": restart, "items": [item]}).status == 201  # an empty wallet
    subscription, service, state = _service(api, restart)
    assert state == "not_effective"
    base = f"/subscriptions/{subscription}/services/{service}"
    assert api.post(f"{base}/activate", {}).status in (200, 201)  # the same day, staff: nothing to pay with
    assert _service(api, restart)[2] == "not_effective"  # stopped again, and the clock still moves
    advance_clock(api, restart, "2026-01-20T09:00:00+00:00")
    give_credits(store, ctx, CLOCK, restart, {"id": "g", "kind": "purchased", "credits": 400}, source="staff")
    assert api.post(f"{base}/activate", {}).status in (200, 201)
    assert _service(api, restart)[2] == "effective"
    assert api.get(f"/contacts/{restart}/credits").body["balance"]["total"] == 100  # January paid at once
    advance_clock(api, restart, "2026-02-10T09:00:00+00:00")
    assert _service(api, restart)[2] == "not_effective"  # February: 100 cannot pay 300
    consumed = [e.credits for e in store.credit_ledger(SCOPE, restart) if e.action == "service_period"]
    assert consumed == [300]
    refused = api.post(
        f"/contacts/{restart}/credits/consume",
        {"action": "sms", "quantity": 1, "request_id": f"prepaid_{service}_{product['terms'][0]['id']}_2026-02-10"},
    )
    assert refused.status == 422 and refused.body["error"] == "credits.request_id"  # a period is never paid by a caller


def test_a_refunded_top_up_removes_what_is_left_of_it_and_refunds_that_share_to_its_card_once(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    from billow.services.credits.top_up_refunds import refund_top_up

    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail)
    bought = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "buy")
    assert bought.status is TopUpStatus.SUCCEEDED
    consume_credits(store, ctx, CLOCK, contact, "sms", 123, "used")  # 377 left of the 500
    set_low_balance(store, ctx, CLOCK, contact, {"threshold": 100, "top_up_pack": "pack_500"})

    class RacedByATwin(DynamoStore):
        """A copy of the request refunds it all between this one's first read and its write."""

        raced = False

        def get_credit_entry(self, scope: Any, contact_id: str, entry_id: str) -> Any:
            found = super().get_credit_entry(scope, contact_id, entry_id)
            if entry_id.startswith("crd_ref_") and not RacedByATwin.raced:
                RacedByATwin.raced = True
                refund_top_up(DynamoStore(), rail, ctx, CLOCK, numbers, contact, bought.invoice.id)
            return found

    first = refund_top_up(RacedByATwin(), rail, ctx, CLOCK, numbers, contact, bought.invoice.id)
    assert RacedByATwin.raced  # answered with what its twin booked, not "nothing refunded"
    assert first.entry is not None and first.entry.credits == 377
    assert first.refunded is not None and first.refunded.refund.amount == Money.parse("7.54", "USD")  # 10.00 x 377/500
    assert first.refunded.refund.status.value == "succeeded"
    again = refund_top_up(store, rail, ctx, CLOCK, numbers, contact, bought.invoice.id)  # a retry: the same, once
    assert again.entry == first.entry and again.refunded is not None
    assert again.refunded.refund.id == first.refunded.refund.id
    assert store.get_wallet(SCOPE, contact).wallet.booked == 0
    refunds = rail.refunds_of(str(bought.attempt.charge_ref if bought.attempt else ""))
    assert [r.amount for r in refunds] == [Money.parse("7.54", "USD")]  # one refund on the card
    with pytest.raises(InsufficientCredits):  # nothing left to spend
        consume_credits(store, ctx, CLOCK, contact, "sms", 1, "after")
    lows = [e for e in store.credit_ledger(SCOPE, contact) if e.kind is EntryKind.LOW_BALANCE]
    assert lows == []  # a refund is never a fall below the threshold: the auto top-up does not buy it back


def test_payment_driven_services_under_a_billing_day_change_access_on_payment_and_a_top_up_racing_billing(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billow.services import billing

    add_tenant("t1", "Tenant One", KEY)
    api = InProcessClient(KEY)
    ctx, numbers = context(store), InvoiceNumbers(store)
    _, item = _wallet_plan(api)

    def fresh(credits: int) -> str:
        contact = card_holder(store, local_stripe, rail)
        assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
        if credits:
            give_credits(store, ctx, CLOCK, contact, {"id": "g", "kind": "purchased", "credits": credits}, source="s")
        return contact

    def paid(contact: str) -> list[str]:
        return [
            e.reference.rsplit("_", 1)[-1] for e in store.credit_ledger(SCOPE, contact) if e.action == "service_period"
        ]

    # a billing day changed part-way through a paid period: the shifted period overlapping it is not paid again
    moved = fresh(3000)
    assert api.post("/orders", {"contact_id": moved, "items": [item]}).status == 201
    advance_clock(api, moved, "2026-03-05T12:00:00+00:00")
    subscription, _, _ = _service(api, moved)
    assert api.post(f"/subscriptions/{subscription}/billing-day", {"billing_day": 15}).status in (200, 201)
    advance_clock(api, moved, "2026-03-16T12:00:00+00:00")
    assert paid(moved) == ["2026-03-01"]  # the shifted periods overlapping March's are covered by it
    advance_clock(api, moved, "2026-04-16T12:00:00+00:00")
    assert paid(moved) == ["2026-03-01", "2026-04-15"]  # then whole periods again; never 15 February

    # access on payment with an empty wallet: the draft service waits, nothing loops, the clock moves
    waiting = fresh(0)
    order = {"contact_id": waiting, "items": [item], "activate_on_payment": True}
    assert api.post("/orders", order).status == 201
    advance_clock(api, waiting, "2026-03-03T12:00:00+00:00")

    # a top-up landing while billing decides to stop the service: billing pays with it instead
    raced = fresh(300)
    assert api.post("/orders", {"contact_id": raced, "items": [item]}).status == 201  # March paid: 0 left
    original, landed = billing.deactivate_unpaid, []

    def top_up_first(*args: Any, **kwargs: Any) -> Any:
        if not landed:
            landed.append(buy_top_up(store, rail, ctx, CLOCK, numbers, raced, "pack_500", "race"))
        return original(*args, **kwargs)

    monkeypatch.setattr(billing, "deactivate_unpaid", top_up_first)
    advance_clock(api, raced, "2026-04-02T12:00:00+00:00")
    assert landed and landed[0].status is TopUpStatus.SUCCEEDED
    assert _service(api, raced)[2] == "effective" and paid(raced) == ["2026-03-01", "2026-04-01"]

    # an old top-up read again (or replayed) re-activates nothing
    stopped = fresh(300)
    first = buy_top_up(store, rail, ctx, CLOCK, numbers, stopped, "pack_10", "small")  # 310 credits
    assert api.post("/orders", {"contact_id": stopped, "items": [item]}).status == 201  # 10 left
    advance_clock(api, stopped, "2026-04-02T12:00:00+00:00")
    assert _service(api, stopped)[2] == "not_effective"
    give_credits(store, ctx, CLOCK, stopped, {"id": "staff", "kind": "purchased", "credits": 500}, source="s")
    get_top_up(store, ctx, CLOCK, numbers, stopped, first.invoice.id)
    buy_top_up(store, rail, ctx, CLOCK, numbers, stopped, "pack_10", "small")
    assert _service(api, stopped)[2] == "not_effective"  # a staff grant pays nothing; only a new top-up does


def test_a_card_declined_in_stripe_js_leaves_the_top_up_open_for_another_card(
    store: DynamoStore, rail: StripeGateway, local_stripe: LocalStripe
) -> None:
    import stripe

    ctx, numbers = context(store), InvoiceNumbers(store)
    contact = card_holder(store, local_stripe, rail, card=DECLINES_AT_CHARGE)
    started = buy_top_up(store, rail, ctx, CLOCK, numbers, contact, "pack_500", "web", on_session=True)
    assert started.attempt is not None and started.attempt.charge_ref is not None
    intent_id = started.attempt.charge_ref
    client = stripe_client(local_stripe)
    with pytest.raises(stripe.CardError):
        client.v1.payment_intents.confirm(intent_id)  # the saved card declines, in Stripe.js
    # Stripe's webhook about it: applied from the PaymentIntent as the rail has it (never the event's content)
    _deliver(rail, client.v1.payment_intents.retrieve(intent_id).to_dict())
    state = get_top_up(store, ctx, CLOCK, numbers, contact, started.invoice.id, rail)
    assert state.status is TopUpStatus.PENDING and state.client_secret is not None  # still open for another card
    assert client.v1.payment_intents.retrieve(intent_id).status != "canceled"
    assert grants_of(store, contact) == []
