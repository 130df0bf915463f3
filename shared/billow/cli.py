"""The `billow` command line.

    billow bill preview < request.json

reads one dry-run request (docs/billing.md, "Dry run"; `billow bill preview --help` shows it) on
stdin and prints every invoice a billing run on `as_of` would create. Errors go to stderr, one line
per problem naming the field, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TextIO

from pydantic import ValidationError

from billow.domain.errors import DomainError
from billow.services.inputs import validation_problems
from billow.services.preview import PreviewInput, preview

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


def _fail(stderr: TextIO, problems: list[tuple[str, str]]) -> int:
    for field, reason in problems:
        print(f"billow bill preview: {field}: {reason}", file=stderr)
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
    args = parser.parse_args(argv)
    if args.command == "bill" and args.bill_command == "preview":
        try:
            return bill_preview(sys.stdin, sys.stdout, sys.stderr)
        except BrokenPipeError:
            # The reader stopped early (`| head`): not an error. Keep Python from reporting the
            # flush of the closed stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    parser.error("unknown command")
    return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
