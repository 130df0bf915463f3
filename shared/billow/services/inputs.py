"""Input types shared by every front door (the REST API and the command line): unknown fields
are refused, every field takes its own JSON type only (an integer is a JSON integer, a flag a JSON
boolean, text a JSON string: `"30"`, `30.0` or `0` for a flag are refused, never converted), days,
instants and choices are read from their JSON strings, text carries no control characters, and
amounts are decimal strings, never JSON numbers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

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


def coded(code: str, message: str) -> WrapValidator:
    """Annotated after a type and its bounds (`Annotated[int, Field(ge=0, le=365), coded(...)]`):
    any violation of them answers the domain rule's own code and message (`dunning.grace_days`)
    instead of pydantic's generic one, the field named; the bounds stay in the OpenAPI schema. A
    problem that has a dotted code already (`text.control_character`) keeps it."""

    def recode(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            if all("." in e["type"] for e in error.errors()):
                raise
            raise PydanticCustomError(code, message) from None

    return WrapValidator(recode)


def _json_string(value: Any) -> Any:
    """A day, an instant or a choice is sent as a JSON string: a number is not a day (pydantic
    would read 0 as 1970-01-01), nor a choice."""
    if isinstance(value, bool | int | float | list | dict):
        raise PydanticKnownError("string_type")
    return value


T = TypeVar("T")
FromString = Annotated[T, Strict(False), BeforeValidator(_json_string)]
"""A type read from its JSON string in a strict `Body`: a day ("2025-01-31"), an instant or an
enum's value. (Request bodies are validated as Python objects after JSON parsing, where strict mode
would take only `date` and enum instances.)"""
Day = FromString[date]
EARLIEST_DAY, LATEST_DAY = date(1900, 1, 1), date(2999, 12, 31)
"""Billing days the API accepts: the engine computes periods and catch-ups beyond any day it is
given, and Python's calendar ends in the year 9999."""

BillingDay = FromString[Annotated[date, Field(ge=EARLIEST_DAY, le=LATEST_DAY)]]


def _in_range(instant: datetime) -> datetime:
    if not EARLIEST_DAY <= instant.date() <= LATEST_DAY:
        raise ValueError(f"must be between {EARLIEST_DAY} and {LATEST_DAY}")
    return instant


BillingInstant = Annotated[FromString[AwareDatetime], AfterValidator(_in_range)]
Currency = Annotated[str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$", examples=["USD"])]


_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Characters no text a business keeps (a name, an email, a reference, a reason) may carry: control
characters (Cc: C0, DEL, C1), invisible formatting (Cf: direction overrides such as U+202E that
reorder what a reader sees, zero-width spaces, U+FEFF), lone surrogates (Cs) and the line and
paragraph separators U+2028/U+2029 (Zl, Zp). They corrupt documents, logs and exports, or make
text read otherwise than it is. Ordinary spaces (Zs) and printable text of any script stay."""
_JOINERS = frozenset("\u200c\u200d")
"""Zero-width non-joiner and joiner (Cf) are kept: they are spelling in Persian and Indic scripts
and join emoji sequences, and reorder nothing."""
_LINE_BREAKS = frozenset("\t\n\r")


def _refused_character(text: str, multiline: bool) -> str | None:
    for character in text:
        if " " <= character < "\x7f":
            continue  # printable ASCII: the common case, no lookup
        if (multiline and character in _LINE_BREAKS) or character in _JOINERS:
            continue
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return character
    return None


def _control_character(value: Any, multiline: bool) -> str | None:
    """The first refused character (`_REFUSED_CATEGORIES`) in a string, or in the strings (keys
    included) of a list or a mapping; nested bodies check their own fields."""
    if isinstance(value, str):
        return _refused_character(value, multiline)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return next((c for item in value if (c := _control_character(item, multiline)) is not None), None)
    return None


def _visible(text: str) -> str:
    """Text that shows something: not only spaces, separators (U+2028...) or invisible formatting
    characters (zero-width U+200B, U+FEFF, direction marks U+202E: Unicode category Cf)."""
    if not any(not c.isspace() and unicodedata.category(c) not in ("Cf", "Zs", "Zl", "Zp") for c in text):
        raise ValueError("must show something: not only spaces or invisible characters")
    return text


Name = Annotated[str, AfterValidator(_visible)]
"""A required name (a product's, a contact's, the business's)."""


class Body(BaseModel):
    """A request body: unknown fields are refused, every field takes its JSON type only (strict:
    days, instants and choices are `FromString`), and no text carries a control character (the
    fields named in `multiline` may hold line breaks and tabs)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True, defer_build=True)
    multiline: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        found = _control_character(value, info.field_name in cls.multiline)
        if found is not None:
            raise PydanticCustomError(
                "text.control_character",
                "text must not contain control or invisible formatting characters (found U+{code})",
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
