"""Real `cortex-core serve` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

from tests.support.services import free_port

JWT_SECRET = "end-to-end-tests-shared-secret-0123456789abcdef"
START_TIMEOUT_SECONDS = 30


class ServerProcess:
    """One server instance on a free loopback port, with its log written to a file."""

    def __init__(self, directory: Path, *, database_url: str, redis_url: str | None = None, **settings: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = directory / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "CORTEX_DATABASE_URL": database_url,
            "CORTEX_JWT_SECRET": JWT_SECRET,
            "CORTEX_LOG_LEVEL": "info",
            **{f"CORTEX_{key.upper()}": str(value) for key, value in settings.items()},
        }
        self.env.pop("CORTEX_REDIS_URL", None)
        if redis_url:
            self.env["CORTEX_REDIS_URL"] = redis_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} on start:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer /health within {START_TIMEOUT_SECONDS} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 15) -> int:
        """Send SIGTERM and return the exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.process = None if self.process.poll() is not None else self.process

    def kill(self) -> None:
        """Send SIGKILL: the process gets no chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def mint_token(user_id: str, *, email: str | None = None, name: str | None = None, ttl: int = 3600) -> str:
    """Sign an access token the way another service holding the shared secret would."""
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl}
    if email is not None:
        claims["email"] = email
    if name is not None:
        claims["name"] = name
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")
