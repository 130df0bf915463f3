"""A test clock against the writers that depend on it, on DynamoDB Local: attaching a clock, advancing
it, placing orders and changing a service to another cycle, from separate processes at once (as
separate Lambda containers), and with the competing write injected between one writer's reads and
its write. Whatever interleaves, one side loses cleanly and re-reads: no subscription is started at
a time that is no longer its contact's, and no advance bills more than its bound allows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import pytest
from billow.domain.actions.change import CHANGE, ChangeAsked
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, PriceTerms, Product
from billow.domain.errors import DomainError
from billow.domain.invoices import Invoice
from billow.domain.money import Money
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.local.dynamodb import DynamoDBLocal
from billow.services.actions import ActionRequest, request_action
from billow.services.billing import InvoiceNumbers
from billow.services.contacts import create_contact, create_test_clock
from billow.services.context import TenantContext
from billow.services.ordering import OrderItemInput, place_order
from billow.services.tenants import tenant_context
from billow.services.time_travel import request_advance, run_advance
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

from tests.support import RecordingInvoker, separate_processes

pytestmark = pytest.mark.integration

TENANT = "t1"
YEARLY = PriceTerms("terms_y", "prod_a", Money.parse("120.00", "USD"), Cycle.YEAR, BillingModel.ADVANCE)
WEEKLY = PriceTerms("terms_w", "prod_a", Money.parse("7.00", "USD"), Cycle.WEEK, BillingModel.ADVANCE)
PRODUCT = Product("prod_a", "Pro").with_terms(YEARLY).with_terms(WEEKLY)
REAL_NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # the real clock's time in these tests
FROZEN = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)  # the clock a contact is attached to
ON_CLOCK = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # where the clock of a contact already on one stands
FAR = datetime(2028, 1, 5, 9, 0, tzinfo=UTC)  # the bound of one advance with a yearly subscription only


class RealClock:
    def now(self) -> datetime:
        return REAL_NOW


def _ids(prefix: str) -> Callable[[str], str]:
    counter = iter(range(1000))
    return lambda kind: f"{kind}_{prefix}_{next(counter)}"


def _context(store: DynamoStore) -> TenantContext:
    return tenant_context(store, TENANT, "test")


def _order(store: DynamoStore, contact_id: str, terms: PriceTerms, reference: str | None = None) -> None:
    place_order(
        store,
        _context(store),
        contact_id,
        [OrderItemInput(PRODUCT.id, terms.id)],
        None,
        reference,
        RealClock(),
        _ids(uuid4().hex[:12]),
        InvoiceNumbers(store),
    )


def _advance(store: DynamoStore, contact_id: str, to: datetime = FAR) -> None:
    request_advance(store, _context(store), contact_id, to, RecordingInvoker())


def _change_to_weekly(store: DynamoStore, contact_id: str) -> None:
    held = store.subscriptions_of(_context(store).scope, contact_id)
    (yearly,) = [s for s in held if s.key.cycle is Cycle.YEAR]
    # The service the client knows, wherever it is now: another process's change may have moved it
    # out of the yearly subscription already (then this request finds it gone there: a 404).
    (service_id,) = {service.id for subscription in held for service in subscription.services}
    request = ActionRequest(CHANGE, service_id, params=ChangeAsked(PRODUCT.id, WEEKLY.id))
    request_action(
        store,
        _context(store),
        yearly.id,
        request,
        clock=RealClock(),
        numbers=InvoiceNumbers(store),
        new_id=_ids(uuid4().hex[:12]),
    )


def _attach(store: DynamoStore, contact_id: str) -> None:
    create_test_clock(store, _context(store), contact_id, FROZEN)


ROLES: dict[str, Callable[[DynamoStore, str], None]] = {
    "clock": _attach,
    "order": lambda store, contact_id: _order(store, contact_id, YEARLY, reference="r"),
    "advance": _advance,
    "weekly order": lambda store, contact_id: _order(store, contact_id, WEEKLY),
    "change": _change_to_weekly,
}


def seed(store: DynamoStore, contacts: int, *, on_clock: bool) -> list[str]:
    """A tenant with the product, and `contacts` test-mode contacts; `on_clock`: each on a clock at
    ON_CLOCK with a yearly subscription (so one advance may reach FAR)."""
    store.put_settings(TenantSettings(TENANT, TENANT))
    work = store.unit_of_work("seed")
    work.add_product(TENANT, PRODUCT)
    work.commit()
    ctx = _context(store)
    ids = []
    for n in range(contacts):
        contact = create_contact(
            store,
            ctx,
            name=f"Contact {n}",
            email=f"c{n}@example.com",
            billing_address=None,
            classification=None,
            credit_limit={},
            preferred_payment_method=None,
            clock=RealClock(),
            new_id=lambda kind, n=n: f"{kind}_{n}",  # type: ignore[misc]
        )
        if on_clock:
            create_test_clock(store, ctx, contact.id, ON_CLOCK)
            _order(store, contact.id, YEARLY)
        ids.append(contact.id)
    return ids


def _play(table: str, endpoint: str, role: str, contacts: list[str], barrier: Any, results: Any) -> None:
    """One process (a separate Lambda container) playing `role` on each contact in turn, all
    processes released at once for each contact."""
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    store = DynamoStore()
    for contact_id in contacts:
        barrier.wait(60)
        try:
            ROLES[role](store, contact_id)
            outcome = "ok"
        except DomainError as refused:
            outcome = refused.code
        except Exception as crash:  # reported, so the race fails with it instead of waiting on the queue
            outcome = f"crashed: {crash!r}"
        results.put((contact_id, role, outcome))


def race(local_table: str, endpoint: str, roles: list[str], contacts: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Run each role in its own process against every contact; each contact's outcomes."""
    spawn = separate_processes()
    barrier = spawn.Barrier(len(roles))
    results = spawn.Queue()
    processes = [
        spawn.Process(target=_play, args=(local_table, endpoint, role, contacts, barrier, results)) for role in roles
    ]
    for process in processes:
        process.start()
    outcomes: dict[str, list[tuple[str, str]]] = {c: [] for c in contacts}
    for _ in range(len(roles) * len(contacts)):
        contact_id, role, outcome = results.get(timeout=300)
        outcomes[contact_id].append((role, outcome))
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * len(roles)
    return outcomes


