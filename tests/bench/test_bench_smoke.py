"""Smoke runs of ``python -m bench``, to keep the benchmark tool working.

Each run starts a real Cortex Core process on SQLite and real load-generator processes, with a
load small enough to finish in seconds. The tests check correctness only: every message stored
and delivered, no errors. They never assert a speed, because CI machines vary too much.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the load generator needs the bench extra: pip install -e '.[bench]'")
pytest.importorskip("psutil", reason="the bench measures servers with psutil: pip install -e '.[bench]'")

pytestmark = pytest.mark.e2e

REPOSITORY = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 180


def run_bench(*arguments: str, json_out: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", *arguments, "--json-out", str(json_out)],
        check=False,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, f"bench exited with {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(json_out.read_text())


def test_fanout_delivers_every_message(tmp_path: Path) -> None:
    """Every message a client sends is acked to it and delivered to each other room member."""
    result = run_bench(
        "fanout", "--targets", "cortex:1:sqlite",
        "--clients", "6", "--conversations", "2", "--senders", "2",
        "--rate", "40", "--duration", "1.5", "--warmup", "0.5", "--drain", "1.5", "--loadgens", "2",
        json_out=tmp_path / "fanout.json",
    )
    (step,) = result["targets"]["cortex:1:sqlite"]["steps"]
    members_per_room = 3

    assert step["sent"] > 0
    assert step["errors"] == 0, step["error_samples"]
    assert step["missing"] == 0
    assert step["delivered"] == step["sent"] * members_per_room
    assert step["stored"] == step["sent_total"]
    assert step["delivery"]["p50_ms"] is not None
    assert step["ack"]["p50_ms"] is not None


def test_connections_opens_every_connection(tmp_path: Path) -> None:
    """Fifty idle clients connect, authenticate and subscribe without an error."""
    result = run_bench("connections", "--count", "50", "--settle", "0.5", json_out=tmp_path / "connections.json")

    assert result["opened"] == 50
    assert result["errors"] == 0, result["error_samples"]
    assert result["connections_per_second"] > 0
    assert result["rss_per_connection_kb"] is not None
