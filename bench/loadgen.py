"""The load-generator process: many WebSocket clients on one uvloop event loop.

The orchestrator (``bench.fanout`` or ``bench.connections``) starts several of these, each with a
JSON plan file, and drives them over stdin and stdout:

1. The process opens every client of its plan, subscribes it to its room and prints ``READY``.
2. ``GO <start_us>`` on stdin starts the load at that instant of CLOCK_MONOTONIC, which is one
   clock for every process on a Linux host, so latencies are comparable across processes.
3. In ``fanout`` mode the senders send at the planned rate for the warm-up and the measured
   window, the process waits for the drain period, then prints ``RESULT <json>`` and exits.
   In ``idle`` mode the clients only stay open until ``STOP`` arrives (or the hold time ends).

Every message content starts with ``~T<send time in µs>~R<room index>~C<client id>~``; receivers
read the send time from it, so delivery latency needs no shared state. Only messages sent inside
the measured window count. Frames are classified by prefix instead of being parsed as JSON, which
keeps the cost per received frame low enough that the load generator is not the bottleneck.

The client is aiohttp's, because its frame reader and masking are compiled. Receiving a flood of
300-byte text frames on uvloop cost aiohttp 3.14.5 2.7 to 4.0 µs of CPU per frame and the
``websockets`` 17.4 asyncio client 5.2 to 6.1 µs (two runs each, on the machine described in
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.histogram import Histogram

logger = logging.getLogger("bench.loadgen")

CONNECT_CONCURRENCY = 64
HANDSHAKE_TIMEOUT_SECONDS = 15.0
SEND_TICK_SECONDS = 0.002
# Error frames kept verbatim for the report; the rest are only counted.
ERROR_SAMPLES_MAX = 5
# Maximum seconds an idle plan keeps its connections open without a STOP command.
IDLE_HOLD_MAX_SECONDS = 600.0


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


def parse_marker(text: str) -> tuple[int, int, int] | None:
    """Return (send time in µs, room index, client id) from a frame holding a message content."""
    start = text.find("~T")
    if start < 0:
        return None
    time_end = text.find("~", start + 2)
    room_end = text.find("~", time_end + 2)
    client_end = text.find("~", room_end + 2)
    return int(text[start + 2 : time_end]), int(text[time_end + 2 : room_end]), int(text[room_end + 2 : client_end])


@dataclass
class Stats:
    """Counters of one load-generator process; merged by the orchestrator."""

    window_start_us: int = 0
    window_end_us: int = 1 << 62
    sent: int = 0
    # Every message sent, warm-up included; compared with the number the server stored.
    sent_total: int = 0
    sent_per_room: Counter[int] = field(default_factory=Counter)
    acks: int = 0
    delivered_per_room: Counter[int] = field(default_factory=Counter)
    ack_latency: Histogram = field(default_factory=Histogram)
    delivery_latency: Histogram = field(default_factory=Histogram)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    unexpected_closes: int = 0
    outside_window: int = 0

    def in_window(self, sent_us: int) -> bool:
        return self.window_start_us <= sent_us < self.window_end_us

    def error(self, description: str) -> None:
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES_MAX:
            self.error_samples.append(description[:300])

    def on_ack(self, text: str, now_us: int) -> None:
        marker = parse_marker(text)
        if marker is None:
            self.error(f"ack without a send time: {text[:120]}")
            return
        if not self.in_window(marker[0]):
            self.outside_window += 1
            return
        self.acks += 1
        self.ack_latency.record(now_us - marker[0])

    def on_delivery(self, text: str, now_us: int, own_client_id: int | None = None) -> None:
        marker = parse_marker(text)
        if marker is None:
            self.error(f"message without a send time: {text[:120]}")
            return
        sent_us, room, client_id = marker
        if client_id == own_client_id:
            return  # an echo of this client's own message; its ack is counted instead
        if not self.in_window(sent_us):
            self.outside_window += 1
            return
        self.delivered_per_room[room] += 1
        self.delivery_latency.record(now_us - sent_us)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_total": self.sent_total,
            "sent_per_room": {str(room): n for room, n in self.sent_per_room.items()},
            "acks": self.acks,
            "delivered_per_room": {str(room): n for room, n in self.delivered_per_room.items()},
            "ack_latency": self.ack_latency.to_json(),
            "delivery_latency": self.delivery_latency.to_json(),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "unexpected_closes": self.unexpected_closes,
            "outside_window": self.outside_window,
        }


class Client:
    """One simulated user: a receiving socket, and for some targets a second socket to send on."""

    def __init__(self, spec: dict[str, Any], stats: Stats, padding: str) -> None:
        self.id: int = spec["id"]
        self.room: str = spec["room"]
        self.room_index: int = spec["room_index"]
        self.spec = spec
        self.stats = stats
        self.padding = padding
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.send_ws: aiohttp.ClientWebSocketResponse | None = None
        self.count = 0
        self.closing = False

    async def open(self, session: aiohttp.ClientSession) -> None:
        raise NotImplementedError

    # Frame prefixes that mark a delivered message, an ack and an error in the target's protocol.
    delivery_prefix = '{"type":"message"'
    ack_prefix = '{"type":"ack"'
    error_prefix = '{"type":"error"'

    def encode_send(self, marker: str, content: str) -> str:
        """Return the frame that sends `content`, with `marker` as its ref."""
        raise NotImplementedError

    async def send_next(self) -> None:
        sent_us = monotonic_us()
        self.count += 1
        marker = f"~T{sent_us}~R{self.room_index}~C{self.id}~"
        socket = self.send_ws if self.send_ws is not None else self.ws
        await socket.send_str(self.encode_send(marker, marker + self.padding[len(marker) :]))
        self._count_sent(sent_us)

    async def read(self) -> None:
        stats = self.stats
        async for frame in self._texts(self.ws):
            now_us = monotonic_us()
            if frame.startswith(self.delivery_prefix):
                stats.on_delivery(frame, now_us)
            elif frame.startswith(self.ack_prefix):
                stats.on_ack(frame, now_us)
            elif frame.startswith(self.error_prefix):
                stats.error(f"client {self.id}: {frame}")
            else:
                await self.on_other_frame(frame)

    async def on_other_frame(self, frame: str) -> None:
        """Handle a frame that is neither a message, an ack nor an error (ignored by default)."""

    async def close(self) -> None:
        self.closing = True
        for socket in (self.send_ws, self.ws):
            if socket is not None and not socket.closed:
                await socket.close()

    async def _connect(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
        return await session.ws_connect(
            url, autoping=True, compress=0, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2.0)
        )

    def _count_sent(self, sent_us: int) -> None:
        stats = self.stats
        stats.sent_total += 1
        if stats.in_window(sent_us):
            stats.sent += 1
            stats.sent_per_room[self.room_index] += 1

    async def _texts(self, socket: aiohttp.ClientWebSocketResponse) -> AsyncIterator[str]:
        """Yield the text frames of `socket` until it closes; count a close the client did not ask for."""
        receive = socket.receive
        while True:
            message = await receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                self._closed(message)
                return
            yield message.data

    def _closed(self, message: aiohttp.WSMessage) -> None:
        if not self.closing:
            self.stats.unexpected_closes += 1
            self.stats.error(f"client {self.id}: socket closed by the server ({message.type.name} {message.data!r} {message.extra!r})")


class JsonProtocolClient(Client):
    """Cortex Core's protocol, which the ceiling server speaks too: subscribe, send, ack, message."""

    async def open(self, session: aiohttp.ClientSession) -> None:
        self.ws = await self._connect(session, self.spec["url"])
        await self.ws.send_str(json.dumps({"type": "subscribe", "conversation_id": self.room, "ref": "subscribe"}))
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed while subscribing: {message.type.name} {message.data!r}")
            frame = message.data
            if frame.startswith('{"type":"subscribed"'):
                return
            if frame.startswith('{"type":"error"'):
                raise ConnectionError(f"subscribe failed: {frame}")

    def encode_send(self, marker: str, content: str) -> str:
        return (
            f'{{"type":"send","conversation_id":"{self.room}","content":"{content}",'
            f'"client_msg_id":"{self.spec["run"]}-{self.id}-{self.count}","ref":"{marker}"}}'
        )


