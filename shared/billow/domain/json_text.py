"""JSON text read without recursion limits its sender controls: `json.loads` recurses once per
nested array or object, so a few kB of brackets exhaust the interpreter's stack (RecursionError)
before anything else is checked. `parse_json` refuses nesting deeper than a limit first, without
recursion. One place for it: the API's request bodies (functions/api/bodies.py) and the rail's
webhook deliveries (billow.gateways.stripe_webhooks) parse with it."""

from __future__ import annotations

import json
import re
from typing import Any

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


def parse_json(text: str | bytes | bytearray, limit: int = MAX_DEPTH) -> Any:
    """The JSON body of a request, or JSONDecodeError for anything that is not one (what the request
    validation reports as malformed JSON), or `BodyTooDeep` (nested more than `limit` levels). NaN
    and Infinity are not JSON, and an integer too long for Python's int conversion is malformed rather than a crash."""
    if isinstance(text, bytes | bytearray):
        text = text.decode()
    if nesting_depth_exceeds(text, limit):
        raise BodyTooDeep(f"the body nests arrays or objects more than {limit} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        raise json.JSONDecodeError(str(error), text, 0) from None
