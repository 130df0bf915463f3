"""docs/openapi.json is the document the API's routes generate (regenerate with `make openapi`), and
it states what the API answers: every status, errors in the one shape, the API key scheme."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from billow.local.lambda_runtime import handler

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    from api.openapi import document

    return document(handler("api.handler.complete_app")())


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m.upper()} {p}": op for p, ops in doc["paths"].items() for m, op in ops.items()}


def test_the_committed_openapi_document_is_current(generated: dict[str, Any]) -> None:
    assert json.loads(DOC.read_text()) == generated, "run `make openapi` and commit docs/openapi.json"


def test_every_error_is_documented_in_the_one_error_shape(generated: dict[str, Any]) -> None:
    error = generated["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message", "fields"]
    assert "HTTPValidationError" not in generated["components"]["schemas"]
    for name, op in operations(generated).items():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (name, status)


def test_statuses_follow_what_each_route_is(generated: dict[str, Any]) -> None:
    ops = operations(generated)

    def statuses(name: str) -> list[int]:
        return sorted(int(s) for s in ops[name]["responses"])

    assert statuses("GET /settings") == [200, 401, 422, 429, 503]
    assert statuses("GET /products/{product_id}") == [200, 401, 404, 422, 429, 503]
    assert statuses("POST /products") == [200, 201, 400, 401, 409, 413, 415, 422, 429, 503]  # 200: a replay
    # an id in the body can be unknown: 404
    assert 404 in statuses("POST /orders") and statuses("POST /orders")[:2] == [200, 201]
    assert statuses("POST /subscriptions/{subscription_id}/services/{service_id}/cancel")[:3] == [200, 201, 202]
    # the dry run reads and writes no stored data
    assert statuses("POST /billing/preview") == [200, 400, 401, 413, 415, 422, 429]


def test_callers_authenticate_with_a_bearer_api_key(generated: dict[str, Any]) -> None:
    schemes = generated["components"]["securitySchemes"]
    assert schemes["bearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "API key",
        "description": "Authorization: Bearer <API key>",
    }
    assert {"bearerKey": []} in generated["security"]


def test_amounts_are_decimal_strings_with_their_pattern(generated: dict[str, Any]) -> None:
    price = generated["components"]["schemas"]["PriceTermsBody"]["properties"]["price"]
    assert price["type"] == "string" and price["pattern"], price


def test_a_route_that_can_set_its_status_must_declare_it() -> None:
    from api.openapi import document

    app = APIGatewayRestResolver(enable_validation=True)

    @app.post("/things")
    def create() -> Response[dict[str, Any]]:
        return Response(201, content_types.APPLICATION_JSON, {})

    with pytest.raises(TypeError, match="@answers"):
        document(app)


def test_a_route_documents_the_statuses_it_declares() -> None:
    from api.openapi import answers, document

    app = APIGatewayRestResolver(enable_validation=True)

    @app.post("/things")
    @answers(201, 202)
    def create() -> Response[dict[str, Any]]:
        return Response(201, content_types.APPLICATION_JSON, {})

    @app.get("/things")
    def read() -> dict[str, Any]:
        return {}

    ops = operations(document(app))
    assert [s for s in ops["POST /things"]["responses"] if s.startswith("2")] == ["201", "202"]
    assert [s for s in ops["GET /things"]["responses"] if s.startswith("2")] == ["200"]
