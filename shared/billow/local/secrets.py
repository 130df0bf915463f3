"""Rail secrets locally: the local stack's configuration, not Secrets Manager.

`BILLOW_LOCAL_RAIL_SECRETS` holds a JSON object keyed `"<rail>/<tenant>/<mode>"`, each value
`{"api_key": ..., "webhook_secret": ...}` (the local stack sets it when it registers a tenant's
endpoint; tests set their own). Read at every call, so a worker sees what was configured after it
started.
"""

from __future__ import annotations

import json
import os

from billow.services.gateway import RailSecrets

ENV = "BILLOW_LOCAL_RAIL_SECRETS"


def key(rail: str, tenant_id: str, mode: str) -> str:
    return f"{rail}/{tenant_id}/{mode}"


EVERY_TENANT = "*"
"""A tenant id in the configuration standing for every tenant without an entry of its own (the
local stack's one localstripe account serves every local tenant)."""


class LocalSecrets:
    def rail_secrets(self, rail: str, tenant_id: str, mode: str) -> RailSecrets | None:
        configured = json.loads(os.environ.get(ENV) or "{}")
        found = configured.get(key(rail, tenant_id, mode)) or configured.get(key(rail, EVERY_TENANT, mode))
        return None if found is None else RailSecrets(found["api_key"], found["webhook_secret"])


def configured(secrets: dict[tuple[str, str, str], RailSecrets]) -> str:
    """The value of `BILLOW_LOCAL_RAIL_SECRETS` that holds `secrets` (keyed rail, tenant, mode)."""
    return json.dumps({key(*k): {"api_key": v.api_key, "webhook_secret": v.webhook_secret} for k, v in secrets.items()})
