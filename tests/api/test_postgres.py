"""The HTTP API on PostgreSQL: one user journey, on a database created for the test and dropped after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from realtime.app import create_app
from realtime.settings import load_settings
from tests.api.helpers import JWT_SECRET, create_conversation, create_workspace, register, temporary_postgres_database

pytestmark = pytest.mark.postgres

@pytest.fixture
async def postgres_client() -> AsyncIterator[AsyncTestClient]:
    async with temporary_postgres_database("cortex_api") as database_url:
        settings = load_settings(database_url=database_url, jwt_secret=JWT_SECRET)
        async with AsyncTestClient(app=create_app(settings)) as client:
            yield client


async def test_postgres_user_journey_matches_sqlite_behaviour(postgres_client):
    client = postgres_client
    alice = await register(client, "alice@example.com", "Alice")
    bob = await register(client, "bob@example.com", "Bob")
    duplicate = await client.post(
        "/auth/register", json={"email": "ALICE@example.com", "name": "Again", "password": "long enough"}
    )
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [alice, bob])
    path = f"/conversations/{conversation['id']}/messages"

    created = await client.post(path, json={"content": "שלום, 世界", "client_msg_id": "pg-1"}, headers=bob.headers)
    repeated = await client.post(path, json={"content": "שלום, 世界", "client_msg_id": "pg-1"}, headers=bob.headers)
    second = await client.post(path, json={"content": "the quick brown fox"}, headers=alice.headers)
    with_nul = await client.post(path, json={"content": "a\u0000b"}, headers=alice.headers)
    history = await client.get(path, params={"after_seq": 0}, headers=alice.headers)
    search = await client.get("/search/messages", params={"q": "fox"}, headers=bob.headers)
    last_participant = await client.delete(
        f"/conversations/{conversation['id']}/participants/{bob.user_id}", headers=alice.headers
    )
    final = await client.delete(f"/conversations/{conversation['id']}/participants/{alice.user_id}", headers=alice.headers)

    assert duplicate.status_code == 409
    assert created.status_code == 201
    assert repeated.status_code == 200
    assert repeated.json() == created.json()
    assert second.json()["seq"] == 2
    assert with_nul.status_code == 422
    assert [item["content"] for item in history.json()["items"]] == ["שלום, 世界", "the quick brown fox"]
    assert [item["content"] for item in search.json()["items"]] == ["the quick brown fox"]
    assert last_participant.status_code == 204
    assert final.status_code == 409
