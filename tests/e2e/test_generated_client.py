"""A client generated from docs/openapi.json (openapi-python-client, offline) works against the local
stack: it creates a product and a contact, places an order and reads the order's invoice."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import local_api

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("openapi")]

ROOT = Path(__file__).resolve().parents[2]
KEY = "bk_test_client"
CONFIG = "project_name_override: billow_client\npackage_name_override: billow_client\npost_hooks: []\n"


@pytest.fixture(scope="module")
def billow_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("generated")
    (out / "config.yaml").write_text(CONFIG)
    generator = Path(sys.executable).with_name("openapi-python-client")
    doc, package, config = ROOT / "docs" / "openapi.json", out / "billow_client", out / "config.yaml"
    arguments = ["generate", "--path", str(doc), "--meta", "none", "--output-path", str(package)]
    arguments += ["--config", str(config)]
    result = subprocess.run(
        [str(generator), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout  # nothing of the document was left out
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("billow_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "billow_client" or m.startswith("billow_client.")]:
            del sys.modules[name]


def test_a_generated_client_places_an_order_and_reads_its_invoice(billow_client: ModuleType) -> None:
    from billow_client import AuthenticatedClient  # type: ignore[import-not-found]
    from billow_client.api.catalog import create_product  # type: ignore[import-not-found]
    from billow_client.api.contacts import contact_invoices, create_contact  # type: ignore[import-not-found]
    from billow_client.api.orders import get_invoice, place_order  # type: ignore[import-not-found]
    from billow_client.models import (  # type: ignore[import-not-found]
        ContactBody,
        Cycle,
        Error,
        OrderBody,
        OrderItemBody,
        PriceTermsBody,
        ProductBody,
    )

    with local_api("billow-client", "client", KEY) as api:
        client = AuthenticatedClient(base_url=api.base_url, token=KEY)
        terms = PriceTermsBody(price="24.99", currency="EUR", cycle=Cycle.MONTH)
        product = create_product.sync_detailed(client=client, body=ProductBody(name="Team", terms=[terms]))
        assert product.status_code == 201, product.content
        contact = create_contact.sync_detailed(client=client, body=ContactBody(name="Ada", email="ada@example.com"))
        assert contact.status_code == 201, contact.content

        product_id, terms_id = product.parsed["id"], product.parsed["terms"][0]["id"]
        item = OrderItemBody(product_id=product_id, terms_id=terms_id)
        order = place_order.sync_detailed(client=client, body=OrderBody(contact_id=contact.parsed["id"], items=[item]))
        assert order.status_code == 201, order.content

        (listed,) = contact_invoices.sync(contact.parsed["id"], client=client)["items"]
        invoice = get_invoice.sync(listed["id"], client=client)
        assert invoice["contact_id"] == contact.parsed["id"]
        assert invoice["total"] == {"amount": "24.99", "currency": "EUR"}
        assert invoice["payments"] == []

        # an error parses as the document's one error shape
        missing = get_invoice.sync("inv_missing", client=client)
        assert isinstance(missing, Error) and missing.error and isinstance(missing.fields, list)
