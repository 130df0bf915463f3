"""Input types shared by every front door (the REST API and the command line): unknown fields
are refused, text carries no control characters, and amounts are decimal strings, never JSON
numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from billow.domain.money import AMOUNT_PATTERN, MAX_WHOLE_DIGITS


def _decimal_string(value: Any) -> Any:
    """Amounts are taken as they were sent: a JSON number was already rounded to a binary float by
    the client's encoder, and a string is not stripped of spaces before it is checked."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError(
            "money.not_a_decimal", 'send amounts as decimal strings, e.g. "19.99", never as JSON numbers'
        )
    if isinstance(value, str) and not re.fullmatch(AMOUNT_PATTERN, value):
        raise PydanticCustomError(
            "money.not_a_decimal",
            'an amount is a decimal string of digits, optionally a point and decimals, e.g. "19.99": '
            f"no sign, exponent, spaces or underscores, at most {MAX_WHOLE_DIGITS} digits before the point",
        )
    return value


Amount = Annotated[
    str,
    Field(
        pattern=AMOUNT_PATTERN,
        examples=["19.99"],
        description="a decimal string in major units; at most as many decimals as the currency has "
        "(JPY 0, USD 2, KWD 3)",
    ),
    BeforeValidator(_decimal_string),
]
"""A non-negative amount, exactly as sent; `Money.parse` checks its decimals against its currency."""
EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(2999, 12, 31)
"""Billing days the API accepts: the engine computes periods and catch-ups beyond any day it is
given, and Python's calendar ends in the year 9999."""

BillingDay = Annotated[date, Field(ge=EARLIEST_DAY, le=LATEST_DAY)]


def _in_range(instant: datetime) -> datetime:
    if not EARLIEST_DAY <= instant.date() <= LATEST_DAY:
        raise ValueError(f"must be between {EARLIEST_DAY} and {LATEST_DAY}")
    return instant


BillingInstant = Annotated[AwareDatetime, AfterValidator(_in_range)]
Currency = Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$", examples=["USD"])]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Control characters (C0, DEL, C1) and lone surrogates: never part of a name, an email, a
reference or any other text a business keeps; they corrupt documents, logs and exports."""
_LINE_BREAKS = frozenset("\t\n\r")


def _control_character(value: Any, multiline: bool) -> str | None:
    """The first control character in a string, or in the strings (keys included) of a list or a
    mapping; nested bodies check their own fields."""
    if isinstance(value, str):
        for match in _CONTROL.finditer(value):
            if not (multiline and match.group() in _LINE_BREAKS):
                return match.group()
        return None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return next((c for item in value if (c := _control_character(item, multiline)) is not None), None)
    return None


class Body(BaseModel):
    """A request body: unknown fields are refused and no text carries a control character (the
    fields named in `multiline` may hold line breaks and tabs)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    multiline: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        found = _control_character(value, info.field_name in cls.multiline)
        if found is not None:
            raise PydanticCustomError(
                "text.control_character",
                "text must not contain control characters (found U+{code})",
                {"code": f"{ord(found):04X}"},
            )
        return value


def field_path(loc: tuple[Any, ...]) -> str:
    """("body", "terms", 0, "price") -> "terms[0].price"; query and path parameters keep their name."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


VALIDATION_FAILED = "request.validation_failed"


def validation_problems(problems: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each problem of a validation error (pydantic's `errors()`) as {"field": "terms.price",
    "reason": "..."}."""
    return [{"field": field_path(tuple(p.get("loc", ()))), "reason": _reason(p)} for p in problems]


def _reason(problem: Mapping[str, Any]) -> str:
    if problem.get("type") == "extra_forbidden":
        return "unknown field"
    return str(problem.get("msg")).removeprefix("Value error, ")


def validation_code(problems: Sequence[Mapping[str, Any]]) -> str:
    """The error code of a refused body: the one dotted code its problems share when they are all
    of one kind we name (`money.not_a_decimal`, `text.control_character`), else the generic one."""
    codes = {str(p.get("type")) for p in problems}
    return codes.pop() if len(codes) == 1 and "." in next(iter(codes)) else VALIDATION_FAILED
