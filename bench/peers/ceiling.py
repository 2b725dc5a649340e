"""The ceiling: a minimal broadcast server on Cortex Core's stack, with no auth and no storage.

Raw ASGI under uvicorn with exactly Cortex Core's uvicorn options. It speaks the subset of Cortex
Core's WebSocket protocol that the load generator uses (``subscribe`` then ``send``, replied to with
``subscribed``, ``ack`` and ``message``), keeps rooms in memory, serializes each message once and
sends the same text to every member. With ``--redis-url`` several processes share rooms over one
Redis pub/sub channel, and publishes are batched into one pipelined round trip.

What it leaves out, and Cortex Core pays for: authentication, validation with Pydantic, storage,
seq ordering across instances, bounded outboxes and slow-consumer handling.

Run: ``python -m bench.peers.ceiling --port 9000 [--redis-url redis://127.0.0.1:6379/0]``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import Any

import msgspec

from bench.peers import serve_peer

logger = logging.getLogger("bench.ceiling")

CHANNEL = "ceiling"
PUBLISH_BATCH_MAX = 512

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Member:
    __slots__ = ("id", "send")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.id = uuid.uuid4().hex


class CeilingApp:
    """Rooms of connected members; a send goes to every other member, here and on other processes."""

    def __init__(self, redis_url: str | None) -> None:
        self.rooms: dict[str, set[Member]] = collections.defaultdict(set)
        self.seqs: collections.Counter[str] = collections.Counter()
        self.instance = uuid.uuid4().hex
        self.redis_url = redis_url
        self._outgoing: collections.deque[str] = collections.deque()
        self._outgoing_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._serve_socket(receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                if self.redis_url:
                    await self._start_redis()
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve_socket(self, receive: Any, send: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        member = Member(send)
        joined: list[str] = []
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                frame = _decode(event.get("text") or event.get("bytes") or b"{}")
                kind = frame.get("type")
                room = frame.get("conversation_id", "")
                if kind == "send":
                    await self._broadcast(member, room, frame)
                elif kind == "subscribe":
                    self.rooms[room].add(member)
                    joined.append(room)
                    reply = {"type": "subscribed", "conversation_id": room, "last_seq": self.seqs[room], "ref": frame.get("ref")}
                    await send({"type": "websocket.send", "text": _encode(reply).decode()})
        finally:
            for room in joined:
                self.rooms[room].discard(member)

    async def _broadcast(self, sender: Member, room: str, frame: dict) -> None:
        self.seqs[room] += 1
        message_json = _encode(
            {
                "conversation_id": room,
                "sender_id": sender.id,
                "content": frame.get("content"),
                "seq": self.seqs[room],
                "client_msg_id": frame.get("client_msg_id"),
            }
        ).decode()
        ack = '{"type":"ack","ref":' + _encode(frame.get("ref")).decode() + ',"message":' + message_json + "}"
        await sender.send({"type": "websocket.send", "text": ack})

        text = '{"type":"message","message":' + message_json + "}"
        if self.redis_url:
            self._outgoing.append(f"{self.instance}\n{room}\n{text}")
            self._outgoing_ready.set()
        await self._deliver(room, text, skip=sender)

    async def _deliver(self, room: str, text: str, skip: Member | None) -> None:
        event = {"type": "websocket.send", "text": text}
        for member in list(self.rooms.get(room, ())):
            if member is not skip:
                # A member that disconnected meanwhile fails the send; its own handler removes it.
                with contextlib.suppress(OSError, RuntimeError):
                    await member.send(event)

    # Redis

    async def _start_redis(self) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(self.redis_url, decode_responses=True)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(CHANNEL)
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="ceiling-publisher"))
        self._tasks.append(asyncio.create_task(self._listen_loop(), name="ceiling-listener"))

    async def _publish_loop(self) -> None:
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                pipeline = self._redis.pipeline(transaction=False)
                for _ in range(min(PUBLISH_BATCH_MAX, len(self._outgoing))):
                    pipeline.publish(CHANNEL, self._outgoing.popleft())
                await pipeline.execute()

    async def _listen_loop(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            instance, room, text = message["data"].split("\n", 2)
            if instance != self.instance:
                await self._deliver(room, text, skip=None)


def main() -> None:
    serve_peer("Run the minimal broadcast server used as the benchmark ceiling.", CeilingApp, redis_required=False)


if __name__ == "__main__":
    main()
