"""Liveness, readiness and the OpenAPI document: public endpoints."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from realtime.app import create_app
from realtime.settings import load_settings
from tests.api.helpers import JWT_SECRET
from tests.support.services import require_redis


async def test_health_without_credentials_returns_200(client):
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_with_database_up_returns_200(client):
    response = await client.get("/ready")

    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_ready_with_database_down_returns_503(client):
    state = client.app.state
    original_ping = state.db.ping

    async def failing_ping() -> None:
        raise ConnectionRefusedError("database is down")

    state.db.ping = failing_ping
    try:
        down = await client.get("/ready")
    finally:
        state.db.ping = original_ping
    up_again = await client.get("/ready")

    assert down.status_code == 503
    assert "database" in down.json()["detail"]
    assert up_again.status_code == 200


async def test_openapi_document_served_without_credentials(client):
    response = await client.get("/schema/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/auth/register", "/workspaces", "/conversations/{conversation_id}/messages", "/search/messages"):
        assert path in paths, path


async def test_ready_with_redis_unreachable_returns_503(tmp_path, unused_tcp_port):
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/ready.db",
        jwt_secret=JWT_SECRET,
        redis_url=f"redis://127.0.0.1:{unused_tcp_port}/0",
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "failed"
    assert str(unused_tcp_port) not in response.json()["detail"]


@pytest.mark.redis
async def test_ready_with_redis_up_returns_200(tmp_path):
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/ready.db", jwt_secret=JWT_SECRET, redis_url=require_redis()
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/ready")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}
