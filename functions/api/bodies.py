"""How request bodies are read: JSON only, parsed without recursion limits the sender controls.

Powertools' request validation reads a body by its content type (form data, multipart) and parses
JSON with `json.loads`, whose recursion a body of nested brackets exhausts. Every Billow route
takes JSON, so any other content type is refused before it is parsed, and JSON nested deeper than
any Billow request is refused before `json.loads` sees it."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

MAX_DEPTH = 32
"""Nesting of arrays and objects a body may have; the deepest Billow request has 3."""

_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_INNERMOST = re.compile(r"\[\]|\{\}")


class BodyTooDeep(ValueError):
    """A JSON body nests arrays or objects deeper than `MAX_DEPTH`."""


def nesting_depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether `text` nests brackets deeper than `limit`, found without recursion: strings are
    dropped, then the innermost empty pairs are removed `limit` times; brackets left over are
    deeper than the limit (or unbalanced, which `json.loads` then reports without recursing far)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        if not brackets:
            return False
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:
            return False  # unbalanced at a shallow depth: malformed, json.loads says so
    return bool(brackets) and _INNERMOST.search(brackets) is not None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes | bytearray) -> Any:
    """The JSON body of a request, or JSONDecodeError for anything that is not one (what the request
    validation reports as malformed JSON), or `BodyTooDeep`. NaN and Infinity are not JSON, and
    an integer too long for Python's int conversion is malformed rather than a crash."""
    if isinstance(text, bytes | bytearray):
        text = text.decode()
    if nesting_depth_exceeds(text):
        raise BodyTooDeep(f"the body nests arrays or objects more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise json.JSONDecodeError(str(error), text, 0) from None


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class JsonRequestValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, reading bodies as JSON only: a form or multipart body (with
    a boundary or without) is refused as an unsupported media type instead of parsed."""

    def _get_body(self, app: Any) -> dict[str, Any]:
        content_type = str(app.current_event.headers.get("content-type") or "").strip()
        if content_type and not _is_json(content_type):
            raise RequestUnsupportedContentType(
                "Unsupported content type",
                errors=[
                    {
                        "type": "unsupported_content_type",
                        "loc": ("body",),
                        "msg": f"send the body as application/json, not {content_type[:100]}",
                        "input": {},
                        "ctx": {},
                    }
                ],
            )
        try:
            return super()._get_body(app)
        except UnicodeDecodeError:  # a base64 body that is not UTF-8
            problem = {"type": "json_invalid", "loc": ("body", 0), "msg": "the body is not UTF-8 text", "input": {}}
            raise RequestValidationError([problem]) from None
