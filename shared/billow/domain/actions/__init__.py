"""Subscription actions as records, and the kinds of action (CRM.COM Subscriptions manual,
"Managing Subscriptions").

Every change to a subscription or one of its services is an `Action`: requested for today
(immediate) or for a later day (scheduled), it ends executed, cancelled (while still pending) or
rejected (an illegal transition or a business rule, with the rule named). Pending actions live in
the subscription item itself, so executing one is part of the same atomic, versioned write as the
billing it affects: a schedule firing twice finds it executed already. Every action also has its
own log item, written in that same transaction (docs/lifecycle.md).

Each kind of action is one object in its own module of this package (`pause.py`, `change.py`...):
what a request of it gives (`asks`), what the action holds once built (`holds`: what its log
record stores and the API shows as its parameters), its checks (`prepare`, `check`, `admit`), its
effect on the service or the subscription (`apply`), and who may request it (`requesters`: a
kind only Billow itself requests, such as `expire`, is a system action). Every module of this
package registers its kind when imported; the generic code (building a request, executing it on
its day, the stored and the shown record, the API's list of kinds) finds them all through
`kinds()` and `kind_named()`. A new action is its module plus its route.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from billow.domain.catalog import PriceTerms
from billow.domain.errors import InvalidInput

if TYPE_CHECKING:
    from billow.domain.catalog import Product
    from billow.domain.contacts import Contact
    from billow.domain.effects import Effect
    from billow.domain.money import Money
    from billow.domain.policy import SubscriptionPolicy
    from billow.domain.subscriptions import Service, Subscription

MAX_PENDING_ACTIONS = 20
"""Per subscription: keeps the subscription item small, and nobody needs more queued."""
MAX_DAYS_SCHEDULED = 3 * 366
"""The furthest ahead an action is scheduled, or a term extended."""


class ActionStatus(StrEnum):
    SCHEDULED = "scheduled"
    EXECUTED = "executed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Requester(StrEnum):
    BACK_OFFICE = "back_office"  # the business's staff or systems (an API key)
    CONTACT = "contact"  # the subscriber, self-service
    SYSTEM = "system"  # Billow itself: term ends, the end of a pause


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """What a change action switches a service to (any of the three may differ)."""

    product_id: str
    product_name: str
    terms: PriceTerms
    quantity: int


# -- parameters several kinds share ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NoParams:
    """The parameters of a kind that takes none."""


@dataclass(frozen=True, slots=True)
class Days:
    days: int | None = None
    """Pause length; days a term, trial or grace period is extended or set to."""


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    kind: ActionKind[Any, Any]
    on: date
    """The day it takes effect: before that day's billing."""
    requested_on: date
    service_id: str | None = None
    status: ActionStatus = ActionStatus.SCHEDULED
    reason: str | None = None
    by: Requester = Requester.BACK_OFFICE
    params: object = None
    """What the kind holds (`kind.holds`, read typed with `kind.params(action)`); None on the
    record of a request refused before its parameters were read."""
    # -- outcome -------------------------------------------------------------------------------
    outcome: str | None = None
    """What executing it did, or why it was rejected or cancelled."""
    rule: str | None = None
    """The rule that rejected it."""
    executed_on: date | None = None
    moved_to: str | None = None
    """For a change to price terms of another cycle or billing model: the subscription the service
    moved to."""

    def executed(self, outcome: str) -> Action:
        return replace(self, status=ActionStatus.EXECUTED, outcome=outcome, executed_on=self.on)

    def rejected(self, outcome: str, rule: str) -> Action:
        return replace(self, status=ActionStatus.REJECTED, outcome=outcome, rule=rule)

    def cancelled(self, outcome: str) -> Action:
        return replace(self, status=ActionStatus.CANCELLED, outcome=outcome)


RECORD_FIELDS = frozenset(f.name for f in fields(Action)) - {"params"}
"""The fields every record has; a kind's parameters are stored and shown beside them, by name."""


# -- what a kind's checks see ------------------------------------------------------------------------
class Lookups(Protocol):
    """What a kind's checks may read beyond the subscription (the services layer reads the store)."""

    def product(self, product_id: str) -> Product | None: ...

    def subscriptions(self) -> list[Subscription]:
        """The contact's subscriptions."""
        ...

    def owed(self) -> dict[str, Money]:
        """What the contact owes, per currency."""
        ...

    def contact(self) -> Contact: ...

    def has_saved_method(self, method_id: str) -> bool:
        """Whether the contact saved `method_id` and has not removed it."""
        ...


