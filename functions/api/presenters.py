"""Domain objects as JSON responses: the API's own form, written here field by field and never by the
storage codec (`billow.storage.codec`), so renaming a field of the API is no storage migration and
the reverse (tests/unit/test_json_forms.py). Money, periods, lines and invoices not yet issued are the
shared views (`billow.services.views`), as the dry run shows them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING

from billow.domain.actions import Action
from billow.domain.catalog import PriceTerms, Product
from billow.domain.contacts import Address, Contact, TestClock
from billow.domain.dunning import CaseStatus
from billow.domain.invoices import Invoice, InvoiceKind, Payment
from billow.domain.ordering import Order
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.pricing import allowance_json, usage_price_json
from billow.domain.receivables import Balance, CreditApplication, Refund
from billow.domain.subscriptions import Subscription
from billow.domain.timeline import upcoming_invoices
from billow.services.ports import StoredCase
from billow.services.views import Json, day, line, money, period
from billow.services.views import dunning_case as _case
from billow.services.views import payment_attempt as payment_attempt  # the API's attempt is the events' too

if TYPE_CHECKING:
    from billow.services.dunning_cases import CaseNow


def terms(t: PriceTerms) -> Json:
    return {
        "id": t.id,
        "product_id": t.product_id,
        "price": money(t.price),
        "cycle": t.cycle.value,
        "billing_model": t.billing_model.value,
        "pricing_model": t.pricing_model.value,
        "setup_fee": money(t.setup_fee),
        "trial_days": t.trial_days,
        "alignment": None if t.alignment is None else t.alignment.value,
        "meter": t.meter,
        "usage": None if t.usage is None else usage_price_json(t.usage),
        "term_cycles": t.term_cycles,
        "auto_renew": t.auto_renew,
        "contract_cycles": t.contract_cycles,
        "cancellation_fee": money(t.cancellation_fee),
        "included_credits": t.included_credits,
        "features": list(t.features),
        "limits": dict(t.limits),
        "prepaid_credits": t.prepaid_credits,
    }


def product(p: Product) -> Json:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "archived": p.archived,
        "terms": [
            {**terms(t), "archived": t.id in p.archived_terms, "replaced_by": p.replaced_by(t.id)} for t in p.terms
        ],
    }


def address(a: Address) -> Json:
    return {
        "line1": a.line1,
        "city": a.city,
        "country": a.country,
        "postal_code": a.postal_code,
        "line2": a.line2,
        "region": a.region,
    }


def contact(c: Contact) -> Json:
    return {
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "billing_address": None if c.billing_address is None else address(c.billing_address),
        "classification": c.classification,
        "credit_limit": {currency: m.amount_str() for currency, m in sorted(c.credit_limit.items())},
        "preferred_payment_method": c.preferred_payment_method,
        "test_mode": c.test_mode,
        "created_at": c.created_at.isoformat(),
        "archived": c.archived,
        "collection": None if c.collection is None else c.collection.value,
        "gateway_customer_ref": c.gateway_customer_ref,
        "default_payment_method": c.default_method_ref,
        "dunning_excluded": c.dunning_excluded,
        "allowances": {meter: allowance_json(a) for meter, a in sorted(c.allowances.items())},
    }


def payment_method(m: SavedPaymentMethod, default: str | None) -> Json:
    return {
        "id": m.id,
        "contact_id": m.contact_id,
        "rail": m.rail,
        "kind": m.kind,
        "brand": m.brand,
        "last4": m.last4,
        "exp_month": m.exp_month,
        "exp_year": m.exp_year,
        "default": m.id == default,
        "setup_id": m.setup_ref,
        "saved_at": m.saved_at.isoformat(),
        "removed_at": None if m.removed_at is None else m.removed_at.isoformat(),
    }


def clock(c: TestClock, advance_limit: datetime | None = None) -> Json:
    """`advance_limit`: the furthest one advance may reach now (null while an advance is under way)."""
    return {
        "contact_id": c.contact_id,
        "frozen_time": c.frozen_time.isoformat(),
        "status": c.status.value,
        "advance_limit": None if advance_limit is None else advance_limit.isoformat(),
    }


def invoice(i: Invoice) -> Json:
    """An invoice or credit note: its amounts, and for a credit note what remains of it."""
    return {
        "id": i.id,
        "number": i.number,
        "contact_id": i.contact_id,
        "subscription_id": i.subscription_id,
        "kind": i.kind.value,
        "status": i.status.value,
        "status_on": day(i.status_on),
        "status_reason": i.status_reason,
        "currency": i.currency,
        "billing_date": i.billing_date.isoformat(),
        "issue_date": i.issue_date.isoformat(),
        "due_date": i.due_date.isoformat(),
        "period": period(i.period),
        "lines": [line(x) for x in i.lines],
        "total": money(i.total),
        "amount_paid": money(i.amount_paid),
        "amount_credited": money(i.credited),
        "amount_due": money(i.amount_due),
        "amount_unapplied": money(i.unapplied),
        **(
            {
                "amount_applied": money(i.applied),
                "amount_refunded": money(i.refunded),
                "credit_remaining": money(i.credit_remaining),
            }
            if i.kind is InvoiceKind.CREDIT_NOTE
            else {}
        ),
        "review_until": day(i.review_until),
        "lapses_on": day(i.lapses_on),
    }


def application(a: CreditApplication) -> Json:
    return {
        "id": a.id,
        "credit_note_id": a.credit_note_id,
        "invoice_id": a.invoice_id,
        "amount": money(a.amount),
        "applied_on": a.applied_on.isoformat(),
        "recorded_at": a.recorded_at.isoformat(),
        "reversed_on": day(a.reversed_on),
    }


def refund(r: Refund) -> Json:
    return {
        "id": r.id,
        "credit_note_id": None if r.unapplied else r.credit_note_id,
        "unapplied": r.unapplied,
        "amount": money(r.amount),
        "method": r.method.value,
        "reference": r.reference,
        "refunded_on": r.refunded_on.isoformat(),
        "recorded_at": r.recorded_at.isoformat(),
        "status": r.status.value,
        "invoice_id": r.invoice_id,
        "payment_id": r.payment_id,
        "rail_ref": r.rail_ref,
        "failure": r.failure,
    }


def balance(contact_id: str, balances: Mapping[str, Balance]) -> Json:
    return {
        "contact_id": contact_id,
        "currencies": [
            {
                "currency": b.currency,
                "outstanding": money(b.outstanding),
                "overdue": money(b.overdue),
                "credit": money(b.credit),
                "net": money(b.net),
                "uncollectible": money(b.uncollectible),
            }
            for b in balances.values()
        ],
    }


def payment(p: Payment) -> Json:
    return {
        "id": p.id,
        "invoice_id": p.invoice_id,
        "amount": money(p.amount),
        "method": p.method.value,
        "reference": p.reference,
        "received_on": p.received_on.isoformat(),
        "recorded_at": p.recorded_at.isoformat(),
        "amount_refunded": money(p.refunded),
        "amount_unapplied": money(p.unapplied),
    }


def subscription(s: Subscription, today: date, *, next_billing_date: bool = True) -> Json:
    """`today`: the contact's (its test clock's, in test mode), for what depends on it (`trialing`).
    `next_billing_date` runs the billing engine ahead to find the day of the next invoice: one
    subscription's view shows it; a listing leaves it out unless asked (`include=next_billing_date`)."""
    shown: Json = {
        "id": s.id,
        "contact_id": s.contact_id,
        "state": s.state.value,
        "cycle": s.cycle.value,
        "billing_model": s.billing_model.value,
        "currency": s.currency,
        "billing_day": s.schedule.billing_day,
        "invoice_count": s.invoice_count,
        "services": [
            {
                "id": x.id,
                "order_id": x.order_id,
                "product_id": x.product_id,
                "product_name": x.product_name,
                "terms": terms(x.terms),
                "quantity": x.quantity,
                "state": x.state.value,
                "start_date": x.start_date.isoformat(),
                "billed_through": None if x.billed_through is None else x.billed_through.isoformat(),
                "state_since": x.since.isoformat(),
                "end_date": day(x.end_date),
                "alignment": x.alignment.value,
                "trial_ends_on": day(x.billing_start) if x.billing_start > x.start_date else None,
                "trialing": x.trialing(today),
                "term_end": day(x.term_end),
                "auto_renew": x.auto_renew,
                "contract_end": day(x.contract_end),
                "expired": x.expired,
                "lapses_on": day(x.lapses_on),
            }
            for x in s.services
        ],
        "payment_method": s.payment_method,
        "grace_until": day(s.grace_until),
        "pending_actions": [action(a) for a in s.actions],
    }
    if next_billing_date:
        upcoming = upcoming_invoices(s, 1)
        shown["next_billing_date"] = upcoming[0].billing_date.isoformat() if upcoming else None
    return shown


