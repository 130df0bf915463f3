"""Rail secrets locally: the local stack's configuration, not Secrets Manager.

`BILLOW_LOCAL_RAIL_SECRETS` holds a JSON object keyed `"<rail>/<tenant>/<mode>"`, each value
`{"api_key": ..., "webhook_secret": ...}` (tests set their own). The tenant `*` (`EVERY_TENANT`)
stands for every tenant without an entry of its own: its value is `{"api_key": ...,
"webhook_secret_seed": ...}`, and each tenant's webhook endpoint secret is derived from the seed
for that tenant and mode (`derived_webhook_secret`): every tenant and mode has its own, none
signs for another. The local stack sets it with a seed new at each start
(`billow.local.stack.stripe_secrets`). Read at every call, so a worker sees what was configured
after it started.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from billow.services.gateway import RailSecrets

ENV = "BILLOW_LOCAL_RAIL_SECRETS"


def key(rail: str, tenant_id: str, mode: str) -> str:
    return f"{rail}/{tenant_id}/{mode}"


EVERY_TENANT = "*"
"""A tenant id in the configuration standing for every tenant without an entry of its own (the
local stack's one localstripe account serves every local tenant)."""


def derived_webhook_secret(seed: str, rail: str, tenant_id: str, mode: str) -> str:
    """The webhook endpoint secret of `tenant_id` in `mode` on `rail`, made from `seed`
    (HMAC-SHA256 of `key(rail, tenant, mode)`): knowing one tenant's tells nothing of another's."""
    digest = hmac.new(seed.encode(), key(rail, tenant_id, mode).encode(), hashlib.sha256).hexdigest()
    return f"whsec_{digest[:40]}"


class LocalSecrets:
    def rail_secrets(self, rail: str, tenant_id: str, mode: str) -> RailSecrets | None:
        configured = json.loads(os.environ.get(ENV) or "{}")
        own = configured.get(key(rail, tenant_id, mode))
        if own is not None:
            return RailSecrets(own["api_key"], own["webhook_secret"])
        every = configured.get(key(rail, EVERY_TENANT, mode))
        if every is None:
            return None
        return RailSecrets(
            every["api_key"], derived_webhook_secret(every["webhook_secret_seed"], rail, tenant_id, mode)
        )


def configured(secrets: dict[tuple[str, str, str], RailSecrets]) -> str:
    """The value of `BILLOW_LOCAL_RAIL_SECRETS` that holds `secrets` (keyed rail, tenant, mode)."""
    return json.dumps({key(*k): {"api_key": v.api_key, "webhook_secret": v.webhook_secret} for k, v in secrets.items()})


def every_tenant(rail: str, api_keys: dict[str, str], seed: str) -> str:
    """The value of `BILLOW_LOCAL_RAIL_SECRETS` giving every tenant an account on `rail` with the
    API key of each mode in `api_keys`, and its own webhook secrets derived from `seed`."""
    return json.dumps(
        {
            key(rail, EVERY_TENANT, mode): {"api_key": api_key, "webhook_secret_seed": seed}
            for mode, api_key in api_keys.items()
        }
    )
