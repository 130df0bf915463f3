"""Domain objects <-> JSON-ready dicts. Money is stored as integer minor units, fractions as
"numerator/denominator", dates and instants as ISO 8601 — never a float anywhere."""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from billow.domain.actions import RECORD_FIELDS, Action, ActionStatus, Requester, kind_named
from billow.domain.calendar import BillingSchedule, Cycle, Period
from billow.domain.catalog import BillingModel, PriceTerms, PricingModel, Product
from billow.domain.collection import AttemptStatus, CollectionMode, CollectionSettings, PaymentAttempt
from billow.domain.contacts import Address, ClockStatus, Contact, TestClock
from billow.domain.dunning import CaseStatus, DunningCase, DunningPolicy, Step, StepKind
from billow.domain.invoices import Invoice, InvoiceStatus, Payment, PaymentMethod, TopUp
from billow.domain.lines import Adjustment, LineDraft
from billow.domain.money import Money
from billow.domain.ordering import Order, OrderedService
from billow.domain.payment_methods import SavedPaymentMethod
from billow.domain.policy import SubscriptionPolicy, Timing, TrialLimit
from billow.domain.pricing import (
    Aggregation,
    Allowance,
    Beyond,
    ChargeLimit,
    Package,
    Percentage,
    Tier,
    UsageModel,
    UsagePrice,
)
from billow.domain.receivables import CreditApplication, Refund, RefundStatus
from billow.domain.rules import Alignment, BillingRules, CalendarMode
from billow.domain.subscriptions import EarlierTerms, Service, ServiceState, Subscription, SubscriptionKey
from billow.domain.tenants import TenantSettings
from billow.domain.usage import BilledUsage, UsageRecord

Json = dict[str, Any]


def money_out(m: Money | None) -> Json | None:
    return None if m is None else {"minor": m.minor, "currency": m.currency}


def money_in(d: Json | None) -> Money | None:
    return None if d is None else Money(int(d["minor"]), d["currency"])


def _money(d: Json) -> Money:
    return Money(int(d["minor"]), d["currency"])


def period_out(p: Period | None) -> Json | None:
    return None if p is None else {"start": p.start.isoformat(), "end": p.end.isoformat()}


def period_in(d: Json | None) -> Period | None:
    return None if d is None else Period(date.fromisoformat(d["start"]), date.fromisoformat(d["end"]))


def _date_in(s: str | None) -> date | None:
    return None if s is None else date.fromisoformat(s)


def _date_out(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _states_out(states: frozenset[ServiceState] | None) -> list[str] | None:
    return None if states is None else sorted(x.value for x in states)


def _states_in(values: list[str] | None) -> frozenset[ServiceState] | None:
    return None if values is None else frozenset(ServiceState(x) for x in values)


_RULE_STATES = ("billable_states", "non_creditable_states")


def rules_out(r: BillingRules) -> Json:
    out: Json = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in _RULE_STATES}
    out["calendar"] = r.calendar.value
    out["alignment"] = r.alignment.value
    for name in _RULE_STATES:
        out[name] = _states_out(getattr(r, name))
    return out


def rules_in(d: Json | None) -> BillingRules:
    if d is None:
        return BillingRules()
    return BillingRules(
        calendar=CalendarMode(d["calendar"]),
        period_day=int(d["period_day"]),
        period_weekday=int(d["period_weekday"]),
        threshold_day=d.get("threshold_day"),
        threshold_weekday=d.get("threshold_weekday"),
        alignment=Alignment(d["alignment"]),
        bill_days_before=int(d["bill_days_before"]),
        post_bill_cutoff_day=d.get("post_bill_cutoff_day"),
        billable_states=frozenset(ServiceState(x) for x in d["billable_states"]),
        non_creditable_states=frozenset(ServiceState(x) for x in d["non_creditable_states"]),
    )


def terms_out(t: PriceTerms) -> Json:
    return {
        "id": t.id,
        "product_id": t.product_id,
        "price": money_out(t.price),
        "cycle": t.cycle.value,
        "billing_model": t.billing_model.value,
        "pricing_model": t.pricing_model.value,
        "setup_fee": money_out(t.setup_fee),
        "trial_days": t.trial_days,
        "alignment": None if t.alignment is None else t.alignment.value,
        "usage": None if t.usage is None else usage_out(t.usage),
        "term_cycles": t.term_cycles,
        "auto_renew": t.auto_renew,
        "contract_cycles": t.contract_cycles,
        "cancellation_fee": money_out(t.cancellation_fee),
        **({"included_credits": t.included_credits} if t.included_credits else {}),
        **({"features": list(t.features)} if t.features else {}),
        **({"limits": dict(t.limits)} if t.limits else {}),
        **({"prepaid_credits": t.prepaid_credits} if t.prepaid_credits else {}),
    }


