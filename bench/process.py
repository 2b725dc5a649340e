"""Start and stop the processes a benchmark needs, and measure their CPU time and memory with psutil.

Every process started here listens on 127.0.0.1 only, gets a bounded start-up time, and is stopped
with SIGTERM (then SIGKILL after a grace period) when the benchmark ends, also when it fails.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the context managers stop every server this run started."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


class ManagedProcess:
    """A child process with a name, its log file, and CPU and RSS readings."""

    def __init__(self, name: str, command: Sequence[str], *, env: dict[str, str] | None = None, log_dir: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.command,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.popen.pid)
        self._cpu_mark = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}; see {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the process and its children, in seconds."""
        total = 0.0
        for process in (self.ps, *self._children()):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children, in bytes."""
        total = 0
        for process in (self.ps, *self._children()):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def _children(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return self.ps.children(recursive=True)
        return []

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


def wait_for_http(process: ManagedProcess, url: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Poll `url` until it returns 200; raise with the process's log when it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not respond with 200 at {url} within {timeout:.0f} s; see {process.log_path}:\n{process.log_tail()}")


def wait_for_port(process: ManagedProcess, port: int, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} did not listen on port {port} within {timeout:.0f} s; see {process.log_path}")


@contextlib.contextmanager
def private_redis(log_dir: Path) -> Iterator[str]:
    """Run a redis-server on a free loopback port without persistence; yield its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not on PATH; install Redis to run benchmarks with several processes")
    port = free_port()
    process = ManagedProcess(
        f"redis-{port}",
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        log_dir=log_dir,
    )
    try:
        wait_for_port(process, port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.stop()


@contextlib.contextmanager
def fresh_postgres_database(name: str) -> Iterator[str]:
    """Create an empty PostgreSQL database on 127.0.0.1:5432, yield its asyncpg URL, then drop it."""
    _run_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _run_postgres_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        _run_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_postgres_admin(statement: str) -> None:
    import asyncio

    import asyncpg

    async def execute() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute())


@dataclass
class ResourceReading:
    cpu_seconds: float
    rss_bytes: int


def read_resources(processes: Sequence[ManagedProcess]) -> ResourceReading:
    return ResourceReading(
        cpu_seconds=sum(process.cpu_seconds() for process in processes),
        rss_bytes=sum(process.rss_bytes() for process in processes),
    )


def python_command(*arguments: str) -> list[str]:
    """Return a command that runs this interpreter, so children use the same virtual environment."""
    return [sys.executable, *arguments]
