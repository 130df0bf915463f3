"""The whole local stack in one object: used by `make run` and by the e2e tests."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex

from billow.domain.tenants import TenantSettings
from billow.gateways.events import consumer_of
from billow.gateways.flows import ENDPOINT_ENV, state_machine_env
from billow.gateways.invoke import handler_of
from billow.gateways.rails import API_BASE_ENV
from billow.local import dynamodb, gateway, secrets
from billow.local import stripe as local_stripe
from billow.local.dynamodb import LOCAL_CREDENTIALS, DynamoDBLocal
from billow.local.events import StreamPoller, file_target, local_bus, sqs_target
from billow.local.lambda_runtime import prepare_environment
from billow.local.scheduler import DailyScheduler
from billow.local.stepfunctions import LOCAL_MACHINES, LocalStepFunctions, load_definition, local_name
from billow.services.tenants import provision_tenant
from billow.storage.models import configure
from billow.storage.repository import DynamoStore

TABLE_NAME = "billow-local"


@dataclass
class LocalStack:
    dynamo: DynamoDBLocal
    server: gateway.Gateway
    scheduler: DailyScheduler | None
    events: StreamPoller
    """Publishes the table's changes to the local bus (`billow.local.events.local_bus()`)."""
    url: str
    table_name: str
    fresh: bool = True
    """False when the table came from the data directory of an earlier run."""
    events_file: Path | None = None
    """Every event the local bus delivers, one JSON line each (EventBridge's envelope, `detail` in it)."""
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)
    stripe: local_stripe.LocalStripe | None = None
    """localstripe on loopback, the Stripe of every local tenant (`BILLOW_STRIPE_API_BASE`)."""
    environment_before: dict[str, str | None] = field(default_factory=dict)
    """The variables it set pointing at its localstripe and its Step Functions, as they were: put
    back by `stop`, so a process that runs a stack then other tests does not send them to a stopped
    localstripe or moto server."""
    flows: LocalStepFunctions | None = None
    """moto's server on loopback running the dunning state machine (the synthesized definition),
    its Lambda tasks run in this process by the real handlers (billow.local.stepfunctions)."""
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        self.server.stop()
        # The bus first: an event still being delivered must not reach a consumer whose Step
        # Functions, Stripe or environment is already gone (it would fail and be dead-lettered).
        self.events.stop()
        for unsubscribe in self.unsubscribe:
            unsubscribe()
        if self.stripe is not None:
            self.stripe.stop()
        if self.flows is not None:
            self.flows.stop()
        restore_environment(self.environment_before)
        self.dynamo.stop()

    def register_stripe_webhook(self, tenant_id: str) -> str | None:
        """Point localstripe's webhooks at the tenant's `POST /webhooks/stripe/{tenant_id}`, signed
        with the tenant's own test-mode endpoint secret; the endpoint's URL (None without
        localstripe). localstripe has no live mode (its events all say `livemode: false`), so only
        the test endpoint is registered: a live-mode delivery is one signed by hand with
        `webhook_secret(tenant, "live")`."""
        if self.stripe is None:
            return None
        url = f"{self.url}/webhooks/stripe/{tenant_id}"
        self.stripe.register_webhook(tenant_id, url, self.webhook_secret(tenant_id, "test"))
        return url

    def webhook_secret(self, tenant_id: str, mode: str) -> str:
        """The tenant's Stripe webhook endpoint secret in `mode`, as its webhook function reads it
        (billow.local.secrets: derived from this stack's seed, unless configured for the tenant)."""
        found = secrets.LocalSecrets().rail_secrets("stripe", tenant_id, mode)
        if found is None:
            raise LookupError(f"no Stripe secrets for {tenant_id} ({mode}): the stack runs without localstripe")
        return found.webhook_secret


def restore_environment(before: dict[str, str | None]) -> None:
    """Put the variables back as they were (None: unset)."""
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def stripe_secrets(configured: str | None) -> str:
    """`BILLOW_LOCAL_RAIL_SECRETS` with localstripe as the account of every tenant, both modes,
    each tenant and mode with its own webhook secret derived from a seed new at each start, beside
    what was `configured` already (a tenant's own entry comes first: tests set theirs)."""
    keys = {"test": local_stripe.TEST_API_KEY, "live": local_stripe.LIVE_API_KEY}
    every = secrets.every_tenant("stripe", keys, seed=token_hex(16))
    return json.dumps({**json.loads(every), **json.loads(configured or "{}")})


