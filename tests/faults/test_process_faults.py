"""Crashes, graceful shutdown, write contention and vanishing clients, with real server processes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from tests.support.chat import ChatClient, history, new_conversation, new_user
from tests.support.raw_client import RawClient
from tests.support.server import ServerProcess
from tests.support.services import require_redis


def _stored_contents(database: Path, conversation_id: str) -> list[tuple[int, str]]:
    """Read (seq, content) straight from the SQLite file, as an operator would after a crash."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT seq, content FROM messages WHERE conversation_id = ? ORDER BY seq",
            (conversation_id.replace("-", ""),),
        ).fetchall()
        if not rows:
            rows = connection.execute(
                "SELECT seq, content FROM messages WHERE conversation_id = ? ORDER BY seq", (conversation_id,)
            ).fetchall()
    return rows


@pytest.mark.redis
async def test_kill_9_loses_no_acked_message(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    """After SIGKILL of one instance, every message it acked is stored and reaches the other instance."""
    redis_url = require_redis()
    doomed = start_server(redis_url=redis_url)
    survivor = start_server(redis_url=redis_url)
    alice, bob = new_user(doomed, "alice"), new_user(doomed, "bob")
    conversation_id = new_conversation(doomed, alice, [alice, bob])
    sender = await ChatClient.connect(doomed, alice)
    watcher = await ChatClient.connect(survivor, bob)
    await watcher.subscribe(conversation_id)

    acked: list[dict] = []

    async def send_and_collect() -> None:
        for index in range(5000):
            await sender.send_message(conversation_id, f"message {index}", client_msg_id=f"m-{index}")
            if index % 50 == 0:
                await asyncio.sleep(0)
        try:
            while True:
                frame = await sender.recv(10)
                if frame["type"] == "ack":
                    acked.append(frame["message"])
        except (websockets.ConnectionClosed, TimeoutError):
            return

    collecting = asyncio.create_task(send_and_collect())
    while len(acked) < 500:
        await asyncio.sleep(0.01)
    doomed.kill()
    await collecting

    stored = history(survivor, bob, conversation_id)
    stored_ids = {message["id"] for message in stored}
    assert len(acked) >= 500
    assert all(message["id"] in stored_ids for message in acked)
    assert [message["seq"] for message in stored] == list(range(1, len(stored) + 1))
    live = await watcher.messages(len(stored), timeout=20)
    assert [message["seq"] for message in live] == list(range(1, len(stored) + 1))
    resumed = await ChatClient.connect(survivor, alice)
    await resumed.subscribe(conversation_id, since_seq=0)
    replayed = await resumed.messages(len(stored))
    assert replayed == stored
    await watcher.close()
    await resumed.close()


async def test_sigterm_acks_writes_in_flight_and_closes_with_1001(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """SIGTERM stores and acks what was received, closes sockets with 1001 and exits 0 within 10 s."""
    server = start_server()
    alice = new_user(server, "alice")
    conversation_id = new_conversation(server, alice, [alice])
    sender = await ChatClient.connect(server, alice)
    for index in range(2000):
        await sender.send_message(conversation_id, f"message {index}", client_msg_id=f"m-{index}")

    started = time.monotonic()
    process = server.process
    process.send_signal(15)
    acked: list[dict] = []
    try:
        while True:
            frame = await sender.recv(15)
            if frame["type"] == "ack":
                acked.append(frame["message"])
    except websockets.ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd else None
    exit_code = await asyncio.to_thread(process.wait, 15)
    elapsed = time.monotonic() - started
    server.process = None

    stored = _stored_contents(tmp_path / "cortex.db", conversation_id)
    assert close_code == 1001
    assert exit_code == 0
    assert elapsed < 10
    assert acked
    assert [(message["seq"], message["content"]) for message in acked] == stored[: len(acked)]
    # Whatever was stored went in the order it was sent, with no gap.
    assert [content for _, content in stored] == [f"message {index}" for index in range(len(stored))]


async def test_two_instances_on_one_sqlite_file_never_report_locked(
    start_server: Callable[..., ServerProcess],
) -> None:
    """Two instances writing one SQLite file at full rate: no error reaches a client, no ack is lost."""
    first, second = start_server(), start_server()
    alice, bob = new_user(first, "alice"), new_user(first, "bob")
    conversation_id = new_conversation(first, alice, [alice, bob])
    other_conversation_id = new_conversation(first, alice, [alice, bob])
    clients = [await ChatClient.connect(first, alice), await ChatClient.connect(second, bob)]
    per_client = 1500

    async def hammer(client: ChatClient, name: str) -> list[dict]:
        frames: list[dict] = []
        for index in range(per_client):
            target = conversation_id if index % 2 else other_conversation_id
            await client.send_message(target, f"{name} {index}", client_msg_id=f"{name}-{index}")
        while len(frames) < per_client:
            frame = await client.recv(60)
            frames.append(frame)
        return frames

    results = await asyncio.gather(hammer(clients[0], "alice"), hammer(clients[1], "bob"))

    for frames in results:
        assert [frame["type"] for frame in frames] == ["ack"] * per_client
    both = history(first, alice, conversation_id) + history(first, alice, other_conversation_id)
    assert len(both) == 2 * per_client
    for conversation in (conversation_id, other_conversation_id):
        seqs = [message["seq"] for message in history(first, alice, conversation)]
        assert seqs == list(range(1, per_client + 1))
    for server in (first, second):
        assert "database is locked" not in server.log()
    for client in clients:
        await client.close()


async def test_sender_disconnecting_mid_store_still_delivers(start_server: Callable[..., ServerProcess]) -> None:
    """A send whose connection closes before the ack is still stored and delivered to others."""
    server = start_server()
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    watcher = await ChatClient.connect(server, bob)
    await watcher.subscribe(conversation_id)
    sender = await ChatClient.connect(server, alice)

    for index in range(50):
        await sender.send_message(conversation_id, f"parting words {index}")
    await sender.connection.close()

    delivered = await watcher.messages(50)
    assert [message["content"] for message in delivered] == [f"parting words {index}" for index in range(50)]
    assert len(history(server, bob, conversation_id)) == 50
    await watcher.close()


async def test_heartbeat_drops_client_that_never_answers_pings(start_server: Callable[..., ServerProcess]) -> None:
    """With 1 s heartbeats, a peer that never answers pings is disconnected; a live one stays."""
    server = start_server(heartbeat_seconds="1")
    alice = new_user(server, "alice")
    silent = RawClient(server.port, alice.token)
    lively = await ChatClient.connect(server, alice)

    started = time.monotonic()
    _, close_code = await asyncio.to_thread(silent.read_frames, 15, answer_pings=False)
    dropped_after = time.monotonic() - started
    silent.close()
    await lively.send({"type": "ping", "ref": "alive"})

    assert dropped_after < 10
    assert close_code in (1011, None)
    assert (await lively.expect("pong"))["ref"] == "alive"
    await lively.close()


async def test_sigterm_closes_idle_connection_with_1001(start_server: Callable[..., ServerProcess]) -> None:
    """A connection whose writer task ended while idle is still closed with 1001 on SIGTERM."""
    from realtime.gateway.hub import WRITER_IDLE_CHECK_SECONDS

    server = start_server()
    alice = new_user(server, "alice")
    conversation_id = new_conversation(server, alice, [alice])
    client = await ChatClient.connect(server, alice)
    await client.subscribe(conversation_id)
    await asyncio.sleep(2 * WRITER_IDLE_CHECK_SECONDS + 0.5)

    server.process.send_signal(15)
    try:
        while True:
            await client.recv(15)
    except websockets.ConnectionClosed as closed:
        close_code = closed.rcvd.code if closed.rcvd else None
    exit_code = await asyncio.to_thread(server.process.wait, 15)
    server.process = None
    assert close_code == 1001
    assert exit_code == 0
