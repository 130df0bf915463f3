"""`python -m billow.local`: run the local stack until Ctrl-C (what `make run` calls)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from billow.local import demo, gateway, stack

EVENTS_FILE = Path(".billow") / "events.jsonl"


def _stop(signum: int, _frame: object) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (`kill`, `timeout`, a service manager): unwind from wherever the
    main thread is (starting, or waiting), stopping what started, and exit 0. Further ones are
    ignored: stopping is not interrupted, and a second signal (`make` passes SIGTERM on to its
    child, which got one already) never runs a handler inside this one. It takes no lock: a handler
    that did (`threading.Event.set`) deadlocked when a second signal came while it held it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billow.local", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (default 8080)")
    parser.add_argument("--no-demo", action="store_true", help="start with an empty table")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--workers",
        type=int,
        default=gateway.DEFAULT_WORKERS,
        help="worker processes serving requests at once, like warm Lambda containers "
        f"(default {gateway.DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the data (and scheduled actions) in this directory across restarts (default: in memory)",
    )
    parser.add_argument(
        "--events-file",
        type=Path,
        default=None,
        help="write every event the local bus delivers to this file, one JSON line each "
        f"(default: {EVENTS_FILE.name} in the data directory, or {EVENTS_FILE})",
    )
    args = parser.parse_args(argv)
    events_file = args.events_file or (args.data_dir / EVENTS_FILE.name if args.data_dir else EVENTS_FILE)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("Starting DynamoDB Local and the Billow handlers ...", flush=True)
    try:
        local = stack.start(
            port=args.port, verbose=args.verbose, data_dir=args.data_dir, workers=args.workers, events_file=events_file
        )
    except KeyboardInterrupt:
        print("Stopped while starting.", flush=True)
        return 0
    try:
        ids = {}
        if local.fresh:  # a kept data directory has its tenant and demo data already
            stack.add_tenant(demo.DEMO_TENANT, "Demo SaaS Ltd", demo.DEMO_KEY)
        webhook = local.register_stripe_webhook(demo.DEMO_TENANT)
        if local.fresh:
            ids = demo.load(local.url, stripe=local.stripe) if not args.no_demo else {}
        test_secret, live_secret = (local.webhook_secret(demo.DEMO_TENANT, mode) for mode in ("test", "live"))
        print(
            f"""
Billow is running at {local.url}   (DynamoDB Local at {local.dynamo.endpoint}, table {local.table_name})
Tenant "{demo.DEMO_TENANT}", test-mode API key: {demo.DEMO_KEY}
Events (every one the local bus delivers, one JSON per line): tail -f {events_file}
localstripe (every local tenant's Stripe, on loopback): {local.stripe.url if local.stripe else "off"}
Step Functions (moto, the dunning flows as synthesized): {local.flows.endpoint if local.flows else "off"}
  its webhooks go to {webhook}, signed with the tenant's test-mode endpoint secret
Webhook endpoint secrets of "{demo.DEMO_TENANT}" (each tenant and mode has its own, new at each start):
  test {test_secret}   live {live_secret}

Try:
  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {local.url}/products
""",
            flush=True,
        )
        if ids:
            print(
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {local.url}/contacts/{ids['grace']}/invoices\n"
                f"\nGrace ({ids['grace']}) is on a test clock; advance it (up to two months at a time) with\n"
                f"  curl -s -X POST -H 'Authorization: Bearer {demo.DEMO_KEY}' -H 'Content-Type: application/json' \\\n"
                f'       -d \'{{"to": "2026-06-30T09:00:00+00:00"}}\' \\\n'
                f"       {local.url}/contacts/{ids['grace']}/test-clock/advance\n"
                f"then read it until its status is ready (the invoices are made in the background):\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' \\\n"
                f"       {local.url}/contacts/{ids['grace']}/test-clock\n",
                flush=True,
            )
            case = ids.get("grace_case")
            path = f"/dunning-cases/{case}" if case else f"/contacts/{ids['grace']}/dunning-cases"
            print(
                f"Grace's card is declined at every charge: her dunning case {case or '(opening: list hers)'}\n"
                "retries, reminds, and deactivates her services past the grace period while she owes over\n"
                "50.00 USD (the demo's policy: GET /settings/dunning); advance her clock and read it again:\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {local.url}{path}\n",
                flush=True,
            )
        if ids.get("ada_usage"):
            sub, svc = ids["ada_usage"]
            print(
                "Ada's API calls are billed by usage in arrears (Stripe's graduated tiers): 1,500 calls so far\n"
                "this month (the same batch was sent twice; counted once). The period's usage, then its\n"
                "rating so far on the view bill (140.00 USD on the usage line):\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' \\\n"
                f"       {local.url}/subscriptions/{sub}/services/{svc}/usage\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {local.url}/subscriptions/{sub}/upcoming\n",
                flush=True,
            )
            ada = f"{local.url}/contacts/{ids['ada']}"
            print(
                "Ada's Starter plan includes 1,000 credits a month and grants features and seats: her credits\n"
                "(880 included left, a promotional 200), what used them, and what she may use now:\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {ada}/credits\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {ada}/credits/breakdown\n"
                f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' {ada}/entitlements\n"
                + (
                    "A top-up: 500 credits for 10.00 USD charged to her saved card (once per request_id):\n"
                    f"  curl -s -H 'Authorization: Bearer {demo.DEMO_KEY}' -H 'Content-Type: application/json' \\\n"
                    f'       -d \'{{"pack":"pack_500","request_id":"my-first-top-up"}}\' {ada}/credits/top-ups\n'
                    if local.stripe is not None
                    else ""
                ),
                flush=True,
            )
        print("Docs: README.md, docs/. Press Ctrl-C to stop everything.", flush=True)
        threading.Event().wait()  # until SIGINT or SIGTERM (`_stop`)
    except KeyboardInterrupt:
        pass
    finally:
        print("Stopping ...", flush=True)
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