class ChannelsClient(JsonProtocolClient):
    """Litestar channels: a generated subscribe-only socket per room, plus a socket to publish on."""

    async def open(self, session: aiohttp.ClientSession) -> None:
        self.ws = await self._connect(session, self.spec["url"])
        if self.spec["sender"]:
            self.send_ws = await self._connect(session, self.spec["send_url"])

    def encode_send(self, marker: str, content: str) -> str:
        return f'{{"type":"send","conversation_id":"{self.room}","content":"{content}","ref":"{marker}"}}'

    async def read(self) -> None:
        readers = [self._read_messages()]
        if self.send_ws is not None:
            readers.append(self._read_acks())
        await asyncio.gather(*readers)

    async def _read_messages(self) -> None:
        stats = self.stats
        async for frame in self._texts(self.ws):
            stats.on_delivery(frame, monotonic_us(), own_client_id=self.id)

    async def _read_acks(self) -> None:
        stats = self.stats
        async for frame in self._texts(self.send_ws):
            stats.on_ack(frame, monotonic_us())


class SocketIOClient(Client):
    """python-socketio over its WebSocket transport, spoken directly (Engine.IO 4, Socket.IO 5)."""

    delivery_prefix = "42"
    ack_prefix = "43"
    error_prefix = "44"

    async def open(self, session: aiohttp.ClientSession) -> None:
        self.ws = await self._connect(session, self.spec["url"])
        await self._expect("0")  # Engine.IO open packet
        await self.ws.send_str("40")  # Socket.IO connect to the default namespace
        await self._expect("40")
        await self.ws.send_str("420" + json.dumps(["join", self.room]))
        await self._expect("430")

    async def _expect(self, prefix: str) -> str:
        while True:
            message = await self.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed during the Socket.IO handshake: {message.type.name}")
            if message.data == "2":
                await self.ws.send_str("3")
            elif message.data.startswith(prefix):
                return message.data

    def encode_send(self, marker: str, content: str) -> str:
        # A Socket.IO event with an ack id: 42<id>["send",{...}]; the ack comes back as 43<id>[...].
        return f'42{self.count}["send",{{"room":"{self.room}","content":"{content}","ref":"{marker}"}}]'

    async def on_other_frame(self, frame: str) -> None:
        if frame == "2":
            await self.ws.send_str("3")  # Engine.IO heartbeat: reply to a ping with a pong