def terms_in(d: Json) -> PriceTerms:
    return PriceTerms(
        id=d["id"],
        product_id=d["product_id"],
        price=_money(d["price"]),
        cycle=Cycle(d["cycle"]),
        billing_model=BillingModel(d["billing_model"]),
        pricing_model=PricingModel(d["pricing_model"]),
        setup_fee=money_in(d.get("setup_fee")),
        trial_days=int(d.get("trial_days", 0)),
        alignment=None if d.get("alignment") is None else Alignment(d["alignment"]),
        usage=_usage_in(d),
        term_cycles=_int_in(d.get("term_cycles")),
        auto_renew=bool(d.get("auto_renew", True)),
        contract_cycles=_int_in(d.get("contract_cycles")),
        cancellation_fee=money_in(d.get("cancellation_fee")),
        included_credits=int(d.get("included_credits", 0)),
        features=tuple(d.get("features", ())),
        limits=tuple((k, int(v)) for k, v in (d.get("limits") or {}).items()),
        prepaid_credits=int(d.get("prepaid_credits", 0)),
    )


def _plain(value: Decimal) -> str:
    return format(value, "f")  # "0.000000000001", never "1E-12"


def _dec_out(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value)


def _dec_in(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _dec0_in(value: str | None) -> Decimal:
    return Decimal(value or 0)


def allowance_out(a: Allowance) -> Json:
    return {
        "per_record": _dec_out(a.per_record),
        "per_day": _dec_out(a.per_day),
        "per_cycle": _dec_out(a.per_cycle),
        "beyond": a.beyond.value,
    }


def allowance_in(d: Json) -> Allowance:
    return Allowance(
        _dec_in(d.get("per_record")), _dec_in(d.get("per_day")), _dec_in(d.get("per_cycle")), Beyond(d["beyond"])
    )


def usage_out(u: UsagePrice) -> Json:
    """A usage price as stored (decimals as their exact strings; absent parts null)."""
    package, pct, limit = u.package, u.percentage, u.charge_limit
    return {
        "meter": u.meter,
        "aggregation": u.aggregation.value,
        "model": u.model.value,
        "property": u.property,
        "unit_price": _dec_out(u.unit_price),
        "tiers": [
            {
                "up_to": _dec_out(t.up_to),
                "unit_price": _plain(t.unit_price),
                "flat_price": _plain(t.flat_price),
                "rate": _plain(t.rate),
            }
            for t in u.tiers
        ],
        "package": None
        if package is None
        else {"size": _plain(package.size), "price": _plain(package.price), "round": package.round},
        "percentage": None
        if pct is None
        else {
            "rate": _plain(pct.rate),
            "fixed_price": _plain(pct.fixed_price),
            "min_per_event": _dec_out(pct.min_per_event),
            "max_per_event": _dec_out(pct.max_per_event),
        },
        "free_units": _plain(u.free_units),
        "free_events": u.free_events,
        "free_amount": _plain(u.free_amount),
        "allowance": None if u.allowance is None else allowance_out(u.allowance),
        "charge_limit": None if limit is None else {"amount": _dec_out(limit.amount), "records": limit.records},
    }


def usage_in(d: Json) -> UsagePrice:
    package, pct, limit = d.get("package"), d.get("percentage"), d.get("charge_limit")
    return UsagePrice(
        meter=d["meter"],
        aggregation=Aggregation(d["aggregation"]),
        model=UsageModel(d["model"]),
        property=d.get("property"),
        unit_price=_dec_in(d.get("unit_price")),
        tiers=tuple(
            Tier(
                _dec_in(t["up_to"]),
                _dec0_in(t.get("unit_price")),
                _dec0_in(t.get("flat_price")),
                _dec0_in(t.get("rate")),
            )
            for t in d.get("tiers") or ()
        ),
        package=None
        if package is None
        else Package(Decimal(package["size"]), Decimal(package["price"]), package["round"]),
        percentage=None
        if pct is None
        else Percentage(
            Decimal(pct["rate"]),
            _dec0_in(pct.get("fixed_price")),
            _dec_in(pct.get("min_per_event")),
            _dec_in(pct.get("max_per_event")),
        ),
        free_units=_dec0_in(d.get("free_units")),
        free_events=int(d.get("free_events") or 0),
        free_amount=_dec0_in(d.get("free_amount")),
        allowance=None if d.get("allowance") is None else allowance_in(d["allowance"]),
        charge_limit=None
        if limit is None
        else ChargeLimit(_dec_in(limit.get("amount")), _int_in(limit.get("records"))),
    )


def _usage_in(d: Json) -> UsagePrice | None:
    """Terms' usage price as stored; terms stored before usage pricing name only a `meter`: they
    read as a per_unit price of 0 on that meter, summed (what they billed: nothing)."""
    if d.get("usage") is not None:
        return usage_in(d["usage"])
    if d.get("meter") is not None:
        return UsagePrice(d["meter"], Aggregation.SUM, UsageModel.PER_UNIT, unit_price=Decimal(0))
    return None


def _int_in(value: Any) -> int | None:
    return None if value is None else int(value)


def product_out(p: Product) -> Json:
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "archived": p.archived,
        "archived_terms": sorted(p.archived_terms),
        "replacements": [list(pair) for pair in p.replacements],
        "terms_order": [t.id for t in p.terms],
    }


def product_in(d: Json, terms: list[PriceTerms], version: int) -> Product:
    """The product with its terms in the order they were added (ids alone do not sort by creation:
    those derived from an idempotency key are hashes)."""
    order = {terms_id: i for i, terms_id in enumerate(d.get("terms_order", ()))}
    return Product(
        d["id"],
        d["name"],
        d.get("description", ""),
        tuple(sorted(terms, key=lambda t: (order.get(t.id, len(order)), t.id))),
        archived=bool(d.get("archived", False)),
        archived_terms=frozenset(d.get("archived_terms", ())),
        replacements=tuple((old, new) for old, new in d.get("replacements", ())),
        version=version,
    )


