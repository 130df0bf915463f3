"""No DynamoDB Local outlives the process that started it, however that process ends: test runs
killed (SIGKILL, a timeout, a crashed xdist worker) used to leave their JVMs running (15 after a
day), because the JVM runs in a session of its own that no signal to the test run reaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWNER = """
import sys, time
from billow.local import dynamodb
local = dynamodb.start()
print(local.process.pid, flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_dynamodb_local_stops_when_the_process_that_started_it_is_killed(signum: signal.Signals) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}"},
        stdout=subprocess.PIPE,
        text=True,
    )
    jvm = 0
    try:
        assert owner.stdout is not None
        jvm = int(owner.stdout.readline())
        assert "DynamoDBLocal" in Path(f"/proc/{jvm}/cmdline").read_bytes().decode(errors="replace")
        owner.send_signal(signum)  # no teardown runs: it dies as a killed test run does
        owner.wait(timeout=30)
        deadline = time.monotonic() + 20
        while running(jvm) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(jvm)
    finally:  # a failed test leaves nothing behind either
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if jvm and running(jvm):
            os.kill(jvm, signal.SIGKILL)
