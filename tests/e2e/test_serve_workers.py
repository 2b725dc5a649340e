"""`cortex-core serve --workers 2` with Redis: worker processes keep tokens out of the log too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from tests.support.server import JWT_SECRET
from tests.support.services import free_port, require_redis

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

START_TIMEOUT_SECONDS = 60


@pytest.fixture
def workers_server(tmp_path):
    redis_url = require_redis()
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "CORTEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cortex.db'}",
        "CORTEX_JWT_SECRET": JWT_SECRET,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "serve", "--port", str(port), "--workers", "2", "--redis-url", redis_url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                if httpx.get(base_url + "/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready within {START_TIMEOUT_SECONDS} s:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield base_url, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_serve_workers_log_omits_query_string_token(workers_server):
    base_url, log_path = workers_server
    token = httpx.post(
        base_url + "/auth/register",
        json={"email": "workers@example.com", "name": "Workers", "password": "long enough"},
        timeout=10,
    ).json()["access_token"]
    ws_url = base_url.replace("http://", "ws://") + f"/ws?token={token}"

    async def connect_several_times() -> list[str]:
        first_frames = []
        # Several connections, so both worker processes are likely to accept one.
        for _ in range(4):
            async with websockets.connect(ws_url) as connection:
                first_frames.append(await asyncio.wait_for(connection.recv(), 10))
        return first_frames

    first_frames = asyncio.run(connect_several_times())
    for _ in range(4):
        httpx.get(f"{base_url}/health?token={token}", timeout=10)
    time.sleep(0.5)

    assert all('"ready"' in frame for frame in first_frames)
    log = log_path.read_text(errors="replace")
    assert "/ws" in log
    assert token.split(".")[2] not in log
