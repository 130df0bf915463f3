"""The `billow` command line.

    billow bill preview < request.json

reads one dry-run request (docs/billing.md, "Dry run") on stdin and prints every invoice line a
billing run on `as_of` would create. Errors go to stderr, one line per problem naming the field,
and the exit status is 2.
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
        return _fail(stderr, [(p["field"], p["reason"]) for p in validation_problems(error)])
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
        help="dry run: read {terms, start, end, as_of} as JSON on stdin, print the lines a run on as_of creates",
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