def inject_after(store: DynamoStore, method: str, competing: Callable[[], None], *, before: bool = False) -> None:
    """The competing write runs once, right after `store.<method>` first returns (`before`: just
    before it is first called): another process's request landing between this request's reads
    and its write."""
    original = getattr(store, method)
    fired: list[bool] = []

    def compete_once(*args: Any, **kwargs: Any) -> Any:
        if before and not fired:
            fired.append(True)
            competing()
        result = original(*args, **kwargs)
        if not fired:
            fired.append(True)
            competing()
        return result

    setattr(store, method, compete_once)


def subscriptions(store: DynamoStore, contact_id: str, cycle: Cycle) -> list[Subscription]:
    return [s for s in store.subscriptions_of(_context(store).scope, contact_id) if s.key.cycle is cycle]


def invoices_of(store: DynamoStore, contact_id: str, cycle: Cycle) -> list[Invoice]:
    ids = {s.id for s in subscriptions(store, contact_id, cycle)}
    return [i for i in store.invoices_of(_context(store).scope, contact_id) if i.subscription_id in ids]


def finish_advance(store: DynamoStore, contact_id: str) -> None:
    """Deliver the clock-advance event, as the clock-advance function would."""
    clock = store.get_clock(_context(store).scope, contact_id)
    assert clock is not None
    run_advance(store, _context(store), contact_id, clock.frozen_time, InvoiceNumbers(store))


def day(instant: datetime) -> date:
    return instant.date()


# -- 1. attaching a clock while the contact's first order comes in ---------------------------------


def check_attached_or_refused(store: DynamoStore, contact_id: str, outcomes: list[tuple[str, str]]) -> None:
    """Either the clock came first and the order started on its day, or the order came first and
    every clock request was refused."""
    clock = store.get_clock(_context(store).scope, contact_id)
    (subscription,) = store.subscriptions_of(_context(store).scope, contact_id)
    (invoice,) = store.invoices_of(_context(store).scope, contact_id)
    clocks = {outcome for role, outcome in outcomes if role == "clock"}
    assert {outcome for role, outcome in outcomes if role == "order"} <= {"ok"}, outcomes
    if clock is not None:
        assert clocks == {"ok"}, outcomes
        assert subscription.test_clock and invoice.issue_date == invoice.period.start == day(FROZEN), outcomes
    else:
        assert clocks == {"test_clock.after_ordering"}, outcomes
        assert not subscription.test_clock and invoice.issue_date == day(REAL_NOW), outcomes


def test_clocks_and_first_orders_from_separate_processes_at_once(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    store = DynamoStore()
    contacts = seed(store, 4, on_clock=False)

    outcomes = race(local_table, dynamodb_local.endpoint, ["clock", "order"] * 4, contacts)

    for contact_id in contacts:
        check_attached_or_refused(store, contact_id, outcomes[contact_id])


def test_an_order_between_a_clock_s_reads_and_its_write_refuses_the_clock(local_table: str) -> None:
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=False)
    inject_after(store, "subscriptions_of", lambda: _order(DynamoStore(), contact_id, YEARLY, "r"))

    with pytest.raises(DomainError) as refused:
        create_test_clock(store, _context(store), contact_id, FROZEN)

    assert refused.value.code == "test_clock.after_ordering"
    check_attached_or_refused(store, contact_id, [("clock", refused.value.code), ("order", "ok")])


def test_a_clock_between_an_order_s_reads_and_its_write_starts_the_order_on_the_clock(local_table: str) -> None:
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=False)
    inject_after(store, "get_clock", lambda: _attach(DynamoStore(), contact_id))

    _order(store, contact_id, YEARLY, "r")

    check_attached_or_refused(store, contact_id, [("clock", "ok"), ("order", "ok")])


# -- 2. an advance while orders (or a move) start a subscription of a shorter cycle ------------------


