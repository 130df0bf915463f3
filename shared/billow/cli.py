"""The `billow` command line.

    billow bill preview < request.json
    billow rate < request.json

`bill preview` reads one dry-run request (docs/billing.md, "Dry run"; `billow bill preview --help`
shows it) on stdin and prints every invoice a billing run on `as_of` would create. `rate` reads a
usage price and some usage (docs/billing.md, "Usage pricing"; `billow rate --help`) and prints what
the billing engine charges for it. Errors go to stderr, one line per problem naming the field, and
the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

from pydantic import ValidationError

from billow.domain.errors import DomainError, InvalidInput
from billow.domain.money import currency_exponent
from billow.domain.pricing import parse_decimal, parse_usage_price, rate
from billow.services.inputs import validation_problems
from billow.services.preview import PreviewInput, preview
from billow.services.views import rated

USAGE_ERROR = 2
PREVIEW_EXAMPLE = (
    '{"terms": {"cycle": "month", "billing_model": "advance", "calendar": "period", "billing_day": 1,\n'
    '         "threshold_day": 15, "price": "30.00", "currency": "USD"},\n'
    '         "start": "2024-01-20", "end": null, "as_of": "2024-03-01"}'
)
PREVIEW_HELP = f"""\
Dry run: reads one JSON object on stdin and prints, as JSON, every invoice a billing run on `as_of`
would create for one service with no earlier invoices (nothing is read or written).

input (docs/billing.md, "Dry run"):
  terms.cycle          week | month | quarter | semiannual | year
  terms.billing_model  advance | arrears
  terms.calendar       anniversary (default) | period
  terms.billing_day    1-31; weekly: 0 (Monday)-6 or a weekday name; default: from `start`
  terms.threshold_day  same form as billing_day (optional; period calendar)
  terms.price          a decimal string, at most the currency's decimals, e.g. "30.00"
  terms.currency       an ISO 4217 code, e.g. "USD"
  terms.setup_fee, terms.trial_days, terms.quantity   optional
  start, end, as_of    YYYY-MM-DD days; `end` is exclusive, null for an open-ended service

output: {{"invoices": [...], "total": {{"amount", "currency"}}}}, each invoice in the API's shape
for invoices not yet issued. Errors go to stderr, one line per problem naming the field; exit 2.

example:
  echo '{PREVIEW_EXAMPLE}' | billow bill preview
"""


RATE_EXAMPLE = (
    '{"currency": "USD", "units": "1500", "usage": {"meter": "api_calls", "aggregation": "sum",\n'
    '         "model": "graduated", "tiers": [{"up_to": "1000", "unit_price": "0.10", "flat_price": "5.00"},\n'
    '                                         {"up_to": null, "unit_price": "0.05", "flat_price": "10.00"}]}}'
)
RATE_HELP = f"""\
Rates usage: reads one JSON object on stdin and prints, as JSON, what the billing engine charges for
it under a usage price (the same code the billing run, the dry run and the view bill call; nothing
is read or written).

input (docs/billing.md, "Usage pricing"):
  currency   an ISO 4217 code, e.g. "USD": the total is rounded once to its minor unit
  usage      a usage price: meter, aggregation, model (per_unit | graduated | volume | package |
             percentage | graduated_percentage) and the model's prices, as price terms take it
  units      the period's quantity as a decimal string, e.g. "1500" (per_unit, graduated, volume,
             package)
  events     [{{"value": "100.00"}}, ...]: each event's value, in the order they happened
             (percentage, graduated_percentage)

output: {{"quantity", "total": {{"amount", "currency"}}, "exact", "breakdown": [{{"tier", "units",
"unit_price", "rate", "flat_price", "amount"}}, ...]}}: `total` is `exact` rounded once (half away
from zero); the breakdown is exact. Errors go to stderr, one line per problem naming the field; exit 2.

example (Stripe's graduated tiers; 140.00 USD):
  echo '{RATE_EXAMPLE}' | billow rate
"""


def _fail(stderr: TextIO, problems: list[tuple[str, str]], command: str = "bill preview") -> int:
    for field, reason in problems:
        print(f"billow {command}: {field}: {reason}", file=stderr)
    return USAGE_ERROR


def bill_preview(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    raw = stdin.read()
    try:
        request = PreviewInput.model_validate_json(raw)
    except ValidationError as error:
        if any(p.get("type") == "json_invalid" for p in error.errors()):
            return _fail(stderr, [("stdin", "not one valid JSON object")])
        return _fail(stderr, [(p["field"], p["reason"]) for p in validation_problems(error.errors())])
    try:
        result = preview(request)
    except DomainError as error:
        return _fail(stderr, [(error.field or "request", error.message)])
    json.dump(result, stdout, indent=2)
    stdout.write("\n")
    return 0


def _rate_request(raw: Any) -> dict[str, Any]:
    """Rates the request `billow rate` reads (see RATE_HELP); refusals name the field."""
    if not isinstance(raw, dict):
        raise InvalidInput("the request is one JSON object", field="stdin")
    unknown = sorted(set(raw) - {"currency", "usage", "units", "events"})
    if unknown:
        raise InvalidInput("unknown field (allowed: currency, usage, units, events)", field=unknown[0])
    currency = raw.get("currency")
    if not isinstance(currency, str):
        raise InvalidInput('required: an ISO 4217 code, e.g. "USD"', field="currency")
    currency_exponent(currency)
    if raw.get("usage") is None:
        raise InvalidInput("required: the usage price", field="usage")
    price = parse_usage_price(raw["usage"], currency)
    if "units" in raw and "events" in raw:
        raise InvalidInput("give units or events, not both", field="events")
    units = None if raw.get("units") is None else parse_decimal(raw["units"], "units")
    events = None
    if raw.get("events") is not None:
        if not isinstance(raw["events"], list):
            raise InvalidInput('a list of {"value": "<decimal>"}', field="events")
        events = [_event_value(e, f"events[{i}]") for i, e in enumerate(raw["events"])]
    return rated(rate(price, currency, units=units, events=events))


def _event_value(event: Any, field: str) -> Decimal:
    if not isinstance(event, dict) or set(event) != {"value"}:
        raise InvalidInput('an event is {"value": "<decimal>"}', field=field)
    return parse_decimal(event["value"], f"{field}.value")


def rate_usage(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    try:
        raw = json.loads(stdin.read())
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return _fail(stderr, [("stdin", "not one valid JSON object")], "rate")
    try:
        result = _rate_request(raw)
    except DomainError as error:
        return _fail(stderr, [(error.field or "request", error.message)], "rate")
    json.dump(result, stdout, indent=2)
    stdout.write("\n")
    return 0


def _run(command: Callable[[TextIO, TextIO, TextIO], int]) -> int:
    try:
        return command(sys.stdin, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Keep Python from reporting the
        # flush of the closed stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billow", description="Billow billing tools")
    commands = parser.add_subparsers(dest="command", required=True)
    bill = commands.add_parser("bill", help="billing engine")
    bill_commands = bill.add_subparsers(dest="bill_command", required=True)
    bill_commands.add_parser(
        "preview",
        help="dry run: read {terms, start, end, as_of} as JSON on stdin, print the invoices a run on as_of creates",
        description=PREVIEW_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "rate",
        help="rate usage: read {currency, usage, units | events} as JSON on stdin, print the total and breakdown",
        description=RATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = parser.parse_args(argv)
    if args.command == "bill" and args.bill_command == "preview":
        return _run(bill_preview)
    if args.command == "rate":
        return _run(rate_usage)
    parser.error("unknown command")
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
