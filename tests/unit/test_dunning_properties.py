"""Properties of dunning's rule (`billow.domain.dunning.decide`) over random interleavings of
charges failing, payments, credit, new cards, staff deactivations, grace periods, days passing,
operators pausing and resuming the case
and duplicated deliveries, played against a small model of one contact's world (its invoices,
their charge attempts, its services). After every event the case is driven as its flow will
drive it: decide, carry the step out, record it, until it waits or ends.

- a case ends iff nothing is owed (and one is open whenever something is);
- a service is deactivated only with the debt over the threshold, past the case's grace period
  and its subscription's, never for an excluded classification, and only if billed to the debt;
- every retry charges an (invoice, attempt number) never used before, the invoice's next number,
  and a hard decline is retried only once a new card was saved;
- a paused case does nothing but end;
- when a case ends, exactly the services it deactivated (and did not cancel) are reactivated:
  services staff deactivated stay deactivated, services staff reactivated are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from billow.domain.collection import AttemptStatus
from billow.domain.dunning import (
    AttemptFacts,
    Cancel,
    CaseFacts,
    CaseStatus,
    Deactivate,
    DunningCase,
    DunningPolicy,
    End,
    InvoiceFacts,
    Remind,
    Retry,
    ServiceFacts,
    Wait,
    decide,
)
from billow.domain.money import Money
from billow.domain.rules import ServiceState
from hypothesis import event, given, settings
from hypothesis import strategies as st

CURRENCY = "USD"
SERVICES = ("s1", "s2", "s3", "s4")
CARDS = ("good", "soft", "hard", None)


def usd(minor: int) -> Money:
    return Money(minor, CURRENCY)


@dataclass
class Invoice:
    amount_due: int
    due_date: date
    services: frozenset[str]
    attempts: list[tuple[int, AttemptStatus, bool, date, int]] = field(default_factory=list)
    """(number, status, hard, day, event counter when made)."""


@dataclass
class World:
    policy: DunningPolicy
    classification: str | None
    today: date = date(2027, 1, 1)
    card: str | None = "soft"
    card_saved_at: int = -1
    counter: int = 0
    credit: int = 0
    invoices: dict[str, Invoice] = field(default_factory=dict)
    states: dict[str, ServiceState] = field(default_factory=lambda: dict.fromkeys(SERVICES, ServiceState.EFFECTIVE))
    grace_until: dict[str, date] = field(default_factory=dict)
    by_dunning: set[str] = field(default_factory=set)
    """Services dunning deactivated and did not cancel or reactivate, and staff did not touch since
    (the model's own record; what the action log tells the flow, as `ServiceFacts.stopped_by`)."""
    by_staff: set[str] = field(default_factory=set)
    left_alone: set[str] = field(default_factory=set)
    """Services staff reactivated after the open case deactivated them: it leaves them alone."""
    case: DunningCase | None = None
    cases: int = 0
    attempts_made: set[tuple[str, int]] = field(default_factory=set)

    def tick(self) -> int:
        self.counter += 1
        return self.counter

    # -- what the model says is owed (independently of the rule's own reading) --------------
    def owed(self) -> int:
        debt = 0
        for invoice in self.invoices.values():
            failed = any(status is not AttemptStatus.SUCCEEDED for _, status, *_ in invoice.attempts)
            if invoice.amount_due > 0 and (failed or self.today > invoice.due_date):
                debt += invoice.amount_due
        return max(debt - self.credit, 0)

    def charge(self, invoice_id: str, number: int) -> None:
        invoice = self.invoices[invoice_id]
        assert (invoice_id, number) not in self.attempts_made, f"attempt {number} of {invoice_id} made twice"
        assert number == len(invoice.attempts) + 1, "an attempt number skipped or reused"
        self.attempts_made.add((invoice_id, number))
        if self.card == "good":
            invoice.attempts.append((number, AttemptStatus.SUCCEEDED, False, self.today, self.tick()))
            invoice.amount_due = 0
        elif self.card is None:
            invoice.attempts.append((number, AttemptStatus.NOT_COLLECTABLE, True, self.today, self.tick()))
        else:
            invoice.attempts.append((number, AttemptStatus.FAILED, self.card == "hard", self.today, self.tick()))

    # -- the facts the flow would read -------------------------------------------------------
    def facts(self) -> CaseFacts:
        invoices = []
        for invoice_id, invoice in sorted(self.invoices.items()):
            if invoice.amount_due <= 0:
                continue
            failures = [a for a in invoice.attempts if a[1] is not AttemptStatus.SUCCEEDED]
            latest = None
            if invoice.attempts:
                number, status, hard, on, _made = invoice.attempts[-1]
                latest = AttemptFacts(number, status, hard, on)
            invoices.append(
                InvoiceFacts(
                    invoice_id,
                    usd(invoice.amount_due),
                    invoice.due_date,
                    failures[0][3] if failures else None,
                    latest,
                    new_method=bool(invoice.attempts) and self.card_saved_at > invoice.attempts[-1][4],
                )
            )
        open_ids = {i.invoice_id for i in invoices}
        services = tuple(
            ServiceFacts(
                sid,
                f"sub_{sid}",
                state,
                self.grace_until.get(sid),
                frozenset(i for i in open_ids if sid in self.invoices[i].services),
                self.case.id if self.case is not None and sid in self.by_dunning else None,
            )
            for sid, state in sorted(self.states.items())
        )
        credit = usd(self.credit) if self.credit else None
        return CaseFacts(CURRENCY, tuple(invoices), services, self.classification, credit)

    # -- the flow ----------------------------------------------------------------------------
    def run(self, crash: bool = False) -> None:
        """What the flow does when woken: open a case if something is owed and none is open,
        then decide and carry out each step until the case waits or ends. `crash`: the first
        retry's charges are made but the step is not recorded (the task died after charging)."""
        if self.case is None and self.owed() > 0:
            self.cases += 1
            self.case = DunningCase.open("con_1", CURRENCY, self.cases, self.policy, self.today)
        for _ in range(200):
            if self.case is None:
                return
            decision = decide(self.case, self.facts(), self.today)
            assert decision == decide(self.case, self.facts(), self.today), "the rule is not a function"
            if isinstance(decision, Wait):
                assert decision.until is None or decision.until > self.today
                return
            self.carry_out(decision)
            if crash and isinstance(decision, Retry):
                crash = False
                continue
            recorded = self.case.record(decision, self.today)
            assert recorded.record(decision, self.today) == recorded, "a duplicate record changed the case"
            self.case = None if isinstance(decision, End) else recorded
        raise AssertionError("the flow never settled")

    def carry_out(self, decision: Any) -> None:
        assert self.case is not None
        owed = self.owed()
        policy = self.case.policy
        event(type(decision).__name__)
        if self.case.status is CaseStatus.PAUSED:
            assert isinstance(decision, End), "a paused case did something but end"
        match decision:
            case End(reactivate=services):
                assert owed == 0, "a case ended with something owed"
                assert set(services) == self.by_dunning, "reactivated other services than dunning deactivated"
                for sid in services:
                    self.states[sid] = ServiceState.EFFECTIVE
                self.by_dunning.clear()
                self.left_alone.clear()
                for sid in self.by_staff:
                    assert self.states[sid] is ServiceState.NOT_EFFECTIVE
            case Retry(attempts=attempts):
                assert owed > 0
                for invoice_id, number in attempts:
                    latest = self.invoices[invoice_id].attempts[-1]
                    assert not latest[2] or self.card_saved_at > latest[4], "a hard decline retried on the same card"
                    self.charge(invoice_id, number)
            case Deactivate(services=services):
                threshold = policy.threshold(CURRENCY)
                assert threshold is not None and owed > threshold.minor, "deactivated under the threshold"
                assert self.today >= self.case.opened_on + timedelta(days=policy.grace_days), "inside grace"
                assert self.classification not in policy.excluded_from_deactivation
                for sid in services:
                    assert self.states[sid] is ServiceState.EFFECTIVE
                    assert sid not in self.left_alone, "deactivated again a service staff reactivated"
                    assert self.today >= self.grace_until.get(sid, self.today), "inside a subscription's grace"
                    assert any(sid in i.services and i.amount_due > 0 for i in self.invoices.values())
                    self.states[sid] = ServiceState.NOT_EFFECTIVE
                    self.by_dunning.add(sid)
            case Cancel(services=services):
                threshold = policy.threshold(CURRENCY)
                assert threshold is not None and owed > threshold.minor
                assert policy.cancel_after_days is not None
                assert self.classification not in policy.excluded_from_cancellation
                assert self.classification not in policy.excluded_from_deactivation
                for sid in services:
                    assert sid in self.by_dunning
                    assert self.today >= self.case.deactivated[sid] + timedelta(days=policy.cancel_after_days)
                    self.states[sid] = ServiceState.CANCELLED
                    self.by_dunning.discard(sid)
            case Remind(number=number):
                assert owed > 0
                assert number > self.case.reminded, "a reminder sent twice"
                day = policy.reminder_days[number - 1]
                assert self.today >= self.case.opened_on + timedelta(days=day)

    def check(self) -> None:
        owed = self.owed()
        if owed > 0:
            assert self.case is not None and not self.case.ended, "something owed and no case open"
        else:
            assert self.case is None, "a case left open with nothing owed"
            assert not self.by_dunning, "services left deactivated by dunning after payment"


# -- random worlds and events -------------------------------------------------------------------------
def schedule(first: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.sets(st.integers(first, 20), max_size=4).map(lambda days: tuple(sorted(days)))


POLICIES = st.builds(
    DunningPolicy,
    retry_days=schedule(1),
    reminder_days=schedule(0),
    grace_days=st.integers(0, 15),
    deactivation_threshold=st.sampled_from([{"USD": usd(0)}, {"USD": usd(5_000)}, {}, {"JPY": Money(0, "JPY")}]),
    cancel_after_days=st.none() | st.integers(1, 10),
    excluded_from_deactivation=st.sampled_from([(), ("vip",)]),
    excluded_from_cancellation=st.sampled_from([(), ("gov",)]),
)
ISSUES = st.tuples(
    st.just("issue"),
    st.integers(1, 9_000),
    st.sets(st.sampled_from(SERVICES), min_size=1),
    st.booleans(),
    st.integers(0, 10),
)
EVENTS = st.one_of(
    ISSUES,
    ISSUES,
    st.tuples(st.just("advance"), st.integers(1, 6)),
    st.tuples(st.just("pay"), st.integers(0, 20)),
    st.tuples(st.just("advance"), st.integers(1, 6)),
    st.tuples(st.just("advance"), st.integers(1, 6)),
    st.tuples(st.just("card"), st.sampled_from(CARDS)),
    st.tuples(st.just("credit"), st.integers(1, 9_000)),
    st.tuples(st.just("staff_deactivates"), st.sampled_from(SERVICES)),
    st.tuples(st.just("staff_activates"), st.integers(0, 3)),
    st.tuples(st.just("staff_activates"), st.integers(0, 3)),
    st.tuples(st.just("grace"), st.sampled_from(SERVICES), st.integers(1, 20)),
    st.tuples(st.just("duplicate")),
    st.tuples(st.just("pause")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("crash")),
)


def play(world: World, happening: tuple[Any, ...]) -> None:
    match happening:
        case ("issue", amount, services, charged, terms):
            invoice_id = f"inv_{len(world.invoices):02d}"
            world.invoices[invoice_id] = Invoice(amount, world.today + timedelta(days=terms), frozenset(services))
            if charged:  # collected automatically when issued: attempt 1
                world.charge(invoice_id, 1)
            world.run()
        case ("pay", index):  # a payment by transfer, a write-off or a void: nothing owed on it any more
            unpaid = sorted(i for i, inv in world.invoices.items() if inv.amount_due > 0)
            if unpaid:
                world.invoices[unpaid[index % len(unpaid)]].amount_due = 0
            world.run()
        case ("advance", days):
            world.today += timedelta(days=days)
            world.run()
        case ("card", card):
            world.card = card
            world.card_saved_at = world.tick()
            world.run()
        case ("credit", amount):
            world.credit += amount
            world.run()
        case ("staff_deactivates", sid):
            if world.states[sid] is ServiceState.EFFECTIVE:
                world.states[sid] = ServiceState.NOT_EFFECTIVE
                world.by_staff.add(sid)
            world.run()
        case ("staff_activates", index):  # one of the deactivated services; staff's word wins
            stopped = sorted(sid for sid, state in world.states.items() if state is ServiceState.NOT_EFFECTIVE)
            if stopped:
                sid = stopped[index % len(stopped)]
                world.states[sid] = ServiceState.EFFECTIVE
                world.by_staff.discard(sid)
                if sid in world.by_dunning:
                    event("staff reactivates a service dunning deactivated")
                    world.by_dunning.discard(sid)
                    world.left_alone.add(sid)
            world.run()
        case ("grace", sid, days):
            world.grace_until[sid] = world.today + timedelta(days=days)
            world.run()
        case ("duplicate",):  # the schedule firing twice, an event delivered again
            world.run()
        case ("crash",):
            world.run(crash=True)
        case ("pause",):  # an operator pauses the open case
            if world.case is not None:
                world.case = world.case.paused(world.today)
            world.run()
        case ("resume",):
            if world.case is not None:
                world.case = world.case.resumed(world.today)
            world.run()


@settings(max_examples=400, deadline=None)
@given(
    POLICIES,
    st.sampled_from([None, "vip", "gov"]),
    st.sampled_from(CARDS),
    st.lists(EVENTS, min_size=1, max_size=60),
    st.lists(POLICIES, max_size=1),
    st.lists(EVENTS, max_size=12),
)
def test_dunning_keeps_its_promises_in_any_order_of_events(
    policy: DunningPolicy,
    classification: str | None,
    card: str | None,  # the card saved when the story starts
    events: list[tuple[Any, ...]],
    later_policy: list[DunningPolicy],
    tail: list[tuple[Any, ...]],
) -> None:
    world = World(policy, classification, card=card)
    play(world, ("issue", 6_000, set(SERVICES[:2]), True, 0))  # a first charge, declined unless the card is good
    for n, happening in enumerate(events):
        if later_policy and n == len(events) // 2:
            world.policy = later_policy[0]  # a change of settings: open cases keep theirs
        play(world, happening)
        world.check()
    # then weeks pass, one more event every few days: the case runs its whole schedule
    for n in range(12):
        play(world, ("advance", 5))
        world.check()
        if n < len(tail):
            play(world, tail[n])
            world.check()
