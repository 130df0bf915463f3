"""What every handler shares: observability objects and the wiring of ports to adapters.

Created once per Lambda container, reused across invocations, and each only when a handler first
names it (`from runtime import logger, store`): a handler's cold start pays for what it uses, not
for the others' (the authorizer neither traces nor bills, so it imports neither the X-Ray SDK nor
the billing engine). bench/cold_start.py measures it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from billow.services.context import new_id

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from billow.gateways.invoke import EnvironmentInvoker
    from billow.services.billing import InvoiceNumbers
    from billow.services.context import Scope, SystemClock
    from billow.services.gateway import PaymentGateway, SecretsSource
    from billow.services.ports import DunningFlows
    from billow.storage.repository import DynamoStore

    logger: Logger
    tracer: Tracer
    metrics: Metrics
    store: DynamoStore
    clock: SystemClock
    numbers: InvoiceNumbers
    invoker: EnvironmentInvoker
    secrets: SecretsSource
    payment_gateway: Callable[[Scope], PaymentGateway | None]
    flows: DunningFlows

SERVICE = "billow"

TRACED_LIBRARIES = ("botocore",)
"""What X-Ray traces: every AWS call (pynamodb's DynamoDB requests go through botocore's client).
Not Powertools' default, which imports and patches every library X-Ray supports that is installed
(httpx, requests...: ~100 ms of a cold start) and traced each DynamoDB request twice (pynamodb's
patch wraps botocore's HTTP session under botocore's own)."""


def _logger() -> Any:
    from aws_lambda_powertools import Logger

    return Logger(service=SERVICE)


def _tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE, patch_modules=TRACED_LIBRARIES)


def _metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="Billow", service=SERVICE)


def _store() -> Any:
    from billow.storage.repository import DynamoStore

    return DynamoStore()


def _clock() -> Any:
    from billow.services.context import SystemClock

    return SystemClock()


def _numbers() -> Any:
    from billow.services.billing import InvoiceNumbers

    return InvoiceNumbers(__getattr__("store"))


def _invoker() -> Any:
    from billow.gateways.invoke import EnvironmentInvoker

    return EnvironmentInvoker()


DEFAULT_SECRETS_SOURCE = "billow.gateways.secrets:SecretsManagerSecrets"
"""Where rail secrets are read on AWS; `BILLOW_SECRETS_SOURCE` (`module:Class`) names another (the
local stack's configuration: billow.local.secrets)."""


def _secrets() -> Any:
    module, _, name = os.environ.get("BILLOW_SECRETS_SOURCE", DEFAULT_SECRETS_SOURCE).partition(":")
    return getattr(importlib.import_module(module), name)()


PAYMENT_GATEWAYS_ENV = "BILLOW_PAYMENT_GATEWAYS"


def _charging_gateway(scope: Any) -> Any:
    """The rail the tenant's secrets name for the scope's mode (billow.gateways.rails)."""
    from billow.gateways.rails import charging_gateway

    return charging_gateway(__getattr__("secrets"), scope.tenant_id, scope.mode)


def _payment_gateway() -> Any:
    """`Scope -> PaymentGateway | None`: the rail a tenant's mode is charged on, None when it has no
    account on one (its invoices are paid by transfer). By default the one its rail secrets name
    (`billow.gateways.rails.charging_gateway`, imported at the first collection, not at cold start);
    `BILLOW_PAYMENT_GATEWAYS` names another function (`module:name`); tests set
    `runtime.payment_gateway` itself."""
    spec = os.environ.get(PAYMENT_GATEWAYS_ENV, "")
    if not spec:
        return _charging_gateway
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _flows() -> Any:
    """The dunning state machine (billow.gateways.flows, from the environment); tests set
    `runtime.flows` itself."""
    from billow.gateways.flows import EnvironmentFlows

    return EnvironmentFlows()


_FACTORIES: dict[str, Callable[[], Any]] = {
    "logger": _logger,
    "tracer": _tracer,
    "metrics": _metrics,
    "store": _store,
    "clock": _clock,
    "numbers": _numbers,
    "invoker": _invoker,
    "secrets": _secrets,
    "payment_gateway": _payment_gateway,
    "flows": _flows,
}


def imported() -> None:
    """The last line of a handler that began with `gc.disable()`. Importing a function's code makes
    tens of thousands of objects that live as long as the container; the cyclic garbage collector,
    counting them as new, ran several full collections over them during the import (~25 ms of an
    API cold start, bench/cold_start.py). Frozen now, later collections skip them too."""
    gc.freeze()
    gc.enable()


def invocation() -> None:
    """The first call of every invocation of a handler that writes: state kept per request (the
    test-clock times noted while reading clocks) starts empty, never carried from the previous one."""
    if "billow.storage.repository" in sys.modules:
        from billow.storage.repository import forget_clock_times

        forget_clock_times()


_MAKING = threading.RLock()  # one of each, even when two threads import handlers at once (locally)


def __getattr__(name: str) -> Any:
    """The shared object `name`, made at its first use and kept (module attribute from then on)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _MAKING:
        if name not in globals():
            globals()[name] = factory()
        return globals()[name]


__all__ = [
    "clock",
    "flows",
    "imported",
    "invoker",
    "logger",
    "metrics",
    "new_id",
    "numbers",
    "payment_gateway",
    "secrets",
    "store",
    "tracer",
]
