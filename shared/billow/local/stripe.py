"""localstripe, the local stand-in for Stripe, served on loopback in a process of its own.

localstripe's own CLI binds every interface on port 8420 and pickles its store to the fixed path
`/tmp/localstripe.pickle` after every write (shared by every run on the machine, reloaded by the
next). `python -m billow.local.stripe` serves the same app on 127.0.0.1 only, on a free port, with
its store in memory only: nothing outlives the process, and two stacks never share a store.

`start()` runs it as a child process and returns where it listens; `LocalStripe.register_webhook`
points its webhooks (signed like Stripe's) at a URL. ../docs/payments.md says what it does not do
(it ignores idempotency keys and accepts over-refunds: Billow's own records make it safe).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any

TEST_API_KEY = "sk_test_billow_local"
LIVE_API_KEY = "sk_live_billow_local"
READY = "localstripe listening on "
VISA = "4242424242424242"  # Stripe's test card that pays
DECLINES_AT_CHARGE = "4000000000000341"  # saves fine, then every charge of it is declined


@dataclass
class LocalStripe:
    url: str
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def register_webhook(self, endpoint_id: str, url: str, secret: str, events: list[str] | None = None) -> None:
        """Send every event (or those named) to `url`, signed with `secret` (localstripe's
        `POST /_config/webhooks/{id}`; registering the same id again replaces it)."""
        form = [("url", url), ("secret", secret)] + [("events[]", e) for e in events or ()]
        self._post(f"/_config/webhooks/{endpoint_id}", form)

    def flush(self) -> None:
        """Forget every object (`DELETE /_config/data`)."""
        request = urllib.request.Request(f"{self.url}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def _post(self, path: str, form: list[tuple[str, str]]) -> Any:
        from urllib.parse import urlencode

        request = urllib.request.Request(
            f"{self.url}{path}",
            data=urlencode(form).encode(),
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def confirm_setup(self, setup_ref: str, card: str = VISA) -> None:
        """What Stripe.js does when the customer types `card` on the tenant's page: confirm the
        SetupIntent with it (the demo data and the tests; never Billow itself)."""
        import stripe

        client = stripe.StripeClient(TEST_API_KEY, base_addresses={"api": self.url}, max_network_retries=0)
        data = {"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
        client.v1.setup_intents.confirm(setup_ref, {"payment_method_data": data})  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(*, log: IO[str] | None = None) -> LocalStripe:
    """localstripe in a child process on 127.0.0.1 and a free port (it picks the port itself and
    reports it, so no other process can take it in between)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "billow.local.stripe", "--watch-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(READY):
        process.kill()
        raise RuntimeError(f"localstripe did not start: {line!r}")
    return LocalStripe(line[len(READY) :].strip(), process)


def _exit_with_parent() -> None:
    """Stop when the parent process is gone (its end of our stdin closes), however it ended: a
    crashed test run leaves no localstripe behind."""
    import os
    import threading

    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(port: int = 0, *, watch_stdin: bool = False) -> None:
    """Serve localstripe's app on 127.0.0.1:`port` (0: a free one), store in memory only."""
    import asyncio
    import socket

    if watch_stdin:
        _exit_with_parent()

    from aiohttp import web
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None  # no /tmp pickle: the store lives in this process only

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))

    async def announce(_app: web.Application) -> None:
        print(f"{READY}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)

    server.app.on_startup.append(announce)
    asyncio.set_event_loop(asyncio.new_event_loop())
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billow.local.stripe", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (the parent is gone)")
    args = parser.parse_args(argv)
    serve(args.port, watch_stdin=args.watch_stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
