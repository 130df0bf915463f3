"""Credits on DynamoDB Local (docs/credits.md): the wallet and one ledger entry per change in one
transaction; consumption all or nothing and once per request id, whatever the races; over HTTP the
price list, staff grants, the balance by kind, the breakdown and the ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from billow.domain.credits import EntryKind
from billow.domain.errors import PaymentRequired, TemporaryFailure
from billow.local.dynamodb import DynamoDBLocal
from billow.local.stack import add_tenant
from billow.services.context import SystemClock, TenantContext
from billow.services.credits.consume import consume_credits
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.support import InProcessClient, advance_clock, in_processes, make_contact, make_product

KEY = "bk_test_credits"
TENANT = "tenant-cr"
PROCESSES, EACH, GRANTED = 32, 4, 150


@pytest.fixture
def api(local_table: str) -> Iterator[InProcessClient]:
    add_tenant(TENANT, "Tenant CR", KEY)
    yield InProcessClient(KEY)


def context() -> TenantContext:
    settings = DynamoStore().get_settings(TENANT)
    assert settings is not None
    return TenantContext(TENANT, "test", settings)


def _priced(api: InProcessClient, **costs: int) -> None:
    reply = api.post("/credits/prices", {"effective_from": "2020-01-01", "costs": costs or {"sms": 1, "ai_call": 5}})
    assert reply.status == 201, reply.body


def _grant(api: InProcessClient, contact_id: str, grant_id: str, kind: str, credits: int, **extra: Any) -> Any:
    return api.post(
        f"/contacts/{contact_id}/credits/grants", {"id": grant_id, "kind": kind, "credits": credits, **extra}
    )


def _consume(api: InProcessClient, contact_id: str, request_id: str, action: str = "sms", quantity: int = 1) -> Any:
    body = {"action": action, "quantity": quantity, "request_id": request_id}
    return api.post(f"/contacts/{contact_id}/credits/consume", body)


def test_consuming_is_all_or_nothing_once_per_request_and_burns_promotional_before_purchased(
    api: InProcessClient,
) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    assert _grant(api, contact, "bought-1", "purchased", 100).status == 201
    assert _grant(api, contact, "promo-1", "promotional", 30, expires_at="2099-01-01T00:00:00Z").status == 201
    first = _consume(api, contact, "req-1", "ai_call", 8)  # 40 credits: 30 promotional, then 10 purchased
    assert first.status == 201, first.body
    assert [(p["grant_id"], p["credits"]) for p in first.body["entry"]["parts"]] == [("promo-1", 30), ("bought-1", 10)]
    assert first.body["balance"] == {"total": 90, "included": 0, "promotional": 0, "purchased": 90, "overdrawn": 0}
    again = _consume(api, contact, "req-1", "ai_call", 8)  # a retry: the same answer, nothing taken twice
    assert again.status == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.body["entry"] == first.body["entry"]
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 90
    reused = _consume(api, contact, "req-1", "sms", 1)
    assert reused.status == 422 and reused.body["error"] == "idempotency.key_reused"
    short = _consume(api, contact, "req-2", "ai_call", 19)  # 95 > 90: refused whole
    assert short.status == 402 and short.body["error"] == "credits.insufficient", short.body
    assert "the balance is 90" in short.body["message"]
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 90
    assert _consume(api, contact, "req-3", "ai_call", 18).status == 201  # exactly 90
    assert _consume(api, contact, "req-4").status == 402
    assert _consume(api, contact, "req-1", "ai_call", 8).status == 200  # still answered, though 0 are left
    ledger = api.get(f"/contacts/{contact}/credits/ledger?limit=2")
    kinds = [e["kind"] for e in ledger.body["items"]]
    rest = api.get(f"/contacts/{contact}/credits/ledger?limit=10&cursor={ledger.body['cursor']}").body
    kinds += [e["kind"] for e in rest["items"]]
    assert kinds == ["grant", "grant", "consumption", "consumption"] and rest["cursor"] is None
    breakdown = api.get(f"/contacts/{contact}/credits/breakdown").body["actions"]
    assert breakdown == [
        {
            "action": "ai_call",
            "consumptions": 2,
            "quantity": 26,
            "credits": 130,
            "by_kind": {"promotional": 30, "purchased": 100},
            "overdrawn": 0,
        }
    ]


def test_refusals_name_what_is_wrong(api: InProcessClient) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    assert _consume(api, contact, "r", "fax").body["error"] == "credits.unknown_action"
    assert _consume(api, "con_nobody", "r").status == 404
    assert api.get("/contacts/con_nobody/credits").status == 404
    bad = api.post(f"/contacts/{contact}/credits/consume", {"action": "sms", "quantity": 0, "request_id": "r"})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "quantity"
    promo = _grant(api, contact, "p", "promotional", 5)  # promotional credits expire
    assert promo.status == 422 and promo.body["error"] == "credits.expiry"
    assert _grant(api, contact, "i", "included", 5).status == 422
    assert _grant(api, contact, "g", "purchased", 5).status == 201
    assert _grant(api, contact, "g", "purchased", 5).status == 200  # a retry
    clash = _grant(api, contact, "g", "purchased", 6)
    assert clash.status == 409 and clash.body["error"] == "credits.grant_exists"
    late = api.post("/credits/prices", {"effective_from": "2019-06-01", "costs": {"sms": 2}})
    assert late.status == 422 and late.body["error"] == "credits.price_change_date"
    assert api.get("/contacts/" + contact + "/credits").body["balance"]["total"] == 5
    for pack, field in (
        ({"credits": 5, "price": "10.001", "currency": "USD"}, "packs.p.price"),  # finer than a cent
        ({"credits": 5, "price": 10, "currency": "USD"}, "packs.p.price"),  # money is a string
        ({"credits": 0, "price": "1.00", "currency": "USD"}, "packs.p.credits"),
        ({"credits": 5, "price": "1.00", "currency": "XXY"}, "packs.p.currency"),
    ):
        body = {"effective_from": "2099-01-01", "costs": {"sms": 1}, "packs": {"p": pack}}
        bad_pack = api.post("/credits/prices", body)
        assert bad_pack.status == 422 and bad_pack.body["error"] == "credits.pack", bad_pack.body
        assert bad_pack.body["fields"][0]["field"] == field, bad_pack.body
    good = {"p": {"credits": 5, "price": "1.50", "currency": "JPY"}}  # JPY has no minor unit
    assert (
        api.post("/credits/prices", {"effective_from": "2099-01-01", "costs": {"sms": 1}, "packs": good}).status == 422
    )
    good = {"p": {"credits": 5, "price": "150", "currency": "JPY"}}
    listed = api.post("/credits/prices", {"effective_from": "2099-01-01", "costs": {"sms": 1}, "packs": good})
    assert listed.status == 201 and listed.body["versions"][-1]["packs"] == {
        "p": {"credits": 5, "price": "150", "currency": "JPY"}
    }, listed.body


def _consumer(table: str, endpoint: str, contact_id: str, worker: int, go: Any, out: Any, met: Any) -> None:
    """One process (a separate Lambda container): EACH consumptions of 1 to 3 sms, one after another,
    then its first again (a retry); every fourth request id is shared with the next worker (the
    same request sent by two containers at once)."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    try:
        store, ctx = DynamoStore(), context()
        go.wait()
        answers = []
        for n in range(EACH):
            request_id = f"shared-{(worker + 1) // 2}-{n}" if n % 4 == 0 else f"w{worker}-{n}"
            quantity = 1 + (n % 3)
            while True:  # as a client does: a 503 (too busy) is sent again
                try:
                    done = consume_credits(store, ctx, SystemClock(), contact_id, "sms", quantity, request_id)
                    answers.append((request_id, quantity, "replayed" if done.replayed else "accepted"))
                except PaymentRequired:
                    answers.append((request_id, quantity, "refused"))
                except TemporaryFailure:
                    continue
                break
        first = f"shared-{(worker + 1) // 2}-0"
        if answers[0][2] != "refused":  # a late process may find every credit spent: nothing to retry
            done = consume_credits(store, ctx, SystemClock(), contact_id, "sms", 1, first)
            answers.append((first, 1, "retry-replayed" if done.replayed else "retry"))
        out.put(answers)
    except Exception as crash:  # reported, so the test fails with it instead of waiting on the queue
        out.put(f"crashed: {crash!r}")