CLIENT_CLASSES: dict[str, type[Client]] = {
    "cortex": JsonProtocolClient,
    "ceiling": JsonProtocolClient,
    "channels": ChannelsClient,
    "socketio": SocketIOClient,
}


async def read_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def open_clients(
    session: aiohttp.ClientSession, clients: list[Client], readers: list[asyncio.Task[None]]
) -> list[str]:
    """Open every client with bounded concurrency; return the errors of those that failed.

    Each client starts reading as soon as it is open, because aiohttp replies to the server's pings
    only while `receive` runs, and opening thousands of clients takes longer than the server waits.
    """
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures: list[str] = []

    async def open_one(client: Client) -> None:
        async with gate:
            try:
                await asyncio.wait_for(client.open(session), HANDSHAKE_TIMEOUT_SECONDS)
            except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError) as error:
                failures.append(f"client {client.id}: {type(error).__name__}: {error}")
                return
        readers.append(asyncio.create_task(client.read()))

    await asyncio.gather(*(open_one(client) for client in clients))
    return failures


async def send_load(senders: list[Client], rate: float, start_us: int, end_us: int) -> None:
    """Send `rate` messages per second in total, round-robin over `senders`, from start to end."""
    if not senders or rate <= 0:
        return
    await asyncio.sleep(max(0.0, (start_us - monotonic_us()) / 1e6))
    sent = 0
    turn = 0
    while True:
        now = monotonic_us()
        if now >= end_us:
            return
        due = int((now - start_us) * rate / 1e6)
        while sent < due:
            await senders[turn].send_next()
            turn = (turn + 1) % len(senders)
            sent += 1
        await asyncio.sleep(SEND_TICK_SECONDS)


