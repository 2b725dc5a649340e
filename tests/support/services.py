"""Reaching the Redis and PostgreSQL servers the integration tests need.

Outside CI an unreachable service skips the tests that need it. Under CI=true it fails them,
because a skipped test would let a broken setup pass.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_redis() -> str:
    """Return the shared Redis URL, or skip (fail under CI) when Redis does not answer."""
    if not port_answers(REDIS_HOST, REDIS_PORT):
        unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, which the test may stop and start."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed, so a private Redis cannot be started")
        self._binary = binary
        self._directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self._directory / f"redis-{self.port}.log").open("ab")
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not port_answers("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on port {self.port} did not start within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
