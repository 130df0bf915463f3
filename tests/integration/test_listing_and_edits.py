"""On DynamoDB Local: a tenant-wide invoice listing pages through many invoices with filters (a
Query per listing shard, never a Scan), and edits racing from separate processes (as separate
Lambda containers would) each take effect, or are refused, never lost."""

from __future__ import annotations

import os
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import pytest
from billow.domain.calendar import Period
from billow.domain.invoices import Invoice, InvoiceStatus
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.local.dynamodb import DynamoDBLocal
from billow.local.stack import add_tenant
from billow.services.context import Scope
from billow.storage.repository import DynamoStore
from pynamodb.connection.base import Connection

from tests.support import InProcessClient, make_contact, make_product, separate_processes

KEY = "bk_test_listing_race"
TENANT = "tenant-race"
ADVANCE = {"price": "10.00", "currency": "USD", "cycle": "month", "billing_model": "advance"}


def _invoice(n: int, contact: str, day: date, status: InvoiceStatus, amount: int) -> Invoice:
    line = LineDraft(
        kind="recurring" if amount > 0 else "credit",
        description="Pro",
        service_id="svc_1",
        product_id="prod_1",
        quantity=1,
        unit_price=Money(amount, "USD"),
        fraction=Fraction(1),
        amount=Money(amount, "USD"),
        period=Period(day, day + timedelta(days=30)),
    )
    return Invoice(
        id=f"inv_{n:05d}",
        number=f"INV-{n:06d}",
        contact_id=contact,
        subscription_id="sub_1",
        currency="USD",
        billing_date=day,
        issue_date=day,
        due_date=day + timedelta(days=14),
        period=Period(day, day + timedelta(days=30)),
        lines=(line,),
        amount_paid=Money(amount if status is InvoiceStatus.PAID else 0, "USD"),
        status=status,
    )