def contact_out(c: Contact) -> Json:
    return {
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "billing_address": None if c.billing_address is None else _address_out(c.billing_address),
        "classification": c.classification,
        "credit_limit": {currency: money_out(m) for currency, m in sorted(c.credit_limit.items())},
        "preferred_payment_method": c.preferred_payment_method,
        "test_mode": c.test_mode,
        "created_at": c.created_at.isoformat(),
        "archived": c.archived,
        **({"collection": c.collection.value} if c.collection is not None else {}),
        **({"gateway_customer_ref": c.gateway_customer_ref} if c.gateway_customer_ref else {}),
        **({"default_method_ref": c.default_method_ref} if c.default_method_ref else {}),
        **({"dunning_excluded": True} if c.dunning_excluded else {}),
        **({"allowances": {m: allowance_out(a) for m, a in sorted(c.allowances.items())}} if c.allowances else {}),
        **({"allowances_revision": c.allowances_revision} if c.allowances_revision else {}),
    }


def _address_out(a: Address) -> Json:
    return {
        "line1": a.line1,
        "city": a.city,
        "country": a.country,
        "postal_code": a.postal_code,
        "line2": a.line2,
        "region": a.region,
    }


def _address_in(d: Json) -> Address:
    return Address(
        line1=d["line1"],
        city=d["city"],
        country=d["country"],
        postal_code=d.get("postal_code", ""),
        line2=d.get("line2", ""),
        region=d.get("region", ""),
    )


def _credit_limit_in(d: Json | None) -> dict[str, Money]:
    """Per-currency limits; a contact stored when it had one limit (a single Money, or none) reads
    as that one currency's limit (or none)."""
    if not d:
        return {}
    if "minor" in d:
        return {d["currency"]: _money(d)}
    return {currency: _money(m) for currency, m in d.items()}


