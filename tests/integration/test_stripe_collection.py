"""Collection and its webhooks against a real localstripe (one per test process) and DynamoDB
Local, with the real StripeGateway and the real `reconcile_charge` applier: Billow's records, not
the fake's idempotency keys (localstripe ignores them), keep every invoice charged at most once, and
a charge Stripe made is never lost.

- Webhooks: the events of one payment (created, failed, succeeded) delivered in every order, each
  5 times, signed as Stripe signs them: the invoice ends as the PaymentIntent really is, with one
  payment or none; a bad signature, a timestamp 6 minutes old, an event claiming this tenant about
  another tenant's PaymentIntent: nothing applied.
- Fault injection: the collector dies after each of its DynamoDB requests, and after each of its
  Stripe requests, then the event is delivered again: one succeeded PaymentIntent per invoice
  (counted in localstripe by the metadata Billow attaches), and the invoice paid once.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billow.domain.collection import AttemptStatus
from billow.domain.invoices import InvoiceStatus, PaymentMethod
from billow.domain.money import Money
from billow.gateways.stripe import StripeGateway
from billow.gateways.stripe_webhooks import StripeWebhooks
from billow.local.dynamodb import DynamoDBLocal
from billow.local.secrets import ENV as SECRETS_ENV
from billow.local.secrets import LocalSecrets, configured
from billow.local.stripe import TEST_API_KEY, LocalStripe
from billow.services import webhooks
from billow.services.collection import collect_invoice, reconcile_charge
from billow.services.context import Scope, SystemClock, TenantContext
from billow.services.gateway import ChargeRequest, ChargeStatus, GatewayUnavailable, RailSecrets, WebhookRejected
from billow.services.invoices import ManualPaymentInput, payment_id_for, record_manual_payment
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.collection_support import SCOPE, card_holder, seed_invoice, seed_tenant, stored_invoice
from tests.integration.test_fault_injection import Crash as DynamoCrash
from tests.integration.test_fault_injection import crash_after
from tests.stripe_support import (
    DECLINES_AT_CHARGE,
    VISA,
    StripeCrash,
    StripeRequests,
    confirm_setup,
    intents_of,
    stripe_client,
)
from tests.support import in_processes, unique
from tests.webhook_support import sign

pytestmark = pytest.mark.integration

SECRET = "whsec_t1_localstripe"
CLOCK = SystemClock()
OTHER = Scope("t2", "test")


@pytest.fixture
def store(local_table: str, monkeypatch: pytest.MonkeyPatch) -> DynamoStore:
    monkeypatch.setenv(
        SECRETS_ENV,
        configured({("stripe", t, "test"): RailSecrets(TEST_API_KEY, SECRET) for t in ("t1", "t2")}),
    )
    store = DynamoStore()
    seed_tenant(store)
    return store


@pytest.fixture
def rail(local_stripe: LocalStripe) -> StripeGateway:
    return StripeGateway(TEST_API_KEY, api_base=local_stripe.url, localstripe=True)


def succeeded_intents(server: LocalStripe, invoice_id: str) -> int:
    return Counter(p.status for p in intents_of(server, invoice_id))["succeeded"]


def assert_paid_once(store: DynamoStore, server: LocalStripe, invoice_id: str) -> None:
    assert succeeded_intents(server, invoice_id) == 1
    invoice = stored_invoice(store, invoice_id)
    assert invoice.status is InvoiceStatus.PAID
    (payment,) = store.payments_of(SCOPE, invoice.contact_id, invoice_id)
    assert payment.amount == invoice.total


# -- webhooks -------------------------------------------------------------------------------------
def ports(rail: StripeGateway) -> webhooks.WebhookPorts:
    store = DynamoStore()
    return webhooks.WebhookPorts(
        events=store, store=store, secrets=LocalSecrets(), verifier=StripeWebhooks(), gateway_for=lambda scope: rail
    )


def event_of(intent: Any, event_type: str, *, metadata: dict[str, str] | None = None) -> bytes:
    """The event Stripe sends about `intent` (its object as Stripe holds it, or with `metadata`)."""
    thing = intent.to_dict()
    if metadata is not None:
        thing["metadata"] = metadata
    body = {
        "id": unique("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(datetime.now(UTC).timestamp()),
        "livemode": False,
        "type": event_type,
        "data": {"object": thing},
    }
    return json.dumps(body).encode()


def deliver(rail: StripeGateway, payload: bytes, *, age: timedelta = timedelta(0), secret: str = SECRET) -> Any:
    now = datetime.now(UTC)
    return webhooks.receive(ports(rail), "stripe", "t1", payload, sign(payload, secret, now - age), now=now)


class CollectorDied(BaseException):
    pass


def charged_then_died(store: DynamoStore, server: LocalStripe, rail: StripeGateway, invoice_id: str) -> Any:
    """The collector confirms the charge on Stripe and dies before recording anything more: the
    PaymentIntent as Stripe holds it now."""
    confirm = rail.confirm_charge

    def confirm_then_die(*args: Any, **kwargs: Any) -> Any:
        confirm(*args, **kwargs)
        raise CollectorDied

    rail.confirm_charge = confirm_then_die  # type: ignore[method-assign]
    try:
        with pytest.raises(CollectorDied):
            collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    finally:
        del rail.confirm_charge
    attempt = store.latest_attempt(SCOPE, stored_invoice(store, invoice_id).contact_id, invoice_id)
    assert attempt is not None and attempt.status is AttemptStatus.CREATED
    (intent,) = intents_of(server, invoice_id)
    return intent


@pytest.fixture
def server(local_stripe: LocalStripe) -> LocalStripe:
    return local_stripe


TYPES = ("payment_intent.created", "payment_intent.payment_failed", "payment_intent.succeeded")


@pytest.mark.parametrize("card", [VISA, DECLINES_AT_CHARGE], ids=["pays", "declines"])
def test_the_events_of_one_payment_in_every_order_5_times_each_end_as_stripe_has_it(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe, card: str
) -> None:
    for order in itertools.permutations(TYPES):
        contact_id = card_holder(store, server, rail, card)
        invoice_id = unique("inv")
        seed_invoice(store, contact_id, invoice_id, "30.00")
        intent = charged_then_died(store, server, rail, invoice_id)
        payloads = [event_of(intent, t) for t in order]
        outcomes = [deliver(rail, p).outcome for _ in range(5) for p in payloads]
        applied = [o for o in outcomes if o is webhooks.Outcome.APPLIED]
        assert len(applied) == 2  # the failed and the succeeded event, once each; created is not handled
        invoice = stored_invoice(store, invoice_id)
        attempt = store.latest_attempt(SCOPE, contact_id, invoice_id)
        assert attempt is not None
        payments = store.payments_of(SCOPE, contact_id, invoice_id)
        if card == VISA:
            assert intent.status == "succeeded"
            assert (invoice.status, attempt.status, len(payments)) == (InvoiceStatus.PAID, AttemptStatus.SUCCEEDED, 1)
        else:
            assert intent.status == "requires_payment_method"
            assert (invoice.status, attempt.status, payments) == (InvoiceStatus.OPEN, AttemptStatus.FAILED, [])
            assert attempt.decline_code == "card_declined"


def test_refused_deliveries_and_another_tenants_object_apply_nothing(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    contact_id = card_holder(store, server, rail)
    invoice_id = unique("inv")
    seed_invoice(store, contact_id, invoice_id, "30.00")
    intent = charged_then_died(store, server, rail, invoice_id)
    succeeded = event_of(intent, "payment_intent.succeeded")
    with pytest.raises(WebhookRejected) as bad:
        deliver(rail, succeeded, secret="whsec_not_ours")
    assert bad.value.code == "webhook.bad_signature"
    with pytest.raises(WebhookRejected) as stale:
        deliver(rail, succeeded, age=timedelta(minutes=6))
    assert stale.value.code == "webhook.stale"

    # t2's PaymentIntent (paid), naming this very invoice and attempt, in an event that says it is
    # t1's: signed with t1's secret, acknowledged, and applied nowhere (Stripe's object is not t1's)
    attempt = store.latest_attempt(SCOPE, contact_id, invoice_id)
    assert attempt is not None and attempt.customer_ref and attempt.method_ref
    meta = {"tenant_id": OTHER.tenant_id, "mode": "test", "invoice_id": invoice_id, "attempt_id": attempt.id}
    request = ChargeRequest(attempt.customer_ref, attempt.method_ref, attempt.amount, unique("k"), meta)
    theirs = rail.confirm_charge(rail.create_charge(request).ref, idempotency_key=unique("k"))
    their_intent = stripe_client(server).v1.payment_intents.retrieve(theirs.ref)
    lying = event_of(their_intent, "payment_intent.succeeded", metadata={"tenant_id": "t1", "mode": "test"})
    assert deliver(rail, lying).outcome is webhooks.Outcome.APPLIED  # acknowledged, recorded; changed nothing
    assert stored_invoice(store, invoice_id).status is InvoiceStatus.OPEN
    assert store.payments_of(SCOPE, contact_id, invoice_id) == []
    assert deliver(rail, succeeded).outcome is webhooks.Outcome.APPLIED  # the genuine one still applies
    assert stored_invoice(store, invoice_id).status is InvoiceStatus.PAID


# -- fault injection ------------------------------------------------------------------------------
def test_a_collector_crashed_after_every_dynamodb_and_every_stripe_request_then_rerun_charges_once(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    def fresh_invoice() -> str:
        invoice_id = unique("inv")
        seed_invoice(store, card_holder(store, server, rail), invoice_id, "30.00")
        return invoice_id

    probe = fresh_invoice()
    with crash_after(None) as dynamodb, StripeRequests(None) as stripe_requests:
        collect_invoice(store, rail, SCOPE, probe, clock=CLOCK)
    assert_paid_once(store, server, probe)
    assert dynamodb.made > 5 and stripe_requests.made >= 2

    crashes: list[tuple[type[BaseException], Any]] = []
    for k in range(1, dynamodb.made + 1):
        crashes.append((DynamoCrash, crash_after(k)))
    for k in range(1, stripe_requests.made + 1):
        crashes.append((StripeCrash, StripeRequests(k)))
    for crash, fault in crashes:
        invoice_id = fresh_invoice()
        with pytest.raises(crash), fault:
            collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)  # the event delivered again
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)  # and once more
        assert_paid_once(store, server, invoice_id)


# -- a failure is recorded only once its PaymentIntent can no longer take money ---------------------
class CancelOutage(StripeGateway):
    """Stripe out of reach for the next `outages` cancels (a 503), otherwise the real gateway."""

    outages = 1

    def cancel_charge(self, charge_ref: str) -> Any:
        if self.outages:
            self.outages -= 1
            raise GatewayUnavailable("Stripe answered 503 to the cancel")
        return super().cancel_charge(charge_ref)


def test_a_declined_whole_debt_contact_gets_no_second_payment_intent_for_its_invoices_while_the_first_is_open(
    local_table: str, server: LocalStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declined PaymentIntent (requires_payment_method: Stripe lets it be confirmed again) whose
    cancel Stripe did not take keeps its attempt live: the next invoice's whole-debt charge is for
    that invoice alone. The redelivery cancels the first (canceled in localstripe) and records the
    failure; only then does a whole-debt charge take the first invoice again."""
    from billow.domain.collection import CollectionMode, CollectionSettings
    from billow.domain.money import Money

    store = DynamoStore()
    seed_tenant(store, CollectionSettings(CollectionMode.CREDIT_LIMIT, collect_whole_debt=True))
    rail = CancelOutage(TEST_API_KEY, api_base=server.url, localstripe=True)
    contact = card_holder(store, server, rail, DECLINES_AT_CHARGE)
    stored = store.get_contact(SCOPE, contact)
    assert stored is not None
    store.save_contact(SCOPE, replace(stored, credit_limit={"USD": Money.parse("50.00", "USD")}))
    first, second, third = unique("inv"), unique("inv"), unique("inv")

    seed_invoice(store, contact, first, "60.00")
    with pytest.raises(GatewayUnavailable):
        collect_invoice(store, rail, SCOPE, first, clock=CLOCK)
    (open_intent,) = intents_of(server, first)
    assert open_intent.status == "requires_payment_method"  # declined, still confirmable

    seed_invoice(store, contact, second, "20.00")
    attempt = collect_invoice(store, rail, SCOPE, second, clock=CLOCK)
    assert attempt is not None and attempt.covered_ids() == {second}
    (intent,) = intents_of(server, second)
    assert intent.amount == 2000  # the second invoice alone: the first is the open intent's
    assert len(intents_of(server, first)) == 1

    ended = collect_invoice(store, rail, SCOPE, first, clock=CLOCK)  # the event delivered again
    assert ended is not None and (ended.status, ended.decline_code) == (AttemptStatus.FAILED, "card_declined")
    (canceled,) = intents_of(server, first)
    assert canceled.status == "canceled"

    seed_invoice(store, contact, third, "10.00")
    whole = collect_invoice(store, rail, SCOPE, third, clock=CLOCK)
    assert whole is not None and whole.covered_ids() == {first, second, third}
    (whole_intent,) = intents_of(server, third)
    assert (whole_intent.amount, whole_intent.status) == (9000, "canceled")  # declined, then cancelled


