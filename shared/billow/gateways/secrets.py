"""Rail secrets on AWS: Secrets Manager, one secret per tenant, read once per container.

The secret `billow/<stage>/rail/<tenant_id>` (`BILLOW_RAIL_SECRETS_PREFIX` = `billow/<stage>/rail/`,
set by the infrastructure on the functions allowed to read them) holds a JSON object per rail and
mode:

    {"stripe": {"test": {"api_key": "sk_test_...", "webhook_secret": "whsec_..."},
                "live": {"api_key": "sk_live_...", "webhook_secret": "whsec_..."}}}

A tenant's secret is read at the first request that needs it and kept for the container's life (a
rotated key reaches a container when it is recycled; docs/payments.md). A tenant without a secret is
asked again after `MISSING_TTL`, so one created meanwhile is found without a redeploy. boto3 is
imported at the first read, not at cold start (bench/cold_start.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from billow.services.gateway import RailSecrets

PREFIX_ENV = "BILLOW_RAIL_SECRETS_PREFIX"
DEFAULT_PREFIX = "billow/rail/"
MISSING_TTL = 300.0
"""Seconds a tenant found without a secret is remembered as such."""


def secret_name(prefix: str, tenant_id: str) -> str:
    return f"{prefix}{tenant_id}"


class SecretsManagerSecrets:
    """`SecretsSource` on Secrets Manager (one instance per container: `runtime.secrets`)."""

    def __init__(self, prefix: str | None = None, client: Any = None) -> None:
        self._prefix = prefix if prefix is not None else os.environ.get(PREFIX_ENV, DEFAULT_PREFIX)
        self._client = client
        self._found: dict[str, dict[str, Any]] = {}
        self._missing: dict[str, float] = {}
        self._lock = threading.Lock()
        self.reads = 0
        """GetSecretValue calls made (tests count them: once per tenant per container)."""

    def rail_secrets(self, rail: str, tenant_id: str, mode: str) -> RailSecrets | None:
        entry = (self._tenant(tenant_id) or {}).get(rail, {}).get(mode)
        if not entry:
            return None
        return RailSecrets(str(entry["api_key"]), str(entry["webhook_secret"]))

    def _tenant(self, tenant_id: str) -> dict[str, Any] | None:
        with self._lock:
            if tenant_id in self._found:
                return self._found[tenant_id]
            missing_since = self._missing.get(tenant_id)
            if missing_since is not None and time.monotonic() - missing_since < MISSING_TTL:
                return None
            client = self._secrets_manager()
            self.reads += 1
            try:
                value = client.get_secret_value(SecretId=secret_name(self._prefix, tenant_id))
            except client.exceptions.ResourceNotFoundException:
                self._missing[tenant_id] = time.monotonic()
                return None
            parsed: dict[str, Any] = json.loads(value["SecretString"])
            self._found[tenant_id] = parsed
            self._missing.pop(tenant_id, None)
            return parsed

    def _secrets_manager(self) -> Any:
        if self._client is None:
            import boto3  # at the first read, not at cold start

            self._client = boto3.client("secretsmanager")
        return self._client