def contact_in(d: Json, version: int = 0) -> Contact:
    a = d.get("billing_address")
    return Contact(
        id=d["id"],
        name=d["name"],
        email=d["email"],
        billing_address=None if a is None else _address_in(a),
        classification=d.get("classification"),
        credit_limit=_credit_limit_in(d.get("credit_limit")),
        preferred_payment_method=d.get("preferred_payment_method"),
        test_mode=bool(d["test_mode"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        archived=bool(d.get("archived", False)),
        version=version,
        collection=CollectionMode(d["collection"]) if d.get("collection") else None,
        gateway_customer_ref=d.get("gateway_customer_ref"),
        default_method_ref=d.get("default_method_ref"),
        dunning_excluded=bool(d.get("dunning_excluded", False)),
        allowances={m: allowance_in(a) for m, a in (d.get("allowances") or {}).items()},
        allowances_revision=int(d.get("allowances_revision", 0)),
    )


def payment_method_out(m: SavedPaymentMethod) -> Json:
    return {
        "id": m.id,
        "contact_id": m.contact_id,
        "rail": m.rail,
        "customer_ref": m.customer_ref,
        "setup_ref": m.setup_ref,
        "kind": m.kind,
        "brand": m.brand,
        "last4": m.last4,
        "exp_month": m.exp_month,
        "exp_year": m.exp_year,
        "saved_at": m.saved_at.isoformat(),
        "removed_at": None if m.removed_at is None else m.removed_at.isoformat(),
        "expiring_announced_on": None if m.expiring_announced_on is None else m.expiring_announced_on.isoformat(),
    }


def payment_method_in(d: Json, version: int = 0) -> SavedPaymentMethod:
    removed, announced = d.get("removed_at"), d.get("expiring_announced_on")
    return SavedPaymentMethod(
        id=d["id"],
        contact_id=d["contact_id"],
        rail=d["rail"],
        customer_ref=d["customer_ref"],
        setup_ref=d["setup_ref"],
        kind=d["kind"],
        brand=d.get("brand"),
        last4=d.get("last4"),
        exp_month=d.get("exp_month"),
        exp_year=d.get("exp_year"),
        saved_at=datetime.fromisoformat(d["saved_at"]),
        removed_at=None if removed is None else datetime.fromisoformat(removed),
        expiring_announced_on=None if announced is None else date.fromisoformat(announced),
        version=version,
    )


def clock_out(c: TestClock) -> Json:
    return {"contact_id": c.contact_id, "frozen_time": c.frozen_time.isoformat(), "status": c.status.value}


def clock_in(d: Json, version: int) -> TestClock:
    status = ClockStatus(d.get("status", ClockStatus.READY.value))
    return TestClock(d["contact_id"], datetime.fromisoformat(d["frozen_time"]), version, status)


def service_out(s: Service) -> Json:
    return {
        "id": s.id,
        "order_id": s.order_id,
        "product_id": s.product_id,
        "product_name": s.product_name,
        "terms": terms_out(s.terms),
        "quantity": s.quantity,
        "state": s.state.value,
        "start_date": s.start_date.isoformat(),
        "billed_through": _date_out(s.billed_through),
        "state_since": _date_out(s.state_since),
        "end_date": _date_out(s.end_date),
        "alignment": s.alignment.value,
        "ordered_on": _date_out(s.ordered_on),
        "usage_billed_through": _date_out(s.usage_billed_through),
        "billable_states": _states_out(s.billable_states),
        "non_creditable_states": _states_out(s.non_creditable_states),
        "trial_ends_on": _date_out(s.trial_ends_on),
        "trial_extended": s.trial_extended,
        "stopped_on": _date_out(s.stopped_on),
        "restarted_on": _date_out(s.restarted_on),
        "billed_at_stop": _date_out(s.billed_at_stop),
        "term_end": _date_out(s.term_end),
        "auto_renew": s.auto_renew,
        "contract_end": _date_out(s.contract_end),
        "expired": s.expired,
        "pauses": [period_out(p) for p in s.pauses],
        "lapses_on": _date_out(s.lapses_on),
        **({"usage_billed": [_billed_usage_out(b) for b in s.usage_billed]} if s.usage_billed else {}),
        **({"earlier_terms": [_earlier_out(e) for e in s.earlier_terms]} if s.earlier_terms else {}),
    }


def _earlier_out(e: EarlierTerms) -> Json:
    return {"product_name": e.product_name, "terms": terms_out(e.terms), "until": e.until.isoformat()}


def _earlier_in(d: Json) -> EarlierTerms:
    return EarlierTerms(d["product_name"], terms_in(d["terms"]), date.fromisoformat(d["until"]))


def _billed_usage_out(b: BilledUsage) -> Json:
    return {
        "period_start": b.period_start.isoformat(),
        "amount": money_out(b.amount),
        "quantity": str(b.quantity),
        "records": b.records,
        "progressive": b.progressive,
    }


def _billed_usage_in(d: Json) -> BilledUsage:
    return BilledUsage(
        date.fromisoformat(d["period_start"]),
        _money(d["amount"]),
        Decimal(d["quantity"]),
        int(d["records"]),
        int(d.get("progressive", 0)),
    )


def service_in(d: Json) -> Service:
    return Service(
        id=d["id"],
        order_id=d["order_id"],
        product_id=d["product_id"],
        product_name=d["product_name"],
        terms=terms_in(d["terms"]),
        quantity=int(d["quantity"]),
        state=ServiceState(d["state"]),
        start_date=date.fromisoformat(d["start_date"]),
        billed_through=_date_in(d.get("billed_through")),
        state_since=_date_in(d.get("state_since")),
        end_date=_date_in(d.get("end_date")),
        alignment=Alignment(d.get("alignment", "immediate")),
        ordered_on=_date_in(d.get("ordered_on")),
        usage_billed_through=_date_in(d.get("usage_billed_through")),
        billable_states=_states_in(d.get("billable_states")),
        non_creditable_states=_states_in(d.get("non_creditable_states")),
        trial_ends_on=_date_in(d.get("trial_ends_on")),
        trial_extended=bool(d.get("trial_extended", False)),
        stopped_on=_date_in(d.get("stopped_on")),
        restarted_on=_date_in(d.get("restarted_on")),
        billed_at_stop=_date_in(d.get("billed_at_stop")),
        term_end=_date_in(d.get("term_end")),
        auto_renew=bool(d.get("auto_renew", True)),
        contract_end=_date_in(d.get("contract_end")),
        expired=bool(d.get("expired", False)),
        pauses=tuple(_period(p) for p in d.get("pauses", ())),
        lapses_on=_date_in(d.get("lapses_on")),
        usage_billed=tuple(_billed_usage_in(b) for b in d.get("usage_billed", ())),
        earlier_terms=tuple(_earlier_in(e) for e in d.get("earlier_terms", ())),
    )


def _period(d: Json) -> Period:
    period = period_in(d)
    assert period is not None
    return period


def subscription_out(s: Subscription) -> Json:
    return {
        "id": s.id,
        "contact_id": s.contact_id,
        "cycle": s.key.cycle.value,
        "billing_model": s.key.billing_model.value,
        "currency": s.key.currency,
        "billing_day": s.schedule.billing_day,
        "schedule_reference": s.schedule.reference.isoformat(),
        "services": [service_out(x) for x in s.services],
        "created_on": s.created_on.isoformat(),
        "invoice_count": s.invoice_count,
        "test_clock": s.test_clock,
        "rules": rules_out(s.rules),
        "actions": [action_out(a) for a in s.actions],
        "adjustments": [{"line": line_out(a.line), "run_on": a.run_on.isoformat()} for a in s.adjustments],
        "payment_method": s.payment_method,
        "bill_ahead_until": _date_out(s.bill_ahead_until),
        "bill_ahead_steps": [[_date_out(ran_on), _date_out(until)] for ran_on, until in s.bill_ahead_steps],
        "acted_on": _date_out(s.acted_on),
        "grace_until": _date_out(s.grace_until),
    }


def subscription_in(d: Json, version: int) -> Subscription:
    cycle = Cycle(d["cycle"])
    return Subscription(
        id=d["id"],
        contact_id=d["contact_id"],
        key=SubscriptionKey(cycle, BillingModel(d["billing_model"]), d["currency"]),
        schedule=BillingSchedule(cycle, int(d["billing_day"]), date.fromisoformat(d["schedule_reference"])),
        services=tuple(service_in(x) for x in d["services"]),
        created_on=date.fromisoformat(d["created_on"]),
        invoice_count=int(d["invoice_count"]),
        version=version,
        test_clock=bool(d.get("test_clock", False)),
        rules=rules_in(d.get("rules")),
        actions=tuple(action_in(a) for a in d.get("actions", ())),
        adjustments=tuple(
            Adjustment(line_in(a["line"]), date.fromisoformat(a["run_on"])) for a in d.get("adjustments", ())
        ),
        payment_method=d.get("payment_method"),
        bill_ahead_until=_date_in(d.get("bill_ahead_until")),
        bill_ahead_steps=tuple(
            (date.fromisoformat(ran_on), date.fromisoformat(until)) for ran_on, until in d.get("bill_ahead_steps") or ()
        ),
        acted_on=_date_in(d.get("acted_on")),
        grace_until=_date_in(d.get("grace_until")),
    )


_ACTION_DATES = ("on", "requested_on", "executed_on")


def action_out(a: Action) -> Json:
    """A log record: its own fields, and beside them (by name) what its kind holds."""
    body = {f.name: getattr(a, f.name) for f in fields(a) if f.name != "params"}
    body["kind"] = a.kind.name
    for name in _ACTION_DATES:
        body[name] = _date_out(body[name])
    if a.params is not None:
        body |= {name: _value_out(value) for name, value in _param_values(a.params)}
    return body


def action_in(d: Json) -> Action:
    kind = kind_named(d["kind"])
    body: dict[str, Any] = {name: d.get(name) for name in RECORD_FIELDS}
    for name in _ACTION_DATES:
        body[name] = _date_in(body[name])
    return Action(
        **{
            **body,
            "kind": kind,
            "status": ActionStatus(body["status"]),
            "by": Requester(body["by"]),
            "params": _params_in(kind.holds, d),
        }
    )


def _param_values(params: object) -> list[tuple[str, object]]:
    return [(f.name, getattr(params, f.name)) for f in fields(params)]  # type: ignore[arg-type]


def _value_out(value: object) -> object:
    """An action's parameter as stored: plain values as they are, days in ISO, money in minor
    units, price terms whole, dataclasses field by field."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Money):
        return money_out(value)
    if isinstance(value, PriceTerms):
        return terms_out(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {name: _value_out(v) for name, v in _param_values(value)}
    return value


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(shape: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(shape)
    if hints is None:
        hints = _HINTS[shape] = get_type_hints(shape)
    return hints


def _value_in(raw: Any, hint: Any) -> Any:
    """The inverse of `_value_out`, by the parameter's type."""
    if raw is None:
        return None
    if get_origin(hint) in (Union, UnionType):  # `X | None`
        hint = next(h for h in get_args(hint) if h is not type(None))
    if hint is date:
        return date.fromisoformat(raw)
    if hint is Money:
        return _money(raw)
    if hint is PriceTerms:
        return terms_in(raw)
    if isinstance(hint, type) and is_dataclass(hint):
        return _params_in(hint, raw)
    return raw


def _params_in(shape: type[Any], d: Json) -> Any:
    """What an action of a kind holding `shape` holds; None on the record of a request refused
    before its required parameters were read (they are stored as null)."""
    values = {name: _value_in(d.get(name), hint) for name, hint in _hints(shape).items()}
    required = {f.name for f in fields(shape) if f.default is MISSING and f.default_factory is MISSING}
    if any(values[name] is None for name in required):
        return None
    return shape(**values)


def line_out(line: LineDraft) -> Json:
    return {
        "kind": line.kind,
        "description": line.description,
        "service_id": line.service_id,
        "product_id": line.product_id,
        "quantity": line.quantity if isinstance(line.quantity, int) else str(line.quantity),
        "unit_price": money_out(line.unit_price),
        "fraction": f"{line.fraction.numerator}/{line.fraction.denominator}",
        "amount": money_out(line.amount),
        "period": period_out(line.period),
    }


def line_in(d: Json) -> LineDraft:
    return LineDraft(
        kind=d["kind"],
        description=d["description"],
        service_id=d["service_id"],
        product_id=d["product_id"],
        quantity=Decimal(d["quantity"]) if isinstance(d["quantity"], str) else int(d["quantity"]),
        unit_price=_money(d["unit_price"]),
        fraction=Fraction(d["fraction"]),
        amount=_money(d["amount"]),
        period=period_in(d.get("period")),
    )


def invoice_out(i: Invoice) -> Json:
    return {
        "id": i.id,
        "number": i.number,
        "contact_id": i.contact_id,
        "subscription_id": i.subscription_id,
        "currency": i.currency,
        "billing_date": i.billing_date.isoformat(),
        "issue_date": i.issue_date.isoformat(),
        "due_date": i.due_date.isoformat(),
        "period": period_out(i.period),
        "lines": [line_out(x) for x in i.lines],
        "amount_paid": money_out(i.amount_paid),
        "amount_credited": money_out(i.credited),
        "amount_applied": money_out(i.applied),
        "amount_refunded": money_out(i.refunded),
        "status": i.status.value,
        "status_on": i.status_on.isoformat() if i.status_on else None,
        "status_reason": i.status_reason,
        "review_until": i.review_until.isoformat() if i.review_until else None,
        "test_clock": i.test_clock,
        "lapses_on": _date_out(i.lapses_on),
        "amount_unapplied": money_out(i.unapplied),
        **({"top_up": _top_up_out(i.top_up)} if i.top_up is not None else {}),
    }


def _top_up_out(t: TopUp) -> Json:
    return {
        "pack_id": t.pack_id,
        "credits": t.credits,
        "request_id": t.request_id,
        "auto": t.auto,
        **({"on_session": True} if t.on_session else {}),
    }


def _top_up_in(d: Json | None) -> TopUp | None:
    if d is None:
        return None
    return TopUp(d["pack_id"], int(d["credits"]), d["request_id"], bool(d.get("auto")), bool(d.get("on_session")))


def invoice_in(d: Json, version: int) -> Invoice:
    period = period_in(d["period"])
    assert period is not None
    return Invoice(
        id=d["id"],
        number=d["number"],
        contact_id=d["contact_id"],
        subscription_id=d["subscription_id"],
        currency=d["currency"],
        billing_date=date.fromisoformat(d["billing_date"]),
        issue_date=date.fromisoformat(d["issue_date"]),
        due_date=date.fromisoformat(d["due_date"]),
        period=period,
        lines=tuple(line_in(x) for x in d["lines"]),
        amount_paid=_money(d["amount_paid"]),
        status=InvoiceStatus(d["status"]),
        version=version,
        # Invoices stored before receivables: nothing credited, applied or refunded; issued that day.
        amount_credited=money_in(d.get("amount_credited")),
        amount_applied=money_in(d.get("amount_applied")),
        amount_refunded=money_in(d.get("amount_refunded")),
        status_on=date.fromisoformat(d.get("status_on") or d["issue_date"]),
        status_reason=d.get("status_reason"),
        review_until=date.fromisoformat(d["review_until"]) if d.get("review_until") else None,
        test_clock=bool(d.get("test_clock", False)),
        lapses_on=_date_in(d.get("lapses_on")),
        amount_unapplied=money_in(d.get("amount_unapplied")),
        top_up=_top_up_in(d.get("top_up")),
    )


def application_out(a: CreditApplication) -> Json:
    return {
        "id": a.id,
        "credit_note_id": a.credit_note_id,
        "invoice_id": a.invoice_id,
        "amount": money_out(a.amount),
        "applied_on": a.applied_on.isoformat(),
        "recorded_at": a.recorded_at.isoformat(),
        "reversed_on": a.reversed_on.isoformat() if a.reversed_on else None,
    }


def application_in(d: Json, version: int = 0) -> CreditApplication:
    return CreditApplication(
        id=d["id"],
        credit_note_id=d["credit_note_id"],
        invoice_id=d["invoice_id"],
        amount=_money(d["amount"]),
        applied_on=date.fromisoformat(d["applied_on"]),
        recorded_at=datetime.fromisoformat(d["recorded_at"]),
        reversed_on=date.fromisoformat(d["reversed_on"]) if d.get("reversed_on") else None,
    )


def refund_out(r: Refund) -> Json:
    return {
        "id": r.id,
        "credit_note_id": r.credit_note_id,
        "amount": money_out(r.amount),
        "method": r.method.value,
        "reference": r.reference,
        "refunded_on": r.refunded_on.isoformat(),
        "recorded_at": r.recorded_at.isoformat(),
        "invoice_id": r.invoice_id,
        "payment_id": r.payment_id,
        "status": r.status.value,
        "rail_ref": r.rail_ref,
        "failure": r.failure,
        "leased_until": r.leased_until.isoformat() if r.leased_until else None,
        **({"unapplied": True} if r.unapplied else {}),
    }


def refund_in(d: Json, version: int = 0) -> Refund:
    # Refunds stored before card refunds: manual, succeeded when recorded.
    return Refund(
        id=d["id"],
        credit_note_id=d["credit_note_id"],
        amount=_money(d["amount"]),
        method=PaymentMethod(d["method"]),
        reference=d["reference"],
        refunded_on=date.fromisoformat(d["refunded_on"]),
        recorded_at=datetime.fromisoformat(d["recorded_at"]),
        invoice_id=d.get("invoice_id"),
        payment_id=d.get("payment_id"),
        status=RefundStatus(d.get("status") or RefundStatus.SUCCEEDED.value),
        rail_ref=d.get("rail_ref"),
        failure=d.get("failure"),
        leased_until=datetime.fromisoformat(d["leased_until"]) if d.get("leased_until") else None,
        version=version,
        unapplied=bool(d.get("unapplied")),
    )


def payment_out(p: Payment) -> Json:
    return {
        "id": p.id,
        "invoice_id": p.invoice_id,
        "amount": money_out(p.amount),
        "method": p.method.value,
        "reference": p.reference,
        "received_on": p.received_on.isoformat(),
        "recorded_at": p.recorded_at.isoformat(),
        "amount_refunded": money_out(p.refunded),
        "unapplied": money_out(p.unapplied),
        **({"stray_charge": True} if p.stray_charge else {}),
    }


def payment_in(d: Json, version: int = 0) -> Payment:
    return Payment(
        id=d["id"],
        invoice_id=d["invoice_id"],
        amount=_money(d["amount"]),
        method=PaymentMethod(d["method"]),
        reference=d["reference"],
        received_on=date.fromisoformat(d["received_on"]),
        recorded_at=datetime.fromisoformat(d["recorded_at"]),
        amount_refunded=money_in(d.get("amount_refunded")),  # None (stored before refunds): nothing refunded
        version=version,
        unapplied=money_in(d.get("unapplied")),
        stray_charge=bool(d.get("stray_charge", False)),
    )


def attempt_out(a: PaymentAttempt) -> Json:
    return {
        "id": a.id,
        "invoice_id": a.invoice_id,
        "contact_id": a.contact_id,
        "number": a.number,
        "amount": money_out(a.amount),
        "covers": [[invoice_id, money_out(m)] for invoice_id, m in a.covers],
        "method_ref": a.method_ref,
        "customer_ref": a.customer_ref,
        "status": a.status.value,
        "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat(),
        "charge_ref": a.charge_ref,
        "decline_code": a.decline_code,
        "hard_decline": a.rail_hard_decline,
        "reason": a.reason,
        "made_on": _date_out(a.made_on),
        **({"on_session": True} if a.on_session else {}),
    }


def attempt_in(d: Json, version: int) -> PaymentAttempt:
    return PaymentAttempt(
        id=d["id"],
        invoice_id=d["invoice_id"],
        contact_id=d["contact_id"],
        number=int(d["number"]),
        amount=_money(d["amount"]),
        covers=tuple((invoice_id, _money(m)) for invoice_id, m in d["covers"]),
        method_ref=d.get("method_ref"),
        customer_ref=d.get("customer_ref"),
        status=AttemptStatus(d["status"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
        charge_ref=d.get("charge_ref"),
        decline_code=d.get("decline_code"),
        rail_hard_decline=bool(d.get("hard_decline", False)),
        reason=d.get("reason"),
        version=version,
        made_on=_date_in(d.get("made_on")),  # None: stored before attempts kept their day
        on_session=bool(d.get("on_session", False)),
    )


def order_out(o: Order) -> Json:
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
    } | ({} if o.request is None else {"request": o.request})


def order_in(d: Json) -> Order:
    return Order(
        id=d["id"],
        contact_id=d["contact_id"],
        reference=d.get("reference"),
        start_date=date.fromisoformat(d["start_date"]),
        services=tuple(
            OrderedService(s["service_id"], s["subscription_id"], s["product_id"], s["terms_id"], s["quantity"])
            for s in d["services"]
        ),
        request=d.get("request"),
    )


def settings_out(s: TenantSettings) -> Json:
    return {
        "tenant_id": s.tenant_id,
        "name": s.name,
        "timezone": s.timezone,
        "payment_terms_days": s.payment_terms_days,
        "invoice_prefix": s.invoice_prefix,
        "invoice_review_days": s.invoice_review_days,
        "auto_apply_credit": s.auto_apply_credit,
        **({"credit_overdraft": s.credit_overdraft} if s.credit_overdraft else {}),
        **({"credit_overdraft_price": money_out(s.credit_overdraft_price)} if s.credit_overdraft_price else {}),
        "billing": rules_out(s.billing),
        "subscriptions": policy_out(s.subscriptions),
        "collection": {"mode": s.collection.mode.value, "collect_whole_debt": s.collection.collect_whole_debt},
        "dunning": dunning_out(s.dunning),
    }


def settings_in(d: Json, version: int) -> TenantSettings:
    policy = policy_in(d.get("subscriptions") or {})
    collection = collection_in(d.get("collection"))
    return TenantSettings(
        **{
            **d,
            "billing": rules_in(d.get("billing")),
            "subscriptions": policy,
            "collection": collection,
            "dunning": dunning_in(d.get("dunning")),
            "credit_overdraft_price": money_in(d.get("credit_overdraft_price")),
            "version": version,
        }
    )


def collection_in(d: Json | None) -> CollectionSettings:
    """Absent (stored before collection existed): the default."""
    if not d:
        return CollectionSettings()
    return CollectionSettings(CollectionMode(d["mode"]), bool(d.get("collect_whole_debt", False)))


def dunning_out(p: DunningPolicy) -> Json:
    """A dunning policy as stored: in the tenant's settings, and kept by each case it opened."""
    return {
        "retry_days": list(p.retry_days),
        "reminder_days": list(p.reminder_days),
        "grace_days": p.grace_days,
        "threshold": {currency: m.amount_str() for currency, m in sorted(p.deactivation_threshold.items())},
        "cancel_after_days": p.cancel_after_days,
        "no_deactivation": list(p.excluded_from_deactivation),
        "no_cancellation": list(p.excluded_from_cancellation),
        "cancel_with_fees": p.cancel_with_fees,
        "version": p.version,
    }


def dunning_in(d: Json | None) -> DunningPolicy:
    """Absent (stored before dunning existed): the default."""
    if not d:
        return DunningPolicy()
    return DunningPolicy(
        retry_days=tuple(d["retry_days"]),
        reminder_days=tuple(d["reminder_days"]),
        grace_days=d["grace_days"],
        deactivation_threshold={c: Money.parse(a, c) for c, a in d["threshold"].items()},
        cancel_after_days=d["cancel_after_days"],
        excluded_from_deactivation=tuple(d["no_deactivation"]),
        excluded_from_cancellation=tuple(d["no_cancellation"]),
        cancel_with_fees=d["cancel_with_fees"],
        version=d["version"],
    )


def policy_out(p: SubscriptionPolicy) -> Json:
    return {
        "trial_limit": p.trial_limit.value,
        "trial_extension": p.trial_extension,
        "max_trial_extension_days": p.max_trial_extension_days,
        "cancel_in_contract": p.cancel_in_contract.value,
        "cancel_out_of_contract": p.cancel_out_of_contract.value,
        "upgrade": p.upgrade.value,
        "downgrade": p.downgrade.value,
        "regret_days": p.regret_days,
        "pause_max_times": p.pause_max_times,
        "pause_max_days": p.pause_max_days,
        "grace_min_days": p.grace_min_days,
        "grace_max_days": p.grace_max_days,
        "debt_threshold": {currency: m.amount_str() for currency, m in sorted(p.debt_threshold.items())},
        "max_services": dict(p.max_services),
        "reasons": {kind: list(reasons) for kind, reasons in p.reasons.items()},
        "tier_paths": [list(path) for path in p.tier_paths],
        "requires": {product: list(needs) for product, needs in p.requires.items()},
        "excludes": [list(pair) for pair in p.excludes],
        "activate_on_payment": p.activate_on_payment,
        "unpaid_order_lapse_days": p.unpaid_order_lapse_days,
    }


_POLICY_PLAIN = (
    "trial_extension",
    "max_trial_extension_days",
    "regret_days",
    "pause_max_times",
    "pause_max_days",
    "grace_min_days",
    "grace_max_days",
    "activate_on_payment",
    "unpaid_order_lapse_days",
)
_POLICY_ENUMS: dict[str, type[TrialLimit] | type[Timing]] = {
    "trial_limit": TrialLimit,
    "cancel_in_contract": Timing,
    "cancel_out_of_contract": Timing,
    "upgrade": Timing,
    "downgrade": Timing,
}


def policy_in(d: Json) -> SubscriptionPolicy:
    """A missing key keeps its default (the rule did not exist when the settings were stored)."""
    values: dict[str, Any] = {name: d[name] for name in _POLICY_PLAIN if name in d}
    values |= {name: kind(d[name]) for name, kind in _POLICY_ENUMS.items() if name in d}
    thresholds = d.get("debt_threshold")
    if isinstance(thresholds, dict):  # a bare amount stored before thresholds had currencies: none
        values["debt_threshold"] = {c: Money.parse(a, c) for c, a in thresholds.items()}
    if "max_services" in d:
        values["max_services"] = dict(d["max_services"])
    if "reasons" in d:
        values["reasons"] = {kind_named(k).name: tuple(v) for k, v in d["reasons"].items()}
    if "tier_paths" in d:
        values["tier_paths"] = tuple(tuple(path) for path in d["tier_paths"])
    if "requires" in d:
        values["requires"] = {k: tuple(v) for k, v in d["requires"].items()}
    if "excludes" in d:
        values["excludes"] = tuple((a, b) for a, b in d["excludes"])
    return SubscriptionPolicy(**values)


def case_out(c: DunningCase) -> Json:
    """A dunning case's body (its flow fields are the item's: `billow.storage.repository`)."""
    return {
        "id": c.id,
        "contact_id": c.contact_id,
        "currency": c.currency,
        "opened_on": c.opened_on.isoformat(),
        "policy": dunning_out(c.policy),
        "status": c.status.value,
        "history": [
            {"on": s.on.isoformat(), "kind": s.kind.value, "targets": list(s.targets), "outcome": s.outcome}
            for s in c.history
        ],
    }


def case_in(d: Json, version: int) -> DunningCase:
    return DunningCase(
        id=d["id"],
        contact_id=d["contact_id"],
        currency=d["currency"],
        opened_on=date.fromisoformat(d["opened_on"]),
        policy=dunning_in(d["policy"]),
        status=CaseStatus(d["status"]),
        history=tuple(
            Step(date.fromisoformat(s["on"]), StepKind(s["kind"]), tuple(s["targets"]), s["outcome"])
            for s in d["history"]
        ),
        version=version,
    )


def usage_record_out(r: UsageRecord) -> Json:
    """A usage record's body, with short names: a record item stays well under 1 KB, one write
    unit (its key names the contact, service, period and id already)."""
    body: Json = {
        "sub": r.subscription_id,
        "m": r.meter,
        "at": r.at.isoformat(),
        "d": r.day.isoformat(),
        "q": str(r.quantity),
        "rcv": r.received_at.isoformat(),
    }
    if r.properties:
        body["p"] = dict(r.properties)
    return body


def usage_record_in(d: Json, *, record_id: str, contact_id: str, service_id: str, period_start: date) -> UsageRecord:
    return UsageRecord(
        id=record_id,
        subscription_id=d["sub"],
        service_id=service_id,
        contact_id=contact_id,
        meter=d["m"],
        at=datetime.fromisoformat(d["at"]),
        day=date.fromisoformat(d["d"]),
        quantity=Decimal(d["q"]),
        properties=dict(d.get("p") or {}),
        period_start=period_start,
        received_at=datetime.fromisoformat(d["rcv"]),
    )
