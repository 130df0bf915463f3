"""`make run` (`python -m billow.local`) stops promptly and whole on SIGTERM or SIGINT sent to its
process group (`timeout make run`, `kill -TERM -<pgid>`, Ctrl-C in a terminal): DynamoDB Local,
localstripe, the gateway's workers and itself, nothing left running."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from billow.local.dynamodb import free_port

from tests.support import banner, run_local_stack

STOP_SECONDS = 20.0
"""How long stopping may take: the JVM's own shutdown takes a few seconds on a loaded machine."""


def children() -> dict[int, list[int]]:
    """Every process's children, read from /proc (Linux)."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        parent = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        found.setdefault(parent, []).append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    tree, seen, todo = children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            seen.add(child)
            todo.append(child)
    return seen


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_its_process_group_stops_the_whole_local_stack_within_seconds(
    signum: signal.Signals, tmp_path: Path
) -> None:
    options = ("--port", str(free_port()), "--no-demo", "--workers", "2")
    # its own process group, as `make run` in a terminal or under `timeout`
    process = run_local_stack(*options, cwd=tmp_path, own_group=True)
    started: set[int] = set()
    try:
        output = banner(process, timeout=180)
        assert "Press Ctrl-C" in output, output
        started = descendants(process.pid)
        names = " ".join(command(pid) for pid in started)
        assert "DynamoDBLocal" in names and "billow.local.stripe" in names and "forkserver" in names, names

        os.killpg(process.pid, signum)
        os.kill(process.pid, signum)  # and again, as `make run` passes the group's signal on to its child
        sent = time.monotonic()
        rest, _ = process.communicate(timeout=STOP_SECONDS)
        took = time.monotonic() - sent
        left = [f"{pid}: {command(pid)}" for pid in started if running(pid)]
        deadline = time.monotonic() + 5
        while left and time.monotonic() < deadline:  # reparented ones may still be exiting
            time.sleep(0.2)
            left = [f"{pid}: {command(pid)}" for pid in started if running(pid)]
        assert process.returncode == 0, output + rest
        assert took < STOP_SECONDS
        assert left == []
        assert "Traceback" not in rest, rest
    finally:  # a failed test leaves nothing behind either
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in started:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
