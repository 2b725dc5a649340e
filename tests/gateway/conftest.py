from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on its embedded default (SQLite file, in-process broker) for a test module."""
    directory = tmp_path_factory.mktemp("gateway")
    process = ServerProcess(
        directory,
        database_url=f"sqlite+aiosqlite:///{directory / 'cortex.db'}",
        max_message_chars="100",
        max_frame_bytes="4096",
    ).start()
    yield process
    process.stop()
