"""`make run` passes every option of `python -m billow.local` through a variable, and the README
names each variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = {
    "--port": "PORT=9091",
    "--workers": "WORKERS=3",
    "--data-dir": "DATA_DIR=.billow-data",
    "--events-file": "EVENTS_FILE=/tmp/billow-events.jsonl",
    "--no-demo": "NO_DEMO=1",
    "--verbose": "VERBOSE=1",
}


def cli_options() -> set[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}:{ROOT / 'functions'}"}
    shown = subprocess.run(
        [sys.executable, "-m", "billow.local", "--help"], capture_output=True, text=True, env=env, check=True
    ).stdout
    return set(re.findall(r"(--[a-z][a-z-]+)", shown)) - {"--help"}


def make_run(*variables: str) -> str:
    dry = subprocess.run(["make", "-n", "run", *variables], cwd=ROOT, capture_output=True, text=True, check=True)
    (command,) = [line for line in dry.stdout.splitlines() if "-m billow.local" in line]
    return command


def test_every_option_of_the_local_stack_has_a_make_run_variable_documented_in_the_readme() -> None:
    assert cli_options() == set(VARIABLES)
    command = make_run(*VARIABLES.values()).split()
    for option, variable in VARIABLES.items():
        value = variable.split("=", 1)[1]
        assert option in command
        if not option.startswith(("--no-", "--verbose")):
            assert command[command.index(option) + 1] == value
    assert make_run().split()[-1] == "billow.local"  # no variable, no option: the defaults
    readme = (ROOT / "README.md").read_text()
    assert [v for v in VARIABLES.values() if v.split("=")[0] + "=" not in readme] == []
