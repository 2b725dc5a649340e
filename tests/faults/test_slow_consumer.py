"""A client that stops reading is closed with 4408, costs bounded memory and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil

from tests.support.chat import ChatClient, new_conversation, new_user
from tests.support.raw_client import RawClient
from tests.support.server import ServerProcess

MESSAGE_COUNT = 20_000
CONTENT = "x" * 1024
# 20,000 queued copies of a 1 KB message frame would take more than 20 MB of server memory.
QUEUED_COPIES_BYTES = MESSAGE_COUNT * 1024
# Small kernel buffers on the stalled client, so its socket fills after a few frames instead of
# absorbing megabytes before the server notices.
STALLED_RECEIVE_BUFFER_BYTES = 16 * 1024


async def _flow(sender: ChatClient, reader: ChatClient, conversation_id: str, first_seq: int) -> None:
    """Send MESSAGE_COUNT messages without waiting for acks; check every ack and delivery."""

    async def send_all() -> None:
        for index in range(MESSAGE_COUNT):
            await sender.send_message(conversation_id, CONTENT, client_msg_id=f"{first_seq}-{index}")

    async def acked_seqs() -> list[int]:
        seqs: list[int] = []
        while len(seqs) < MESSAGE_COUNT:
            frame = await sender.recv(30)
            if frame["type"] == "ack":
                seqs.append(frame["message"]["seq"])
        return seqs

    _, acked, delivered = await asyncio.gather(send_all(), acked_seqs(), reader.messages(MESSAGE_COUNT, timeout=30))
    expected = list(range(first_seq, first_seq + MESSAGE_COUNT))
    assert acked == expected
    assert [message["seq"] for message in delivered] == expected


async def test_stalled_client_closed_with_4408_and_recovers_with_since_seq(
    start_server: Callable[..., ServerProcess],
) -> None:
    """While 20,000 1 KB messages flow, a client that stops reading is closed with 4408 and loses nothing."""
    server = start_server(outbox_max_frames="500", slow_consumer_seconds="2")
    alice, bob, carol = new_user(server, "alice"), new_user(server, "bob"), new_user(server, "carol")
    conversation_id = new_conversation(server, alice, [alice, bob, carol])
    sender = await ChatClient.connect(server, alice)
    reader = await ChatClient.connect(server, bob)
    await reader.subscribe(conversation_id)
    server_process = psutil.Process(server.process.pid)

    # A first flow with every client reading brings caches and allocator pools to their steady size.
    await _flow(sender, reader, conversation_id, first_seq=1)
    rss_before = server_process.memory_info().rss
    stalled = RawClient(server.port, carol.token, receive_buffer_bytes=STALLED_RECEIVE_BUFFER_BYTES)
    stalled.send_text('{"type": "subscribe", "conversation_id": "%s"}' % conversation_id)
    peak_rss = rss_before

    async def watch_memory() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, server_process.memory_info().rss)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_memory())
    await _flow(sender, reader, conversation_id, first_seq=MESSAGE_COUNT + 1)
    watcher.cancel()

    # The stalled client reads again: the frames sent before the close arrive, then the close.
    texts, close_code = await asyncio.to_thread(stalled.read_frames, 30)
    stalled.close()
    received_seqs = [int(text.split('"seq":', 1)[1].split(",", 1)[0]) for text in texts if '"type":"message"' in text]
    last_seen = received_seqs[-1] if received_seqs else MESSAGE_COUNT
    resumed = await ChatClient.connect(server, carol)
    await resumed.subscribe(conversation_id, since_seq=last_seen)
    caught_up = await resumed.messages(2 * MESSAGE_COUNT - last_seen, timeout=30)

    assert close_code == 4408
    assert received_seqs == list(range(MESSAGE_COUNT + 1, last_seen + 1))
    assert last_seen < 2 * MESSAGE_COUNT
    assert [message["seq"] for message in caught_up] == list(range(last_seen + 1, 2 * MESSAGE_COUNT + 1))
    # Other growth (SQLite page cache, allocator pools) was 5 to 9 MB in runs on a two-core machine.
    assert peak_rss - rss_before < QUEUED_COPIES_BYTES * 3 // 4
    assert "closing as a slow consumer" in server.log()
    await sender.close()
    await reader.close()
    await resumed.close()
