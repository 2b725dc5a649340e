"""A Redis outage while messages flow between two instances loses and repeats nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.support.chat import ChatClient, history, new_conversation, new_user
from tests.support.server import ServerProcess
from tests.support.services import PrivateRedis

SEND_INTERVAL_SECONDS = 0.02  # two senders at 50 messages/s each: about 100 messages/s in all


async def _send_steadily(client: ChatClient, conversation_id: str, name: str, stop: asyncio.Event) -> int:
    sent = 0
    while not stop.is_set():
        await client.send_message(conversation_id, f"{name} {sent}", client_msg_id=f"{name}-{sent}")
        sent += 1
        await asyncio.sleep(SEND_INTERVAL_SECONDS)
    return sent


async def _read_until_seq(client: ChatClient, last_seq: int, timeout: float) -> list[int]:
    seqs: list[int] = []
    deadline = time.monotonic() + timeout
    while not seqs or seqs[-1] < last_seq:
        frame = await client.recv(max(0.1, deadline - time.monotonic()))
        if frame["type"] in ("message", "ack"):
            seqs.append(frame["message"]["seq"])
    return seqs


async def _wait_for_ready_status(server: ServerProcess, status: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        while time.monotonic() < deadline:
            if (await http.get("/ready")).status_code == status:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"/ready on port {server.port} did not answer {status} within {timeout} s")


async def test_redis_restart_mid_flow_delivers_every_acked_message_once(
    start_server: Callable[..., ServerProcess], private_redis: PrivateRedis
) -> None:
    """Stop Redis for a few seconds under load: every subscriber still ends with seqs 1..N once, in order."""
    first = start_server(redis_url=private_redis.url)
    second = start_server(redis_url=private_redis.url)
    alice, bob, carol, dave = (new_user(first, name) for name in ("alice", "bob", "carol", "dave"))
    conversation_id = new_conversation(first, alice, [alice, bob, carol, dave])
    senders = [await ChatClient.connect(first, alice), await ChatClient.connect(second, bob)]
    watchers = [await ChatClient.connect(first, carol), await ChatClient.connect(second, dave)]
    for client in (*senders, *watchers):
        await client.subscribe(conversation_id)

    stop = asyncio.Event()
    sending = [
        asyncio.create_task(_send_steadily(senders[0], conversation_id, "alice", stop)),
        asyncio.create_task(_send_steadily(senders[1], conversation_id, "bob", stop)),
    ]
    await asyncio.sleep(1.5)
    private_redis.stop()
    await _wait_for_ready_status(first, 503)
    await asyncio.sleep(3)
    private_redis.start()
    await _wait_for_ready_status(first, 200)
    await _wait_for_ready_status(second, 200)
    await asyncio.sleep(1.5)
    stop.set()
    sent = sum(await asyncio.gather(*sending))

    stored = history(first, alice, conversation_id)
    last_seq = stored[-1]["seq"]
    assert [message["seq"] for message in stored] == list(range(1, last_seq + 1))
    assert last_seq == sent
    for client in (*senders, *watchers):
        assert await _read_until_seq(client, last_seq, timeout=20) == list(range(1, last_seq + 1))
    for server in (first, second):
        log = server.log()
        assert log.count("lost the Redis connection") == 1
        assert "reconnected to Redis" in log
    for client in (*senders, *watchers):
        await client.close()