def test_a_charge_created_before_a_crash_is_taken_on_by_the_rerun_not_left_beside_a_second(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    """The collector dies right after Stripe created the PaymentIntent, before Billow recorded it
    (localstripe ignores the create's idempotency key, so sending it again would make another): the
    rerun finds it by the attempt's metadata and confirms it. One PaymentIntent of the attempt is
    left that is not canceled, the one recorded and succeeded."""
    invoice_id = unique("inv")
    seed_invoice(store, card_holder(store, server, rail), invoice_id, "30.00")
    with pytest.raises(StripeCrash), StripeRequests(1):  # 1: the create
        collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    (orphan,) = intents_of(server, invoice_id)
    attempt = collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    assert attempt is not None and attempt.status is AttemptStatus.SUCCEEDED
    (kept,) = [p for p in intents_of(server, invoice_id) if p.status != "canceled"]
    assert kept.id == orphan.id == attempt.charge_ref and kept.status == "succeeded"
    assert_paid_once(store, server, invoice_id)


def test_a_resumer_never_cancels_a_charge_another_run_is_about_to_record(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    """Two runs each created a charge of one pending attempt, neither recorded yet. A third,
    resuming, finds both and takes one; before it records that one, the run owning the other records
    and confirms it. The resumer must not have cancelled that other charge as an extra (it did: the
    recorded charge was cancelled, the attempt failed `canceled`, a good card's invoice left unpaid):
    extras are cancelled only once the resumer's own record is won; losing, it cancels what it took."""
    from billow.services import collection

    invoice_id = unique("inv")
    seed_invoice(store, card_holder(store, server, rail), invoice_id, "30.00")
    attempt = collection._start(store, SCOPE, stored_invoice(store, invoice_id), CLOCK, 1)
    assert attempt is not None and attempt.status is AttemptStatus.PENDING
    first = rail.create_charge(collection._request(SCOPE, attempt))
    second = rail.create_charge(collection._request(SCOPE, attempt))
    (taken, *_) = [
        c
        for c in rail.charges_of_attempt(
            attempt.customer_ref or "", attempt.id, since=attempt.created_at - collection.CLOCK_SKEW
        )
        if c.status.value == "created"
    ]
    owner_charge = second.ref if taken.ref == first.ref else first.ref  # the charge the resumer did not take

    save = store.save_attempt
    owner_ran: list[AttemptStatus] = []

    def owner_records_first(scope: Scope, recorded: Any) -> Any:
        if not owner_ran:  # the resumer is about to record: the owner of the other charge records it first
            mine = save(scope, attempt.created(owner_charge, CLOCK.now()))
            owner_ran.append(collection.resume(store, rail, SCOPE, mine, clock=CLOCK).status)
        return save(scope, recorded)

    store.save_attempt = owner_records_first  # type: ignore[method-assign]
    try:
        resumed = collection.resume(store, rail, SCOPE, attempt, clock=CLOCK)
    finally:
        store.save_attempt = save  # type: ignore[method-assign]
    assert owner_ran == [AttemptStatus.SUCCEEDED] and resumed.status is AttemptStatus.SUCCEEDED
    assert resumed.charge_ref == owner_charge
    assert_paid_once(store, server, invoice_id)
    assert Counter(p.status for p in intents_of(server, invoice_id)) == {"succeeded": 1, "canceled": 1}


# -- a charge no attempt recorded is recorded, once -----------------------------------------------
def paying_method(server: LocalStripe, rail: StripeGateway, customer_ref: str) -> str:
    """A card that pays, saved on `customer_ref` as Stripe.js and recording it would."""
    setup = rail.start_setup(customer_ref, idempotency_key=unique("k"), metadata={})
    confirm_setup(server, setup.ref, VISA)
    method = rail.setup_state(setup.ref).method
    assert method is not None
    rail.attach_method(method.ref, customer_ref)
    return method.ref


def charge_outside_billow(
    store: DynamoStore, server: LocalStripe, rail: StripeGateway, contact_id: str, meta: dict[str, str], amount: str
) -> Any:
    """A PaymentIntent made and confirmed on Stripe, not by Billow's collector, on the contact's
    customer, with `meta` (Billow's metadata): succeeded. As Stripe holds it."""
    contact = store.get_contact(SCOPE, contact_id)
    assert contact is not None and contact.gateway_customer_ref is not None
    customer = contact.gateway_customer_ref
    request = ChargeRequest(customer, paying_method(server, rail, customer), usd(amount), unique("k"), meta)
    made = rail.confirm_charge(rail.create_charge(request).ref, idempotency_key=unique("k"))
    assert made.status is ChargeStatus.SUCCEEDED
    return stripe_client(server).v1.payment_intents.retrieve(made.ref)


def usd(amount: str) -> Money:
    return Money.parse(amount, "USD")


def unrecorded_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "no payment attempt" in r.getMessage()
    ]


def test_a_charge_of_a_failed_attempt_made_after_the_invoice_was_paid_by_transfer_is_kept_as_credit_once(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe, caplog: pytest.LogCaptureFixture
) -> None:
    """The attempt failed, the invoice was then paid by transfer, and a PaymentIntent with that
    attempt's metadata succeeded on the contact's customer: its webhook records 20.00 as the
    contact's credit on the invoice, delivered 5 times, as another event, and reconciled again: one payment."""
    contact_id = card_holder(store, server, rail, DECLINES_AT_CHARGE)
    invoice_id = unique("inv")
    seed_invoice(store, contact_id, invoice_id, "30.00")
    failed = collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)
    assert failed is not None and failed.status is AttemptStatus.FAILED
    settings = store.get_settings(SCOPE.tenant_id)
    assert settings is not None
    spec = ManualPaymentInput(
        "30.00", "USD", PaymentMethod.BANK_TRANSFER, unique("wire"), datetime.now(UTC).date() - timedelta(days=1)
    )
    record_manual_payment(store, TenantContext(SCOPE.tenant_id, SCOPE.mode, settings), invoice_id, spec, CLOCK)
    meta = {
        "tenant_id": "t1",
        "mode": "test",
        "invoice_id": invoice_id,
        "attempt_id": failed.id,
        "contact_id": contact_id,
    }
    intent = charge_outside_billow(store, server, rail, contact_id, meta, "20.00")

    succeeded = event_of(intent, "payment_intent.succeeded")
    with caplog.at_level(logging.WARNING, logger="billow"):
        outcomes = [deliver(rail, succeeded).outcome for _ in range(5)]
        outcomes.append(deliver(rail, event_of(intent, "payment_intent.succeeded")).outcome)  # another event id
        reconcile_charge(store, rail, SCOPE, intent.id, clock=CLOCK)  # a sweep
    assert outcomes.count(webhooks.Outcome.APPLIED) == 2
    card = [p for p in store.payments_of(SCOPE, contact_id, invoice_id) if p.method is PaymentMethod.CARD]
    assert [(p.reference, p.amount, p.unapplied, p.stray_charge) for p in card] == [
        (intent.id, usd("20.00"), usd("20.00"), True)
    ]
    assert card[0].id == payment_id_for(invoice_id, intent.id, collected=True)
    invoice = stored_invoice(store, invoice_id)
    assert (invoice.status, invoice.unapplied) == (InvoiceStatus.PAID, usd("20.00"))
    attempt = store.latest_attempt(SCOPE, contact_id, invoice_id)
    assert attempt is not None and attempt.status is AttemptStatus.FAILED  # still the declined charge's
    assert len(unrecorded_warnings(caplog)) == 1