def add_tenant(tenant_id: str, name: str, secret: str, mode: str = "test") -> None:
    provision_tenant(
        DynamoStore(),
        TenantSettings(tenant_id=tenant_id, name=name),
        secret=secret,
        mode=mode,
        key_name=f"{tenant_id}-{mode}",
    )


def start_flows() -> tuple[LocalStepFunctions, dict[str, str]]:
    """moto's server on loopback with the state machines of LOCAL_MACHINES created from their
    artifacts, each named and invoking functions as in the stage "local"; and the variables that
    point the handlers at them."""
    flows = LocalStepFunctions({local_name(concern): handler_of(concern) for concern in LOCAL_MACHINES}, serve=True)
    flows.start()
    try:
        assert flows.endpoint is not None
        environment = {ENDPOINT_ENV: flows.endpoint}
        for concern in LOCAL_MACHINES:
            environment[state_machine_env(concern)] = flows.create(local_name(concern), load_definition(concern))
    except BaseException:
        flows.stop()
        raise
    return flows, environment


def start(
    *,
    port: int | None = None,
    dynamodb_port: int | None = None,
    schedule: bool = True,
    table_name: str = TABLE_NAME,
    verbose: bool = False,
    data_dir: Path | None = None,
    workers: int = gateway.DEFAULT_WORKERS,
    events_file: Path | None = None,
    stripe: bool = True,
) -> LocalStack:
    """DynamoDB Local + table + handlers over HTTP on 127.0.0.1, served by `workers` processes
    (+ the daily scheduler, and the stream poller publishing events to the local bus). With
    `data_dir` the data (scheduled actions included) outlives the process: start again on the same
    directory and everything is where it was. With `events_file` every event the local bus
    delivers is appended to it, whole, one JSON line each (emptied first unless the data was kept).
    With `stripe` localstripe runs beside it (billow.local.stripe) and every tenant's Stripe is it:
    its address and keys are in the handlers' environment before the workers start. The dunning
    flows run in moto's Step Functions on loopback (`start_flows`), its address and the state
    machine's ARN in the handlers' environment too."""
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    dynamo = dynamodb.start(dynamodb_port, data_dir=data_dir)
    fake_stripe: local_stripe.LocalStripe | None = None
    flows: LocalStepFunctions | None = None
    environment_before = {name: os.environ.get(name) for name in (API_BASE_ENV, secrets.ENV)} if stripe else {}
    try:
        flows, flows_environment = start_flows()
        environment_before.update({name: os.environ.get(name) for name in flows_environment})
        os.environ.update(flows_environment)
        if stripe:
            fake_stripe = local_stripe.start()
            os.environ[API_BASE_ENV] = fake_stripe.url
            os.environ[secrets.ENV] = stripe_secrets(os.environ.get(secrets.ENV))
        fresh = dynamo.create_table(table_name)
        os.environ["BILLOW_TABLE"] = table_name
        os.environ["BILLOW_DYNAMODB_ENDPOINT"] = dynamo.endpoint
        configure(table_name=table_name, endpoint=dynamo.endpoint, region="us-east-1")
        prepare_environment()
        events = StreamPoller(dynamo.endpoint, table_name)
        if not fresh:
            events.skip()  # published by the run that made those changes
        # Each rule's consumer (the example one, or the function RULE_CONSUMERS names), called as
        # its queue would call it.
        unsubscribe = [
            local_bus().subscribe(rule, sqs_target(handler_of(consumer_of(rule)))) for rule in local_bus().rules
        ]
        if events_file is not None:
            events_file.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                events_file.write_text("", encoding="utf-8")
            unsubscribe.append(local_bus().subscribe(None, file_target(events_file)))
        events.start()
        port = port or dynamodb.free_port()
        server = gateway.serve(port, workers=workers, verbose=verbose)
    except BaseException:
        if fake_stripe is not None:
            fake_stripe.stop()
        if flows is not None:
            flows.stop()
        restore_environment(environment_before)
        dynamo.stop()
        raise
    scheduler = DailyScheduler() if schedule else None
    if scheduler is not None:
        scheduler.start()
    url = f"http://127.0.0.1:{port}"
    return LocalStack(
        dynamo,
        server,
        scheduler,
        events,
        url,
        table_name,
        fresh,
        events_file,
        unsubscribe,
        fake_stripe,
        environment_before,
        flows,
    )
