"""The dunning use cases on moto: opening a case, its decisions stored, each step taken once on
fresh facts, parking and waking its flow (a recording double of the state machine)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from billow.domain.actions import ActionStatus, Requester
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.collection import AttemptStatus
from billow.domain.dunning import CaseStatus, StepKind
from billow.domain.invoices import InvoiceStatus
from billow.domain.money import Money
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.rules import ServiceState
from billow.gateways.events import DUNNING_WAKES
from billow.services import actions, dunning, payment_methods, receivables, time_travel
from billow.services.actions import ActionRequest
from billow.services.billing import InvoiceNumbers
from billow.services.collection import collect_invoice
from billow.services.context import keyed_ids
from billow.services.events import Change, events_of
from billow.storage.repository import DynamoStore

from tests.dunning_support import (
    POLICY,
    START,
    Clock,
    Debtor,
    RecordingFlows,
    logged,
    opened,
    pay,
    seed_debtor,
    service_state,
    step,
    take_steps,
    with_case,
)
from tests.fake_rail import DECLINING, FakeRail
from tests.support import RecordingInvoker


@pytest.fixture
def store(moto_table: str) -> DynamoStore:
    return DynamoStore(due_shards=64)


@pytest.fixture
def rail(tmp_path: Path) -> FakeRail:
    return FakeRail(tmp_path / "rail.db")


@pytest.fixture
def flows(tmp_path: Path) -> RecordingFlows:
    return RecordingFlows(tmp_path / "flows.db")


def test_a_declined_charge_opens_one_case_and_starts_its_execution_once(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    again = opened(store, debtor, flows, clock)
    assert again == case_id == f"dun_{debtor.contact_id}_USD_1"
    assert flows.started == [case_id]
    stored = store.get_case(debtor.ctx.scope, case_id)
    assert stored is not None and stored.case.opened_on == clock.now().date() and stored.due == clock.now().date()
    assert [s.kind for s in stored.case.history] == [StepKind.OPEN]


def test_nothing_owed_opens_no_case(store: DynamoStore, rail: FakeRail, flows: RecordingFlows) -> None:
    clock = Clock()
    debtor = seed_debtor(store, rail, clock=clock)
    pay(store, debtor, clock)
    assert dunning.open_case(store, debtor.ctx, debtor.contact_id, "USD", flows, clock=clock) is None
    assert store.cases_of(debtor.ctx.scope, debtor.contact_id) == [] and flows.started == []


def test_each_decision_is_stored_with_its_due_day(store: DynamoStore, rail: FakeRail, flows: RecordingFlows) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    today = clock.now().date()
    decided = dunning.decide_case(store, debtor.ctx, case_id, clock=clock)
    expected = {"tenant_id": "t1", "mode": "test", "case_id": case_id, "action": "remind", "wake_seq": 0}
    assert decided.output() == {**expected, "due": today.isoformat()}
    reminded = step(store, debtor, case_id, StepKind.REMIND, clock, rail)
    assert (reminded.action, reminded.stored.due) == ("wait", today + timedelta(days=1))  # the first retry's day
    assert reminded.stored.decided_on == today
    assert [s.kind for s in reminded.stored.case.history] == [StepKind.OPEN, StepKind.REMIND]


def test_a_step_not_due_on_fresh_facts_is_not_taken(store: DynamoStore, rail: FakeRail, flows: RecordingFlows) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    decided = step(store, debtor, case_id, StepKind.RETRY, clock, rail)  # the retry is tomorrow's
    assert decided.action == "remind"
    assert [a.number for a in store.attempts_of(debtor.ctx.scope, debtor.contact_id)] == [1]
    assert [s.kind for s in decided.stored.case.history] == [StepKind.OPEN]


def test_a_retry_taken_twice_charges_once(store: DynamoStore, rail: FakeRail, flows: RecordingFlows) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    step(store, debtor, case_id, StepKind.REMIND, clock, rail)
    later = clock.days(1)
    first = step(store, debtor, case_id, StepKind.RETRY, later, rail)
    second = step(store, debtor, case_id, StepKind.RETRY, later, rail)
    attempts = store.attempts_of(debtor.ctx.scope, debtor.contact_id)
    assert [a.number for a in attempts] == [1, 2]
    assert len(rail.charges()) == 2
    assert first.stored.case.retried == {f"att_{debtor.invoice.id}_2"} == second.stored.case.retried
    grace_ends = clock.now().date() + timedelta(days=2)  # before the next retry's day
    assert (second.action, second.stored.due) == ("wait", grace_ends)


def test_deactivation_past_grace_then_payment_ends_and_reactivates(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    take_steps(store, debtor, case_id, rail, 2)
    day2 = clock.days(2)
    decided = dunning.decide_case(store, debtor.ctx, case_id, clock=day2)
    assert decided.action == "deactivate"
    after = step(store, debtor, case_id, StepKind.DEACTIVATE, day2, rail)
    scope = debtor.ctx.scope
    assert service_state(store, debtor) is ServiceState.NOT_EFFECTIVE
    (deactivated,) = logged(store, debtor, "deactivate")
    assert (deactivated.by, deactivated.status, deactivated.on) == (
        Requester.SYSTEM,
        ActionStatus.EXECUTED,
        day2.now().date(),
    )
    assert case_id in (deactivated.reason or "")
    assert after.stored.case.deactivated == {debtor.service_id: day2.now().date()}

    pay(store, debtor, day2)
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=day2).action == "end"
    ended = step(store, debtor, case_id, StepKind.END, day2, rail)
    assert ended.action == "ended" and ended.stored.case.status is CaseStatus.ENDED and ended.stored.due is None
    assert service_state(store, debtor) is ServiceState.EFFECTIVE
    assert store.open_case_of(scope, debtor.contact_id, "USD") is None
    assert [
        e for s in range(64) for e in store.due_cases(s, day2.now().date() + timedelta(days=30), 50, None).items
    ] == []


def test_the_end_reactivates_only_what_the_case_still_holds_stopped(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor = seed_debtor(store, rail, clock=clock)
    settings = debtor.ctx.settings
    allowing = replace(settings.subscriptions, debt_threshold={"USD": Money.parse("1000.00", "USD")})
    settings = store.put_settings(replace(settings, subscriptions=allowing))
    ctx = replace(debtor.ctx, settings=settings)
    debtor = replace(debtor, ctx=ctx)
    case_id = opened(store, debtor, flows, clock)
    take_steps(store, debtor, case_id, rail, 3)
    day2 = clock.days(2)
    log = store.actions_of(ctx.scope, debtor.contact_id, debtor.subscription_id)
    assert dunning.stopped_by(log, debtor.service_id) == case_id
    # Staff take it back, then stop it themselves: it is theirs now.
    for n, kind in enumerate((ACTIVATE, DEACTIVATE)):
        request = ActionRequest(kind, service_id=debtor.service_id, reason="staff")
        ids = keyed_ids("t1", f"staff-{n}")
        actions.request_action(
            store, ctx, debtor.subscription_id, request, clock=day2, numbers=InvoiceNumbers(store), new_id=ids
        )
    log = store.actions_of(ctx.scope, debtor.contact_id, debtor.subscription_id)
    assert dunning.stopped_by(log, debtor.service_id) is None
    pay(store, debtor, day2)
    ended = step(store, debtor, case_id, StepKind.END, day2, rail)
    assert ended.action == "ended"
    assert service_state(store, debtor) is ServiceState.NOT_EFFECTIVE


@pytest.mark.parametrize("with_fees", [True, False])
def test_cancellation_after_the_delay_charges_the_fee_only_if_the_policy_says_so(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows, with_fees: bool
) -> None:
    clock = Clock()
    policy = replace(POLICY, cancel_with_fees=with_fees)
    debtor, case_id = with_case(store, rail, flows, policy=policy, cancellation_fee="50.00")
    take_steps(store, debtor, case_id, rail, 4)
    day5 = clock.days(5)
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=day5).action == "cancel"
    step(store, debtor, case_id, StepKind.CANCEL, day5, rail)
    assert service_state(store, debtor) is ServiceState.CANCELLED
    (cancelled,) = logged(store, debtor, "cancel")
    subscription = store.load_subscription(debtor.ctx.scope, debtor.contact_id, debtor.subscription_id)
    assert subscription is not None
    assert cancelled.by is Requester.SYSTEM and cancelled.status is ActionStatus.EXECUTED
    fees = [a for a in subscription.adjustments if a.line.kind == "cancellation_fee"]
    assert len(fees) == (1 if with_fees else 0)
    assert ("fee" in (cancelled.outcome or "")) is with_fees


def test_a_park_after_a_wake_resumes_at_once_and_a_wake_resumes_once(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    assert dunning.park(store, debtor.ctx, case_id, 0, "tok-1", flows)
    assert dunning.wake(store, debtor.ctx, case_id, flows, clock=clock)
    assert not dunning.wake(store, debtor.ctx, case_id, flows, clock=clock)
    assert flows.resumed == ["tok-1"]
    assert not dunning.park(store, debtor.ctx, case_id, 0, "tok-2", flows)  # decided before the wakes
    assert flows.resumed == ["tok-1", "tok-2"]


def test_a_case_with_no_live_execution_is_started_again_by_a_wake(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    assert not dunning.wake(store, debtor.ctx, case_id, flows, clock=clock.days(0))  # running: it re-reads
    later = Clock(clock.now() + timedelta(days=2))
    assert not dunning.wake(store, debtor.ctx, case_id, flows, clock=later)  # still running, however long ago
    assert flows.started == [case_id]
    flows.end(case_id)  # its retries ran out: the execution failed
    assert dunning.wake(store, debtor.ctx, case_id, flows, clock=later)
    assert not dunning.wake(store, debtor.ctx, case_id, flows, clock=later)  # the new run is running
    assert flows.started == [case_id, f"{case_id}-r1"]
    stored = store.get_case(debtor.ctx.scope, case_id)
    assert stored is not None and stored.run == 1


def test_the_hourly_wake_wakes_cases_due_on_their_tenants_day(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor = seed_debtor(store, rail, clock=clock)
    clocked = seed_debtor(store, rail, clock=clock, test_clock=True, key="clocked")
    case_id = opened(store, debtor, flows, clock)
    other = opened(store, clocked, flows, clock)
    step(store, debtor, case_id, StepKind.REMIND, clock, rail)  # due tomorrow now
    step(store, clocked, other, StepKind.REMIND, clock, rail)
    assert dunning.park(store, debtor.ctx, case_id, 0, "tok-a", flows)
    assert dunning.park(store, clocked.ctx, other, 0, "tok-b", flows)
    assert dunning.wake_due(store, flows, clock=clock).woken == 0
    out_of_time = dunning.wake_due(store, flows, clock=clock.days(1), keep_going=lambda: False)
    assert (out_of_time.done, out_of_time.woken, flows.resumed) == (False, 0, [])
    run = dunning.wake_due(store, flows, clock=clock.days(1))
    assert (run.woken, flows.resumed) == (1, ["tok-a"])  # the test-clock contact's case is its clock's


def test_a_late_payment_after_the_case_ended_changes_nothing(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    pay(store, debtor, clock)
    step(store, debtor, case_id, StepKind.END, clock, rail)
    ended = store.get_case(debtor.ctx.scope, case_id)
    assert dunning.wake_contact(store, debtor.ctx, debtor.contact_id, lambda: flows, clock=clock.days(3)) == 0
    assert dunning.open_case(store, debtor.ctx, debtor.contact_id, "USD", flows, clock=clock.days(3)) is None
    assert store.get_case(debtor.ctx.scope, case_id) == ended  # not even woken
    assert not dunning.wake(store, debtor.ctx, case_id, flows, clock=clock.days(3))  # ended: never restarted
    assert flows.started == [case_id] and flows.resumed == []
    assert store.get_invoice(debtor.ctx.scope, debtor.invoice.id).status is InvoiceStatus.PAID  # type: ignore[union-attr]


def test_two_wakes_of_a_parked_case_resume_it_and_start_no_second_execution(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    """invoice.paid and payment.succeeded for one payment (or the hourly schedule delivered twice)
    wake a case parked since yesterday within a moment: the first takes the token and resumes the
    execution; the second finds no token while the resumed execution has not decided yet, and
    must not start another run beside it (found by an attacker: it did, as `-r1`)."""
    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, flows)
    waits = step(store, debtor, case_id, StepKind.REMIND, Clock(), rail)
    assert waits.action == "wait"
    assert dunning.park(store, debtor.ctx, case_id, waits.stored.wake_seq, "tok-1", flows)
    later = Clock().days(1)
    later.instant += timedelta(hours=2)
    dunning.wake_contact(store, debtor.ctx, debtor.contact_id, lambda: flows, clock=later)
    dunning.wake_due(store, flows, clock=later)
    dunning.wake_contact(store, debtor.ctx, debtor.contact_id, lambda: flows, clock=later)
    assert flows.resumed == ["tok-1"]
    assert flows.started == [case_id]


def test_a_failure_racing_the_end_of_the_case_opens_the_next_one(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second invoice's charge fails while the contact's case is ending (its first debt paid):
    the opener's Query finds the case open, then the End commits (it read the facts before the
    failure), then the opener wakes an ended case. The new debt must get a case (found by an
    attacker: it got none until the invoice went overdue)."""
    from billow.domain.calendar import Cycle
    from billow.domain.catalog import BillingModel
    from billow.domain.collection import AttemptStatus
    from billow.services import catalog, ordering
    from billow.services.collection import collect_invoice

    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, flows)
    take_steps(store, debtor, case_id, rail, 1)
    ctx, today = debtor.ctx, Clock().days(1)
    new_id = keyed_ids("t1", "second")
    terms = [catalog.PriceTermsInput("40.00", "USD", Cycle.MONTH, BillingModel.ADVANCE)]
    product = catalog.create_product(store, ctx, name="Extra", description="", terms=terms, new_id=new_id)
    item = ordering.OrderItemInput(product.id, product.terms[0].id)
    ordering.place_order(store, ctx, debtor.contact_id, [item], None, "order-2", today, new_id, InvoiceNumbers(store))
    (second,) = [i for i in store.invoices_of(ctx.scope, debtor.contact_id) if i.id != debtor.invoice.id]
    pay(store, debtor, today)  # the first debt paid: the case's next decision is End
    stored = store.get_case(ctx.scope, case_id)
    assert stored is not None
    before = dunning.read_world(store, ctx, debtor.contact_id, "USD", stored.case, today)  # the End's read
    real_read, real_woken = dunning.read_world, dunning._woken
    monkeypatch.setattr(dunning, "read_world", lambda *a, **k: before)
    failed = collect_invoice(store, rail, ctx.scope, second.id, clock=today)
    assert failed is not None and failed.status is AttemptStatus.FAILED
    # A charge moves the contact's version on, which alone fails such an End (its write checks
    # the contact); a debt that does not (an invoice going overdue) would not: the End's read of
    # the contact is made current so that only the opener's own check is left to catch it.
    contact = store.get_contact(ctx.scope, debtor.contact_id)
    assert contact is not None
    before = replace(before, contact=contact)

    def end_commits_first(*args: object, **kwargs: object) -> object:
        ended = dunning.take_step(
            store, ctx, case_id, StepKind.END, clock=today, gateway=rail, numbers=InvoiceNumbers(store)
        )
        assert ended.stored.case.ended
        monkeypatch.setattr(dunning, "read_world", real_read)
        monkeypatch.setattr(dunning, "_woken", real_woken)
        return real_woken(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dunning, "_woken", end_commits_first)
    got = dunning.open_for_invoice(store, ctx, second.id, flows, clock=today)
    assert got is not None and got.id == f"{case_id.rsplit('_', 1)[0]}_2" and not got.case.ended
    assert flows.started[-1] == got.id


