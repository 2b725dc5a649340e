"""The corpus demo and the serve command, against a real `cortex-core serve` process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import websockets

from realtime.demo import load_corpus
from tests.support.server import ServerProcess
from tests.support.services import free_port

pytestmark = pytest.mark.e2e

# One left-to-right, one right-to-left and one CJK language.
DEMO_LANGUAGES = ["english", "hebrew", "japanese"]
DEMO_DIALOGUES = 2
DEMO_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("demo")
    process = ServerProcess(directory, database_url=f"sqlite+aiosqlite:///{directory / 'cortex.db'}").start()
    yield process
    process.stop()


def run_cli(*arguments: str, timeout: float = DEMO_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", *arguments], capture_output=True, text=True, timeout=timeout
    )


def test_demo_three_languages_reports_no_mismatch(server):
    result = run_cli(
        "demo",
        "--url",
        server.base_url,
        "--languages",
        *DEMO_LANGUAGES,
        "--limit-dialogues",
        str(DEMO_DIALOGUES),
        "--no-progress",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"conversations: (\d+)\s+messages: (\d+)\s+mismatches: (\d+)", result.stdout)
    assert summary, result.stdout
    corpus = load_corpus(DEMO_LANGUAGES, DEMO_DIALOGUES)
    assert int(summary.group(1)) == len(corpus)
    assert int(summary.group(2)) == sum(item.line_count for item in corpus)
    assert int(summary.group(3)) == 0
    assert "messages per second" in result.stdout


def test_demo_server_unreachable_exits_1():
    result = run_cli("demo", "--url", f"http://127.0.0.1:{free_port()}", "--languages", "english", timeout=60)

    assert result.returncode == 1
    assert result.stdout.startswith("error:")


def test_demo_unknown_language_exits_1(server):
    result = run_cli("demo", "--url", server.base_url, "--languages", "klingon", timeout=60)

    assert result.returncode == 1
    assert "klingon" in result.stdout


def test_serve_prints_url_to_open(server):
    assert f"http://127.0.0.1:{server.port}" in server.log()


def test_serve_log_omits_query_string_token(server):
    token = httpx.post(
        server.base_url + "/auth/register",
        json={"email": "logcheck@example.com", "name": "Log check", "password": "long enough"},
        timeout=10,
    ).json()["access_token"]

    async def connect_with_query_token() -> str:
        async with websockets.connect(f"{server.ws_url}?token={token}") as connection:
            return (await asyncio.wait_for(connection.recv(), 10))

    first_frame = asyncio.run(connect_with_query_token())
    httpx.get(f"{server.base_url}/health?token={token}", timeout=10)

    assert '"ready"' in first_frame
    assert token not in server.log()
    assert token.split(".")[2] not in server.log()
