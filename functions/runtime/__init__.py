"""What every handler shares: observability objects and the wiring of ports to adapters.

Created once per Lambda container (module import), reused across invocations."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from billow.gateways.invoke import EnvironmentInvoker
from billow.services.billing import InvoiceNumbers
from billow.services.context import SystemClock, new_id
from billow.storage.repository import DynamoStore

SERVICE = "billow"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace="Billow", service=SERVICE)

store = DynamoStore()
clock = SystemClock()
numbers = InvoiceNumbers(store)
invoker = EnvironmentInvoker()

__all__ = ["clock", "invoker", "logger", "metrics", "new_id", "numbers", "store", "tracer"]