def _advance(store: DynamoStore, debtor: Debtor, days: int) -> None:
    """The debtor's test clock advanced to `days` after START, and what fell due billed."""
    to = START + timedelta(days=days)
    time_travel.request_advance(store, debtor.ctx, debtor.contact_id, to, RecordingInvoker())
    assert time_travel.run_advance(store, debtor.ctx, debtor.contact_id, to, InvoiceNumbers(store)).done


def test_an_invoice_failing_later_in_a_test_clock_case_is_retried_on_its_own_schedule(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    """A second invoice whose charge fails on a later day of the contact's clock, while its case is
    open: its retries count from ITS failure (retry_days 1 and 3 after it), not from the day the
    case opened, whatever real time its attempts were made at."""
    real = Clock(START + timedelta(days=400))  # real time: far from the contact's clock
    policy = replace(POLICY, deactivation_threshold={})  # retries and reminders only
    debtor = seed_debtor(store, rail, policy=policy, test_clock=True)
    case_id = opened(store, debtor, flows, real)
    for days, kind in ((0, StepKind.REMIND), (1, StepKind.RETRY), (3, StepKind.RETRY)):  # the first invoice's
        _advance(store, debtor, days)
        assert step(store, debtor, case_id, kind, real, rail).stored.case.step is kind
    _advance(store, debtor, 31)  # the next month, billed: its charge fails too
    second = next(i for i in store.invoices_of(debtor.ctx.scope, debtor.contact_id) if i.id != debtor.invoice.id)
    failed_on = (START + timedelta(days=31)).date()
    attempt = collect_invoice(store, rail, debtor.ctx.scope, second.id, clock=real)
    assert attempt is not None and attempt.status.value == "failed" and attempt.made_on == failed_on

    decided = dunning.decide_case(store, debtor.ctx, case_id, clock=real)
    assert (decided.action, decided.stored.due) == ("wait", failed_on + timedelta(days=1))
    _advance(store, debtor, 32)
    retried = step(store, debtor, case_id, StepKind.RETRY, real, rail)
    assert retried.stored.case.retried >= {f"att_{second.id}_2"}
    assert (retried.action, retried.stored.due) == ("wait", failed_on + timedelta(days=3))
    made = {a.id: a.made_on for a in store.attempts_of(debtor.ctx.scope, debtor.contact_id)}
    assert made[f"att_{second.id}_2"] == failed_on + timedelta(days=1)


def test_an_exclusion_landing_before_the_deactivation_commits_stops_it(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff exclude the contact after the Deactivate task read its world and before it commits:
    the write loses (it is conditioned on the contact's version), the step decides again and, the
    contact excluded, deactivates nothing (found by an attacker: the service was deactivated, and
    stayed so, an excluded case only waiting)."""
    from billow.services import contacts

    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, flows)
    take_steps(store, debtor, case_id, rail, 2)
    real = dunning.read_world
    read: list[int] = []

    def world_then_exclude(*args: Any, **kwargs: Any) -> dunning.World:
        world = real(*args, **kwargs)
        if not read:
            read.append(1)
            contacts.update_contact(store, debtor.ctx, debtor.contact_id, {"dunning_excluded": True})
        return world

    monkeypatch.setattr(dunning, "read_world", world_then_exclude)
    after = step(store, debtor, case_id, StepKind.DEACTIVATE, Clock().days(2), rail)
    assert after.action == "wait"
    assert service_state(store, debtor) is ServiceState.EFFECTIVE


def test_an_operators_end_once_nothing_is_owed_leaves_the_case_to_end_itself_and_reactivate(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    """The debt is paid and the case's End step (which reactivates) is on its way; an operator's
    end landing first would leave the services off though nothing is owed (found by an attacker).
    Nothing owed, the operator's end only wakes the case: it ends by itself, reactivating."""
    from billow.services import dunning_cases

    debtor = seed_debtor(store, rail)
    case_id = opened(store, debtor, flows)
    take_steps(store, debtor, case_id, rail, 3)
    assert service_state(store, debtor) is ServiceState.NOT_EFFECTIVE
    pay(store, debtor, Clock().days(2))
    answered = dunning_cases.operate(
        store, lambda: flows, debtor.ctx, case_id, dunning_cases.OperatorStep.END, "done", Clock().days(2)
    )
    assert not answered.case.ended
    ended = step(store, debtor, case_id, StepKind.END, Clock().days(2), rail)
    assert ended.stored.case.ended
    assert service_state(store, debtor) is ServiceState.EFFECTIVE


def _save_card(store: DynamoStore, debtor: Debtor, method_id: str, clock: Clock) -> None:
    """A working card saved for the debtor as `POST .../payment-methods` records it (not made the
    default: the debtor has one)."""
    method = SavedPaymentMethod(
        method_id, debtor.contact_id, "fake", f"cus_{debtor.contact_id}", f"seti_{method_id}", "card",
        "visa", "4242", 12, 2034, clock.now(),
    )  # fmt: skip
    work = store.unit_of_work("card")
    work.save_payment_method(debtor.ctx.scope, method)
    work.commit()


def _reminded(store: DynamoStore, rail: FakeRail, flows: RecordingFlows) -> tuple[Debtor, str, Clock]:
    """A debtor's case, reminded on day 0, and a clock two hours later that day."""
    debtor, case_id = with_case(store, rail, flows)
    step(store, debtor, case_id, StepKind.REMIND, Clock(), rail)
    return debtor, case_id, Clock(Clock().now() + timedelta(hours=2))


def test_a_card_saved_not_as_default_is_tried_only_once_made_the_default(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id, later = _reminded(store, rail, flows)
    _save_card(store, debtor, "pm_card_visa", later)
    # The declining default would be charged: saving another card changes nothing.
    decided = dunning.decide_case(store, debtor.ctx, case_id, clock=later)
    assert (decided.action, decided.stored.due) == ("wait", clock.now().date() + timedelta(days=1))
    payment_methods.set_default(store, debtor.ctx, debtor.contact_id, "pm_card_visa")
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=later).action == "retry"
    retried = step(store, debtor, case_id, StepKind.RETRY, later, rail)
    attempts = store.attempts_of(debtor.ctx.scope, debtor.contact_id)
    assert [(a.number, a.method_ref, a.status) for a in attempts] == [
        (1, DECLINING, AttemptStatus.FAILED),
        (2, "pm_card_visa", AttemptStatus.SUCCEEDED),
    ]
    assert retried.action == "end"


def test_a_card_made_the_default_after_the_last_one_was_removed_is_tried_at_once(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    debtor, case_id, later = _reminded(store, rail, flows)
    contact = store.get_contact(debtor.ctx.scope, debtor.contact_id)
    assert contact is not None
    store.save_contact(debtor.ctx.scope, replace(contact, default_method_ref=None))  # the declining card removed
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=later).action == "wait"
    _save_card(store, debtor, "pm_card_visa", later)
    payment_methods.set_default(store, debtor.ctx, debtor.contact_id, "pm_card_visa")  # as saving the only card does
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=later).action == "retry"
    # One retry per new method: the same card declining would wait for the schedule.
    assert step(store, debtor, case_id, StepKind.RETRY, later, rail).action == "end"


def test_a_reminder_records_the_debt_what_the_invoices_owe_and_the_credit(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    reminded = step(store, debtor, case_id, StepKind.REMIND, clock, rail).stored.case.history[-1]
    usd = Money.parse("30.00", "USD")
    assert (reminded.owed, reminded.due, reminded.credit) == (usd, usd, Money.zero("USD"))


@pytest.mark.parametrize(
    ("settle", "why"),
    [
        (lambda store, debtor, clock: pay(store, debtor, clock), "paid"),
        (lambda store, d, c: receivables.void_invoice(store, d.ctx, d.invoice.id, "billed twice", clock=c), "voided"),
        (
            lambda store, d, c: receivables.mark_uncollectible(store, d.ctx, d.invoice.id, "gone", clock=c),
            "written_off",
        ),
    ],
)
def test_an_end_says_why_nothing_is_owed(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows, settle: Callable[..., object], why: str
) -> None:
    clock = Clock()
    debtor, case_id = with_case(store, rail, flows)
    take_steps(store, debtor, case_id, rail, 3)  # deactivated on day 2
    day2 = clock.days(2)
    settle(store, debtor, day2)
    ended = step(store, debtor, case_id, StepKind.END, day2, rail).stored.case.history[-1]
    assert ended.outcome.startswith(f"nothing owed ({why}); {debtor.service_id}: ")
    assert ended.why == why


def test_a_subscription_naming_the_new_card_has_it_tried_and_its_change_is_an_event(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    debtor, case_id, later = _reminded(store, rail, flows)
    _save_card(store, debtor, "pm_card_visa", later)
    scope = debtor.ctx.scope
    subscription = store.load_subscription(scope, debtor.contact_id, debtor.subscription_id)
    assert subscription is not None
    naming = replace(subscription, payment_method="pm_card_visa")
    work = store.unit_of_work("subscription")
    work.save_subscription(scope, naming, subscription.version)
    work.commit()
    assert dunning.decide_case(store, debtor.ctx, case_id, clock=later).action == "retry"
    change = Change(scope, debtor.contact_id, "k", "subscription", subscription, naming, 2, later.now())
    [event] = [e for e in events_of(change) if e.type == "subscription.payment_method_changed"]
    assert event.data == {"subscription_id": subscription.id, "payment_method": "pm_card_visa", "previous": None}
    assert event.type in DUNNING_WAKES
    same = Change(scope, debtor.contact_id, "k", "subscription", naming, naming, 3, later.now())
    assert [e.type for e in events_of(same)] == []


def _until_it_waits(store: DynamoStore, debtor: Debtor, case_id: str, clock: Clock, rail: FakeRail) -> None:
    """Every step due on `clock`'s day, as the flow takes them."""
    for _ in range(10):
        decided = dunning.decide_case(store, debtor.ctx, case_id, clock=clock)
        if decided.action in ("wait", "ended"):
            return
        step(store, debtor, case_id, StepKind(decided.action), clock, rail)
    raise AssertionError("never waits")


def test_a_clock_jumping_over_the_days_deactivates_and_cancels_as_going_day_by_day(
    store: DynamoStore, rail: FakeRail, flows: RecordingFlows
) -> None:
    clock = Clock()
    outcomes = []
    for key, days in (("daily", range(7)), ("jump", (0, 6))):
        debtor = seed_debtor(store, rail, clock=clock, key=key)
        case_id = opened(store, debtor, flows, clock)
        for n in days:
            _until_it_waits(store, debtor, case_id, clock.days(n), rail)
        stored = store.get_case(debtor.ctx.scope, case_id)
        assert stored is not None
        moves = [(s.kind, s.on) for s in stored.case.history if s.kind in (StepKind.DEACTIVATE, StepKind.CANCEL)]
        acted = sorted(
            (a.kind.name, a.on) for a in logged(store, debtor, "deactivate") + logged(store, debtor, "cancel")
        )
        documents = sorted((i.kind.value, i.total) for i in store.invoices_of(debtor.ctx.scope, debtor.contact_id))
        subscription = store.load_subscription(debtor.ctx.scope, debtor.contact_id, debtor.subscription_id)
        service = None if subscription is None else subscription.service(debtor.service_id)
        assert service is not None
        outcomes.append((moves, acted, documents, (service.state, service.state_since, service.end_date)))
    daily, jump = outcomes
    day2, day5 = Clock().days(2).now().date(), Clock().days(5).now().date()
    assert daily[0] == [(StepKind.DEACTIVATE, day2), (StepKind.CANCEL, day5)]
    assert daily[1] == [("cancel", day5), ("deactivate", day2)]
    assert daily[3][:2] == (ServiceState.CANCELLED, day5)
    assert jump == daily
