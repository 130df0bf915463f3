"""How request bodies are read: JSON only, parsed without recursion limits the sender controls.

Powertools' request validation reads a body by its content type (form data, multipart) and parses
JSON with `json.loads`, whose recursion a body of nested brackets exhausts. Every Billow route
takes JSON, so any non-empty body must be sent as JSON (`Content-Type: application/json`, in any
case, with no charset or UTF-8), on every route, whether it reads a body or not: anything else,
a body without a content type included, is refused before it is parsed. JSON nested deeper than
any Billow request is refused before `json.loads` sees it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from billow.domain.json_text import MAX_DEPTH, BodyTooDeep, nesting_depth_exceeds, parse_json

__all__ = ["MAX_DEPTH", "BodyTooDeep", "JsonRequestValidation", "is_json", "nesting_depth_exceeds", "parse_json"]


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON: `application/json` or `application/*+json` (media types
    are case-insensitive), with no charset or UTF-8, the only one JSON has (RFC 8259)."""
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if not (
        media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        return False
    charsets = [
        value.strip('" ') for name, _, value in (p.partition("=") for p in parameters) if name.strip() == "charset"
    ]
    return all(charset in ("utf-8", "utf8") for charset in charsets)


class JsonRequestValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, reading bodies as JSON only: a non-empty body of any other
    content type (a form, multipart, none given) is refused as an unsupported media type on every
    route, instead of parsed or ignored."""

    def handler(self, app: Any, next_middleware: Any) -> Any:
        content_type = str(app.current_event.headers.get("content-type") or "").strip()
        if app.current_event.body and not is_json(content_type):
            raise RequestUnsupportedContentType(
                "Unsupported content type",
                errors=[
                    {
                        "type": "unsupported_content_type",
                        "loc": ("body",),
                        "msg": f"send the body as application/json, not {content_type[:100] or 'untyped'}",
                        "input": {},
                        "ctx": {},
                    }
                ],
            )
        return super().handler(app, next_middleware)

    def _get_body(self, app: Any) -> dict[str, Any]:
        try:
            return self._parse_json_data(app)  # its content type was checked in `handler`
        except UnicodeDecodeError:  # a base64 body that is not UTF-8
            problem = {"type": "json_invalid", "loc": ("body", 0), "msg": "the body is not UTF-8 text", "input": {}}
            raise RequestValidationError([problem]) from None