def test_a_charge_naming_no_attempt_or_a_missing_one_is_applied_and_another_customers_is_not(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe, caplog: pytest.LogCaptureFixture
) -> None:
    contact_id = card_holder(store, server, rail)
    invoice_id = unique("inv")
    seed_invoice(store, contact_id, invoice_id, "30.00")
    base = {"tenant_id": "t1", "mode": "test", "invoice_id": invoice_id}
    missing = charge_outside_billow(
        store, server, rail, contact_id, base | {"attempt_id": f"att_{invoice_id}_7", "contact_id": contact_id}, "20.00"
    )
    assert reconcile_charge(store, rail, SCOPE, missing.id, clock=CLOCK) is None
    invoice = stored_invoice(store, invoice_id)
    assert (invoice.amount_due, invoice.unapplied) == (usd("10.00"), usd("0.00"))  # applied: it still took it

    # another customer's PaymentIntent naming this contact's invoice: not this contact's money
    other = card_holder(store, server, rail)
    theirs = charge_outside_billow(store, server, rail, other, base | {"contact_id": contact_id}, "5.00")
    # and this contact's, naming another contact as its owner
    misnamed = charge_outside_billow(store, server, rail, contact_id, base | {"contact_id": other}, "5.00")
    with caplog.at_level(logging.WARNING, logger="billow"):
        for ref in (theirs.id, misnamed.id):
            assert reconcile_charge(store, rail, SCOPE, ref, clock=CLOCK) is None
    assert stored_invoice(store, invoice_id).amount_due == usd("10.00")
    assert [m for m in (r.getMessage() for r in caplog.records) if "ignored" in m] != []

    bare = charge_outside_billow(store, server, rail, contact_id, base, "15.00")  # no attempt, no contact named
    assert reconcile_charge(store, rail, SCOPE, bare.id, clock=CLOCK) is None
    invoice = stored_invoice(store, invoice_id)
    assert (invoice.status, invoice.unapplied) == (InvoiceStatus.PAID, usd("5.00"))
    recorded = sorted((p.amount.minor, p.unapplied.minor) for p in store.payments_of(SCOPE, contact_id, invoice_id))
    assert recorded == [(1500, 500), (2000, 0)]


