"""Asynchronous invocation locally: the handler runs on a background thread of the process that
asked, with the event Lambda would have queued, and is retried twice on error as Lambda retries an
asynchronous invocation. The caller has its answer before the work is done, as on AWS."""

from __future__ import annotations

import logging
import threading
from typing import Any

from billow.gateways.invoke import handler_of
from billow.local.lambda_runtime import invoke

ATTEMPTS = 3  # Lambda's default for asynchronous invocations: the first and two retries

log = logging.getLogger(__name__)


class BackgroundInvoker:
    def invoke_async(self, concern: str, event: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._run, args=(handler_of(concern), event), name=concern, daemon=True)
        thread.start()

    @staticmethod
    def _run(handler: str, event: dict[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                invoke(handler, event)
                return
            except Exception:
                log.exception("%s failed (attempt %d of %d)", handler, attempt, ATTEMPTS)
