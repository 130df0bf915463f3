"""Change a service's product, price terms and/or quantity from the action's day: the old price is
settled to that day and the new one billed from it. An upgrade or a downgrade takes effect when
the business's timing rules say; price terms of another cycle or billing model move the service
to the contact's subscription of that cycle and model (a new one if there is none): it is settled
here as a cancellation is (credited the same day), and billed there from the day of the change."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from billow.domain.actions import Action, Asked, ServiceChange, ServiceKind, register
from billow.domain.billing import charge_again
from billow.domain.calendar import Cycle
from billow.domain.catalog import PriceTerms
from billow.domain.effects import Effect, cycle_end, not_final
from billow.domain.errors import IllegalTransition, InvalidInput, NotFound, RuleViolation
from billow.domain.lifecycle import CHANGE_RULE, FINAL_STATES
from billow.domain.policy import Timing
from billow.domain.rules import ServiceState
from billow.domain.subscriptions import Service, Subscription, SubscriptionKey
from billow.domain.timeline import check_room


@dataclass(frozen=True, slots=True)
class ChangeAsked:
    product_id: str | None = None
    terms_id: str | None = None
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class Changed:
    change: ServiceChange
    upgrade: bool | None = None
    """Whether it raises the recurring charge (set by the checks)."""


class Change(ServiceKind[ChangeAsked, Changed]):
    name = "change"
    asks = ChangeAsked
    holds = Changed

    def prepare(self, asked: Asked[ChangeAsked]) -> Changed:
        """The product, terms and quantity the service changes to (what is not given stays)."""
        params, service = asked.params, asked.service
        assert service is not None
        product_id = params.product_id or service.product_id
        product = asked.lookups.product(product_id)
        if product is None:
            raise NotFound(f"no product {product_id}", field="product_id")
        terms_id = params.terms_id or (service.terms.id if product_id == service.product_id else None)
        if terms_id is None:
            raise InvalidInput("a change of product needs the new product's terms_id", field="terms_id")
        if (product.id, terms_id) == (service.product_id, service.terms.id):
            terms = service.terms  # a change of quantity alone: the service keeps the terms it has
        else:
            terms = product.orderable_terms(terms_id)
        quantity = params.quantity if params.quantity is not None else service.quantity
        try:
            terms.check_quantity(quantity)
        except InvalidInput as error:
            raise InvalidInput(error.message, field="quantity") from None
        if (product.id, terms.id, quantity) == (service.product_id, service.terms.id, service.quantity):
            raise InvalidInput(
                "the change changes nothing: give another product, terms_id or quantity", field="terms_id"
            )
        return Changed(ServiceChange(product.id, product.name, terms, quantity))

    def check(self, asked: Asked[ChangeAsked], action: Action) -> Action:
        service, policy, subscription = asked.service, asked.policy, asked.subscription
        assert service is not None
        change = self.params(action).change
        policy.check_tier_path(service.product_id, change.product_id)
        check_same_currency(subscription, change.terms)
        _check_contact(asked, service, change)
        # Terms of any cycle compare by what they charge over a year.
        upgrade = change.terms.yearly_rate(change.quantity) > service.terms.yearly_rate(service.quantity)
        timing = policy.upgrade if upgrade else policy.downgrade
        on = action.on
        if timing is Timing.END_OF_CYCLE:
            on = max(on, cycle_end(subscription, on))
        return replace(action, on=on, params=Changed(change, upgrade))

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        not_final(service, self)
        action, subscription = effect.action, effect.subscription
        change = self.params(action).change
        if service.state not in (ServiceState.EFFECTIVE, ServiceState.DRAFT):
            raise IllegalTransition(
                f"cannot change a {service.state.value.replace('_', ' ')} service: {CHANGE_RULE}",
                current_state=service.state.value,
            )
        terms, on = change.terms, action.on
        if (change.product_id, terms, change.quantity) == (service.product_id, service.terms, service.quantity):
            # scheduled when it was a change: crediting and charging the same price is no change
            raise RuleViolation(
                "the service is on these terms already: the change changes nothing", rule="change.nothing"
            )
        check_same_currency(subscription, terms)
        key = SubscriptionKey.of(terms)
        moving = key != subscription.key
        if moving and (service.terms.meter is not None or terms.meter is not None):
            raise RuleViolation(
                "a metered service changes price terms only within its billing cycle and model",
                rule="change.metered",
            )
        _check_meter(service, terms, subscription, on)
        changed = _with_new_terms(service, change, key.cycle, on)
        if service.state is not ServiceState.DRAFT:
            # usage of the periods ended by `on` is rated on the terms it was used under
            oldest = min((b.period_start for b in service.usage_billed), default=None)
            changed = changed.with_earlier_terms(service, on, oldest)
            if terms.meter is not None and not service.meters_usage and service.usage_billed_through is None:
                # metered from the change: no usage of the days before it to bill
                changed = replace(changed, usage_billed_through=max(on, service.billing_start))
        what = f"changed to {change.product_name} x{change.quantity} at {terms.price} per {terms.cycle.value}"
        if service.state is not ServiceState.DRAFT:
            # A started service keeps the trial it had (none, running or over): the new terms' trial
            # is for services that start on them, not free days for a paying one.
            changed = replace(changed, trial_ends_on=service.billing_start)
        if service.in_trial(on) and service.state is not ServiceState.DRAFT:
            what = f"{what} (in trial)"
        elif service.state is not ServiceState.DRAFT:
            credit_on = on if moving else cycle_end(subscription, on)
            settled = effect.settle(service, on, credit_on=credit_on)
            changed = replace(changed, billed_through=settled.billed_through, restarted_on=on, billed_at_stop=None)
            billed_ahead = settled.billed_at_stop
            if not moving and billed_ahead is not None and billed_ahead > on:
                # Periods invoiced ahead are adjusted beside their credit, not invoiced again.
                effect.adjustments = charge_again(changed, effect.pending_subscription(), billed_ahead, credit_on)
                changed = replace(changed, billed_through=billed_ahead)
            what = f"{what}; the old price is settled to {on}"
        if moving:
            # It leaves settled: what it still has pending here goes on this subscription's invoice
            # of the day (a credit of an earlier change included), before it is billed there.
            effect.adjustments = tuple(
                replace(a, run_on=on) if a.line.service_id == service.id and a.run_on > on else a
                for a in effect.adjustments
            )
            effect.move(changed, key)
            what = f"{what}; moved to the contact's {key.cycle.adjective} {key.billing_model.value} subscription"
        return changed, what

    def show(self, params: Changed) -> dict[str, object]:
        change = params.change
        shown: dict[str, object] = {} if params.upgrade is None else {"upgrade": params.upgrade}
        shown["change"] = {"product_id": change.product_id, "terms_id": change.terms.id, "quantity": change.quantity}
        return shown


CHANGE = register(Change())


def pending_cycle(action: Action) -> Cycle | None:
    """The cycle of the price terms a pending change switches its service to."""
    return CHANGE.params(action).change.terms.cycle if action.kind is CHANGE else None


def _check_meter(service: Service, terms: PriceTerms, subscription: Subscription, on: date) -> None:
    """A change to terms metering another meter than the service's (its last metered terms', if it
    meters nothing now) takes effect only on the first day of a billing period: a period's usage is
    rated on one usage price, and one meter's records are never rated at another meter's price
    (docs/billing.md, "Price terms changed")."""
    metered = [t.meter for t in (*(e.terms for e in service.earlier_terms), service.terms) if t.meter is not None]
    current = metered[-1] if metered else None
    if terms.meter is None or current is None or terms.meter == current:
        return
    period = subscription.schedule.period_containing(on)
    if period.start != on:
        raise RuleViolation(
            f"a change from meter '{current}' to '{terms.meter}' takes effect at the start of a billing "
            f"period: schedule it for {period.end.isoformat()}",
            rule="change.meter",
        )


def check_same_currency(subscription: Subscription, terms: PriceTerms) -> None:
    if terms.currency != subscription.currency:
        raise RuleViolation(
            f"a change keeps the service's currency ({subscription.currency}): cancel it and order the new terms",
            rule="change.currency",
        )


def _check_contact(asked: Asked[ChangeAsked], service: Service, change: ServiceChange) -> None:
    """What a change is checked against beyond its own subscription, from one read of the
    contact's subscriptions: the dependency rules, for another product; room for the service in
    the subscription it moves to, for terms of another cycle or billing model."""
    subscription = asked.subscription
    key = SubscriptionKey.of(change.terms)
    other_product = change.product_id != service.product_id
    if not other_product and key == subscription.key:
        return
    held = asked.lookups.subscriptions()
    if other_product:
        services = (s for sub in held for s in sub.services if s.id != service.id)
        products = [s.product_id for s in services if s.state not in FINAL_STATES]
        asked.policy.check_dependencies([*products, change.product_id], field_name="product_id")
    target = next((sub for sub in held if sub.key == key), None)
    if key != subscription.key and target is not None:
        check_room(target)


def _with_new_terms(service: Service, change: ServiceChange, cycle: Cycle, on: date) -> Service:
    """The service on its new product, price terms and quantity. A service not charged yet (a
    draft, a trial) counts its termed and contract periods afresh from its first charged day; else
    a running term or contract is kept (a change does not end a contract), and one that only the
    new terms have starts on the day of the change."""
    terms = change.terms
    charging = service.state is not ServiceState.DRAFT and not service.in_trial(on)
    changed = replace(
        service, product_id=change.product_id, product_name=change.product_name, terms=terms, quantity=change.quantity
    )
    fresh = changed.with_periods_from(on if charging else service.billing_start, cycle)
    running_term = service.term_end if charging and terms.term_cycles is not None else None
    contract_end = service.contract_end
    running_contract = contract_end if charging and contract_end is not None and contract_end > on else None
    return replace(
        fresh,
        term_end=running_term or fresh.term_end,
        auto_renew=service.auto_renew if running_term else terms.auto_renew,
        contract_end=running_contract or fresh.contract_end,
    )
