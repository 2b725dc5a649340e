"""Two server processes sharing one SQLite file and one Redis behave as one server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.chat import ChatClient, new_conversation, new_user
from tests.support.server import ServerProcess
from tests.support.services import require_redis

pytestmark = pytest.mark.redis


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    redis_url = require_redis()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cortex.db'}"
    first = ServerProcess(tmp_path, database_url=database_url, redis_url=redis_url).start()
    second = ServerProcess(tmp_path, database_url=database_url, redis_url=redis_url).start()
    yield first, second
    first.stop()
    second.stop()


async def test_messages_from_either_instance_reach_both_in_seq_order(
    instances: tuple[ServerProcess, ServerProcess],
) -> None:
    """Sends on both instances reach every subscriber on both, each seq once, in order."""
    first, second = instances
    alice, bob, carol, dave = (new_user(first, name) for name in ("alice", "bob", "carol", "dave"))
    conversation_id = new_conversation(first, alice, [alice, bob, carol, dave])
    senders = [await ChatClient.connect(first, alice), await ChatClient.connect(second, bob)]
    watchers = [await ChatClient.connect(first, carol), await ChatClient.connect(second, dave)]
    for client in (*senders, *watchers):
        await client.subscribe(conversation_id)

    async def send_many(client: ChatClient, name: str) -> None:
        for index in range(300):
            await client.send_message(conversation_id, f"{name} {index}", client_msg_id=f"{name}-{index}")

    await asyncio.gather(send_many(senders[0], "alice"), send_many(senders[1], "bob"))

    streams = [await client.messages(600, timeout=20) for client in (*senders, *watchers)]
    for stream in streams:
        assert [message["seq"] for message in stream] == list(range(1, 601))
    assert all(stream == streams[0] for stream in streams)
    alice_lines = [message["content"] for message in streams[0] if message["sender_id"] == alice.user_id]
    assert alice_lines == [f"alice {index}" for index in range(300)]
    for client in (*senders, *watchers):
        await client.close()


async def test_removal_on_one_instance_ends_subscription_on_the_other(
    instances: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = instances
    alice, bob = new_user(first, "alice"), new_user(first, "bob")
    conversation_id = new_conversation(first, alice, [alice, bob])
    remote = await ChatClient.connect(second, bob)
    await remote.subscribe(conversation_id)

    response = httpx.delete(
        f"{first.base_url}/conversations/{conversation_id}/participants/{bob.user_id}", headers=alice.headers
    )
    unsubscribed = await remote.expect("unsubscribed")

    assert response.status_code in (200, 204)
    assert unsubscribed["reason"] == "removed"
    await remote.close()


async def test_deleted_conversation_ends_subscriptions_everywhere(
    instances: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = instances
    alice, bob = new_user(first, "alice"), new_user(first, "bob")
    conversation_id = new_conversation(first, alice, [alice, bob])
    local = await ChatClient.connect(first, alice)
    remote = await ChatClient.connect(second, bob)
    await local.subscribe(conversation_id)
    await remote.subscribe(conversation_id)

    response = httpx.delete(f"{first.base_url}/conversations/{conversation_id}", headers=alice.headers)

    assert response.status_code == 204
    for client in (local, remote):
        ended = await client.expect("unsubscribed")
        assert ended["reason"] == "deleted"
        await client.close()