async def close_all(clients: list[Client], readers: list[asyncio.Task[None]]) -> None:
    """Stop the readers and close every socket; closes from here on are not counted as errors."""
    for client in clients:
        client.closing = True
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def run(plan: dict[str, Any]) -> None:
    stats = Stats()
    padding = "x" * plan.get("size", 200)
    client_class = CLIENT_CLASSES[plan["target"]]
    clients = [client_class(spec, stats, padding) for spec in plan["clients"]]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        if plan["mode"] == "idle":
            await run_idle(session, clients, stats)
        else:
            await run_fanout(session, clients, stats, plan)


async def run_fanout(session: aiohttp.ClientSession, clients: list[Client], stats: Stats, plan: dict[str, Any]) -> None:
    readers: list[asyncio.Task[None]] = []
    failures = await open_clients(session, clients, readers)
    for failure in failures:
        stats.error(failure)
    emit("READY " + json.dumps({"opened": len(clients) - len(failures), "failed": len(failures)}))

    command = await read_command()
    if not command.startswith("GO "):
        raise SystemExit(f"expected GO <start_us>, got {command!r}")
    start_us = int(command.split()[1])
    warmup_us = int(plan["warmup"] * 1e6)
    duration_us = int(plan["duration"] * 1e6)
    stats.window_start_us = start_us + warmup_us
    stats.window_end_us = start_us + warmup_us + duration_us

    senders = [client for client in clients if client.spec["sender"] and client.ws is not None]
    cpu_before = time.process_time()
    try:
        # A server that stops reading makes a send wait for TCP room without end; stop at the
        # end of the window plus the drain time instead, and report it.
        async with asyncio.timeout(max(0.0, (stats.window_end_us - monotonic_us()) / 1e6) + plan["drain"]):
            await send_load(senders, plan["rate"], start_us, stats.window_end_us)
    except TimeoutError:
        stats.error("a send was still blocked after the window and the drain time: the server stopped reading")
    await asyncio.sleep(plan["drain"])
    cpu_seconds = time.process_time() - cpu_before

    await close_all(clients, readers)
    result = stats.to_json()
    result["cpu_seconds"] = round(cpu_seconds, 3)
    emit("RESULT " + json.dumps(result))


async def run_idle(session: aiohttp.ClientSession, clients: list[Client], stats: Stats) -> None:
    emit("STARTED")
    command = await read_command()
    if command != "GO" and not command.startswith("GO "):
        raise SystemExit(f"expected GO, got {command!r}")
    started = time.monotonic()
    readers: list[asyncio.Task[None]] = []
    failures = await open_clients(session, clients, readers)
    elapsed = time.monotonic() - started
    for failure in failures:
        stats.error(failure)
    emit("READY " + json.dumps({"opened": len(clients) - len(failures), "failed": len(failures), "seconds": round(elapsed, 3)}))

    try:
        command = await asyncio.wait_for(read_command(), IDLE_HOLD_MAX_SECONDS)
    except TimeoutError:
        command = "STOP"
    await close_all(clients, readers)
    emit("RESULT " + json.dumps({"errors": stats.errors, "error_samples": stats.error_samples, "unexpected_closes": stats.unexpected_closes}))


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one load-generator process from a JSON plan file.")
    parser.add_argument("plan", help="path of the JSON plan written by the orchestrator")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_open_file_limit()
    with open(args.plan, encoding="utf-8") as handle:
        plan = json.load(handle)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(plan))
    else:
        uvloop.run(run(plan))


if __name__ == "__main__":
    main()
