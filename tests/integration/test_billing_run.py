"""The billing run on real DynamoDB Local: due index, exactly-once under reruns and races,
test-clock isolation, optimistic locking."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel, Product
from billow.domain.contacts import Contact
from billow.domain.errors import ConcurrentModification
from billow.domain.subscriptions import Subscription
from billow.domain.tenants import TenantSettings
from billow.services import catalog, contacts, ordering
from billow.services.billing import InvoiceNumbers, bill_due_subscriptions, commit_step
from billow.services.context import Scope, TenantContext, new_id
from billow.services.ordering import OrderItemInput
from billow.storage.repository import DynamoStore, DynamoUnitOfWork

pytestmark = pytest.mark.integration


class FixedClock:
    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant


def setup_tenant(store: DynamoStore, tenant_id: str = "t1") -> TenantContext:
    settings = TenantSettings(tenant_id, "Tenant One")
    store.put_settings(settings)
    return TenantContext(tenant_id, "test", settings)


def monthly_product(store: DynamoStore, ctx: TenantContext, model: BillingModel) -> Product:
    terms = [catalog.PriceTermsInput("30.00", "USD", Cycle.MONTH, model)]
    return catalog.create_product(store, ctx, name="Pro", description="", terms=terms, new_id=new_id)


def new_contact(store: DynamoStore, ctx: TenantContext, clock: FixedClock, name: str, email: str) -> Contact:
    return contacts.create_contact(
        store,
        ctx,
        name=name,
        email=email,
        billing_address=None,
        classification=None,
        credit_limit={},
        preferred_payment_method=None,
        clock=clock,
        new_id=new_id,
    )


def subscribe(
    store: DynamoStore,
    ctx: TenantContext,
    clock: FixedClock,
    count: int,
    model: BillingModel = BillingModel.ADVANCE,
    with_test_clock: bool = False,
) -> list[str]:
    product = monthly_product(store, ctx, model)
    ids = []
    numbers = InvoiceNumbers(store)
    for i in range(count):
        contact = new_contact(store, ctx, clock, f"C{i}", f"c{i}@example.com")
        if with_test_clock:
            contacts.create_test_clock(store, ctx, contact.id, clock.instant)
        ordering.place_order(
            store,
            ctx,
            contact.id,
            [OrderItemInput(product.id, product.terms[0].id)],
            None,
            None,
            clock,
            new_id,
            numbers,
        )
        ids.append(contact.id)
    return ids


def all_invoices(store: DynamoStore, ctx: TenantContext, contact_ids: list[str]) -> list[tuple[str, date, date]]:
    return sorted(
        (i.contact_id, i.period.start, i.period.end) for c in contact_ids for i in store.invoices_of(ctx.scope, c)
    )


def test_daily_run_bills_due_subscriptions_once_and_a_rerun_bills_nothing(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    start = FixedClock(datetime(2024, 1, 15, 9, tzinfo=UTC))
    contact_ids = subscribe(store, ctx, start, 6)
    assert len(all_invoices(store, ctx, contact_ids)) == 6  # first periods billed when ordered

    run_at = datetime(2024, 3, 15, 0, 5, tzinfo=UTC)
    report = bill_due_subscriptions(store, run_at, InvoiceNumbers(store))
    assert report.invoices_created == 12  # Feb and Mar for each, catching up a missed month
    invoices = all_invoices(store, ctx, contact_ids)
    assert {(s, e) for _, s, e in invoices} == {
        (date(2024, 1, 15), date(2024, 2, 15)),
        (date(2024, 2, 15), date(2024, 3, 15)),
        (date(2024, 3, 15), date(2024, 4, 15)),
    }
    again = bill_due_subscriptions(store, run_at, InvoiceNumbers(store))
    assert again.invoices_created == 0
    assert all_invoices(store, ctx, contact_ids) == invoices


def test_the_same_run_delivered_twice_concurrently_bills_once(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    contact_ids = subscribe(store, ctx, FixedClock(datetime(2024, 1, 10, tzinfo=UTC)), 8, BillingModel.ARREARS)
    run_at = datetime(2024, 2, 10, 0, 5, tzinfo=UTC)
    reports = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        reports.append(bill_due_subscriptions(store, run_at, InvoiceNumbers(store)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    invoices = all_invoices(store, ctx, contact_ids)
    assert len(invoices) == 8
    assert sum(r.invoices_created for r in reports) == 8
    numbers = [i.number for c in contact_ids for i in store.invoices_of(ctx.scope, c)]
    assert len(set(numbers)) == len(numbers)


def test_the_daily_run_leaves_test_clock_contacts_alone(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    clock = FixedClock(datetime(2024, 1, 10, tzinfo=UTC))
    on_clock = subscribe(store, ctx, clock, 2, with_test_clock=True)
    real = subscribe(store, ctx, clock, 2)
    bill_due_subscriptions(store, datetime(2024, 4, 10, 1, tzinfo=UTC), InvoiceNumbers(store))
    assert len(all_invoices(store, ctx, on_clock)) == 2  # only the invoices made when ordering
    assert len(all_invoices(store, ctx, real)) == 2 * 4


def test_a_stale_billing_step_is_refused(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    (contact_id,) = subscribe(store, ctx, FixedClock(datetime(2024, 1, 10, tzinfo=UTC)), 1)
    (subscription,) = store.subscriptions_of(ctx.scope, contact_id)
    commit_step(store, ctx.scope, subscription, subscription.version)
    with pytest.raises(ConcurrentModification):
        commit_step(store, ctx.scope, subscription, subscription.version)


def test_a_crash_between_ordering_and_billing_is_healed_by_the_next_run(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    clock = FixedClock(datetime(2024, 5, 31, 12, tzinfo=UTC))
    product = monthly_product(store, ctx, BillingModel.ADVANCE)
    contact = new_contact(store, ctx, clock, "C", "c@example.com")

    class CrashAfterOrder(DynamoStore):
        def unit_of_work(self, what: str) -> DynamoUnitOfWork:
            if what.startswith("billing"):  # the first billing step, before anything of it is written
                raise RuntimeError("process died")
            return super().unit_of_work(what)

    def place(via: DynamoStore) -> ordering.PlacedOrder:
        items = [OrderItemInput(product.id, product.terms[0].id)]
        return ordering.place_order(via, ctx, contact.id, items, None, "po-1", clock, new_id, InvoiceNumbers(store))

    with pytest.raises(RuntimeError):
        place(CrashAfterOrder())
    assert store.invoices_of(ctx.scope, contact.id) == []
    report = bill_due_subscriptions(store, clock.instant, InvoiceNumbers(store))
    assert report.invoices_created == 1
    replay = place(store)
    assert replay.replayed and replay.invoices == []
    (invoice,) = store.invoices_of(ctx.scope, contact.id)
    assert (invoice.period.start, invoice.period.end) == (date(2024, 5, 31), date(2024, 6, 30))


def test_one_subscription_that_cannot_be_billed_does_not_stop_the_run(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    contact_ids = subscribe(store, ctx, FixedClock(datetime(2024, 1, 10, tzinfo=UTC)), 5, BillingModel.ARREARS)
    (broken,) = store.subscriptions_of(ctx.scope, contact_ids[2])

    class OneBrokenItem(DynamoStore):
        def load_subscription(self, scope: Scope, contact_id: str, subscription_id: str) -> Subscription | None:
            if subscription_id == broken.id:
                raise ValueError("corrupt item")
            return super().load_subscription(scope, contact_id, subscription_id)

    run_at = datetime(2024, 2, 10, 0, 5, tzinfo=UTC)
    report = bill_due_subscriptions(OneBrokenItem(), run_at, InvoiceNumbers(store))
    assert report.invoices_created == 4
    assert report.failures == [(broken.id, "ValueError: corrupt item")]
    retry = bill_due_subscriptions(store, run_at, InvoiceNumbers(store))  # after the item is mended
    assert retry.invoices_created == 1 and retry.failures == []
    assert len(all_invoices(store, ctx, contact_ids)) == 5


def test_two_orders_racing_share_the_one_subscription_of_their_cycle(local_table: str) -> None:
    store = DynamoStore()
    ctx = setup_tenant(store)
    clock = FixedClock(datetime(2024, 5, 10, 12, tzinfo=UTC))
    product = monthly_product(store, ctx, BillingModel.ADVANCE)
    contact = new_contact(store, ctx, clock, "C", "c@example.com")
    barrier = threading.Barrier(2)
    waited: list[str] = []

    class BothSeeNone(DynamoStore):
        """Each order reads the contact's subscriptions before the other has written its own."""

        def subscriptions_of(self, tenant_id: str, contact_id: str) -> list[Subscription]:
            found = super().subscriptions_of(tenant_id, contact_id)
            if not found:
                waited.append(contact_id)
                barrier.wait(timeout=10)
            return found

    placed: list[ordering.PlacedOrder] = []

    def place(reference: str) -> None:
        items = [OrderItemInput(product.id, product.terms[0].id)]
        numbers = InvoiceNumbers(store)
        placed.append(
            ordering.place_order(BothSeeNone(), ctx, contact.id, items, None, reference, clock, new_id, numbers)
        )

    threads = [threading.Thread(target=place, args=(f"po-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waited) == 2  # both really read "no subscription" before either wrote
    assert len(placed) == 2  # the loser retried and joined the winner's subscription
    (subscription,) = store.subscriptions_of(ctx.scope, contact.id)
    assert len(subscription.services) == 2


def test_the_daily_run_bills_each_mode_in_its_own_world_with_its_own_numbers(local_table: str) -> None:
    """Test-mode subscriptions without a clock are billed by the daily run like live ones, each in
    its own mode: a live key never sees the test invoices, and they use no live invoice number."""
    store = DynamoStore()
    test = setup_tenant(store)
    live = TenantContext(test.tenant_id, "live", test.settings)
    start = FixedClock(datetime(2024, 1, 15, 9, tzinfo=UTC))
    test_contacts = subscribe(store, test, start, 3)
    live_contacts = subscribe(store, live, start, 2)

    report = bill_due_subscriptions(store, datetime(2024, 3, 15, 0, 5, tzinfo=UTC), InvoiceNumbers(store))

    assert report.failures == [] and report.invoices_created == 3 * 2 + 2 * 2
    for ctx, own, other in ((test, test_contacts, live_contacts), (live, live_contacts, test_contacts)):
        assert len(all_invoices(store, ctx, own)) == len(own) * 3  # ordering, February, March
        assert all_invoices(store, ctx, other) == []  # the other mode's contacts do not exist here
        numbers = sorted(int(i.number.rsplit("-", 1)[-1]) for c in own for i in store.invoices_of(ctx.scope, c))
        assert numbers[0] == 1 and len(set(numbers)) == len(numbers)  # each mode numbers from 1, no repeats
