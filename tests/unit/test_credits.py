"""Credits at the domain level (`billow.domain.credits`, docs/credits.md): the price list, grants,
the burn order, consumption (all or nothing, the overdraft), expiry, refunds, the ledger's ids and
the breakdown; and a property over random sequences of them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from billow.domain.calendar import Period
from billow.domain.credits import (
    ActionCost,
    Balance,
    Change,
    CreditPriceList,
    EntryKind,
    Grant,
    GrantKind,
    InsufficientCredits,
    LedgerEntry,
    Part,
    Wallet,
    breakdown,
    consume,
    entry_id,
    expire,
    grant,
    included_grant,
    refund,
    settle_overdraft,
)
from billow.domain.errors import Conflict, InvalidInput, NotFound, RuleViolation
from hypothesis import given, settings
from hypothesis import strategies as st

PARIS = ZoneInfo("Europe/Paris")
JAN = Period(date(2027, 1, 1), date(2027, 2, 1))
FEB = Period(date(2027, 2, 1), date(2027, 3, 1))
MAR = Period(date(2027, 3, 1), date(2027, 4, 1))
SMS = ActionCost("sms", 1, date(2027, 1, 1))
FORM = ActionCost("form", 0, date(2027, 1, 1))


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=PARIS)


def cycle_start(period: Period) -> datetime:
    return datetime(period.start.year, period.start.month, period.start.day, tzinfo=PARIS)


def included(period: Period, credits: int = 1000, service: str = "svc1") -> Grant:
    return included_grant(
        id=f"inc_{service}_{period.start.isoformat()}",
        credits=credits,
        period=period,
        zone=PARIS,
        granted_at=cycle_start(period),
        source=f"{service}:{period.start.isoformat()}",
    )


def purchased(id: str, credits: int, granted_at: datetime, expires_at: datetime | None = None) -> Grant:
    return Grant(id, GrantKind.PURCHASED, credits, granted_at, expires_at, source=f"order_{id}")


def promotional(id: str, credits: int, granted_at: datetime, expires_at: datetime) -> Grant:
    return Grant(id, GrantKind.PROMOTIONAL, credits, granted_at, expires_at, source="staff:ann")


def granted(wallet: Wallet, *grants: Grant) -> Wallet:
    for one in grants:
        wallet = grant(wallet, one).wallet
    return wallet


def only(change: Change) -> LedgerEntry:
    assert len(change.entries) == 1, change.entries
    return change.entries[0]


# -- the scenarios ----------------------------------------------------------------------------
def test_included_credits_reset_each_cycle_and_never_roll_over() -> None:
    wallet = granted(Wallet(), included(JAN))
    wallet = consume(wallet, SMS, 800, at(date(2027, 1, 20)), request_id="r1").wallet
    assert wallet.balance(at(date(2027, 1, 31), 23)).total == 200

    reset = cycle_start(FEB)
    assert wallet.balance(reset).total == 0  # the remainder is gone at the cycle's end, booked or not
    expired = expire(wallet, reset)
    assert [(e.kind, e.grant_id, e.credits, e.at) for e in expired.entries] == [
        (EntryKind.EXPIRY, "inc_svc1_2027-01-01", 200, reset)
    ]
    wallet = grant(expired.wallet, included(FEB)).wallet
    assert wallet.balance(reset) == Balance(included=1000, promotional=0, purchased=0, overdrawn=0)
    assert wallet.balance(reset).total == 1000  # not 1,200
    assert wallet.booked == 1000


def test_included_burn_first_and_purchased_survive_the_reset() -> None:
    wallet = granted(Wallet(), included(JAN), purchased("top1", 500, at(date(2027, 1, 5))))
    change = consume(wallet, SMS, 1200, at(date(2027, 1, 10)), request_id="r1")
    assert only(change).parts == (
        Part("inc_svc1_2027-01-01", GrantKind.INCLUDED, 1000),
        Part("top1", GrantKind.PURCHASED, 200),
    )
    assert change.wallet.balance(at(date(2027, 1, 10))) == Balance(0, 0, 300, 0)

    reset = cycle_start(FEB)
    assert expire(change.wallet, reset).entries == ()  # nothing left of the included ones
    wallet = grant(change.wallet, included(FEB)).wallet
    assert wallet.balance(reset) == Balance(included=1000, promotional=0, purchased=300, overdrawn=0)
    # and again next cycle: the purchased 300 are still there, untouched by the included burn
    wallet = consume(wallet, SMS, 999, at(date(2027, 2, 3)), request_id="r2").wallet
    wallet = grant(expire(wallet, cycle_start(MAR)).wallet, included(MAR)).wallet
    assert wallet.balance(cycle_start(MAR)) == Balance(1000, 0, 300, 0)


def test_a_promotional_grant_expires_on_its_day() -> None:
    ends = datetime(2027, 1, 15, tzinfo=PARIS)
    wallet = granted(Wallet(), promotional("promo", 50, at(date(2027, 1, 2)), ends))
    the_eve = ends - timedelta(microseconds=1)
    assert wallet.balance(the_eve).promotional == 50
    assert wallet.balance(ends).promotional == 0  # gone from the first instant of its day
    with pytest.raises(InsufficientCredits):
        consume(wallet, SMS, 1, ends, request_id="late")  # an expired grant never burns
    assert expire(wallet, the_eve).entries == ()
    booked = expire(wallet, ends)
    assert [(e.kind, e.grant_id, e.credits) for e in booked.entries] == [(EntryKind.EXPIRY, "promo", 50)]
    assert expire(booked.wallet, ends + timedelta(days=3)).entries == ()  # idempotent


def test_a_free_action_costs_nothing_and_is_counted() -> None:
    empty = Wallet()
    change = consume(empty, FORM, 3, at(date(2027, 1, 9)), request_id="f1")
    entry = only(change)
    assert (entry.kind, entry.action, entry.quantity, entry.credits, entry.parts) == (
        EntryKind.CONSUMPTION,
        "form",
        3,
        0,
        (),
    )
    assert change.wallet == empty
    assert breakdown(change.entries, JAN, PARIS)[0].quantity == 3


def test_insufficient_credits_refuse_the_whole_consumption_with_the_balance() -> None:
    wallet = granted(Wallet(), included(JAN, 100), purchased("top1", 20, at(date(2027, 1, 3))))
    with pytest.raises(InsufficientCredits) as refused:
        consume(wallet, SMS, 121, at(date(2027, 1, 9)), request_id="r1")
    assert refused.value.code == "credits.insufficient"
    assert refused.value.needed == 121
    assert refused.value.balance == Balance(included=100, promotional=0, purchased=20, overdrawn=0)
    assert "the balance is 120" in refused.value.message
    # all or nothing: what the wallet had is still all there to spend
    assert only(consume(wallet, SMS, 120, at(date(2027, 1, 9)), request_id="r1")).credits == 120


def test_insufficient_credits_answer_402_in_the_error_shape() -> None:
    from api.handler import domain_error

    with pytest.raises(InsufficientCredits) as refused:
        consume(Wallet(), SMS, 5, at(date(2027, 1, 9)), request_id="r1")
    response = domain_error(refused.value)
    assert response.status_code == 402
    assert response.body == {
        "error": "credits.insufficient",
        "message": "this needs 5 credits; the balance is 0",
        "fields": [],
    }


def test_the_overdraft_lets_the_balance_go_down_to_minus_the_limit_and_no_further() -> None:
    wallet = granted(Wallet(), included(JAN, 100))
    change = consume(wallet, SMS, 130, at(date(2027, 1, 9)), request_id="r1", overdraft_limit=50)
    entry = only(change)
    assert (entry.credits, entry.overdrawn) == (130, 30)
    assert change.wallet.balance(at(date(2027, 1, 9))) == Balance(0, 0, 0, overdrawn=30)
    assert change.wallet.balance(at(date(2027, 1, 9))).total == -30

    wallet = consume(change.wallet, SMS, 20, at(date(2027, 1, 9)), request_id="r2", overdraft_limit=50).wallet
    assert wallet.balance(at(date(2027, 1, 9))).total == -50
    with pytest.raises(InsufficientCredits) as refused:
        consume(wallet, SMS, 1, at(date(2027, 1, 9)), request_id="r3", overdraft_limit=50)
    assert refused.value.balance.total == -50 and refused.value.available == 0

    # a new grant does not repay what is owed (it is invoiced at the cycle's end) ...
    wallet = grant(wallet, purchased("top1", 10, at(date(2027, 1, 10)))).wallet
    assert wallet.balance(at(date(2027, 1, 10))).total == -40
    # ... and once invoiced, the overdraft is open again
    settled = settle_overdraft(wallet, cycle_start(FEB), invoice_id="inv_1")
    assert [(e.kind, e.id, e.credits) for e in settled.entries] == [(EntryKind.OVERDRAFT_INVOICED, "crd_od_inv_1", 50)]
    assert settled.wallet.overdrawn == 0
    assert settle_overdraft(settled.wallet, cycle_start(FEB), invoice_id="inv_1").entries == ()


# -- the burn order -----------------------------------------------------------------------------------
def test_burn_order_included_then_promotional_by_expiry_then_purchased_oldest_first() -> None:
    now = at(date(2027, 1, 20))
    day = at(date(2027, 1, 2))
    grants = [
        purchased("p_new", 1, at(date(2027, 1, 10)), expires_at=at(date(2027, 1, 21))),  # expiry ignored
        purchased("p_old", 1, at(date(2027, 1, 3)), expires_at=at(date(2027, 6, 1))),
        purchased("p_older", 1, at(date(2027, 1, 2))),
        promotional("promo_late", 1, day, at(date(2027, 3, 1))),
        promotional("promo_soon", 1, day, at(date(2027, 2, 1))),
        included(JAN, 1, service="svc2"),
        included(Period(date(2027, 1, 15), date(2027, 2, 15)), 1, service="svc1"),  # a later cycle
    ]
    wallet = granted(Wallet(), *grants)
    assert [h.grant.id for h in wallet.burn_order(now)] == [
        "inc_svc2_2027-01-01",
        "inc_svc1_2027-01-15",
        "promo_soon",
        "promo_late",
        "p_older",
        "p_old",
        "p_new",
    ]
    entry = only(consume(wallet, SMS, 7, now, request_id="r"))
    assert [p.grant_id for p in entry.parts] == [h.grant.id for h in wallet.burn_order(now)]


def test_burn_order_ties_go_by_granted_at_then_id() -> None:
    now = at(date(2027, 1, 20))
    same = at(date(2027, 1, 5))
    ends = at(date(2027, 2, 5))
    wallet = granted(
        Wallet(),
        purchased("p_b", 1, same),
        purchased("p_a", 1, same),
        purchased("p_0", 1, at(date(2027, 1, 6))),
        promotional("pr_b", 1, same, ends),
        promotional("pr_c", 1, at(date(2027, 1, 4)), ends),
        promotional("pr_a", 1, same, ends),
    )
    assert [h.grant.id for h in wallet.burn_order(now)] == ["pr_c", "pr_a", "pr_b", "p_a", "p_b", "p_0"]


def test_a_grant_not_yet_granted_does_not_burn() -> None:
    wallet = granted(Wallet(), purchased("later", 10, at(date(2027, 1, 20))))
    with pytest.raises(InsufficientCredits):
        consume(wallet, SMS, 1, at(date(2027, 1, 19)), request_id="r")


# -- the ledger ---------------------------------------------------------------------------------------
def test_entry_ids_come_from_their_cause_so_a_retry_has_the_same_id() -> None:
    wallet = Wallet()
    first = grant(wallet, purchased("top1", 10, at(date(2027, 1, 2))))
    assert only(first).id == "crd_grant_top1"
    assert grant(first.wallet, purchased("top1", 10, at(date(2027, 1, 2)))) == Change(first.wallet)  # a retry
    with pytest.raises(Conflict) as clash:
        grant(first.wallet, purchased("top1", 11, at(date(2027, 1, 2))))
    assert clash.value.code == "credits.grant_exists"

    one = consume(first.wallet, SMS, 2, at(date(2027, 1, 3)), request_id="req-7")
    again = consume(first.wallet, SMS, 2, at(date(2027, 1, 3)), request_id="req-7")
    assert only(one) == only(again) and only(one).id == "crd_use_req-7"
    assert only(refund(one.wallet, "top1", at(date(2027, 1, 4)), reference="re_1")).id == "crd_ref_top1"
    promo = granted(Wallet(), promotional("pr", 1, at(date(2027, 1, 2)), at(date(2027, 1, 3))))
    assert only(expire(promo, at(date(2027, 1, 5)))).id == "crd_exp_pr"


def test_a_refund_removes_what_is_left_of_a_top_up_once() -> None:
    wallet = granted(
        Wallet(), purchased("top1", 500, at(date(2027, 1, 2))), purchased("top2", 100, at(date(2027, 1, 3)))
    )
    wallet = consume(wallet, SMS, 350, at(date(2027, 1, 4)), request_id="r1").wallet
    change = refund(wallet, "top1", at(date(2027, 1, 5)), reference="re_1")
    entry = only(change)
    assert (entry.kind, entry.grant_id, entry.credits) == (EntryKind.REFUND, "top1", 150)
    assert change.wallet.balance(at(date(2027, 1, 5))).purchased == 100
    assert refund(change.wallet, "top1", at(date(2027, 1, 6)), reference="re_1") == Change(change.wallet)

    spent = consume(change.wallet, SMS, 100, at(date(2027, 1, 6)), request_id="r2").wallet
    nothing_left = only(refund(spent, "top2", at(date(2027, 1, 7)), reference="re_2"))
    assert nothing_left.credits == 0  # never more than what is left


def test_only_a_purchased_grant_is_refunded() -> None:
    wallet = granted(Wallet(), included(JAN))
    with pytest.raises(RuleViolation) as refused:
        refund(wallet, "inc_svc1_2027-01-01", at(date(2027, 1, 5)), reference="re_1")
    assert refused.value.code == "credits.not_purchased"
    with pytest.raises(NotFound) as unknown:
        refund(wallet, "nope", at(date(2027, 1, 5)), reference="re_1")
    assert unknown.value.code == "credits.unknown_grant"


def test_the_breakdown_per_action_counts_a_period_in_the_contacts_days() -> None:
    wallet = granted(Wallet(), included(JAN, 100), purchased("top1", 100, at(date(2027, 1, 2))))
    entries: list[LedgerEntry] = []
    for request, (cost, qty, when) in enumerate(
        [
            (SMS, 60, at(date(2027, 1, 5))),
            (ActionCost("ai_call", 10, date(2027, 1, 1)), 5, at(date(2027, 1, 6))),
            (FORM, 2, at(date(2027, 1, 7))),
            (SMS, 5, datetime(2027, 1, 31, 23, 30, tzinfo=UTC)),  # 1 February in Paris
        ]
    ):
        change = consume(wallet, cost, qty, when, request_id=f"r{request}")
        wallet = change.wallet
        entries.extend(change.entries)
    rows = {row.action: row for row in breakdown(entries, JAN, PARIS)}
    assert sorted(rows) == ["ai_call", "form", "sms"]
    assert (rows["sms"].consumptions, rows["sms"].quantity, rows["sms"].credits) == (1, 60, 60)
    assert (rows["ai_call"].credits, dict(rows["ai_call"].by_kind)) == (
        50,
        {GrantKind.INCLUDED: 40, GrantKind.PURCHASED: 10},
    )
    assert (rows["form"].quantity, rows["form"].credits) == (2, 0)
    assert [(r.action, r.credits) for r in breakdown(entries, FEB, PARIS)] == [("sms", 5)]


# -- the price list -----------------------------------------------------------------------------------
def test_a_price_change_applies_from_its_day() -> None:
    prices = CreditPriceList().changed(date(2027, 1, 1), {"sms": 1, "form": 0})
    prices = prices.changed(date(2027, 3, 1), {"sms": 2, "form": 0, "ai_call": 10})
    assert prices.cost_of("sms", date(2027, 2, 28)) == ActionCost("sms", 1, date(2027, 1, 1))
    assert prices.cost_of("sms", date(2027, 3, 1)) == ActionCost("sms", 2, date(2027, 3, 1))
    assert prices.cost_of("form", date(2027, 5, 1)).credits == 0
    for action, day in (("ai_call", date(2027, 2, 28)), ("sms", date(2026, 12, 31)), ("fax", date(2027, 5, 1))):
        with pytest.raises(InvalidInput) as unknown:
            prices.cost_of(action, day)
        assert unknown.value.code == "credits.unknown_action"
    with pytest.raises(InvalidInput) as backdated:
        prices.changed(date(2027, 3, 1), {"sms": 3})
    assert backdated.value.code == "credits.price_change_date"


@pytest.mark.parametrize(
    ("costs", "code"),
    [
        ({"sms": -1}, "credits.cost"),
        ({"sms": 1.5}, "credits.cost"),
        ({"sms": True}, "credits.cost"),
        ({"SMS!": 1}, "credits.action_name"),
    ],
)
def test_a_price_list_refuses_bad_costs(costs: dict[str, object], code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CreditPriceList().changed(date(2027, 1, 1), costs)  # type: ignore[arg-type]
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: Grant("g", GrantKind.PROMOTIONAL, 5, at(date(2027, 1, 1))), "credits.expiry"),
        (lambda: Grant("g", GrantKind.INCLUDED, 5, at(date(2027, 1, 1)), at(date(2027, 2, 1))), "credits.period"),
        (lambda: purchased("g", 5, at(date(2027, 1, 2)), expires_at=at(date(2027, 1, 1))), "credits.expiry"),
        (lambda: purchased("g", -5, at(date(2027, 1, 2))), "credits.amount"),
        (lambda: purchased("g g", 5, at(date(2027, 1, 2))), "credits.reference"),
        (lambda: Grant("g", "bonus", 5, at(date(2027, 1, 2))), "credits.grant_kind"),  # type: ignore[arg-type]
    ],
)
def test_a_grant_refuses_what_its_kind_does_not_allow(make: object, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        make()  # type: ignore[operator]
    assert refused.value.code == code


def test_a_grant_kind_given_as_text_is_the_kind() -> None:
    assert Grant("g", "purchased", 5, at(date(2027, 1, 2))).kind is GrantKind.PURCHASED  # type: ignore[arg-type]


def test_a_consumption_refuses_a_bad_quantity() -> None:
    for quantity in (0, -1, 10**9 + 1):
        with pytest.raises(InvalidInput) as refused:
            consume(Wallet(), SMS, quantity, at(date(2027, 1, 2)), request_id="r")
        assert refused.value.code == "credits.quantity"


# -- the property -------------------------------------------------------------------------------------
START = datetime(2027, 1, 1, tzinfo=UTC)
KINDS = st.sampled_from(list(GrantKind))
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), KINDS, st.integers(0, 500), st.integers(1, 60), st.booleans()),
        st.tuples(st.just("consume"), st.integers(0, 20), st.integers(1, 40)),
        st.tuples(st.just("expire")),
        st.tuples(st.just("refund"), st.integers(0, 30)),
        st.tuples(st.just("settle")),
        st.tuples(st.just("wait"), st.integers(0, 20 * 24)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, overdraft_limit=st.integers(0, 200))
def test_the_ledger_always_adds_up_and_nothing_goes_below_its_bound(
    steps: list[tuple[object, ...]], overdraft_limit: int
) -> None:
    """Any sequence of grants, consumptions, expiries, refunds and invoiced overdrafts: the balance is
    grants - consumed - expired - refunded + invoiced, never below -overdraft; no grant's remainder
    goes negative; a refused consumption changes nothing; an expired grant never burns."""
    wallet = Wallet()
    now = START
    entries: list[LedgerEntry] = []
    for n, step in enumerate(steps):
        kind = step[0]
        change = Change(wallet)
        if kind == "grant":
            _, grant_kind, credits, days, with_expiry = step
            assert isinstance(grant_kind, GrantKind) and isinstance(credits, int) and isinstance(days, int)
            ends = now + timedelta(days=days)
            if grant_kind is GrantKind.INCLUDED:
                day = now.date()
                one = included_grant(
                    id=f"g{n}",
                    credits=credits,
                    period=Period(day, day + timedelta(days=days)),
                    zone=ZoneInfo("UTC"),
                    granted_at=now,
                    source="cycle",
                )
            else:
                expiry = ends if with_expiry or grant_kind is GrantKind.PROMOTIONAL else None
                one = Grant(f"g{n}", grant_kind, credits, now, expiry, source="src")
            change = grant(wallet, one)
        elif kind == "consume":
            _, unit, quantity = step
            assert isinstance(unit, int) and isinstance(quantity, int)
            before = wallet.balance(now)
            try:
                change = consume(
                    wallet,
                    ActionCost("a", unit, START.date()),
                    quantity,
                    now,
                    request_id=f"c{n}",
                    overdraft_limit=overdraft_limit,
                )
            except InsufficientCredits as refused:
                assert refused.balance == before
                assert unit * quantity > before.total + overdraft_limit or wallet.overdrawn > overdraft_limit
            else:
                entry = only(change)
                assert entry.credits == unit * quantity == sum(p.credits for p in entry.parts) + entry.overdrawn
                live = {h.grant.id for h in wallet.holdings if h.grant.live(now)}
                assert {p.grant_id for p in entry.parts} <= live  # an expired grant never burns
        elif kind == "expire":
            change = expire(wallet, now)
            assert expire(change.wallet, now).entries == ()
            assert change.wallet.booked == change.wallet.balance(now).total
        elif kind == "refund":
            _, pick = step
            assert isinstance(pick, int)
            bought = [h for h in wallet.holdings if h.grant.kind is GrantKind.PURCHASED]
            if bought:
                target = bought[pick % len(bought)]
                change = refund(wallet, target.grant.id, now, reference=f"re{n}")
                assert sum(e.credits for e in change.entries) <= target.remaining
        elif kind == "settle":
            change = settle_overdraft(wallet, now, invoice_id=f"inv{n}")
        else:
            _, hours = step
            assert isinstance(hours, int)
            now += timedelta(hours=hours)
        wallet = change.wallet
        entries.extend(change.entries)

        assert all(h.remaining >= 0 for h in wallet.holdings)
        assert all(h.remaining <= h.grant.credits for h in wallet.holdings)
        totals = {k: sum(e.credits for e in entries if e.kind is k) for k in EntryKind}
        assert wallet.booked == (
            totals[EntryKind.GRANT]
            - totals[EntryKind.CONSUMPTION]
            - totals[EntryKind.EXPIRY]
            - totals[EntryKind.REFUND]
            + totals[EntryKind.OVERDRAFT_INVOICED]
        )
        assert wallet.booked == sum(e.delta for e in entries)
        assert wallet.balance(now).total >= -overdraft_limit
        assert wallet.overdrawn <= overdraft_limit
        assert len({e.id for e in entries}) == len(entries)  # one cause, one entry


def test_a_booked_ledger_entry_is_its_credits_event_once_for_its_contact() -> None:
    from billow.services.events import events_of
    from billow.storage.credits import entry_out
    from billow.storage.stream import change_of

    from tests.unit.test_events import record

    entry = LedgerEntry(
        entry_id(EntryKind.CONSUMPTION, "req-1"),
        EntryKind.CONSUMPTION,
        datetime(2027, 3, 1, 12, tzinfo=UTC),
        40,
        action="ai_call",
        quantity=8,
        unit_cost=5,
        parts=(Part("promo", GrantKind.PROMOTIONAL, 30), Part("pack", GrantKind.PURCHASED, 10)),
        reference="req-1",
    )
    image = {
        "PK": {"S": "T#t1#TEST#C#con_1#L"}, "SK": {"S": f"E#{entry.id}"}, "type": {"S": "credit_entry"},
        "version": {"N": "1"}, "data": {"S": json.dumps(entry_out(entry))},
    }  # fmt: skip
    change = change_of(record(image))
    assert change is not None and change.contact_id == "con_1"  # its ledger partition is the contact's
    (event,) = events_of(change)
    assert event.type == "credits.consumed" and event.contact_id == "con_1"
    assert (event.data["credits"], event.data["delta"], event.data["action"]) == (40, -40, "ai_call")
    assert [p["kind"] for p in event.data["parts"]] == ["promotional", "purchased"]
    assert events_of(change)[0].id == event.id  # delivered twice: the same id
    again = change_of(record(image, image))  # a rewrite of an entry (never happens): no event
    assert again is not None and events_of(again) == []


# -- low balance and packs ------------------------------------------------------------------------
def test_the_balance_falling_below_the_threshold_is_booked_once_per_crossing() -> None:
    from billow.domain.credits import LowBalance, watch, watched

    now = at(date(2027, 1, 5))
    bought = Grant("bought", GrantKind.PURCHASED, 300, now - timedelta(days=1))
    wallet = grant(watch(Wallet(), LowBalance(100, "pack_500")).wallet, bought).wallet
    version = 1

    def spend(wallet: Wallet, credits: int, request: str) -> Change:
        nonlocal version
        version += 1
        return watched(consume(wallet, SMS, credits, now, request_id=request), now, version=version)

    first = spend(wallet, 150, "a")  # 150 left: not below
    assert [e.kind for e in first.entries] == [EntryKind.CONSUMPTION]
    crossed = spend(first.wallet, 60, "b")  # 90: below
    low = crossed.entries[-1]
    assert (low.kind, low.id, low.balance, low.reference, low.delta) == (
        EntryKind.LOW_BALANCE,
        "crd_low_3",
        90,
        "crd_use_b",
        0,
    )
    assert low.low_balance == LowBalance(100, "pack_500") and crossed.wallet.below
    still = spend(crossed.wallet, 80, "c")  # 10: still below, nothing more
    assert [e.kind for e in still.entries] == [EntryKind.CONSUMPTION]
    topped = watched(grant(still.wallet, Grant("pack", GrantKind.PURCHASED, 500, now)), now, version=9)
    assert not topped.wallet.below and [e.kind for e in topped.entries] == [EntryKind.GRANT]  # re-armed at 510
    again = spend(topped.wallet, 420, "d")  # 90: a new crossing
    assert again.entries[-1].kind is EntryKind.LOW_BALANCE
    assert watched(Change(Wallet()), now, version=1).entries == ()  # no threshold: nothing watched
    fresh = watched(watch(again.wallet, LowBalance(50)), now, version=20)  # a new threshold is watched afresh
    assert fresh.entries == () and not fresh.wallet.below  # 90 is not below 50


def test_a_threshold_set_while_below_it_is_booked_at_once() -> None:
    from billow.domain.credits import LowBalance, watch, watched

    now = at(date(2027, 1, 5))
    wallet = grant(Wallet(), Grant("g", GrantKind.PURCHASED, 20, now)).wallet
    set_ = watched(watch(wallet, LowBalance(100)), now, version=2)
    assert [(e.kind, e.balance) for e in set_.entries] == [(EntryKind.LOW_BALANCE, 20)]
    with pytest.raises(InvalidInput) as zero:
        LowBalance(0)
    assert zero.value.code == "credits.threshold"


def test_packs_are_sold_from_their_version_and_refused_when_malformed() -> None:
    from billow.domain.credits import CreditPack
    from billow.domain.money import Money

    pack = CreditPack("pack_500", 500, Money.parse("10.00", "USD"))
    prices = CreditPriceList().changed(date(2027, 1, 1), {"sms": 1}, {"pack_500": pack})
    prices = prices.changed(date(2027, 2, 1), {"sms": 1})  # the next version sells no pack
    assert prices.pack_on("pack_500", date(2027, 1, 31)) == pack
    for day, name in ((date(2027, 2, 1), "pack_500"), (date(2027, 1, 5), "pack_9"), (date(2026, 12, 31), "pack_500")):
        with pytest.raises(InvalidInput) as unknown:
            prices.pack_on(name, day)
        assert unknown.value.code == "credits.unknown_pack"
    for bad in (
        lambda: CreditPack("pack", 0, Money.parse("1.00", "USD")),
        lambda: CreditPack("pack", 5, Money.parse("0.00", "USD")),
        lambda: CreditPack("Pack!", 5, Money.parse("1.00", "USD")),
    ):
        with pytest.raises(InvalidInput):
            bad()
