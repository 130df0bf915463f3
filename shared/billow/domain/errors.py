"""Domain errors. Handlers map each family to one HTTP status in one place.

Every refusal carries a stable, dotted, machine-readable code (`area.reason`): messages may change,
codes may not. A class gives its default code; a raise site may name a more precise one (`code=`);
a business rule's name is its code (`RuleViolation(rule="pause.max_days")`). docs/errors.md lists
every code with its HTTP status (tests/unit/test_error_codes.py keeps the two in step)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def error_body(code: str, message: str, fields: Iterable[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The one error shape of every 4xx and 5xx: `{"error": code, "message": ..., "fields": [...]}`,
    `fields` always present (each `{"field", "reason"}`), maybe empty."""
    return {"error": code, "message": message, "fields": [dict(f) for f in fields]}


class DomainError(Exception):
    """Base of every rule violation. `field` names the input at fault, when there is one."""

    code = "request.refused"
    """A stable, dotted, machine-readable code (`area.reason`): messages may change, codes may not.
    A class gives its default; an instance may name a more precise one (`code=`)."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(DomainError):
    """The request is well-formed but its values break a rule (maps to 422)."""

    code = "request.invalid"

    def under(self, prefix: str) -> InvalidInput:
        """The same error with its field named as the caller's input nests it ("price" under
        "terms[0]" is "terms[0].price")."""
        name = self.field or ""
        if name.startswith(prefix):
            return self
        return type(self)(self.message, field=f"{prefix}.{name}" if name else prefix, code=self.code)


class NotFound(DomainError):
    """No such entity for this tenant (maps to 404; another tenant's ids land here too)."""

    code = "resource.not_found"


class Conflict(DomainError):
    """The entity is not in a state that allows the request (maps to 409)."""

    code = "resource.conflict"


class PaymentRequired(DomainError):
    """The request needs credits or a payment the contact does not have (maps to 402); its raise
    site names the precise code (`credits.insufficient`)."""


class ConcurrentModification(Conflict):
    """Someone else changed the entity first; the caller may reload and retry."""

    code = "resource.concurrent_modification"


class CurrencyMismatch(InvalidInput):
    code = "money.currency_mismatch"


class UnknownCurrency(InvalidInput):
    code = "money.unknown_currency"


class TemporaryFailure(Exception):
    """A dependency is throttled or unavailable; the whole operation may be retried as is."""

    code = "service.temporarily_unavailable"


class RuleViolation(Conflict):
    """A business rule refuses the request (maps to 409). The rule is the code: `pause.max_days`,
    `regret.period`... The action log keeps it as the rejected action's `rule`."""

    def __init__(self, message: str, *, rule: str, field: str | None = None) -> None:
        super().__init__(message, field=field, code=rule)
        self.rule = rule


class IllegalTransition(RuleViolation):
    """An action the service's current state does not allow, by the transition table (maps to 409;
    the message names the state and why). One code for every such refusal."""

    code = "lifecycle.illegal_transition"

    def __init__(self, message: str, *, current_state: str) -> None:
        super().__init__(message, rule=IllegalTransition.code, field="action")
        self.current_state = current_state


def refusal_for(code: str, message: str, current_state: str = "unknown") -> RuleViolation:
    """The refusal a logged rejection (its rule, its outcome) stands for, classified by its code:
    a replayed request is answered as the first attempt was."""
    if code == IllegalTransition.code:
        return IllegalTransition(message, current_state=current_state)
    return RuleViolation(message, rule=code)