def check_bounded(store: DynamoStore, contact_id: str, outcomes: list[tuple[str, str]]) -> None:
    """The weekly subscription was started either before the advance, which was then refused as
    too far for a weekly cycle, or at the clock's new day: its invoices cover one week, never the
    two years a yearly bound allows."""
    advanced = ("advance", "ok") in outcomes
    assert advanced or ("advance", "test_clock.advance_too_far") in outcomes, outcomes
    if advanced:
        finish_advance(store, contact_id)
    clock = store.get_clock(_context(store).scope, contact_id)
    assert clock is not None and clock.frozen_time == (FAR if advanced else ON_CLOCK)
    weekly = invoices_of(store, contact_id, Cycle.WEEK)
    assert weekly, outcomes
    assert {i.period.start for i in weekly} == {day(clock.frozen_time)}, (outcomes, len(weekly))


@pytest.mark.parametrize(
    ("competing", "count", "refusals"),
    [
        # An order may lose to the other orders' writes more often than it retries: a clean 409.
        ("weekly order", 6, {"resource.concurrent_modification"}),
        # Once one change moved the service, the others find it gone from the yearly subscription.
        ("change", 3, {"resource.not_found", "resource.concurrent_modification"}),
    ],
)
def test_an_advance_and_new_weekly_subscriptions_from_separate_processes_at_once(
    local_table: str, dynamodb_local: DynamoDBLocal, competing: str, count: int, refusals: set[str]
) -> None:
    store = DynamoStore()
    contacts = seed(store, 3, on_clock=True)

    outcomes = race(local_table, dynamodb_local.endpoint, ["advance"] + [competing] * count, contacts)

    for contact_id in contacts:
        done = [outcome for role, outcome in outcomes[contact_id] if role == competing]
        assert "ok" in done and set(done) <= {"ok"} | refusals, outcomes[contact_id]
        check_bounded(store, contact_id, outcomes[contact_id])


@pytest.mark.parametrize("competing", ["weekly order", "change"])
def test_a_new_weekly_subscription_between_an_advance_s_reads_and_its_write_refuses_it(
    local_table: str, competing: str
) -> None:
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=True)
    inject_after(store, "subscriptions_of", lambda: ROLES[competing](DynamoStore(), contact_id))

    with pytest.raises(DomainError) as refused:
        _advance(store, contact_id)

    assert refused.value.code == "test_clock.advance_too_far"
    check_bounded(store, contact_id, [("advance", refused.value.code), (competing, "ok")])


@pytest.mark.parametrize("competing", ["weekly order", "change"])
def test_an_advance_between_a_writer_s_reads_and_its_write_makes_it_start_on_the_new_day(
    local_table: str, competing: str
) -> None:
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=True)
    inject_after(store, "get_clock", lambda: _advance(DynamoStore(), contact_id))

    ROLES[competing](store, contact_id)

    check_bounded(store, contact_id, [("advance", "ok"), (competing, "ok")])


def test_a_pending_change_to_a_shorter_cycle_bounds_the_advance(local_table: str) -> None:
    """Not a race: an advance executing a scheduled change to weekly terms starts a weekly
    subscription and bills it up to the clock's new day, so the change bounds the advance too."""
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=True)
    (yearly,) = subscriptions(store, contact_id, Cycle.YEAR)
    request = ActionRequest(
        CHANGE, yearly.services[0].id, on=date(2026, 1, 12), params=ChangeAsked(PRODUCT.id, WEEKLY.id)
    )
    request_action(
        store, _context(store), yearly.id, request, clock=RealClock(), numbers=InvoiceNumbers(store), new_id=_ids("s")
    )

    with pytest.raises(DomainError) as refused:
        _advance(store, contact_id)
    assert refused.value.code == "test_clock.advance_too_far"
    _advance(store, contact_id, datetime(2026, 1, 19, 9, 0, tzinfo=UTC))  # two weeks
    finish_advance(store, contact_id)
    weekly = sorted(i.period.start for i in invoices_of(store, contact_id, Cycle.WEEK))
    assert weekly == [date(2026, 1, 12), date(2026, 1, 19)]


def test_a_change_whose_billing_lost_to_an_advance_acts_on_the_new_day(local_table: str) -> None:
    """The change request finds a renewal due (the clock was advanced a year, its billing not yet
    run) and loses that billing write to the run and a second advance: billing reads the moved
    subscription back and finds nothing due on the old day, and the change must not be executed
    on that day either (a weekly subscription from then would be billed for two years)."""
    store = DynamoStore()
    (contact_id,) = seed(store, 1, on_clock=True)
    _advance(store, contact_id, datetime(2027, 1, 5, 9, 0, tzinfo=UTC))  # under way: the renewal is due

    def run_and_advance_again() -> None:
        other = DynamoStore()
        finish_advance(other, contact_id)
        _advance(other, contact_id)  # to FAR: within the yearly bound, the change not requested yet

    # Its first write is that billing step: the competitor lands just before the step is staged and committed.
    inject_after(store, "unit_of_work", run_and_advance_again, before=True)

    _change_to_weekly(store, contact_id)

    check_bounded(store, contact_id, [("advance", "ok"), ("change", "ok")])
