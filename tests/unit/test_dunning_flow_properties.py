"""Properties of the dunning FLOW over random interleavings, on the real use cases (moto): the
case opened by `open_for_invoice`, driven by `decide_case`, `take_step` and `park` as its Step
Functions execution drives it, woken by `wake`/`wake_contact` and by its test clock's advances
(`time_travel.run_advance`), while the contact's card declines, is fixed or replaced by a new one
(`payment_methods`), staff record payments of part or all of an invoice, apply credit, void an
invoice, deactivate and reactivate services, and tasks run twice or die midway (inside their
unit of work, after a charge). Charges go through collection to the fake rail (`tests.fake_rail`);
the state machine is `RecordingFlows` (`tests.dunning_support`). The pure rule has its own
properties (tests/unit/test_dunning_properties.py); these check what the use cases write.

Checked after every step, from the store and the rail:
1. each (invoice, attempt number) made at most one charge on the rail, no invoice was paid by
   two charges, and no invoice has two live attempts;
2. dunning deactivates a service only when the debt (read from the store as the deactivation
   commits) is over the threshold, past the case's grace period;
3. a flow run to its park with nothing owed has ended its case, and a case ends only with
   nothing owed;
4. never a deactivation once the debt was paid: what the deactivation commits over is owed, and
   each service it stops is billed by an invoice in debt;
5. a service staff deactivated is never reactivated by dunning.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from billow.domain.actions import ActionStatus, Requester
from billow.domain.actions.activate import ACTIVATE
from billow.domain.actions.deactivate import DEACTIVATE
from billow.domain.actions.regret import REGRET
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.collection import AttemptStatus
from billow.domain.dunning import DunningPolicy, StepKind
from billow.domain.errors import DomainError
from billow.domain.invoices import Invoice, InvoiceKind, PaymentMethod
from billow.domain.money import Money, sum_money
from billow.domain.receivables import balances
from billow.domain.tenants import TenantSettings
from billow.services import actions, catalog, contacts, dunning, invoices, ordering, payment_methods, receivables
from billow.services.actions import ActionRequest
from billow.services.billing import InvoiceNumbers
from billow.services.collection import collect_invoice, end_attempts_covering
from billow.services.context import TenantContext, keyed_ids
from billow.services.dunning import Decided
from billow.services.time_travel import request_advance, run_advance
from billow.storage.repository import DynamoStore, DynamoUnitOfWork
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.dunning_support import RecordingFlows
from tests.fake_rail import DECLINING, EXPIRED, Crash, FakeRail
from tests.support import RecordingInvoker, new_moto_table

START = datetime(2025, 3, 3, 10, tzinfo=UTC)
THRESHOLD = Money.parse("25.00", "USD")
POLICY = DunningPolicy(
    retry_days=(1, 2, 4),
    reminder_days=(0, 2),
    grace_days=1,
    deactivation_threshold={"USD": THRESHOLD},
    cancel_after_days=3,
)
GOOD = "pm_card_visa"
STEPS = {k.value: k for k in (StepKind.RETRY, StepKind.REMIND, StepKind.DEACTIVATE, StepKind.CANCEL, StepKind.END)}
COUNTER = itertools.count()


class Ticking:
    """Real time: a second more at each reading (the contact's day is its test clock's)."""

    def __init__(self) -> None:
        self.instant = START

    def now(self) -> datetime:
        self.instant += timedelta(seconds=1)
        return self.instant


@dataclass
class Committed:
    """A dunning step's transaction as it committed, with the world read just before."""

    kind: str
    case_id: str
    day: date
    owed: Money
    billed_in_debt: frozenset[str]
    opened_on: date
    grace_days: int
    services: frozenset[str] = frozenset()


@dataclass
class Hooks:
    before: list[tuple[str, Any]] = field(default_factory=list)
    """(what-substring, callable) run once just before a commit whose description holds it."""
    after: list[tuple[str, Any]] = field(default_factory=list)
    observe: Any = None


