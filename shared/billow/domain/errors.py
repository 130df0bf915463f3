"""Domain errors. Handlers map each family to one HTTP status in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation. `field` names the input at fault, when there is one."""

    code = "domain_error"
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

    code = "invalid_input"

    def under(self, prefix: str) -> InvalidInput:
        """The same error with its field named as the caller's input nests it ("price" under
        "terms[0]" is "terms[0].price")."""
        name = self.field or ""
        if name.startswith(prefix):
            return self
        return type(self)(self.message, field=f"{prefix}.{name}" if name else prefix)


class NotFound(DomainError):
    """No such entity for this tenant (maps to 404; another tenant's ids land here too)."""

    code = "not_found"


class Conflict(DomainError):
    """The entity is not in a state that allows the request (maps to 409)."""

    code = "conflict"


class ConcurrentModification(Conflict):
    """Someone else changed the entity first; the caller may reload and retry."""

    code = "concurrent_modification"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class UnknownCurrency(InvalidInput):
    code = "unknown_currency"


class TemporaryFailure(Exception):
    """A dependency is throttled or unavailable; the whole operation may be retried as is."""


class IllegalTransition(Conflict):
    """An action the service's current state does not allow (maps to 409, naming state and rule)."""

    code = "illegal_transition"

    def __init__(self, message: str, *, current_state: str, rule: str) -> None:
        super().__init__(message, field="action")
        self.current_state = current_state
        self.rule = rule


class RuleViolation(Conflict):
    """A business rule refuses the request (maps to 409, naming the rule)."""

    code = "rule_violation"

    def __init__(self, message: str, *, rule: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.rule = rule
