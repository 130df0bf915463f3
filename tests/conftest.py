"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "shared", ROOT / "functions", ROOT / "infra", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from billow.local.dynamodb import LOCAL_CREDENTIALS  # noqa: E402
from billow.local.lambda_runtime import prepare_environment  # noqa: E402

# Property tests explore new random examples on every developer run; in CI (`CI` set, as every CI
# service sets it) they replay a fixed sequence, so a run fails only on a change of the code, never
# on the luck of the draw. A failure found locally prints its seed (`--hypothesis-seed=N`) to replay.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

for _key, _value in LOCAL_CREDENTIALS.items():
    os.environ.setdefault(_key, _value)
prepare_environment()


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[object]:
    """One real DynamoDB Local per test process (each xdist worker gets its own)."""
    from billow.local import dynamodb

    local = dynamodb.start()
    yield local
    local.stop()


@pytest.fixture
def local_table(dynamodb_local: object) -> Iterator[str]:
    """A fresh table on DynamoDB Local for one test, with the models pointed at it."""
    from billow.local.dynamodb import DynamoDBLocal
    from billow.storage.models import configure

    from tests.support import unique

    assert isinstance(dynamodb_local, DynamoDBLocal)
    name = unique("billow-test")
    dynamodb_local.create_table(name)
    configure(table_name=name, endpoint=dynamodb_local.endpoint, region="us-east-1")
    yield name
    dynamodb_local.delete_table(name)


@pytest.fixture
def moto_table() -> Iterator[str]:
    """A table in moto's in-process DynamoDB: fast, for unit tests of handlers and use cases."""
    from moto import mock_aws

    from tests.support import new_moto_table

    with mock_aws():
        yield new_moto_table()


@pytest.fixture(scope="session")
def synthesized_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    """The CDK app synthesized once per test process (stage "test"): its template and cdk.out.
    Tests using it share the xdist group "cdk" so one worker synthesizes once."""
    import json

    from app import build_app  # infra/app.py

    out = tmp_path_factory.mktemp("cdk.out")
    deps = tmp_path_factory.mktemp("deps")
    (deps / "python").mkdir()
    app, stack = build_app(outdir=str(out), context={"stage": "test", "dependencies_layer": str(deps)})
    app.synth()  # raises if cdk-nag reports an unacknowledged error
    template = json.loads((out / stack.template_file).read_text())
    return template, out


@pytest.fixture(scope="session")
def local_stripe() -> Iterator[object]:
    """One localstripe per test process, on 127.0.0.1 and a free port, its store in memory only
    (billow.local.stripe). Tests keep apart by their own customers (localstripe has no accounts)."""
    from billow.local import stripe as local

    server = local.start()
    yield server
    server.stop()