A = TypeVar("A")
P = TypeVar("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Asked(Generic[A]):
    """A request of a kind as its checks see it: its parameters, and what they are checked against."""

    params: A
    subscription: Subscription
    service: Service | None
    """The service it names (service actions), as it is before the action's day."""
    by: Requester
    policy: SubscriptionPolicy
    lookups: Lookups


# -- the kinds ---------------------------------------------------------------------------------------
class ActionKind(Generic[A, P]):
    """One kind of action. `asks` and `holds` are frozen dataclasses whose fields all have defaults
    where a request may leave them out; `holds`' fields are stored in the log record and shown by
    the API under their own names (plain values, dates, money, price terms or dataclasses of them).
    The hooks run in this order on a request: `prepare`, the transition table (the action executed
    on a copy of the subscription), the business's reasons, `check`, the action's own rules
    (`apply` on a copy), `admit`."""

    name: ClassVar[str]
    asks: ClassVar[type[Any]] = NoParams
    holds: ClassVar[type[Any]] = NoParams
    on_service: ClassVar[bool] = True
    """Whether it names one service (the others act on the whole subscription)."""
    requesters: ClassVar[frozenset[Requester]] = frozenset(Requester)
    """Who may request it; Billow itself executes the others on its own (a system action)."""
    not_requested: ClassVar[str] = ""
    """Why a requester not in `requesters` is refused."""

    def prepare(self, asked: Asked[A]) -> P:
        """What the action holds before its state is checked (the checks execute it on a copy):
        by default what was asked, for a kind that holds what it asks."""
        params = asked.params
        assert isinstance(params, self.holds), f"{self.name} holds {self.holds.__name__}: override prepare"
        return params

    def check(self, asked: Asked[A], action: Action) -> Action:
        """The kind's own rules on a request (raise `InvalidInput` or `RuleViolation`); it may
        move the day or complete what the action holds."""
        return action

    def admit(self, asked: Asked[A], action: Action) -> None:
        """Rules checked once its outcome is known, against what lies outside the subscription
        (an immediate or scheduled request, not a preview)."""

    def params(self, action: Action) -> P:
        """What `action` (one of this kind) holds."""
        params = action.params
        assert isinstance(params, self.holds), f"{action.id} holds {type(params).__name__}, not {self.holds.__name__}"
        return params

    def show(self, params: P) -> dict[str, object]:
        """How the API shows what the action holds: its fields that are set, dates as ISO days."""
        shown: dict[str, object] = {}
        for f in fields(params):  # type: ignore[arg-type]
            value = getattr(params, f.name)
            if value is not None:
                shown[f.name] = value.isoformat() if isinstance(value, date) else value
        return shown

    def needed(self, value: T | None, name: str) -> T:
        if value is None:
            raise InvalidInput(f"a {self.name} action needs {name}", field=name)
        return value

    def by_system(
        self,
        action_id: str,
        on: date,
        *,
        requested_on: date,
        reason: str,
        service_id: str | None = None,
        params: P | None = None,
    ) -> Action:
        """An action of this kind Billow itself requests (the end of a pause, a term's end, a rule
        of its own), for `on`; `params`: what it holds (by default, its parameters' defaults)."""
        held = self.holds() if params is None else params
        return Action(action_id, self, on, requested_on, service_id, reason=reason, by=Requester.SYSTEM, params=held)

    @property
    def words(self) -> str:
        return self.name.replace("_", " ")

    def __repr__(self) -> str:
        return f"<action {self.name}>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """A kind pickles (to another process) and copies as its name: the one registered."""
        return kind_named, (self.name,)


class ServiceKind(ActionKind[A, P]):
    """An action on one service of the subscription."""

    def apply(self, effect: Effect, service: Service) -> tuple[Service, str]:
        """The service after the action, and what happened, in words (raise to refuse it)."""
        raise NotImplementedError


class SubscriptionKind(ActionKind[A, P]):
    """An action on the whole subscription."""

    on_service = False

    def apply(self, effect: Effect) -> tuple[Subscription, str]:
        """The subscription after the action, and what happened, in words (raise to refuse it)."""
        raise NotImplementedError


# -- the registry ------------------------------------------------------------------------------------
_KINDS: dict[str, ActionKind[Any, Any]] = {}
_found = False

K = TypeVar("K", bound=ActionKind[Any, Any])


def register(kind: K) -> K:
    """Make `kind` known by its name (each module of this package registers its own)."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise ValueError(f"two kinds of action are named {kind.name}")
    for shape in (kind.asks, kind.holds):
        assert is_dataclass(shape), f"{kind.name}: {shape} is not a dataclass"
        clash = RECORD_FIELDS & {f.name for f in fields(shape)}
        if clash:
            raise ValueError(f"{kind.name}'s parameters {sorted(clash)} clash with the record's fields")
    _KINDS[kind.name] = kind
    return kind


def unregister(kind: ActionKind[Any, Any]) -> None:
    if _KINDS.get(kind.name) is kind:
        del _KINDS[kind.name]


def _find() -> Mapping[str, ActionKind[Any, Any]]:
    """Every kind: the modules of this package are imported once, each registering its own."""
    global _found
    if not _found:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _found = True
    return _KINDS


def kinds() -> list[ActionKind[Any, Any]]:
    """Every kind of action, by name."""
    return sorted(_find().values(), key=lambda kind: kind.name)


def kind_named(name: str) -> ActionKind[Any, Any]:
    """The kind of action named `name` (a ValueError for none)."""
    kind = _find().get(name)
    if kind is None:
        raise ValueError(f"there is no action {name!r}")
    return kind