def test_a_tenant_wide_invoice_listing_pages_with_filters(
    local_table: str, dynamodb_local: DynamoDBLocal, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DynamoStore()
    add_tenant(TENANT, "Race", KEY)
    api = InProcessClient(KEY)
    contacts = [make_contact(api, f"C{i}")["id"] for i in range(3)]
    statuses = (InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.VOID)
    invoices = []
    for n in range(240):  # several invoices a day, over four months, across the listing shards
        day = date(2030, 1, 1) + timedelta(days=n // 2)
        amount = -500 if n % 7 == 0 else 1000
        status = InvoiceStatus.ISSUED if amount < 0 else statuses[n % 3]
        invoices.append(_invoice(n, contacts[n % 3], day, status, amount))
    for invoice in invoices:
        work = store.unit_of_work("seeding invoices")
        work.add_invoice(Scope(TENANT, "test"), invoice)  # the key is a test-mode key
        work.commit()

    def no_scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a listing must Query, never Scan")

    monkeypatch.setattr(Connection, "scan", no_scan)

    def listed(query: str, limit: int) -> list[dict[str, Any]]:
        found, cursor, pages = [], None, 0
        while True:
            reply = api.get(f"/invoices?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
            assert reply.status == 200, reply.body
            assert len(reply.body["items"]) <= limit
            found += reply.body["items"]
            cursor, pages = reply.body["cursor"], pages + 1
            if cursor is None:
                return found
            assert pages < 500

    def expected(keep: Any) -> list[str]:
        return [i.id for i in sorted(invoices, key=lambda i: (i.issue_date, i.id)) if keep(i)]

    everything = listed("kind=invoice", 25)
    assert [i["id"] for i in everything] == expected(lambda i: i.total.minor > 0)
    paid = listed("status=paid&issued_from=2030-02-01&issued_before=2030-03-15", 7)
    assert [i["id"] for i in paid] == expected(
        lambda i: i.status is InvoiceStatus.PAID and date(2030, 2, 1) <= i.issue_date < date(2030, 3, 15)
    )
    assert {i["status"] for i in paid} == {"paid"}
    credit_notes = listed(f"kind=credit_note&contact_id={contacts[1]}", 4)
    assert [i["id"] for i in credit_notes] == expected(lambda i: i.total.minor < 0 and i.contact_id == contacts[1])


def _worker(table: str, endpoint: str, start: Any, method: str, path: str, body: Any, results: Any) -> None:
    """One separate process, as a separate Lambda container: its own connection, its own handler."""
    from billow.local.dynamodb import LOCAL_CREDENTIALS
    from billow.local.lambda_runtime import prepare_environment
    from billow.storage.models import configure

    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    prepare_environment()
    configure(table_name=table, endpoint=endpoint, region="us-east-1")
    client = InProcessClient(KEY)
    start.wait()
    reply = client.request(method, path, body)
    results.put((path, body, reply.status, reply.body))


def race(table: str, endpoint: str, requests: list[tuple[str, str, Any]]) -> list[tuple[str, Any, int, Any]]:
    context = separate_processes()
    start = context.Barrier(len(requests))
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(table, endpoint, start, method, path, body, results))
        for method, path, body in requests
    ]
    for process in processes:
        process.start()
    replies = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return replies


def test_edits_racing_from_separate_processes_are_all_kept(local_table: str, dynamodb_local: DynamoDBLocal) -> None:
    add_tenant(TENANT, "Race", KEY)
    api = InProcessClient(KEY)
    contact = make_contact(api)["id"]
    product = make_product(api, ADVANCE)
    terms = product["terms"][0]["id"]
    replies = race(
        local_table,
        dynamodb_local.endpoint,
        [
            ("PATCH", f"/contacts/{contact}", {"name": "Renamed"}),
            ("PATCH", f"/contacts/{contact}", {"email": "new@example.com"}),
            ("PATCH", f"/contacts/{contact}", {"classification": "vip"}),
            ("PATCH", f"/contacts/{contact}", {"preferred_payment_method": "card"}),
            ("PATCH", f"/products/{product['id']}", {"name": "Pro 2"}),
            ("PATCH", f"/products/{product['id']}", {"description": "better"}),
            ("PATCH", f"/products/{product['id']}/terms/{terms}", {"price": "11.00"}),
            ("PATCH", "/settings/profile", {"invoice_prefix": "RACE"}),
        ],
    )
    assert sorted(status for *_, status, _ in replies) == [200] * 7 + [201], replies
    shown = api.get(f"/contacts/{contact}").body
    assert (shown["name"], shown["email"], shown["classification"], shown["preferred_payment_method"]) == (
        "Renamed",
        "new@example.com",
        "vip",
        "card",
    )
    stored = api.get(f"/products/{product['id']}").body
    assert (stored["name"], stored["description"]) == ("Pro 2", "better")
    assert [t["archived"] for t in stored["terms"]] == [True, False]


def test_archiving_a_contact_and_ordering_for_it_at_once_never_both_succeed(
    local_table: str, dynamodb_local: DynamoDBLocal
) -> None:
    add_tenant(TENANT, "Race", KEY)
    api = InProcessClient(KEY)
    product = make_product(api, ADVANCE)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    for _ in range(3):
        contact = make_contact(api)["id"]
        replies = race(
            local_table,
            dynamodb_local.endpoint,
            [
                ("POST", f"/contacts/{contact}/archive", None),
                ("POST", "/orders", {"contact_id": contact, "items": [item]}),
            ],
        )
        outcome = {path: (status, body.get("error")) for path, _, status, body in replies}
        archived, ordered = outcome[f"/contacts/{contact}/archive"], outcome["/orders"]
        assert (archived, ordered) in (
            ((200, None), (409, "contact.archived")),
            ((409, "contact.has_live_services"), (201, None)),
        ), outcome
        subscriptions = api.get(f"/contacts/{contact}/subscriptions").body["items"]
        assert api.get(f"/contacts/{contact}").body["archived"] is (not subscriptions)
