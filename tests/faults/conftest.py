from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.services import PrivateRedis


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes on one SQLite file in the test's directory; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(**settings: str) -> ServerProcess:
        settings.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'cortex.db'}")
        process = ServerProcess(tmp_path, **settings).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()
