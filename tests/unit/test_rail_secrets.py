"""Rail secrets: Secrets Manager read once per tenant per container (moto), the local
configuration, and the rail a tenant gets from them."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest
from billow.gateways.manual import ManualGateway
from billow.gateways.rails import payment_gateway
from billow.gateways.secrets import SecretsManagerSecrets
from billow.local import secrets as local_secrets
from billow.services.context import Scope
from billow.services.gateway import RailSecrets
from moto import mock_aws

SECRET = {
    "stripe": {
        "test": {"api_key": "sk_test_acme", "webhook_secret": "whsec_test"},
        "live": {"api_key": "sk_live_acme", "webhook_secret": "whsec_live"},
    }
}


@pytest.fixture
def secrets_manager() -> object:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name="billow/prod/rail/acme", SecretString=json.dumps(SECRET))
        yield client


def test_a_tenants_secret_is_read_once_per_container(secrets_manager: object) -> None:
    source = SecretsManagerSecrets(prefix="billow/prod/rail/", client=secrets_manager)
    assert source.rail_secrets("stripe", "acme", "test") == RailSecrets("sk_test_acme", "whsec_test")
    assert source.rail_secrets("stripe", "acme", "live") == RailSecrets("sk_live_acme", "whsec_live")
    for _ in range(5):
        source.rail_secrets("stripe", "acme", "test")
    assert source.reads == 1
    assert source.rail_secrets("stripe", "other", "test") is None  # no secret: no Stripe account
    assert source.rail_secrets("stripe", "other", "test") is None
    assert source.reads == 2  # the miss is remembered too
    assert source.rail_secrets("paypal", "acme", "test") is None


def test_the_prefix_comes_from_the_functions_environment(
    secrets_manager: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLOW_RAIL_SECRETS_PREFIX", "billow/prod/rail/")
    assert SecretsManagerSecrets(client=secrets_manager).rail_secrets("stripe", "acme", "test") is not None
    monkeypatch.setenv("BILLOW_RAIL_SECRETS_PREFIX", "billow/dev/rail/")  # another stage's: not this one
    assert SecretsManagerSecrets(client=secrets_manager).rail_secrets("stripe", "acme", "test") is None


def test_a_tenant_without_stripe_is_collected_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = local_secrets.configured({("stripe", "acme", "test"): RailSecrets("sk_test_acme", "whsec_acme")})
    monkeypatch.setenv(local_secrets.ENV, configured)
    source = local_secrets.LocalSecrets()
    assert payment_gateway(source, "acme", "test").name == "stripe"
    assert isinstance(payment_gateway(source, "acme", "live"), ManualGateway)
    assert isinstance(payment_gateway(source, "someone-else", "test"), ManualGateway)


def test_boto3_and_stripe_wait_for_their_first_use() -> None:
    """Cold start: building the secrets source and the rail module imports neither SDK."""
    code = (
        "import sys; from billow.gateways.secrets import SecretsManagerSecrets; import billow.gateways.rails; "
        "SecretsManagerSecrets(); print('boto3' in sys.modules, 'stripe' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": "shared"}
    )
    assert shown.stdout.split() == ["False", "False"]


def test_the_collector_and_refunds_charge_on_the_rail_the_tenants_secrets_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """`runtime.payment_gateway` (what the collector and card refunds use) is, by default, the
    tenant's Stripe when its secrets name one, and None (pay by transfer) otherwise."""
    import runtime

    configured = local_secrets.configured({("stripe", "acme", "test"): RailSecrets("sk_test_acme", "whsec_acme")})
    monkeypatch.setenv(local_secrets.ENV, configured)
    monkeypatch.setenv("BILLOW_SECRETS_SOURCE", "billow.local.secrets:LocalSecrets")
    monkeypatch.delenv("BILLOW_PAYMENT_GATEWAYS", raising=False)
    for made in ("payment_gateway", "secrets"):
        monkeypatch.delitem(vars(runtime), made, raising=False)
    try:
        rail = runtime.payment_gateway(Scope("acme", "test"))
        assert rail is not None and rail.name == "stripe"
        assert runtime.payment_gateway(Scope("acme", "live")) is None
        assert runtime.payment_gateway(Scope("someone-else", "test")) is None
    finally:
        for made in ("payment_gateway", "secrets"):
            vars(runtime).pop(made, None)


def test_locally_each_tenant_and_mode_has_its_own_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local stack's configuration gives every tenant localstripe's keys and a webhook endpoint
    secret derived from its seed for that tenant and mode; a tenant configured itself keeps its own."""
    every = json.loads(local_secrets.every_tenant("stripe", {"test": "sk_test_l", "live": "sk_live_l"}, seed="s1"))
    own = json.loads(local_secrets.configured({("stripe", "acme", "test"): RailSecrets("sk_test_acme", "whsec_acme")}))
    monkeypatch.setenv(local_secrets.ENV, json.dumps({**every, **own}))
    source = local_secrets.LocalSecrets()
    found = {(t, m): source.rail_secrets("stripe", t, m) for t in ("initech", "umbrella") for m in ("test", "live")}
    assert {s.api_key for (_, m), s in found.items() if s and m == "test"} == {"sk_test_l"}
    secrets = [s.webhook_secret for s in found.values() if s]
    assert len(set(secrets)) == 4 and all(s.startswith("whsec_") for s in secrets)
    assert source.rail_secrets("stripe", "acme", "test") == RailSecrets("sk_test_acme", "whsec_acme")
    assert source.rail_secrets("stripe", "initech", "test") == found["initech", "test"]  # the same at every read
    other_seed = local_secrets.every_tenant("stripe", {"test": "sk_test_l"}, seed="s2")
    monkeypatch.setenv(local_secrets.ENV, other_seed)  # another start: other secrets
    again = source.rail_secrets("stripe", "initech", "test")
    assert again is not None and again.webhook_secret != secrets[0]
