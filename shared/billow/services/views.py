"""The JSON views every surface shares, so the API, the dry run (`billow bill preview`) and the docs
speak one vocabulary: money is `{"amount": "19.99", "currency": "USD"}`, a period is
`{"start", "end"}` (end exclusive), a line and an invoice not yet issued (upcoming, quoted,
previewed, dry run) have the fields of an issued invoice's.

Ids a preview makes up for things that do not exist yet (a subscription or service an order or a
change would create) are shown as null: the real ones are decided when the request is made."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from billow.domain.billing import InvoiceDraft
from billow.domain.calendar import Period
from billow.domain.collection import PaymentAttempt
from billow.domain.credits import LedgerEntry
from billow.domain.dunning import DunningCase, Step, StepKind
from billow.domain.invoices import InvoiceKind
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.domain.pricing import Rated, decimal_str

Json = dict[str, Any]
FRACTION_PLACES = 12


def decimal_fraction(value: Fraction, places: int = FRACTION_PLACES) -> str:
    """An exact fraction as a decimal string with `places` places (rounded half-even past them)."""
    with localcontext() as context:
        context.prec = 60
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return str(quotient.quantize(Decimal(1).scaleb(-places)))


def money(m: Money | None) -> Json | None:
    return None if m is None else {"amount": m.amount_str(), "currency": m.currency}


def rated(r: Rated) -> Json:
    """What usage costs (`billow.domain.pricing.rate`): the billable quantity, the total rounded
    once, the exact total and the exact per-tier breakdown, decimals as strings."""
    return {
        "quantity": decimal_str(r.quantity),
        "total": money(r.total),
        "exact": decimal_str(r.exact),
        "breakdown": [
            {
                "tier": row.tier,
                "units": decimal_str(row.units),
                "unit_price": decimal_str(row.unit_price),
                "rate": decimal_str(row.rate),
                "flat_price": decimal_str(row.flat_price),
                "amount": decimal_str(row.amount),
            }
            for row in r.breakdown
        ],
    }


def period(p: Period | None) -> Json | None:
    return None if p is None else {"start": p.start.isoformat(), "end": p.end.isoformat()}


def day(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _known(id_: str, invented: Collection[str]) -> str | None:
    return None if id_ in invented else id_


def line(x: LineDraft, invented: Collection[str] = (), so_far_after: date | None = None) -> Json:
    """One invoice line; `period` is null for one-time charges (a setup fee, a cancellation fee).
    With `so_far_after` (the view bill's today), a usage line of a period not ended by then says
    so: `usage_so_far` (its usage rated as recorded so far)."""
    so_far = {}
    if so_far_after is not None and x.kind == "usage":
        so_far = {"usage_so_far": x.period is not None and x.period.end > so_far_after}
    return {
        "kind": x.kind,
        "description": x.description,
        "service_id": _known(x.service_id, invented),
        "product_id": _known(x.product_id, invented),
        "quantity": x.quantity if isinstance(x.quantity, int) else str(x.quantity),
        "unit_price": money(x.unit_price),
        "fraction": decimal_fraction(x.fraction),
        "fraction_exact": f"{x.fraction.numerator}/{x.fraction.denominator}",
        "amount": money(x.amount),
        "period": period(x.period),
        **so_far,
    }


def draft(
    d: InvoiceDraft, payment_terms_days: int | None, invented: Collection[str] = (), so_far_after: date | None = None
) -> Json:
    """An invoice not yet issued, with the fields an issued one has: `due_date` when the business's
    payment terms are known (null in the dry run, which reads no business), `subscription_id`
    null when the subscription does not exist yet."""
    due = None if payment_terms_days is None else d.due_date(payment_terms_days)
    return {
        "subscription_id": _known(d.subscription_id, invented),
        "kind": (InvoiceKind.CREDIT_NOTE if d.is_credit_note else InvoiceKind.INVOICE).value,
        "currency": d.currency,
        "billing_date": d.billing_date.isoformat(),
        "issue_date": d.issue_date.isoformat(),
        "due_date": day(due),
        "period": period(d.period),
        "lines": [line(x, invented, so_far_after) for x in d.lines],
        "total": money(d.total),
    }


def payment_attempt(a: PaymentAttempt) -> Json:
    """A charge of the contact's card for one or more invoices (docs/payments.md, the states of a
    payment attempt): the API's attempt, and the `payment.succeeded` / `payment.failed` events'
    data (which add the names they had first: `attempt_id`, `attempt`, `method_ref`)."""
    return {
        "id": a.id,
        "number": a.number,
        "invoice_id": a.invoice_id,
        "status": a.status.value,
        "amount": money(a.amount),
        "invoices": [{"invoice_id": i, "amount": money(m)} for i, m in a.covers],
        "payment_method": a.method_ref,
        "charge_ref": a.charge_ref,
        "decline_code": a.decline_code,
        "hard_decline": a.hard_decline,
        "reason": a.reason,
        "made_on": day(a.made_on),
        "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat(),
    }


def dunning_step(s: Step) -> Json:
    """One step of a dunning case: its day, kind, what it touched (attempt ids, service ids, the
    reminder's number) and its outcome."""
    return {"on": s.on.isoformat(), "kind": s.kind.value, "targets": list(s.targets), "outcome": s.outcome}


def dunning_case(c: DunningCase) -> Json:
    """A dunning case (docs/dunning.md, "The case over the API"): the API's (which adds the flow's
    `due` and `decided_on`, and what is owed) and the `dunning.*` events' `case`. `deactivated`:
    the services it deactivated and has neither cancelled nor reactivated by its end."""
    ended = {sid for s in c.history if s.kind == StepKind.END for sid in s.targets}
    return {
        "id": c.id,
        "contact_id": c.contact_id,
        "currency": c.currency,
        "status": c.status.value,
        "step": c.step.value,
        "opened_on": c.opened_on.isoformat(),
        "policy": c.policy.as_json(),
        "history": [dunning_step(s) for s in c.history],
        "deactivated": [
            {"service_id": sid, "on": on.isoformat()} for sid, on in sorted(c.deactivated.items()) if sid not in ended
        ],
        "cancelled": sorted(c.cancelled),
        "retries": sorted(c.retried),
        "reminders_sent": sum(1 for s in c.history if s.kind == StepKind.REMIND),
        "last_reminder": c.reminded,
    }


def credit_parts(e: LedgerEntry) -> list[Json]:
    """A consumption's parts as the API and its events show them: per grant, in burn order."""
    return [{"grant_id": p.grant_id, "kind": p.kind.value, "credits": p.credits} for p in e.parts]


def ledger_entry(e: LedgerEntry) -> Json:
    """A credit ledger entry as the API shows it (docs/credits.md)."""
    return {
        "id": e.id,
        "kind": e.kind.value,
        "at": e.at.isoformat(),
        "credits": e.credits,
        "delta": e.delta,
        "grant_id": e.grant_id,
        "grant_kind": None if e.grant_kind is None else e.grant_kind.value,
        "action": e.action,
        "quantity": e.quantity,
        "unit_cost": e.unit_cost,
        "parts": credit_parts(e),
        "overdrawn": e.overdrawn,
        "reference": e.reference,
    }
