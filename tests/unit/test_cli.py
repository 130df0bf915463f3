"""`billow bill preview` (the documented command-line dry run) and `billow rate` (usage pricing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def billow(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    return subprocess.run(
        [sys.executable, "-m", "billow.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def preview(stdin: str) -> subprocess.CompletedProcess[str]:
    return billow(stdin, "bill", "preview")


def test_the_documented_request_prints_every_line_a_run_on_as_of_creates() -> None:
    request = {
        "terms": {
            "cycle": "month",
            "billing_model": "advance",
            "calendar": "period",
            "billing_day": 1,
            "threshold_day": 15,
            "price": "30.00",
            "currency": "USD",
        },
        "start": "2024-01-20",
        "end": None,
        "as_of": "2024-03-01",
    }
    done = preview(json.dumps(request))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    lines = [line for invoice in out["invoices"] for line in invoice["lines"]]
    assert [{k: x[k] for k in ("period", "fraction", "amount", "kind")} for x in lines] == [
        {
            "period": {"start": "2024-01-20", "end": "2024-02-01"},
            "fraction": "0.387096774194",
            "amount": {"amount": "11.61", "currency": "USD"},
            "kind": "prorated",
        },
        {
            "period": {"start": "2024-02-01", "end": "2024-03-01"},
            "fraction": "1.000000000000",
            "amount": {"amount": "30.00", "currency": "USD"},
            "kind": "recurring",
        },
        {
            "period": {"start": "2024-03-01", "end": "2024-04-01"},
            "fraction": "1.000000000000",
            "amount": {"amount": "30.00", "currency": "USD"},
            "kind": "recurring",
        },
    ]
    assert lines[0]["fraction_exact"] == "12/31"
    assert out["total"] == {"amount": "71.61", "currency": "USD"}
    assert [(i["billing_date"], i["issue_date"], i["due_date"]) for i in out["invoices"]] == [
        ("2024-01-20", "2024-01-20", None),  # the dry run knows no business, so no payment terms
        ("2024-03-01", "2024-03-01", None),
    ]


def test_weekly_arrears_with_a_weekday_name_and_an_end_date() -> None:
    request = {
        "terms": {
            "cycle": "week",
            "billing_model": "arrears",
            "calendar": "anniversary",
            "billing_day": "friday",
            "price": "700",
            "currency": "JPY",
        },
        "start": "2024-01-03",
        "end": "2024-01-17",
        "as_of": "2024-02-01",
    }
    done = preview(json.dumps(request))
    assert done.returncode == 0, done.stderr
    lines = [line for invoice in json.loads(done.stdout)["invoices"] for line in invoice["lines"]]
    assert [(x["period"]["start"], x["period"]["end"], x["amount"]["amount"]) for x in lines] == [
        ("2024-01-03", "2024-01-05", "200"),
        ("2024-01-05", "2024-01-12", "700"),
        ("2024-01-12", "2024-01-17", "500"),
    ]
    numbered = {**request, "terms": {**request["terms"], "billing_day": 4}}  # 4 is Friday, as the API says it
    assert json.loads(preview(json.dumps(numbered)).stdout) == json.loads(done.stdout)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("not json", "stdin: not one valid JSON object"),
        (
            '{"terms": {"cycle": "month", "billing_model": "advance", "price": 19.99, "currency": "USD"}, '
            '"start": "2024-01-01", "as_of": "2024-02-01"}',
            "terms.price: send amounts as decimal strings",
        ),
        (
            '{"terms": {"cycle": "month", "billing_model": "advance", "price": "1.001", "currency": "USD"}, '
            '"start": "2024-01-01", "as_of": "2024-02-01"}',
            "terms.price:",
        ),
        (
            '{"terms": {"cycle": "week", "billing_model": "advance", "billing_day": 7, "price": "1", '
            '"currency": "USD"}, '
            '"start": "2024-01-01", "as_of": "2024-02-01"}',
            "terms.billing_day: a weekday is 0 (Monday) to 6 (Sunday)",
        ),
        (
            '{"terms": {"cycle": "month", "billing_model": "advance", "price": "1", "currency": "USD"}, '
            '"start": "2024-01-01", "end": "2023-01-01", "as_of": "2024-02-01"}',
            "end: end 2023-01-01 must be after start",
        ),
        (
            '{"terms": {"cycle": "month", "billing_model": "advance", "price": "1", "currency": "USD", '
            '"colour": "red"}, '
            '"start": "2024-01-01", "as_of": "2024-02-01"}',
            "terms.colour: unknown field",
        ),
        (
            '{"terms": {"cycle": "week", "billing_model": "advance", "price": "1", "currency": "USD"}, '
            '"start": "2000-01-03", "as_of": "2030-01-01"}',
            "as_of: billing up to 2030-01-01 would create over 1000 invoices",
        ),
        (
            '{"terms": {"cycle": "year", "billing_model": "advance", "price": "1", "currency": "USD"}, '
            '"start": "9999-01-01", "as_of": "9999-12-31"}',
            "start: Input should be less than or equal to 2999-12-31",
        ),
    ],
)
def test_errors_go_to_stderr_with_a_non_zero_exit(stdin: str, message: str) -> None:
    done = preview(stdin)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr


def test_a_reader_that_stops_early_is_not_an_error() -> None:
    request = {
        "terms": {"cycle": "week", "billing_model": "advance", "price": "1", "currency": "USD"},
        "start": "2015-02-02",
        "as_of": "2034-01-01",  # 987 weekly lines: far more output than a pipe buffer holds
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    command = f"{sys.executable} -m billow.cli bill preview | head -c 100 > /dev/null"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""


def test_help_documents_the_input_with_an_example_that_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    done = subprocess.run(
        [sys.executable, "-m", "billow.cli", "bill", "preview", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for name in ("terms.cycle", "terms.billing_model", "terms.price", "terms.currency", "start, end, as_of"):
        assert name in done.stdout, name
    example = done.stdout.split("echo '", 1)[1].split("' | billow bill preview", 1)[0]
    ran = preview(example)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["total"] == {"amount": "71.61", "currency": "USD"}


def rate(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return billow(stdin, "rate", *args)


def test_rate_help_documents_the_input_with_stripes_example_that_runs() -> None:
    done = rate("", "--help")
    assert done.returncode == 0
    for name in ("currency", "usage", "units", "events", "breakdown"):
        assert name in done.stdout, name
    example = done.stdout.split("echo '", 1)[1].split("' | billow rate", 1)[0]
    ran = rate(example)
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout)
    assert answer["total"] == {"amount": "140.00", "currency": "USD"} and answer["quantity"] == "1500"
    assert [(row["tier"], row["units"], row["amount"]) for row in answer["breakdown"]] == [
        (1, "1000", "105.00"),
        (2, "500", "35.00"),
    ]


def test_rate_prices_events_and_prints_the_exact_total_beside_the_rounded_one() -> None:
    request = {
        "currency": "USD",
        "usage": {
            "meter": "payments",
            "aggregation": "sum",
            "model": "percentage",
            "percentage": {"rate": "2.9", "fixed_price": "0.30"},
            "free_amount": "50.00",
        },
        "events": [{"value": "40.00"}, {"value": "25.55"}],
    }
    done = rate(json.dumps(request))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # the first 40.00 free, the second event pays on 15.55: 0.45095 + 0.30
    assert answer["exact"] == "0.75095" and answer["total"] == {"amount": "0.75", "currency": "USD"}
    assert answer["quantity"] == "1"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ("not json", "billow rate: stdin: not one valid JSON object"),
        ('{"currency": "USD", "units": "5"}', "billow rate: usage: required"),
        ('{"currency": "XXX", "units": "5", "usage": {}}', "billow rate: currency: 'XXX' is not an ISO 4217"),
        (
            '{"currency": "USD", "units": 1500, "usage": {"meter": "m", "aggregation": "sum", "model": "per_unit",'
            ' "unit_price": "1"}}',
            "billow rate: units: units must be a decimal string",
        ),
        (
            '{"currency": "USD", "units": "5", "usage": {"meter": "m", "aggregation": "sum", "model": "graduated",'
            ' "tiers": [{"up_to": "10", "unit_price": "1"}, {"up_to": "10", "unit_price": "1"}]}}',
            "billow rate: usage.tiers[1].up_to:",
        ),
        (
            '{"currency": "USD", "units": "5", "usage": {"meter": "m", "aggregation": "sum", "model": "percentage",'
            ' "percentage": {"rate": "1"}}}',
            "billow rate: events: the percentage model prices events",
        ),
        ('{"currency": "USD", "units": "5", "usage": {}, "extra": 1}', "billow rate: extra: unknown field"),
        pytest.param("[" * 100_000, "billow rate: stdin: not one valid JSON object", id="nested-too-deeply"),
    ],
)
def test_rate_errors_name_the_field_and_exit_2(request_: str, message: str) -> None:
    done = rate(request_)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr, done.stderr


def test_rate_prints_tiny_exact_amounts_as_plain_decimals() -> None:
    usage = {"meter": "m", "aggregation": "sum", "model": "per_unit", "unit_price": "0.000000000001"}
    done = rate(json.dumps({"currency": "USD", "units": "3", "usage": usage}))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["exact"] == "0.000000000003" and answer["total"] == {"amount": "0.00", "currency": "USD"}
    assert answer["breakdown"][0]["unit_price"] == "0.000000000001"


def test_every_billow_rate_example_in_the_docs_prints_what_the_docs_show() -> None:
    text = (ROOT / "docs/billing.md").read_text()
    blocks = [b for b in re.findall(r"```console\n(.*?)```", text, re.DOTALL) if "| billow rate\n" in b]
    examples = [re.fullmatch(r"\$ echo '(.*)' \| billow rate\n(.*)", b, re.DOTALL) for b in blocks]
    assert all(examples) and len(examples) == 6
    examples_run = [m.groups() for m in examples if m]
    models = {json.loads(stdin)["usage"]["model"] for stdin, _ in examples_run}
    assert models == {"per_unit", "graduated", "volume", "package", "percentage", "graduated_percentage"}
    for stdin, shown in examples_run:
        ran = rate(stdin)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == shown, stdin
