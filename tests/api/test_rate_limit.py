"""The optional per-address HTTP rate limit."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"http_rate_limit_per_minute": 3}


async def test_requests_over_the_limit_get_429(client, alice) -> None:
    """Past the limit a client gets 429 with a detail; health checks are not counted."""
    statuses = [(await client.get("/auth/me", headers=alice.headers)).status_code for _ in range(4)]
    health = await client.get("/health")

    assert statuses[-1] == 429
    assert 200 in statuses
    assert health.status_code == 200
    limited = await client.get("/auth/me", headers=alice.headers)
    assert limited.status_code == 429
    assert limited.json()["detail"]
