"""A contact whose card declines, for the dunning use cases' tests on moto (unit) and DynamoDB Local
(integration): a tenant with a dunning policy, a product, an order billed in advance today (its
invoice issued), and the invoice's first charge declined on the fake rail (`tests.fake_rail`).

`RecordingFlows` stands in for the Step Functions state machine (`billow.services.ports.DunningFlows`):
it records starts and resumes in a SQLite file, so processes racing share one record, and a start
of an execution name already started is refused as Step Functions refuses it (one execution)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from billow.domain.actions import Action
from billow.domain.calendar import Cycle
from billow.domain.catalog import BillingModel
from billow.domain.collection import AttemptStatus
from billow.domain.dunning import DunningPolicy, StepKind
from billow.domain.invoices import Invoice, PaymentMethod
from billow.domain.money import Money
from billow.domain.rules import ServiceState
from billow.domain.tenants import TenantSettings
from billow.services import catalog, contacts, dunning, invoices, ordering
from billow.services.billing import InvoiceNumbers
from billow.services.collection import collect_invoice
from billow.services.context import TenantContext, keyed_ids
from billow.services.dunning import Decided
from billow.storage.repository import DynamoStore

from tests.fake_rail import DECLINING, FakeRail

START = datetime(2025, 3, 3, 10, tzinfo=UTC)
POLICY = DunningPolicy(
    retry_days=(1, 3),
    reminder_days=(0,),
    grace_days=2,
    deactivation_threshold={"USD": Money.parse("0", "USD")},
    cancel_after_days=3,
)


class Clock:
    def __init__(self, instant: datetime = START) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant

    def days(self, n: int) -> Clock:
        """A clock `n` days after this one."""
        return Clock(self.instant + timedelta(days=n))


class RecordingFlows:
    """`DunningFlows` in a SQLite file: executions started (one per name, running until `end`) and
    tokens resumed (a token resumes once; `gone` tokens wait no more)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS calls (seq INTEGER PRIMARY KEY, op TEXT, arg TEXT, payload TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS gone (token TEXT PRIMARY KEY)")

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO calls (op, arg, payload) VALUES ('start', ?, ?)", (execution_name, json.dumps(payload))
            )

    def resume(self, token: str) -> bool:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            waiting = db.execute("SELECT 1 FROM gone WHERE token = ?", (token,)).fetchone() is None
            db.execute("INSERT INTO calls (op, arg) VALUES ('resume', ?)", (token,))
            db.execute("INSERT OR IGNORE INTO gone VALUES (?)", (token,))
            db.execute("COMMIT")
        return waiting

    def running(self, execution_name: str) -> bool:
        """Started and not `ended` (an execution that failed, or ended with its case)."""
        return execution_name in self.started and execution_name not in self.calls("end")

    def end(self, execution_name: str) -> None:
        """The execution of that name is over (it failed: its retries ran out)."""
        with self._db() as db:
            db.execute("INSERT INTO calls (op, arg) VALUES ('end', ?)", (execution_name,))

    def calls(self, op: str) -> list[str]:
        with self._db() as db:
            return [arg for (arg,) in db.execute("SELECT arg FROM calls WHERE op = ? ORDER BY seq", (op,))]

    @property
    def started(self) -> list[str]:
        return self.calls("start")

    @property
    def resumed(self) -> list[str]:
        return self.calls("resume")


@dataclass
class Debtor:
    ctx: TenantContext
    contact_id: str
    invoice: Invoice
    service_id: str
    subscription_id: str