def test_32_processes_consuming_from_one_wallet_never_overdraw_and_every_credit_is_accounted(
    api: InProcessClient, local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    assert _grant(api, contact, "pack", "purchased", GRANTED).status == 201
    each = [(local_table, dynamodb_local.endpoint, contact, w) for w in range(PROCESSES)]
    results = in_processes(_consumer, each, meet=PROCESSES)
    assert not [r for r in results if isinstance(r, str)], results
    answers = [a for r in results for a in r]
    accepted = {rid: q for rid, q, status in answers if status == "accepted"}
    booked = Counter(rid for rid, _, status in answers if status == "accepted")
    assert max(booked.values()) == 1, booked  # a request id shared by two processes is booked by one
    retried = [r for r in results if any(status == "retry" for _, _, status in r)]
    assert not retried, retried  # a retry of a booked request is a replay
    store = DynamoStore()
    wallet = store.get_wallet(context().scope, contact).wallet
    consumed = sum(accepted.values())
    assert wallet.booked == GRANTED - consumed >= 0  # never negative; every accepted credit taken once
    entries = [e for e in store.credit_ledger(context().scope, contact) if e.kind is EntryKind.CONSUMPTION]
    assert {e.reference: e.credits for e in entries} == accepted  # the ledger is exactly what was accepted
    refused = [q for _, q, status in answers if status == "refused"]
    assert refused and min(refused) > wallet.booked  # only refused when it could not be covered at the end


class _DiesAfterCommit(DynamoStore):
    """A container that dies right after its wallet transaction, before it answers."""

    def commit_wallet(self, *args: Any, **kwargs: Any) -> int:
        super().commit_wallet(*args, **kwargs)
        raise RuntimeError("the container died after the write")


class _DiesBeforeCommit(DynamoStore):
    def commit_wallet(self, *args: Any, **kwargs: Any) -> int:
        raise RuntimeError("the container died before the write")


def test_a_consumption_interrupted_by_a_crash_is_taken_once_when_retried(api: InProcessClient) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    assert _grant(api, contact, "pack", "purchased", 10).status == 201
    with pytest.raises(RuntimeError):
        consume_credits(_DiesBeforeCommit(), context(), SystemClock(), contact, "ai_call", 1, "before")
    with pytest.raises(RuntimeError):
        consume_credits(_DiesAfterCommit(), context(), SystemClock(), contact, "ai_call", 1, "after")
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 5  # "after" was taken
    retried = [_consume(api, contact, rid, "ai_call", 1) for rid in ("before", "after")]
    assert [r.status for r in retried] == [201, 200]  # "before" now, "after" answered as booked
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 0
    entries = [
        e.reference for e in DynamoStore().credit_ledger(context().scope, contact) if e.kind is EntryKind.CONSUMPTION
    ]
    assert sorted(entries) == ["after", "before"]


def test_a_tenant_overdraft_lets_a_consumption_go_below_zero_up_to_the_limit(api: InProcessClient) -> None:
    _priced(api)
    assert api.patch("/settings/profile", {"credit_overdraft": 10}).body["credit_overdraft"] == 10
    contact = make_contact(api)["id"]
    assert _grant(api, contact, "pack", "purchased", 5).status == 201
    over = _consume(api, contact, "r1", "ai_call", 2)  # 10: 5 from the pack, 5 owed
    assert over.status == 201, over.body
    assert over.body["entry"]["overdrawn"] == 5 and over.body["balance"]["total"] == -5
    assert _consume(api, contact, "r2", "ai_call", 2).status == 402  # 5 more than the overdraft allows
    assert _consume(api, contact, "r3", "ai_call", 1).status == 201  # exactly to -10
    assert api.get(f"/contacts/{contact}/credits").body["balance"] == {
        "total": -10,
        "included": 0,
        "promotional": 0,
        "purchased": 0,
        "overdrawn": 10,
    }


def _plan(api: InProcessClient, included: int, start: str = "2026-03-01T12:00:00+00:00") -> str:
    """A contact on a test clock with a monthly plan including `included` credits a cycle."""
    terms = {"price": "20.00", "currency": "USD", "cycle": "month", "included_credits": included}
    product = make_product(api, terms)
    assert product["terms"][0]["included_credits"] == included
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": start}).status == 201
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    assert api.post("/orders", {"contact_id": contact, "items": [item]}).status == 201
    return contact


def test_included_credits_reset_each_cycle_and_purchased_ones_roll_over(api: InProcessClient) -> None:
    _priced(api, sms=1)
    contact = _plan(api, 1000)
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 1000
    assert _consume(api, contact, "a", "sms", 800).status == 201
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 200
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")  # the next cycle: 1,000 again, not 1,200
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["total"] == 1000
    assert _grant(api, contact, "bought", "purchased", 500).status == 201
    used = _consume(api, contact, "b", "sms", 1200)  # included first, then 200 of the purchased
    assert [(p["kind"], p["credits"]) for p in used.body["entry"]["parts"]] == [("included", 1000), ("purchased", 200)]
    advance_clock(api, contact, "2026-05-01T12:00:00+00:00")  # the 300 purchased survive the reset
    balance = api.get(f"/contacts/{contact}/credits").body["balance"]
    assert (balance["included"], balance["purchased"], balance["total"]) == (1000, 300, 1300)
    expiries = [e for e in _ledger(api, contact) if e["kind"] == "expiry"]
    assert [(e["credits"], e["at"][:10]) for e in expiries] == [(200, "2026-04-01")]  # booked when next used
    promo = _grant(api, contact, "spring", "promotional", 50, expires_at="2026-05-15T00:00:00+00:00")
    assert promo.status == 201
    advance_clock(api, contact, "2026-05-14T23:00:00+00:00")
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["promotional"] == 50
    advance_clock(api, contact, "2026-05-15T00:00:00+00:00")  # gone on its day
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["promotional"] == 0


def _ledger(api: InProcessClient, contact: str) -> list[dict[str, Any]]:
    reply = api.get(f"/contacts/{contact}/credits/ledger?limit=1000")
    assert reply.status == 200, reply.body
    return list(reply.body["items"])


def _subscription_events(before: Any, after: Any) -> list[tuple[str, dict[str, Any]]]:
    from datetime import UTC, datetime

    from billow.services.events import Change, events_of

    change = Change(
        context().scope, after.contact_id, "pk|sk", "subscription", before, after, after.version, datetime.now(UTC)
    )
    return [(e.type, e.data) for e in events_of(change) if e.type == "entitlements.changed"]


def test_entitlements_follow_an_upgrade_at_once_vanish_on_deactivation_and_return_on_activation(
    api: InProcessClient,
) -> None:
    monthly = {"currency": "USD", "cycle": "month"}
    basic = make_product(api, {**monthly, "price": "10.00", "features": ["api"], "limits": {"seats": 3}}, "Basic")
    pro = make_product(api, {**monthly, "price": "30.00", "features": ["api", "sso"], "limits": {"seats": 10}}, "Pro")
    addon = make_product(api, {**monthly, "price": "5.00", "limits": {"seats": 5}}, "Seats")
    contact = make_contact(api)["id"]
    items = [{"product_id": p["id"], "terms_id": p["terms"][0]["id"]} for p in (basic, addon)]
    assert api.post("/orders", {"contact_id": contact, "items": items}).status == 201
    now = api.get(f"/contacts/{contact}/entitlements").body
    assert (now["features"], now["limits"]) == (["api"], {"seats": 8})  # limits add up across services
    (sub,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    base = f"/subscriptions/{sub['id']}/services/{sub['services'][0]['id']}"
    store = DynamoStore()
    before = store.get_subscription(context().scope, sub["id"])
    upgrade = api.post(f"{base}/change", {"product_id": pro["id"], "terms_id": pro["terms"][0]["id"]})
    assert upgrade.status == 201, upgrade.body  # an upgrade: at once
    now = api.get(f"/contacts/{contact}/entitlements").body
    assert (now["features"], now["limits"]) == (["api", "sso"], {"seats": 15})
    after = store.get_subscription(context().scope, sub["id"])
    ((_, data),) = _subscription_events(before, after)
    assert data["features"] == ["api", "sso"] and data["previous"]["features"] == ["api"]
    assert api.post(f"{base}/deactivate", {}).status == 201  # what dunning does (its system action)
    now = api.get(f"/contacts/{contact}/entitlements").body
    assert (now["features"], now["limits"]) == ([], {"seats": 5})  # the add-on still grants
    deactivated = store.get_subscription(context().scope, sub["id"])
    assert [d["features"] for _, d in _subscription_events(after, deactivated)] == [[]]
    for invoice in api.get(f"/invoices?contact_id={contact}").body["items"]:  # the debt paid
        due = invoice["amount_due"]
        if due["amount"] != "0.00":
            body = {**due, "reference": f"pay-{invoice['id']}", "received_on": invoice["issue_date"]}
            assert api.post(f"/invoices/{invoice['id']}/payments", body).status == 201
    activated = api.post(f"{base}/activate", {})  # what a payment's re-activation does
    assert activated.status == 201, activated.body
    assert api.get(f"/contacts/{contact}/entitlements").body["features"] == ["api", "sso"]
    back = store.get_subscription(context().scope, sub["id"])
    assert [d["features"] for _, d in _subscription_events(deactivated, back)] == [["api", "sso"]]
    assert api.get("/contacts/con_nobody/entitlements").status == 404


def test_a_billing_day_changed_mid_cycle_grants_the_cycle_once(api: InProcessClient) -> None:
    _priced(api, sms=1)
    contact = _plan(api, 1000)
    assert _consume(api, contact, "a", "sms", 100).status == 201  # the 1-31 March grant
    advance_clock(api, contact, "2026-03-10T12:00:00+00:00")
    (sub,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    moved = api.post(f"/subscriptions/{sub['id']}/billing-day", {"billing_day": 15})
    assert moved.status == 201, moved.body
    assert _consume(api, contact, "b", "sms", 1).status == 201
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 899  # not 1,899
    advance_clock(api, contact, "2026-04-02T12:00:00+00:00")  # March's grant gone; 15 March - 15 April's
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 1000
    advance_clock(api, contact, "2026-04-16T12:00:00+00:00")
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 1000


def test_a_retry_after_the_actions_price_was_withdrawn_answers_what_was_booked(api: InProcessClient) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2027-06-01T12:00:00+00:00"}).status == 201
    assert _grant(api, contact, "pack", "purchased", 100).status == 201
    assert _consume(api, contact, "r1", "ai_call", 2).status == 201
    today = datetime.now(UTC).date()
    past = api.post("/credits/prices", {"effective_from": today.isoformat(), "costs": {"sms": 1}})
    assert past.status == 422 and past.body["error"] == "credits.price_change_date"  # today may be priced
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert api.post("/credits/prices", {"effective_from": tomorrow, "costs": {"sms": 1}}).status == 201
    again = _consume(api, contact, "r1", "ai_call", 2)  # the contact's day (2027) has no ai_call any more
    assert again.status == 200 and again.body["entry"]["credits"] == 10, again.body
    assert _consume(api, contact, "r2", "ai_call", 1).body["error"] == "credits.unknown_action"
    assert api.get("/credits/prices").body["versions"][-1] == {
        "effective_from": tomorrow,
        "costs": {"sms": 1},
        "packs": {},
    }


def test_the_reviews_of_issue_15(api: InProcessClient) -> None:
    """What the new user and the attacker found: each case answered as documented now."""
    _priced(api)
    contact = make_contact(api)["id"]
    # the domain's codes, not the body validator's
    bad = {"action": "sms", "quantity": 0, "request_id": "r"}
    assert api.post(f"/contacts/{contact}/credits/consume", bad).body["error"] == "credits.quantity"
    bad = {"action": "sms", "request_id": "bad id"}
    assert api.post(f"/contacts/{contact}/credits/consume", bad).body["error"] == "credits.request_id"
    assert _grant(api, contact, "x", "included", 5).body["error"] == "credits.grant_kind"
    # a staff grant may not take an included grant's id
    stolen = _grant(api, contact, "inc_svc_1_terms_1_2026-06-20", "purchased", 1)
    assert stolen.status == 422 and stolen.body["error"] == "credits.reference"
    far = _grant(api, contact, "far", "promotional", 1, expires_at="9999-12-31T23:59:59-23:59")
    assert far.status == 422 and far.body["error"] == "credits.expiry"
    # a grant clash names the request's field
    assert _grant(api, contact, "g", "purchased", 5).status == 201
    clash = _grant(api, contact, "g", "purchased", 6)
    assert clash.status == 409 and clash.body["fields"][0]["field"] == "id"
    # a spent promotional grant, expired and dropped from the wallet, answered again when retried;
    # the same id with another expiry is another grant (409)
    other = make_contact(api)["id"]
    assert api.post(f"/contacts/{other}/test-clock", {"frozen_time": "2026-03-01T12:00:00+00:00"}).status == 201
    promo = {"expires_at": "2026-03-10T00:00:00+00:00"}
    assert _grant(api, other, "p", "promotional", 5, **promo).status == 201
    assert _consume(api, other, "use", "ai_call", 1).status == 201  # spends it
    advance_clock(api, other, "2026-03-11T12:00:00+00:00")
    assert _grant(api, other, "pack", "purchased", 1).status == 201  # a change: the spent one dropped
    again = _grant(api, other, "p", "promotional", 5, **promo)
    assert again.status == 200, again.body
    moved = _grant(api, other, "p", "promotional", 5, expires_at="2026-12-10T00:00:00+00:00")
    assert moved.status == 409 and moved.body["error"] == "credits.grant_exists"
    # the breakdown refuses impossible days
    for query in ("from=9999-12-15", "from=0001-01-01&to=0001-02-01"):
        reply = api.get(f"/contacts/{other}/credits/breakdown?{query}")
        assert reply.status == 422 and reply.body["error"] == "credits.period", reply.body
    # a tenant's lowered overdraft holds: owing more than it, nothing more is spent
    assert api.patch("/settings/profile", {"credit_overdraft": 100}).status == 200
    assert _consume(api, other, "owe", "ai_call", 20).status == 201  # 100: 1 purchased, 99 owed
    assert api.get(f"/contacts/{other}/credits").body["balance"]["total"] == -99
    assert api.patch("/settings/profile", {"credit_overdraft": 0}).status == 200
    assert _grant(api, other, "pack2", "purchased", 20).status == 201
    assert _consume(api, other, "after", "sms", 1).status == 402  # the balance is below -0 already
    # the ledger of one frozen instant is in booking order
    booked = [e["id"] for e in _ledger(api, other) if e["at"].startswith("2026-03-11")]
    assert booked[-2:] == ["crd_use_owe", "crd_grant_pack2"], booked


def test_credits_shown_for_a_cycle_stay_when_the_service_is_paused_in_it(api: InProcessClient) -> None:
    # the new user's review: shown, not yet booked, then gone with a pause and no trace in the ledger
    _priced(api, sms=1)
    contact = _plan(api, 1000)
    advance_clock(api, contact, "2026-03-05T12:00:00+00:00")
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 1000
    (sub,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    paused = api.post(f"/subscriptions/{sub['id']}/services/{sub['services'][0]['id']}/pause", {})
    assert paused.status in (201, 202), paused.body
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 1000
    assert _consume(api, contact, "a", "sms", 10).status == 201  # booked now, still this cycle's
    advance_clock(api, contact, "2026-04-05T12:00:00+00:00")  # paused all April: nothing
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["included"] == 0


def test_the_wallet_and_the_price_list_stay_within_one_item(api: InProcessClient) -> None:
    _priced(api)
    contact = make_contact(api)["id"]
    for n in range(5):
        assert _grant(api, contact, f"pack-{n}", "purchased", 2).status == 201
    assert _consume(api, contact, "all", "sms", 10).status == 201
    assert DynamoStore().get_wallet(context().scope, contact).wallet.holdings == ()  # spent grants dropped
    assert _grant(api, contact, "pack-0", "purchased", 2).status == 200  # still answered as booked
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    costs = {f"{'a' * 60}{n:04d}": 1 for n in range(500)}
    replies = [
        api.post("/credits/prices", {"effective_from": (tomorrow + timedelta(days=d)).isoformat(), "costs": costs})
        for d in range(10)
    ]
    assert {r.status for r in replies} == {201, 422}
    assert {r.body["error"] for r in replies if r.status == 422} == {"credits.price_list_full"}


def test_what_is_overdrawn_is_billed_once_on_the_next_invoice_at_the_tenants_price(api: InProcessClient) -> None:
    _priced(api, sms=1)
    profile = {"credit_overdraft": 100, "credit_overdraft_price": {"amount": "0.01", "currency": "USD"}}
    set_ = api.patch("/settings/profile", profile)
    assert set_.status == 200 and set_.body["credit_overdraft_price"] == {"amount": "0.01", "currency": "USD"}
    bad = api.patch("/settings/profile", {"credit_overdraft_price": {"amount": "0.001", "currency": "USD"}})
    assert bad.status == 422 and bad.body["fields"][0]["field"] == "credit_overdraft_price.amount", bad.body
    contact = _plan(api, 0)  # a monthly 20.00 plan billed in advance, on a test clock from 1 March
    assert _grant(api, contact, "pack", "purchased", 5).status == 201
    assert _consume(api, contact, "r1", "sms", 30).status == 201  # 5 from the pack, 25 owed
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["overdrawn"] == 25
    advance_clock(api, contact, "2026-04-01T12:00:00+00:00")
    april = [i for i in api.get(f"/invoices?contact_id={contact}").body["items"] if i["issue_date"] == "2026-04-01"]
    (invoice,) = april
    lines = api.get(f"/invoices/{invoice['id']}").body["lines"]
    assert [(line["description"], line["amount"]["amount"]) for line in lines][-1] == (
        "25 credits used beyond the balance",
        "0.25",
    )
    assert invoice["total"] == {"amount": "20.25", "currency": "USD"}
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["overdrawn"] == 0
    settled = [e for e in _ledger(api, contact) if e["kind"] == "overdraft_invoiced"]
    assert [(e["credits"], e["reference"]) for e in settled] == [(25, invoice["id"])]
    assert _consume(api, contact, "r2", "sms", 10).status == 201  # owed anew: the next invoice
    advance_clock(api, contact, "2026-05-01T12:00:00+00:00")
    may = [i for i in api.get(f"/invoices?contact_id={contact}").body["items"] if i["issue_date"] == "2026-05-01"]
    assert [i["total"]["amount"] for i in may] == ["20.10"]


def test_a_rerun_of_the_step_bills_the_overdraft_it_booked_and_no_more(api: InProcessClient) -> None:
    from billow.domain.billing import BillingStep, InvoiceDraft
    from billow.domain.calendar import Period
    from billow.services.credits.overdraft import with_overdraft

    _priced(api, sms=1)
    api.patch(
        "/settings/profile", {"credit_overdraft": 50, "credit_overdraft_price": {"amount": "0.02", "currency": "USD"}}
    )
    contact = _plan(api, 0)
    assert _consume(api, contact, "r1", "sms", 7).status == 201
    (subscription,) = api.get(f"/contacts/{contact}/subscriptions").body["items"]
    store, ctx = DynamoStore(), context()
    loaded = store.load_subscription(ctx.scope, contact, subscription["id"])
    assert loaded is not None
    day = date(2026, 4, 1)
    draft = InvoiceDraft(loaded.id, contact, "USD", day, day, Period(day, day.replace(month=5)), ())
    step = BillingStep(loaded, draft)
    first = with_overdraft(store, ctx, step, "inv_rerun")  # the step's write then fails: a rerun
    assert _consume(api, contact, "r2", "sms", 3).status == 201  # owed meanwhile: not this invoice's
    again = with_overdraft(store, ctx, step, "inv_rerun")
    assert first.invoice is not None and again.invoice == first.invoice
    assert [(line.quantity, line.amount.minor) for line in first.invoice.lines] == [(7, 14)]
    assert api.get(f"/contacts/{contact}/credits").body["balance"]["overdrawn"] == 3

    class Raced(DynamoStore):
        """Another biller of the same step books the overdraft between this one's two reads."""

        def get_credit_entry(self, scope: Any, contact_id: str, entry_id: str) -> Any:
            found = super().get_credit_entry(scope, contact_id, entry_id)
            if entry_id == "crd_od_inv_raced" and found is None and not getattr(self, "once", False):
                self.once = True
                with_overdraft(DynamoStore(), ctx, step, "inv_raced")
            return found

    raced = with_overdraft(Raced(), ctx, step, "inv_raced")  # the 3 owed: booked by the other, billed here too
    assert raced.invoice is not None and [line.quantity for line in raced.invoice.lines] == [3]
