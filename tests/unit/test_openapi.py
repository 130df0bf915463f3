"""docs/openapi.json is the document the API's routes generate (regenerate with `make openapi`)."""

import json
from pathlib import Path

from billow.local.lambda_runtime import handler

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_is_current() -> None:
    app = handler("api.handler.app")
    generated = json.loads(app.get_openapi_json_schema(title="Billow API", version="0.1.0"))
    assert json.loads(DOC.read_text()) == generated, "run `make openapi` and commit docs/openapi.json"
    assert "/orders/quote" in generated["paths"]