def action(a: Action) -> Json:
    return {
        "id": a.id,
        "action": a.kind.name,
        "service_id": a.service_id,
        "status": a.status.value,
        "on": a.on.isoformat(),
        "requested_on": a.requested_on.isoformat(),
        "requested_by": a.by.value,
        "reason": a.reason,
        "outcome": a.outcome,
        "rule": a.rule,
        "moved_to": a.moved_to,
        "parameters": {} if a.params is None else a.kind.show(a.params),
    }


def order(o: Order) -> Json:
    return {
        "id": o.id,
        "contact_id": o.contact_id,
        "reference": o.reference,
        "start_date": o.start_date.isoformat(),
        "services": [
            {
                "service_id": s.service_id,
                "subscription_id": s.subscription_id,
                "product_id": s.product_id,
                "terms_id": s.terms_id,
                "quantity": s.quantity,
            }
            for s in o.services
        ],
    }


def dunning_case(stored: StoredCase, *, excluded: bool) -> Json:
    """The case (`billow.services.views.dunning_case`, the events' too), whether its contact is
    `excluded` (the case waits, as if paused), and its flow's days: `due`, the contact's day of its
    next decision (null: only an event wakes it; always null for a paused or ended case, whose
    flow waits with no day), and `decided_on`, of its last (a client polls it to know the case
    caught up with a clock advance or an operator's resume)."""
    case = stored.case
    due = stored.due if case.status is CaseStatus.OPEN else None
    return {**_case(case), "excluded": excluded, "due": day(due), "decided_on": day(stored.decided_on)}


def case_now(stored: StoredCase, now: CaseNow) -> Json:
    """One case's answer: as listed, with `owed`, the debt it follows now (null once ended), and
    `deactivated` narrowed to what it still holds deactivated (staff reactivated none of them)."""
    shown = dunning_case(stored, excluded=now.excluded)
    held = [d for d in shown["deactivated"] if d["service_id"] in now.holding]
    return {**shown, "deactivated": held, "owed": None if now.owed is None else money(now.owed)}
