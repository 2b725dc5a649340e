"""A NUL character over WebSocket or HTTP on PostgreSQL is rejected, and later messages still go through.

PostgreSQL cannot store U+0000 in text or JSON. Without the check the insert failed, and with it
the whole batch of messages that shared its transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.helpers import temporary_postgres_database
from tests.support.chat import ChatClient, new_conversation, new_user
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
async def postgres_server(tmp_path) -> AsyncIterator[ServerProcess]:
    async with temporary_postgres_database("cortex_e2e") as database_url:
        server = ServerProcess(tmp_path, database_url=database_url)
        try:
            await asyncio.to_thread(server.start)
            yield server
        finally:
            await asyncio.to_thread(server.stop)


async def test_websocket_nul_rejected_later_messages_stored(postgres_server):
    alice = await asyncio.to_thread(new_user, postgres_server, "alice")
    conversation_id = await asyncio.to_thread(new_conversation, postgres_server, alice, [alice])
    client = await ChatClient.connect(postgres_server, alice)

    await client.send_message(conversation_id, "before", ref="1")
    await client.send_message(conversation_id, "bad\u0000content", ref="2")
    await client.send({"type": "send", "conversation_id": conversation_id, "content": "x", "metadata": {"k": "\u0000"}, "ref": "3"})
    await client.send_message(conversation_id, "after", ref="4")
    replies = {}
    for _ in range(4):
        frame = await client.recv()
        replies[frame["ref"]] = frame
    await client.close()

    assert replies["1"]["type"] == "ack"
    assert replies["2"]["type"] == "error"
    assert replies["2"]["code"] == "invalid"
    assert replies["2"]["detail"] == "content must not contain U+0000 (NUL)"
    assert replies["3"]["code"] == "invalid"
    assert replies["3"]["detail"] == "metadata must not contain U+0000 (NUL)"
    assert replies["4"]["type"] == "ack"
    assert replies["4"]["message"]["seq"] == 2


async def test_http_nul_rejected_with_422(postgres_server):
    alice = await asyncio.to_thread(new_user, postgres_server, "alice")
    conversation_id = await asyncio.to_thread(new_conversation, postgres_server, alice, [alice])

    async with httpx.AsyncClient(base_url=postgres_server.base_url, headers=alice.headers, timeout=10) as http:
        rejected = await http.post(f"/conversations/{conversation_id}/messages", json={"content": "a\u0000b"})
        accepted = await http.post(f"/conversations/{conversation_id}/messages", json={"content": "ab"})

    assert rejected.status_code == 422
    assert accepted.status_code == 201
