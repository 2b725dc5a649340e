"""Fixtures for the HTTP API suite: the real application on a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from realtime.app import create_app
from realtime.settings import Settings, load_settings
from tests.api.helpers import JWT_SECRET, Account, register



@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings a test module changes; override this fixture to change them."""
    return {}


@pytest.fixture
def settings(tmp_path, settings_overrides) -> Settings:
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/api.db",
        jwt_secret=JWT_SECRET,
        **settings_overrides,
    )


@pytest.fixture
async def client(settings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def alice(client) -> Account:
    return await register(client, "alice@example.com", "Alice")


@pytest.fixture
async def bob(client) -> Account:
    return await register(client, "bob@example.com", "Bob")


@pytest.fixture
async def mallory(client) -> Account:
    return await register(client, "mallory@example.com", "Mallory")
