"""A business's subscription-management rules (CRM.COM Subscriptions manual, "Subscription
Settings"): when actions may happen and what they may do. Checked when an action is requested;
what an action does to billing is `billow.domain.timeline`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from billow.domain.actions import ActionKind, kind_named
from billow.domain.calendar import Period
from billow.domain.errors import InvalidInput, RuleViolation
from billow.domain.money import Money, amounts_per_currency

MAX_LAPSE_DAYS = 365
PAUSE_WINDOW = timedelta(days=365)
"""Pause limits count the pauses that started in the year before a new one."""


class Timing(StrEnum):
    IMMEDIATE = "immediate"  # on the requested day
    END_OF_CYCLE = "end_of_cycle"  # moved to the first day of the next billing cycle


class TrialLimit(StrEnum):
    NONE = "none"  # every order gets the trial its price terms give
    ONCE_PER_CONTACT = "once_per_contact"  # one trial service per contact, ever
    ONCE_PER_SERVICE = "once_per_service"  # one trial per product per contact


@dataclass(frozen=True, slots=True)
class SubscriptionPolicy:
    trial_limit: TrialLimit = TrialLimit.NONE
    trial_extension: bool = True
    """Back-office users may extend a trial, once."""
    max_trial_extension_days: int = 90
    cancel_in_contract: Timing = Timing.END_OF_CYCLE
    cancel_out_of_contract: Timing = Timing.IMMEDIATE
    upgrade: Timing = Timing.IMMEDIATE
    downgrade: Timing = Timing.END_OF_CYCLE
    regret_days: int = 14
    """A service can be regretted up to this many days after it started (0: never)."""
    pause_max_times: int | None = None
    """Pauses a service may start in a year (None: no limit)."""
    pause_max_days: int | None = None
    """Paused days a service may have in a year, counting the planned length of each pause."""
    grace_min_days: int = 1
    grace_max_days: int = 30
    debt_threshold: Mapping[str, Money] = field(default_factory=dict)
    """Per currency: a contact owing more than this in it cannot have services activated. A
    currency not listed allows no debt at all (its threshold is zero)."""
    max_services: Mapping[str, int] = field(default_factory=dict)
    """Account classification -> most non-churned services a contact of it may have."""
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per action: the reasons a request must choose from (an action not listed takes any or none)."""
    tier_paths: tuple[tuple[str, ...], ...] = ()
    """Products a service may change between; with paths set, a change of product must stay in one."""
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Product -> products the contact must also have (not churned) to order it."""
    excludes: tuple[tuple[str, str], ...] = ()
    """Pairs of products a contact cannot have at the same time."""
    activate_on_payment: bool = False
    """Access on payment: a new order's services whose first charge is invoiced with the order stay
    draft until that invoice is paid (an order may choose otherwise; docs/payments.md)."""
    unpaid_order_lapse_days: int = 14
    """Days after the order day that such an order's first invoice may stay unpaid: on that day it
    lapses (its services cancelled, the invoice voided). The invoice is due the day before, when the
    payment terms would make it due later (`Invoice.issue`)."""

    def __post_init__(self) -> None:
        for name in ("regret_days", "grace_min_days", "grace_max_days", "max_trial_extension_days"):
            if not 0 <= getattr(self, name) <= 3660:
                raise InvalidInput(f"{name} is 0 to 3660", field=name)
        if not 1 <= self.unpaid_order_lapse_days <= MAX_LAPSE_DAYS:
            raise InvalidInput(f"unpaid_order_lapse_days is 1 to {MAX_LAPSE_DAYS}", field="unpaid_order_lapse_days")
        for name in ("pause_max_times", "pause_max_days"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInput(f"{name} must not be negative", field=name)
        if self.grace_min_days > self.grace_max_days:
            raise InvalidInput("grace_min_days is above grace_max_days", field="grace_min_days")
        for currency, threshold in self.debt_threshold.items():
            if threshold.currency != currency or threshold.is_negative:
                raise InvalidInput(
                    "a debt threshold is a non-negative amount in its own currency", field=f"debt_threshold.{currency}"
                )
        for kind, allowed in self.reasons.items():
            if not allowed:
                raise InvalidInput(
                    f"list at least one reason for {kind}, or leave {kind} out to take any reason",
                    field=f"reasons.{kind}",
                    code="policy.no_reasons",
                )
        cycle = _requirement_cycle(self.requires)
        if cycle:
            raise InvalidInput(
                f"products require each other in a circle ({' requires '.join(cycle)}): none could be ordered first",
                field=f"requires.{cycle[0]}",
                code="policy.circular_requires",
            )
        for classification, limit in self.max_services.items():
            if limit < 0:
                raise InvalidInput("a service limit must not be negative", field=f"max_services.{classification}")
        for index, pair in enumerate(self.excludes):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise InvalidInput("an exclusion names two different products", field=f"excludes[{index}]")

    # -- its JSON form as the API shows and takes it (storage has its own: billow.storage.codec) ---
    def as_json(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "trial_limit": self.trial_limit.value,
            "cancel_in_contract": self.cancel_in_contract.value,
            "cancel_out_of_contract": self.cancel_out_of_contract.value,
            "upgrade": self.upgrade.value,
            "downgrade": self.downgrade.value,
            "debt_threshold": {currency: m.amount_str() for currency, m in sorted(self.debt_threshold.items())},
            "max_services": dict(self.max_services),
            "reasons": {kind: list(reasons) for kind, reasons in self.reasons.items()},
            "tier_paths": [list(path) for path in self.tier_paths],
            "requires": {product: list(needs) for product, needs in self.requires.items()},
            "excludes": [list(pair) for pair in self.excludes],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SubscriptionPolicy:
        """The inverse of `as_json`; a missing key keeps its default."""
        values = dict(d)
        enums = {"trial_limit": TrialLimit, "cancel_in_contract": Timing, "cancel_out_of_contract": Timing}
        enums |= {"upgrade": Timing, "downgrade": Timing}
        for name, kind in enums.items():
            if name in values:
                values[name] = kind(values[name])
        if "debt_threshold" in values:
            values["debt_threshold"] = _thresholds(values["debt_threshold"])
        if "reasons" in values:
            values["reasons"] = {kind_named(k).name: tuple(v) for k, v in values["reasons"].items()}
        if "tier_paths" in values:
            values["tier_paths"] = tuple(tuple(path) for path in values["tier_paths"])
        if "requires" in values:
            values["requires"] = {k: tuple(v) for k, v in values["requires"].items()}
        if "excludes" in values:
            values["excludes"] = tuple((a, b) for a, b in values["excludes"])
        return cls(**values)

    # -- checks ------------------------------------------------------------------------------------
    def debt_allowed(self, currency: str) -> Money:
        """The most a contact may owe in `currency` and still have services activated."""
        return self.debt_threshold.get(currency, Money.zero(currency))

    def check_reason(self, kind: ActionKind[Any, Any], reason: str | None) -> None:
        allowed = self.reasons.get(kind.name)
        if allowed and reason not in allowed:
            raise RuleViolation(
                f"a {kind.name} needs one of these reasons: {', '.join(allowed)}",
                rule="reason.not_allowed",
                field="reason",
            )

    def check_pause(self, pauses: Sequence[Period], on: date, days: int | None) -> None:
        recent = [p for p in pauses if p.start > on - PAUSE_WINDOW]
        if self.pause_max_times is not None and len(recent) >= self.pause_max_times:
            raise RuleViolation(
                f"a service may be paused {self.pause_max_times} times a year; it was paused {len(recent)}",
                rule="pause.max_times",
            )
        if self.pause_max_days is not None:
            if days is None:
                raise RuleViolation("pauses are limited in days: give the pause's days", rule="pause.max_days")
            used = sum(p.days for p in recent)
            if used + days > self.pause_max_days:
                raise RuleViolation(
                    f"a service may be paused {self.pause_max_days} days a year; {used} are used", rule="pause.max_days"
                )

    def check_grace(self, days: int) -> None:
        if not self.grace_min_days <= days <= self.grace_max_days:
            raise RuleViolation(
                f"a grace period is {self.grace_min_days} to {self.grace_max_days} days",
                rule="grace.days",
                field="days",
            )

    def check_tier_path(self, old_product: str, new_product: str) -> None:
        if old_product == new_product or not self.tier_paths:
            return
        if not any(old_product in path and new_product in path for path in self.tier_paths):
            raise RuleViolation(
                f"no tier path leads from product {old_product} to {new_product}",
                rule="change.tier_path",
                field="product_id",
            )

    def check_dependencies(self, products: Iterable[str], field_name: str = "items") -> None:
        """`products`: every product the contact would have (not churned), the new ones included."""
        held = set(products)
        for product in sorted(held):
            missing = [p for p in self.requires.get(product, ()) if p not in held]
            if missing:
                raise RuleViolation(
                    f"product {product} requires {', '.join(missing)}", rule="dependency.requires", field=field_name
                )
        for first, second in self.excludes:
            if first in held and second in held:
                raise RuleViolation(
                    f"products {first} and {second} cannot coexist", rule="dependency.excludes", field=field_name
                )

    def check_service_count(self, classification: str | None, count: int) -> None:
        limit = self.max_services.get(classification or "")
        if limit is not None and count > limit:
            raise RuleViolation(
                f"contacts classified '{classification}' may have {limit} services that are not churned",
                rule="contact.max_services",
                field="items",
            )


def _thresholds(value: Any) -> dict[str, Money]:
    """Per-currency thresholds from their JSON form, each amount checked against its currency. A
    bare amount stored before thresholds had currencies names none, so it allows no debt."""
    if not isinstance(value, Mapping):
        return {}
    return amounts_per_currency(value, "debt_threshold")


def _requirement_cycle(requires: Mapping[str, Sequence[str]]) -> list[str]:
    """Products that require each other in a circle, the first repeated at the end (["a", "b", "a"]),
    or [] when there is none. Depth-first, without recursion."""
    done: set[str] = set()
    for root in sorted(requires):
        if root in done:
            continue
        path: list[str] = [root]
        pending: list[Iterator[str]] = [iter(requires.get(root, ()))]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                done.add(path.pop())
                pending.pop()
            elif following in path:
                return [*path[path.index(following) :], following]
            elif following not in done:
                path.append(following)
                pending.append(iter(requires.get(following, ())))
    return []


DEFAULT_POLICY = SubscriptionPolicy()