class HookedWork(DynamoUnitOfWork):
    def __init__(self, what: str, due_shards: int, hooks: Hooks) -> None:
        super().__init__(what, due_shards)
        self.hooks = hooks

    def commit(self) -> None:
        for hook_list in (self.hooks.before,):
            for entry in list(hook_list):
                if entry[0] in self.what:
                    hook_list.remove(entry)
                    entry[1]()
        seen = self.hooks.observe(self.what, "before") if self.hooks.observe else None
        super().commit()
        if self.hooks.observe:
            self.hooks.observe(self.what, "after", seen)
        for entry in list(self.hooks.after):
            if entry[0] in self.what:
                self.hooks.after.remove(entry)
                entry[1]()


class HookedStore(DynamoStore):
    """The real store, whose units of work run the test's hooks around their commit."""

    def __init__(self, hooks: Hooks) -> None:
        super().__init__(due_shards=4)
        self.hooks = hooks

    def unit_of_work(self, what: str) -> DynamoUnitOfWork:
        return HookedWork(what, self.due_shards, self.hooks)


class DunningFlow(RuleBasedStateMachine):
    tmp: Path

    def __init__(self) -> None:
        super().__init__()
        new_moto_table()  # each example on an empty table: moto slows down with every item it holds
        n = next(COUNTER)
        self.hooks = Hooks(observe=self._observe)
        self.store = HookedStore(self.hooks)
        self.rail = FakeRail(self.tmp / f"rail-{n}.db")
        self.flows = RecordingFlows(self.tmp / f"flows-{n}.db")
        self.clock = Ticking()
        self.numbers = InvoiceNumbers(self.store)
        self.refs = itertools.count()
        self.tokens = itertools.count()
        self.committed: list[Committed] = []
        self.staff_stopped: set[str] = set()
        self.reactivated_seen: set[str] = set()
        self.tenant = f"t{n}"
        self.flow_calls = 0

    # -- the world ------------------------------------------------------------------------------------
    @initialize()
    def seed(self) -> None:
        settings_ = TenantSettings(self.tenant, "Tenant", dunning=POLICY)
        allowing = replace(settings_.subscriptions, debt_threshold={"USD": Money.parse("1000.00", "USD")})
        settings_ = self.store.put_settings(replace(settings_, subscriptions=allowing))
        self.ctx = ctx = TenantContext(self.tenant, "test", settings_)
        new_id = keyed_ids(self.tenant, "debtor")
        contact = contacts.create_contact(
            self.store, ctx, name="Ann", email="ann@example.com", billing_address=None, classification=None,
            credit_limit=None, preferred_payment_method=None, clock=self.clock, new_id=new_id,
        )  # fmt: skip
        self.contact_id = contact.id
        contacts.create_test_clock(self.store, ctx, contact.id, START)
        terms = [catalog.PriceTermsInput("30.00", "USD", Cycle.MONTH, BillingModel.ADVANCE)]
        product = catalog.create_product(self.store, ctx, name="Pro", description="", terms=terms, new_id=new_id)
        items = [ordering.OrderItemInput(product.id, product.terms[0].id)] * 2
        ordering.place_order(self.store, ctx, contact.id, items, None, "order-a", self.clock, new_id, self.numbers)
        debts = self.store.invoices_of(ctx.scope, contact.id)
        stored = self.store.get_contact(ctx.scope, contact.id)
        assert stored is not None
        self.store.save_contact(
            ctx.scope, replace(stored, gateway_customer_ref=f"cus_{contact.id}", default_method_ref=DECLINING)
        )
        self.invoice_ids = [i.id for i in debts]
        for invoice in debts:
            attempt = collect_invoice(self.store, self.rail, ctx.scope, invoice.id, clock=self.clock)
            assert attempt is not None and attempt.status is AttemptStatus.FAILED
        self.services = sorted(s.id for sub in self.store.subscriptions_of(ctx.scope, contact.id) for s in sub.services)
        self._events()
        assert self._case() is not None

    # -- reading it ----------------------------------------------------------------------------------
    def _today(self) -> date:
        return contacts.contact_today(self.store, self.ctx, self.contact_id, self.clock)

    def _invoices(self) -> list[Invoice]:
        return self.store.invoices_of(self.ctx.scope, self.contact_id)

    def _in_debt(self, today: date) -> list[Invoice]:
        """The invoices in debt, read from the store: owed, and a charge of it failed or overdue."""
        attempts = self.store.attempts_of(self.ctx.scope, self.contact_id)
        failed = {
            i
            for a in attempts
            if a.status in (AttemptStatus.FAILED, AttemptStatus.NOT_COLLECTABLE)
            for i in a.covered_ids()
        }
        return [
            i
            for i in self._invoices()
            if i.kind is InvoiceKind.INVOICE
            and i.owed
            and i.amount_due.minor > 0
            and (i.id in failed or today > i.due_date)
        ]

    def _owed(self, today: date) -> Money:
        debt = sum_money([i.amount_due for i in self._in_debt(today)], "USD")
        balance = balances(self._invoices()).get("USD")
        if balance is not None:
            debt -= balance.credit
        return debt if not debt.is_negative else Money.zero("USD")

    def _case(self) -> Any:
        return self.store.open_case_of(self.ctx.scope, self.contact_id, "USD")

    def _observe(self, what: str, phase: str, seen: Committed | None = None) -> Committed | None:
        kind = what.rsplit(": ", 1)[-1]
        if not what.startswith("dunning case ") or kind not in ("deactivate", "end", "cancel"):
            return None
        case_id = what.removeprefix("dunning case ").rsplit(":", 1)[0]
        if phase == "before":
            today = self._today()
            debt = self._in_debt(today)
            billed = frozenset(line.service_id for i in debt for line in i.lines if line.service_id)
            stored = self.store.get_case(self.ctx.scope, case_id)
            assert stored is not None
            case = stored.case
            return Committed(kind, case_id, today, self._owed(today), billed, case.opened_on, case.policy.grace_days)
        assert seen is not None
        stored = self.store.get_case(self.ctx.scope, case_id)
        assert stored is not None
        last = stored.case.history[-1]
        self.committed.append(replace(seen, services=frozenset(t for t in last.targets if t.startswith("svc"))))
        return None

    # -- events, as the dunning rule's consumer and the collector get them --------------------------
    def _events(self, twice: bool = False) -> None:
        today = self._today()
        for _ in range(2 if twice else 1):
            for invoice in self._in_debt(today):
                dunning.open_for_invoice(self.store, self.ctx, invoice.id, self.flows, clock=self.clock)
            dunning.wake_contact(self.store, self.ctx, self.contact_id, lambda: self.flows, clock=self.clock)
        self._run_if_woken()

    def _run_if_woken(self) -> None:
        """The execution resumed (or started) by what just happened runs on to its next park."""
        calls = len(self.flows.resumed) + len(self.flows.started)
        if calls != self.flow_calls and self._has_case():
            self.flow_runs(False, None)
        self.flow_calls = len(self.flows.resumed) + len(self.flows.started)

    def _pay(self, invoice: Invoice, amount: Money) -> None:
        spec = invoices.ManualPaymentInput(
            amount.amount_str(), "USD", PaymentMethod.BANK_TRANSFER, f"wire-{next(self.refs)}", self._today()
        )
        invoices.record_manual_payment(self.store, self.ctx, invoice.id, spec, self.clock)

    def _pay_all(self) -> None:
        for invoice in self._invoices():
            if invoice.kind is InvoiceKind.INVOICE and invoice.owed and invoice.amount_due.minor > 0:
                self._pay(invoice, invoice.amount_due)

    def _step(self, case_id: str, kind: StepKind) -> Decided:
        return dunning.take_step(
            self.store, self.ctx, case_id, kind, clock=self.clock, gateway=self.rail, numbers=self.numbers
        )

    def _decide(self, case_id: str) -> Decided:
        return dunning.decide_case(self.store, self.ctx, case_id, clock=self.clock)

    @property
    def _case_id(self) -> str:
        return self._case().id

    def _has_case(self) -> bool:
        return self._case() is not None

    # -- the card ------------------------------------------------------------------------------------
    @rule(card=st.sampled_from([DECLINING, EXPIRED, GOOD]))
    def card_changes(self, card: str) -> None:
        """The card on file starts declining (softly or hard) or is fixed."""
        contact = self.store.get_contact(self.ctx.scope, self.contact_id)
        assert contact is not None
        self.store.save_contact(self.ctx.scope, replace(contact, default_method_ref=card))

    @rule(works=st.booleans())
    def new_card_saved(self, works: bool) -> None:
        setup = payment_methods.start_setup(
            self.store, self.ctx, self.contact_id, self.rail, self.clock, request_id=f"setup-{next(self.refs)}"
        )
        method, _ = payment_methods.save_from_setup(
            self.store, self.ctx.scope, self.contact_id, setup.ref, self.rail, self.clock
        )
        payment_methods.set_default(self.store, self.ctx, self.contact_id, method.id)
        if not works:
            self.card_changes(DECLINING)
        self._events()

    # -- money -----------------------------------------------------------------------------------------
    @rule(which=st.integers(0, 1), whole=st.sampled_from([False, False, False, True]), cents=st.integers(1, 1500))
    def manual_payment(self, which: int, whole: bool, cents: int) -> None:
        invoice = self.store.get_invoice(self.ctx.scope, self.invoice_ids[which % len(self.invoice_ids)])
        assert invoice is not None
        if not invoice.owed or invoice.amount_due.minor <= 0:
            return
        amount = invoice.amount_due if whole else Money(min(cents, invoice.amount_due.minor), "USD")
        self._pay(invoice, amount)
        self._events()

    def _credit_note(self) -> Invoice:
        """A credit note of 10.00 with credit left: made when first needed (an extra service ordered,
        paid by transfer and regretted), as it costs a few writes."""
        notes = [i for i in self._invoices() if i.total.is_negative and i.credit_remaining.minor > 0]
        if notes:
            return notes[0]
        new_id = keyed_ids(self.tenant, f"extra-{next(self.refs)}")
        small = [catalog.PriceTermsInput("10.00", "USD", Cycle.MONTH, BillingModel.ADVANCE)]
        extra = catalog.create_product(self.store, self.ctx, name="Extra", description="", terms=small, new_id=new_id)
        items = [ordering.OrderItemInput(extra.id, extra.terms[0].id)]
        key = f"order-{next(self.refs)}"
        ordering.place_order(self.store, self.ctx, self.contact_id, items, None, key, self.clock, new_id, self.numbers)
        (bill,) = [i for i in self._invoices() if i.id not in self.invoice_ids and i.owed]
        self._pay(bill, bill.amount_due)
        ((subscription, service),) = [
            (s, v)
            for s in self.store.subscriptions_of(self.ctx.scope, self.contact_id)
            for v in s.services
            if v.product_id == extra.id
        ]
        regret = ActionRequest(REGRET, service_id=service.id, reason="changed my mind")
        actions.request_action(
            self.store, self.ctx, subscription.id, regret, clock=self.clock, numbers=self.numbers, new_id=new_id
        )
        (note,) = [i for i in self._invoices() if i.total.is_negative and i.credit_remaining.minor > 0]
        return note

    @rule(which=st.integers(0, 1), cents=st.none() | st.integers(1, 1000))
    def credit_applied(self, which: int, cents: int | None) -> None:
        invoice = self.store.get_invoice(self.ctx.scope, self.invoice_ids[which % len(self.invoice_ids)])
        assert invoice is not None
        if not invoice.owed or invoice.amount_due.minor <= 0:
            return
        notes = [self._credit_note()]
        amount = (
            None
            if cents is None
            else Money(min(cents, notes[0].credit_remaining.minor, invoice.amount_due.minor), "USD")
        )
        receivables.apply_credit_note(
            self.store, self.ctx, notes[0].id, invoice.id, None if amount is None else amount.amount_str(),
            None if amount is None else "USD", self.clock, keyed_ids(self.tenant, f"cap-{next(self.refs)}"),
        )  # fmt: skip
        self._events()

    @rule(which=st.integers(0, 1))
    def invoice_voided(self, which: int) -> None:
        try:
            receivables.void_invoice(
                self.store,
                self.ctx,
                self.invoice_ids[which % len(self.invoice_ids)],
                "billed by mistake",
                clock=self.clock,
            )
        except DomainError:
            return  # something was paid on it: not voidable
        end_attempts_covering(
            self.store, self.rail, self.ctx.scope, self.invoice_ids[which % len(self.invoice_ids)], clock=self.clock
        )
        self._events()

    # -- staff -----------------------------------------------------------------------------------------
    @rule(which=st.integers(0, 1), stop=st.booleans())
    def staff_action(self, which: int, stop: bool) -> None:
        service_id = self.services[which]
        (subscription,) = [
            s for s in self.store.subscriptions_of(self.ctx.scope, self.contact_id) if s.service(service_id) is not None
        ]
        request = ActionRequest(DEACTIVATE if stop else ACTIVATE, service_id=service_id, reason="staff")
        try:
            result = actions.request_action(
                self.store, self.ctx, subscription.id, request, clock=self.clock, numbers=self.numbers,
                new_id=keyed_ids(self.tenant, f"staff-{next(self.refs)}"),
            )  # fmt: skip
        except DomainError:
            return
        if result.action.status is ActionStatus.EXECUTED:
            (self.staff_stopped.add if stop else self.staff_stopped.discard)(service_id)
        self._events()

    # -- time --------------------------------------------------------------------------------------------
    @rule(days=st.integers(0, 4), twice=st.booleans())
    def clock_advances(self, days: int, twice: bool) -> None:
        """The contact's test clock advanced (its run delivered twice, maybe), waking its cases;
        then the invoices it made overdue are announced."""
        test_clock = contacts.get_test_clock(self.store, self.ctx, self.contact_id)
        to = test_clock.frozen_time + timedelta(days=days)
        request_advance(self.store, self.ctx, self.contact_id, to, RecordingInvoker())

        def woken() -> object:
            return dunning.wake_contact(self.store, self.ctx, self.contact_id, lambda: self.flows, clock=self.clock)

        for _ in range(2 if twice else 1):
            run_advance(self.store, self.ctx, self.contact_id, to, self.numbers, wake=woken)
        self._run_if_woken()
        self._events()

    # -- the flow ------------------------------------------------------------------------------------------
    @rule(twice=st.booleans())
    def events_delivered(self, twice: bool) -> None:
        self._events(twice)

    @precondition(lambda self: self._has_case())
    @rule(twice=st.booleans())
    def wake_delivered(self, twice: bool) -> None:
        for _ in range(2 if twice else 1):
            dunning.wake(self.store, self.ctx, self._case_id, self.flows, clock=self.clock)
        self._run_if_woken()

    @precondition(lambda self: self._has_case())
    @rule(woken_between=st.booleans(), paid_during=st.sampled_from([None, "deactivate", "end", "retry", "remind"]))
    def flow_runs(self, woken_between: bool, paid_during: str | None) -> None:
        """The execution's own loop: decide, take each decided step, park (a wake coming between
        the last decision and the park, maybe; everything paid while a step commits, maybe)."""
        if paid_during is not None:
            self.hooks.before.append((f": {paid_during}", self._pay_all))
        case_id = self._case_id
        decided = self._decide(case_id)
        for _ in range(20):
            for _ in range(10):  # a step is taken once: the next decision is another
                if decided.action not in STEPS:
                    break
                decided = self._step(case_id, STEPS[decided.action])
            if decided.action == "ended":
                break
            assert decided.action == "wait", decided.action
            if woken_between:
                dunning.wake(self.store, self.ctx, case_id, self.flows, clock=self.clock)
                woken_between = False
            if dunning.park(
                self.store, self.ctx, case_id, decided.stored.wake_seq, f"tok-{next(self.tokens)}", self.flows
            ):
                break
            decided = self._decide(case_id)  # resumed at once: decide again
        else:
            raise AssertionError("the flow never parked")
        self.hooks.before.clear()
        # 3. Run to its park with nothing owed, the case has ended.
        if self._owed(self._today()).is_zero:
            stored = self.store.get_case(self.ctx.scope, case_id)
            assert stored is not None and stored.case.ended, "nothing owed, yet the case runs on"

    @precondition(lambda self: self._has_case())
    @rule()
    def step_twice(self) -> None:
        case_id = self._case_id
        decided = self._decide(case_id)
        if decided.action in STEPS:
            self._step(case_id, STEPS[decided.action])
            self._step(case_id, STEPS[decided.action])

    @precondition(lambda self: self._has_case())
    @rule(where=st.sampled_from(["before", "after", "rail"]), k=st.integers(1, 3))
    def step_crashes(self, where: str, k: int) -> None:
        """A step task dies inside its unit of work (before or after it commits) or just after a
        rail request (its charge created or confirmed); the state machine runs it again."""
        case_id = self._case_id
        decided = self._decide(case_id)
        if decided.action not in STEPS:
            return
        kind = STEPS[decided.action]

        def crash() -> None:
            raise Crash(f"{kind} task died")

        if where == "rail":
            self.rail.crash_after = self.rail.requests + k
        else:
            getattr(self.hooks, where).append((f": {kind.value}", crash))
        try:
            self._step(case_id, kind)
        except Crash:
            pass
        finally:
            self.rail.crash_after = None
            self.hooks.before.clear()
            self.hooks.after.clear()
        self._step(case_id, kind)

    def teardown(self) -> None:
        for kind in sorted({c.kind for c in self.committed if c.services or c.kind == "end"}):
            event(f"a case's {kind} committed")

    # -- invariants ------------------------------------------------------------------------------------------
    @invariant()
    def one_charge_per_attempt(self) -> None:
        if not hasattr(self, "ctx"):
            return
        per_attempt: dict[str, int] = {}
        for charge in self.rail.charges():
            per_attempt[charge.metadata["attempt_id"]] = per_attempt.get(charge.metadata["attempt_id"], 0) + 1
        assert all(n == 1 for n in per_attempt.values()), per_attempt
        assert all(n == 1 for n in self.rail.succeeded_per_invoice().values()), self.rail.succeeded_per_invoice()
        live: dict[str, int] = {}
        for attempt in self.store.attempts_of(self.ctx.scope, self.contact_id):
            if attempt.live:
                live[attempt.invoice_id] = live.get(attempt.invoice_id, 0) + 1
        assert all(n == 1 for n in live.values()), live

    @invariant()
    def deactivated_only_over_the_threshold_past_grace(self) -> None:
        for done in self.committed:
            if done.kind == "deactivate" and done.services:
                assert done.owed > THRESHOLD, done
                assert done.day >= done.opened_on + timedelta(days=done.grace_days), done

    @invariant()
    def never_deactivated_after_the_debt_was_paid(self) -> None:
        for done in self.committed:
            if done.kind == "deactivate" and done.services:
                assert not done.owed.is_zero, done
                assert done.services <= done.billed_in_debt, done

    @invariant()
    def ended_only_with_nothing_owed(self) -> None:
        for done in self.committed:
            if done.kind == "end":
                assert done.owed.is_zero, done

    @invariant()
    def staff_stops_are_never_undone_by_dunning(self) -> None:
        if not hasattr(self, "ctx"):
            return
        for subscription in self.store.subscriptions_of(self.ctx.scope, self.contact_id):
            for action in self.store.actions_of(self.ctx.scope, self.contact_id, subscription.id):
                ours = action.by is Requester.SYSTEM and action.id.startswith("act_dun_")
                executed = action.kind.name == ACTIVATE.name and action.status is ActionStatus.EXECUTED
                if ours and executed and action.id not in self.reactivated_seen:
                    self.reactivated_seen.add(action.id)
                    assert action.service_id not in self.staff_stopped, action


def test_the_dunning_flow_over_random_interleavings(moto_table: str, tmp_path: Path) -> None:
    DunningFlow.tmp = tmp_path
    run_state_machine_as_test(
        DunningFlow,
        settings=settings(
            max_examples=8,
            stateful_step_count=16,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