def _reconciler(table: str, endpoint: str, stripe_url: str, charge_ref: str, go: Any, out: Any, met: Any) -> None:
    """A webhook applier in its own process (its own Lambda container)."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    rail = StripeGateway(TEST_API_KEY, api_base=stripe_url, localstripe=True)
    go.wait()
    met.wait()
    reconcile_charge(DynamoStore(), rail, SCOPE, charge_ref, clock=CLOCK)
    out.put("done")


def test_processes_recording_the_same_unrecorded_charge_at_once_write_one_payment(
    store: DynamoStore,
    rail: StripeGateway,
    server: LocalStripe,
    local_table: str,
    dynamodb_local: DynamoDBLocal,
) -> None:
    contact_id = card_holder(store, server, rail)
    invoice_id = unique("inv")
    seed_invoice(store, contact_id, invoice_id, "30.00")
    meta = {"tenant_id": "t1", "mode": "test", "invoice_id": invoice_id, "contact_id": contact_id}
    intent = charge_outside_billow(store, server, rail, contact_id, meta, "20.00")
    each = [(local_table, dynamodb_local.endpoint, server.url, intent.id)] * 3
    assert in_processes(_reconciler, each, meet=3) == ["done"] * 3
    (payment,) = store.payments_of(SCOPE, contact_id, invoice_id)
    assert (payment.reference, payment.amount, payment.stray_charge) == (intent.id, usd("20.00"), True)
    invoice = stored_invoice(store, invoice_id)
    assert (invoice.amount_due, invoice.unapplied) == (usd("10.00"), usd("0.00"))


def test_an_unrecorded_charge_cancelled_does_not_end_its_pending_attempt(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    """A charge of a pending attempt that no run recorded, then cancelled (an extra, or by hand on
    Stripe): its `payment_intent.canceled` must not record the attempt failed (it did: `canceled`,
    a good card's invoice left unpaid). The next run charges the invoice once."""
    from billow.services import collection

    invoice_id = unique("inv")
    seed_invoice(store, card_holder(store, server, rail), invoice_id, "30.00")
    attempt = collection._start(store, SCOPE, stored_invoice(store, invoice_id), CLOCK, 1)
    assert attempt is not None and attempt.status is AttemptStatus.PENDING
    extra = rail.create_charge(collection._request(SCOPE, attempt))
    rail.cancel_charge(extra.ref)
    after = collection.reconcile_charge(store, rail, SCOPE, extra.ref, clock=CLOCK)  # its webhook
    assert after is not None and after.status is AttemptStatus.PENDING
    paid = collect_invoice(store, rail, SCOPE, invoice_id, clock=CLOCK)  # the redelivery
    assert paid is not None and paid.status is AttemptStatus.SUCCEEDED
    assert_paid_once(store, server, invoice_id)


def test_a_success_read_as_the_attempts_is_kept_when_the_collector_records_its_own_charge_first(
    store: DynamoStore, rail: StripeGateway, server: LocalStripe
) -> None:
    """A charge made outside the collector with a pending attempt's metadata and amount succeeds;
    its webhook reads the attempt (no charge recorded yet, so the charge reads as the attempt's),
    and before it writes, the collector records and confirms its own. The webhook's write loses:
    the outside money must still be recorded, as a stray kept as credit (it was recorded nowhere,
    and its event id was spent)."""
    from billow.services import collection

    contact_id = card_holder(store, server, rail)
    invoice_id = unique("inv")
    seed_invoice(store, contact_id, invoice_id, "30.00")
    attempt = collection._start(store, SCOPE, stored_invoice(store, invoice_id), CLOCK, 1)
    assert attempt is not None
    meta = {"tenant_id": "t1", "mode": "test", "invoice_id": invoice_id, "attempt_id": attempt.id}
    outside = charge_outside_billow(store, server, rail, contact_id, {**meta, "contact_id": contact_id}, "30.00")

    read = store.get_attempt
    collector_ran: list[AttemptStatus] = []

    def collector_goes_first(*args: Any, **kwargs: Any) -> Any:
        got = read(*args, **kwargs)
        if not collector_ran:  # the webhook has read the attempt: the collector records and confirms its charge
            collector_ran.append(collection.resume(store, rail, SCOPE, got, clock=CLOCK).status)
        return got

    store.get_attempt = collector_goes_first  # type: ignore[method-assign]
    try:
        reconcile_charge(store, rail, SCOPE, outside.id, clock=CLOCK)
    finally:
        store.get_attempt = read  # type: ignore[method-assign]
    assert collector_ran == [AttemptStatus.SUCCEEDED]
    succeeded = sorted(p.id for p in intents_of(server, invoice_id) if p.status == "succeeded")
    payments = store.payments_of(SCOPE, contact_id, invoice_id)
    assert sorted(p.reference for p in payments) == succeeded and len(succeeded) == 2
    (stray,) = [p for p in payments if p.reference == outside.id]
    assert stray.stray_charge and stray.unapplied == usd("30.00")
    assert stored_invoice(store, invoice_id).status is InvoiceStatus.PAID
