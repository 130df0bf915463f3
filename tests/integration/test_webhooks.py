"""Stripe webhooks on DynamoDB Local: each event applied exactly once however often, however late
and by however many processes it is delivered; refused (400, nothing stored) when its signature or
timestamp is wrong; applied nowhere when it is about another tenant's or mode's object; applied on
redelivery when the delivery that recorded it died before applying it."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billow.domain.errors import Conflict, TemporaryFailure
from billow.gateways.stripe_webhooks import StripeWebhooks
from billow.local.secrets import ENV as SECRETS_ENV
from billow.local.secrets import LocalSecrets
from billow.services import webhooks
from billow.services.context import Scope
from billow.services.gateway import WebhookRejected
from billow.storage.models import BillowItem
from billow.storage.repository import DynamoStore, webhook_event_pk

from tests.support import separate_processes
from tests.webhook_support import (
    APPLIERS,
    SECRETS,
    applications,
    configured_secrets,
    event_body,
    sign,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ACME = Scope("acme", "test")


@pytest.fixture(autouse=True)
def rail_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRETS_ENV, configured_secrets())


def ports(appliers: dict[str, str] = APPLIERS) -> webhooks.WebhookPorts:
    store = DynamoStore()
    return webhooks.WebhookPorts(
        events=store,
        store=store,
        secrets=LocalSecrets(),
        verifier=StripeWebhooks(),
        gateway_for=lambda scope: None,  # type: ignore[arg-type,return-value]
        appliers=appliers,
    )


def deliver(
    payload: bytes, *, at: datetime = NOW, tenant: str = "acme", secret: str | None = None, **kw: Any
) -> webhooks.Receipt:
    signature = sign(payload, secret or SECRETS["acme"], at)
    return webhooks.receive(kw.pop("ports", None) or ports(), "stripe", tenant, payload, signature, now=at, **kw)


def recorded(scope: Scope, event_id: str) -> BillowItem | None:
    try:
        return BillowItem.get(webhook_event_pk(scope, "stripe", event_id), "WHEVT", consistent_read=True)
    except BillowItem.DoesNotExist:
        return None


def test_an_event_delivered_5_times_over_3_days_is_applied_once(local_table: str) -> None:
    payload = event_body("evt_five", ref="pi_five")
    later = [timedelta(0), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=3)]
    outcomes = [deliver(payload, at=NOW + t).outcome for t in later]  # each delivery signed when it is sent

    assert outcomes == [webhooks.Outcome.APPLIED] + [webhooks.Outcome.DUPLICATE] * 4
    assert applications(ACME, "pi_five") == 1
    item = recorded(ACME, "evt_five")
    assert item is not None and item.status == "applied"
    assert item.expires_at == int((NOW + timedelta(days=30)).timestamp())  # kept far beyond 3 days


def test_each_event_of_one_payment_is_applied_once_whatever_the_order(local_table: str) -> None:
    failed = event_body("evt_failed", "payment_intent.payment_failed", ref="pi_order")
    succeeded = event_body("evt_succeeded", "payment_intent.succeeded", ref="pi_order")
    for payload in (succeeded, failed, succeeded, failed, failed):
        deliver(payload)
    assert applications(ACME, "pi_order") == 2  # one per event: each re-reads the charge from the rail


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p, s: (p, s.replace("v1=", "v1=0")), id="wrong-signature"),
        pytest.param(lambda p, s: (p.replace(b"pi_bad", b"pi_bax"), s), id="body-changed-after-signing"),
        pytest.param(lambda p, s: (p, sign(p, "whsec_someone_else", NOW)), id="another-secret"),
        pytest.param(lambda p, s: (p, ""), id="no-header"),
        pytest.param(lambda p, s: (p, "t=abc,v1=00"), id="garbled-header"),
    ],
)
def test_a_bad_signature_is_refused_and_nothing_is_stored(local_table: str, tamper: Any) -> None:
    genuine = event_body("evt_bad", ref="pi_bad")
    payload, signature = tamper(genuine, sign(genuine, SECRETS["acme"], NOW))
    with pytest.raises(WebhookRejected) as refused:
        webhooks.receive(ports(), "stripe", "acme", payload, signature or None, now=NOW)
    assert refused.value.code == "webhook.bad_signature"
    assert recorded(ACME, "evt_bad") is None
    assert applications(ACME, "pi_bad") == applications(ACME, "pi_bax") == 0


@pytest.mark.parametrize("age", [timedelta(minutes=6), -timedelta(minutes=6)], ids=["6-minutes-old", "6-minutes-ahead"])
def test_a_delivery_signed_6_minutes_away_is_refused_as_stale(local_table: str, age: timedelta) -> None:
    payload = event_body("evt_stale", ref="pi_stale")
    signature = sign(payload, SECRETS["acme"], NOW - age)
    with pytest.raises(WebhookRejected) as refused:
        webhooks.receive(ports(), "stripe", "acme", payload, signature, now=NOW)
    assert refused.value.code == "webhook.stale"
    assert recorded(ACME, "evt_stale") is None and applications(ACME, "pi_stale") == 0
    # within the tolerance it is accepted
    assert deliver(payload, at=NOW - timedelta(minutes=4, seconds=59)).outcome is webhooks.Outcome.APPLIED


def test_an_event_about_another_tenants_object_is_acknowledged_and_applied_nowhere(local_table: str) -> None:
    # Signed with acme's secret, delivered to acme, about globex's payment: acknowledged, ignored.
    theirs = event_body("evt_theirs", tenant="globex", ref="pi_theirs")
    logged: list[tuple[str, dict[str, Any]]] = []
    receipt = deliver(theirs, log=lambda message, extra: logged.append((message, extra)))
    assert (receipt.outcome, receipt.reason) == (webhooks.Outcome.IGNORED, "not_this_tenant")
    assert [extra["event_id"] for _, extra in logged] == ["evt_theirs"]  # logged, for the tenant to see
    # Signed with globex's secret, delivered to acme's endpoint: it does not verify with acme's.
    with pytest.raises(WebhookRejected):
        deliver(event_body("evt_cross", tenant="acme", ref="pi_cross"), secret=SECRETS["globex"])
    # A test-mode event about a live object (or no Billow metadata at all): ignored.
    assert deliver(event_body("evt_mode", metadata={"tenant_id": "acme", "mode": "live"})).outcome.value == "ignored"
    assert deliver(event_body("evt_none", metadata={"other": "x"})).outcome.value == "ignored"
    for scope in (ACME, Scope("globex", "test"), Scope("acme", "live")):
        for ref in ("pi_theirs", "pi_cross", "pi_1"):
            assert applications(scope, ref) == 0
    assert all(recorded(ACME, e) is None for e in ("evt_theirs", "evt_cross", "evt_mode", "evt_none"))


def test_a_live_event_verifies_with_the_live_secret_only(local_table: str) -> None:
    live = event_body("evt_live", mode="live", ref="pi_live")
    with pytest.raises(WebhookRejected):
        deliver(live)  # signed with the test endpoint's secret
    assert deliver(live, secret="whsec_acme_live").outcome is webhooks.Outcome.APPLIED
    assert applications(Scope("acme", "live"), "pi_live") == 1 and applications(ACME, "pi_live") == 0
    # a body that says "test" but was signed for live does not verify either: the mode is proven
    with pytest.raises(WebhookRejected):
        deliver(event_body("evt_flip", mode="test", ref="pi_live"), secret="whsec_acme_live")


def test_a_test_mode_signature_on_a_body_claiming_livemode_is_refused_and_nothing_applied(local_table: str) -> None:
    # Signed with acme's test endpoint secret, the body says livemode: true (about a live object):
    # the signature proves test mode, the body disagrees.
    claims_live = event_body("evt_claims_live", mode="live", ref="pi_claims_live")
    with pytest.raises(WebhookRejected) as refused:
        deliver(claims_live)
    assert refused.value.code == "webhook.mode_mismatch"
    for scope in (ACME, Scope("acme", "live")):
        assert recorded(scope, "evt_claims_live") is None and applications(scope, "pi_claims_live") == 0


def test_a_tenant_whose_modes_share_one_secret_gets_nothing_applied(
    local_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billow.local.secrets import configured
    from billow.services.gateway import RailSecrets

    shared = {("stripe", "acme", mode): RailSecrets(f"sk_{mode}_acme", SECRETS["acme"]) for mode in ("test", "live")}
    monkeypatch.setenv(SECRETS_ENV, configured(shared))
    for payload in (event_body("evt_shared_test", ref="pi_shared"), event_body("evt_shared_live", mode="live")):
        with pytest.raises(WebhookRejected) as refused:
            deliver(payload)
        assert refused.value.code == "webhook.mode_unproven"
    assert applications(ACME, "pi_shared") == applications(Scope("acme", "live"), "pi_1") == 0


def test_unknown_types_are_acknowledged_and_ignored(local_table: str) -> None:
    receipt = deliver(event_body("evt_customer", "customer.created", ref="cus_1"))
    assert (receipt.outcome, receipt.reason) == (webhooks.Outcome.IGNORED, "unhandled_type")
    assert recorded(ACME, "evt_customer") is None


def test_not_json_or_too_big_is_refused_as_malformed(local_table: str) -> None:
    with pytest.raises(webhooks.MalformedDelivery) as refused:
        webhooks.receive(ports(), "stripe", "acme", b"not json", sign(b"not json", SECRETS["acme"], NOW), now=NOW)
    assert refused.value.code == "webhook.malformed"
    big = event_body("evt_big", metadata={"tenant_id": "acme", "mode": "test", "pad": "x" * 300_000})
    with pytest.raises(webhooks.MalformedDelivery) as refused:
        deliver(big)
    assert refused.value.code == "webhook.too_large"


def test_a_failed_application_is_applied_by_the_next_delivery(local_table: str) -> None:
    payload = event_body("evt_retry", ref="pi_retry")
    failing = {"payment_intent.succeeded": "tests.webhook_support:failing_application"}
    with pytest.raises(TemporaryFailure):
        deliver(payload, ports=ports(failing))
    item = recorded(ACME, "evt_retry")
    assert item is not None and item.status == "received"
    assert deliver(payload, at=NOW + timedelta(seconds=1)).outcome is webhooks.Outcome.APPLIED  # no wait for the lease
    assert applications(ACME, "pi_retry") == 1


def _deliver_and_crash(table: str, endpoint: str, secrets: str, payload: bytes) -> None:
    """In its own process: record the event, then die before applying it."""
    from billow.storage.models import configure

    os.environ[SECRETS_ENV] = secrets
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    deliver(payload, ports=ports({"payment_intent.succeeded": "tests.webhook_support:crash_application"}))


def test_a_crash_after_recording_and_before_applying_is_applied_on_redelivery(
    local_table: str, dynamodb_local: Any
) -> None:
    payload = event_body("evt_crash", ref="pi_crash")
    process = separate_processes().Process(
        target=_deliver_and_crash, args=(local_table, dynamodb_local.endpoint, configured_secrets(), payload)
    )
    process.start()
    process.join(120)
    assert process.exitcode == 17  # died inside the applier
    item = recorded(ACME, "evt_crash")
    assert item is not None and item.status == "received" and applications(ACME, "pi_crash") == 0

    with pytest.raises(Conflict) as busy:  # within its lease the dead delivery may still be applying
        deliver(payload, at=NOW + timedelta(seconds=30))
    assert busy.value.code == "webhook.in_progress"
    assert deliver(payload, at=NOW + timedelta(minutes=2)).outcome is webhooks.Outcome.APPLIED
    assert deliver(payload, at=NOW + timedelta(hours=5)).outcome is webhooks.Outcome.DUPLICATE
    assert applications(ACME, "pi_crash") == 1


def _deliver_through_the_handler(
    table: str, endpoint: str, secrets: str, payload: bytes, signature: str, go: Any, replies: Any
) -> None:
    """In its own process (a separate Lambda container): the webhook function, called as API Gateway calls it."""
    from billow.local import gateway
    from billow.local.lambda_runtime import handler, invoke, prepare_environment
    from billow.storage.models import configure

    os.environ[SECRETS_ENV] = secrets
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    prepare_environment()
    handler("webhooks.handler.lambda_handler")
    webhooks.APPLIERS["stripe"].update(APPLIERS)  # the test applier in this container
    sys.modules["webhooks.handler"].stripe_gateway = lambda scope: None  # the test applier calls no rail
    event = gateway.api_gateway_event(
        "POST", "/webhooks/stripe/acme", {"Stripe-Signature": signature}, payload.decode(), None
    )
    go.wait()
    result = invoke("webhooks.handler.lambda_handler", event)
    replies.put((result["statusCode"], json.loads(result["body"])))


def test_separate_processes_delivering_one_event_at_once_apply_it_once(local_table: str, dynamodb_local: Any) -> None:
    payload = event_body("evt_race", ref="pi_race")
    signature = sign(payload, SECRETS["acme"], datetime.now(UTC))
    context = separate_processes()
    go, replies = context.Barrier(6), context.Queue()
    args = (local_table, dynamodb_local.endpoint, configured_secrets(), payload, signature, go, replies)
    processes = [context.Process(target=_deliver_through_the_handler, args=args) for _ in range(5)]
    for process in processes:
        process.start()
    go.wait(timeout=120)
    answers = [replies.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)

    outcomes = sorted((status, body.get("outcome") or body.get("error")) for status, body in answers)
    assert outcomes.count((200, "applied")) == 1, outcomes
    assert set(outcomes) <= {(200, "applied"), (200, "duplicate"), (409, "webhook.in_progress")}, outcomes
    assert applications(ACME, "pi_race") == 1


@pytest.mark.parametrize(
    ("event_type", "ref"),
    [
        ("payment_intent.succeeded", "pi_billow_never_created"),
        ("payment_intent.payment_failed", "seti_1abc"),  # a SetupIntent's id under payment_intent.*
        ("payment_intent.succeeded", ""),  # no data.object.id
    ],
)
def test_an_event_about_an_object_that_will_never_exist_is_acknowledged_not_retried(
    local_table: str, tmp_path: Any, event_type: str, ref: str
) -> None:
    """Stripe retries a non-2xx answer for 3 days and may then disable the endpoint: an event no
    redelivery can apply is acknowledged (ignored, logged); only a transient failure is a retry."""
    from tests.fake_rail import FakeRail

    rail = FakeRail(tmp_path / "rail.sqlite")
    real = webhooks.WebhookPorts(
        events=DynamoStore(),
        store=DynamoStore(),
        secrets=LocalSecrets(),
        verifier=StripeWebhooks(),
        gateway_for=lambda scope: rail,
    )
    payload = event_body(f"evt_never_{event_type}_{ref}", event_type, ref=ref)
    logged: list[str] = []
    receipt = deliver(payload, ports=real, log=lambda message, extra: logged.append(message))
    assert receipt.outcome is webhooks.Outcome.IGNORED
    assert logged  # said why
    assert deliver(payload, ports=real, at=NOW + timedelta(days=3)).outcome is not webhooks.Outcome.APPLIED

    rail.unavailable_at = rail.attempted + 1  # the rail out of reach: that one is retried
    transient = event_body("evt_transient", ref="pi_billow_never_created")
    with pytest.raises(TemporaryFailure):
        deliver(transient, ports=real)
