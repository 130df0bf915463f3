"""A dry run at D equals the real run at D, line for line: the dry run (`dry_run`, behind
`billow bill preview` and POST /billing/preview) against the billing use case writing invoices to
DynamoDB Local for the same subscription."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, timedelta

import pytest
from billow.domain.ordering import Order, OrderedService, OrderPlan
from billow.domain.preview import PreviewTerms, dry_run, preview_subscription
from billow.domain.tenants import TenantSettings
from billow.services.billing import InvoiceNumbers, bill_subscription
from billow.services.context import TenantContext
from billow.services.ordering import commit_order
from billow.storage.repository import DynamoStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_billing_properties import preview_terms

pytestmark = pytest.mark.integration


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    terms=preview_terms(),
    start=st.dates(min_value=date(2020, 1, 1), max_value=date(2027, 12, 31)),
    length=st.none() | st.integers(1, 500),
    later=st.integers(0, 400),
)
def test_a_dry_run_at_d_equals_the_real_run_at_d(
    local_table: str, terms: PreviewTerms, start: date, length: int | None, later: int
) -> None:
    end = None if length is None else start + timedelta(days=length)
    as_of = start + timedelta(days=later)
    store = DynamoStore()
    tenant = store.get_settings("t-dry-run") or store.put_settings(TenantSettings("t-dry-run", "Dry run"))
    suffix = uuid.uuid4().hex[:12]
    sub = replace(preview_subscription(terms, start, end), id=f"sub_{suffix}", contact_id=f"con_{suffix}")
    service = sub.services[0]
    order = Order(
        f"ord_{suffix}",
        sub.contact_id,
        None,
        start,
        (OrderedService(service.id, sub.id, service.product_id, service.terms.id, service.quantity),),
    )
    ctx = TenantContext(tenant.tenant_id, "live", tenant)
    commit_order(store, ctx.scope, OrderPlan(order, (sub,), frozenset({sub.id})))

    real = bill_subscription(store, ctx, sub.contact_id, sub.id, as_of, InvoiceNumbers(store))
    dry = dry_run(terms, start, end, as_of)

    assert [(i.billing_date, i.issue_date, i.period, i.lines) for i in real] == [
        (d.billing_date, d.issue_date, d.period, d.lines) for d in dry
    ]
    stored = sorted(store.invoices_of(ctx.scope, sub.contact_id), key=lambda i: i.id)
    assert [(i.period, i.lines, i.total) for i in stored] == [(d.period, d.lines, d.total) for d in dry]