def seed_debtor(
    store: DynamoStore,
    rail: FakeRail,
    *,
    tenant_id: str = "t1",
    policy: DunningPolicy = POLICY,
    test_clock: bool = False,
    classification: str | None = None,
    key: str = "debtor",
    clock: Clock | None = None,
    cancellation_fee: str | None = None,
) -> Debtor:
    """A contact (on a test clock, or on `clock`) whose first invoice's card charge was declined;
    its service in a 12-month contract with `cancellation_fee`, when given."""
    clock = clock or Clock()
    settings = store.get_settings(tenant_id) or store.put_settings(TenantSettings(tenant_id, "Tenant", dunning=policy))
    ctx = TenantContext(tenant_id, "test", settings)
    new_id = keyed_ids(tenant_id, key)
    contact = contacts.create_contact(
        store, ctx, name="Ann", email="ann@example.com", billing_address=None, classification=classification,
        credit_limit=None, preferred_payment_method=None, clock=clock, new_id=new_id,
    )  # fmt: skip
    if test_clock:
        contacts.create_test_clock(store, ctx, contact.id, clock.now())
    contract = None if cancellation_fee is None else 12
    terms = [
        catalog.PriceTermsInput(
            "30.00",
            "USD",
            Cycle.MONTH,
            BillingModel.ADVANCE,
            contract_cycles=contract,
            cancellation_fee=cancellation_fee,
        )
    ]
    product = catalog.create_product(store, ctx, name="Pro", description="", terms=terms, new_id=new_id)
    items = [ordering.OrderItemInput(product.id, product.terms[0].id)]
    ordering.place_order(store, ctx, contact.id, items, None, f"order-{key}", clock, new_id, InvoiceNumbers(store))
    (invoice,) = store.invoices_of(ctx.scope, contact.id)
    stored = store.get_contact(ctx.scope, contact.id)
    assert stored is not None
    store.save_contact(
        ctx.scope, replace(stored, gateway_customer_ref=f"cus_{contact.id}", default_method_ref=DECLINING)
    )
    attempt = collect_invoice(store, rail, ctx.scope, invoice.id, clock=clock)
    assert attempt is not None and attempt.status is AttemptStatus.FAILED, attempt
    (subscription,) = store.subscriptions_of(ctx.scope, contact.id)
    (service,) = subscription.services
    return Debtor(ctx, contact.id, invoice, service.id, subscription.id)


def opened(store: DynamoStore, debtor: Debtor, flows: RecordingFlows, clock: Clock | None = None) -> str:
    """The debtor's case, opened as `payment.failed` opens it."""
    stored = dunning.open_case(store, debtor.ctx, debtor.contact_id, "USD", flows, clock=clock or Clock())
    assert stored is not None
    return stored.id


def step(store: DynamoStore, debtor: Debtor, case_id: str, kind: StepKind, clock: Clock, rail: FakeRail) -> Decided:
    """A step task of the case's execution, on `clock`."""
    numbers = InvoiceNumbers(store)
    return dunning.take_step(store, debtor.ctx, case_id, kind, clock=clock, gateway=rail, numbers=numbers)


SCHEDULE = ((0, StepKind.REMIND), (1, StepKind.RETRY), (2, StepKind.DEACTIVATE), (3, StepKind.RETRY))
"""The steps of a debtor's case under `POLICY`, by day: reminded when opened, retried on day 1,
deactivated on day 2 (the grace period's end), retried on day 3."""


def take_steps(store: DynamoStore, debtor: Debtor, case_id: str, rail: FakeRail, count: int) -> None:
    """The first `count` steps of `SCHEDULE`, each on its day."""
    for days, kind in SCHEDULE[:count]:
        assert step(store, debtor, case_id, kind, Clock().days(days), rail).stored.case.step is kind


def pay(store: DynamoStore, debtor: Debtor, clock: Clock) -> None:
    """What the debtor's invoice still owes, paid by transfer (recorded by staff)."""
    invoice = store.get_invoice(debtor.ctx.scope, debtor.invoice.id)
    assert invoice is not None
    due = invoice.amount_due.amount_str()
    spec = invoices.ManualPaymentInput(due, "USD", PaymentMethod.BANK_TRANSFER, "wire-1", clock.now().date())
    invoices.record_manual_payment(store, debtor.ctx, invoice.id, spec, clock)


def with_case(store: DynamoStore, rail: FakeRail, flows: RecordingFlows, **seed: Any) -> tuple[Debtor, str]:
    """A debtor (`seed_debtor(**seed)`) and its case, opened."""
    debtor = seed_debtor(store, rail, **seed)
    return debtor, opened(store, debtor, flows)


def service_state(store: DynamoStore, debtor: Debtor) -> ServiceState:
    subscription = store.load_subscription(debtor.ctx.scope, debtor.contact_id, debtor.subscription_id)
    service = None if subscription is None else subscription.service(debtor.service_id)
    assert service is not None
    return service.state


def logged(store: DynamoStore, debtor: Debtor, kind: str) -> list[Action]:
    """The records of `kind` in the debtor's subscription's action log."""
    log = store.actions_of(debtor.ctx.scope, debtor.contact_id, debtor.subscription_id)
    return [a for a in log if a.kind.name == kind]
