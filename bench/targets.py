"""The servers a benchmark can drive: Cortex Core and its peers, started fresh for each run.

A target is named ``KIND[:PROCESSES[:STORE]]``, for example ``cortex:1:sqlite``,
``cortex:2:postgres``, ``ceiling:2``, ``socketio:2`` or ``channels:2``. Each target starts its
server processes, with a private Redis when it has more than one process or is a peer that
needs one. It prepares rooms for a set of clients and returns one client spec per client for
the load generators. Clients are spread round-robin over the processes, so with two processes
every room has members on both and every message crosses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from bench.process import (
    ManagedProcess,
    free_port,
    fresh_postgres_database,
    private_redis,
    python_command,
    wait_for_http,
    wait_for_port,
)

KINDS = ("cortex", "ceiling", "socketio", "channels")
STORES = ("sqlite", "postgres")
BENCH_JWT_SECRET = "bench-secret-used-only-on-loopback-0123456789abcdef"
TOKEN_LIFETIME_SECONDS = 6 * 3600
# Concurrent HTTP requests while creating users and conversations.
SETUP_CONCURRENCY = 32


@dataclass(frozen=True)
class TargetSpec:
    kind: str
    processes: int
    store: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "cortex":
            return f"cortex:{self.processes}:{self.store}"
        return f"{self.kind}:{self.processes}"

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """Parse ``KIND[:PROCESSES[:STORE]]``; raise ValueError naming the accepted forms."""
        parts = text.strip().split(":")
        kind = parts[0]
        if kind not in KINDS:
            raise ValueError(f"unknown target kind {kind!r}; expected one of {', '.join(KINDS)}")
        # Cortex Core and the ceiling default to one process; the peers need Redis and run two.
        processes = 1 if kind in ("cortex", "ceiling") else 2
        if len(parts) > 1:
            try:
                processes = int(parts[1])
            except ValueError:
                raise ValueError(f"target {text!r}: the process count must be an integer") from None
        if not 1 <= processes <= 8:
            raise ValueError(f"target {text!r}: the process count must be 1 to 8")
        if kind != "cortex":
            if len(parts) > 2:
                raise ValueError(f"target {text!r}: only cortex targets take a store")
            return cls(kind, processes)
        # The documented default: SQLite for one instance, PostgreSQL for several.
        store = "sqlite" if processes == 1 else "postgres"
        if len(parts) > 2:
            store = parts[2]
        if store not in STORES:
            raise ValueError(f"target {text!r}: unknown store {store!r}; expected sqlite or postgres")
        return cls(kind, processes, store)


@dataclass
class RoomPlan:
    """The assignment of clients to rooms, and of the sender role within each room."""

    clients: int
    rooms: int
    senders_per_room: int

    def room_of(self, client: int) -> int:
        return client % self.rooms

    def is_sender(self, client: int) -> bool:
        # The first `senders_per_room` members of each room send.
        return client // self.rooms < self.senders_per_room

    def members(self, room: int) -> int:
        return len(range(room, self.clients, self.rooms))


@dataclass
class RunningTarget:
    spec: TargetSpec
    ports: list[int]
    servers: list[ManagedProcess]
    work_dir: Path
    redis_url: str | None = None
    room_ids: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    owner_token: str = ""

    def client_specs(self, plan: RoomPlan) -> list[dict[str, Any]]:
        specs = []
        for client in range(plan.clients):
            port = self.ports[client % len(self.ports)]
            room_index = plan.room_of(client)
            room = self.room_ids[room_index]
            spec: dict[str, Any] = {
                "id": client,
                "room": room,
                "room_index": room_index,
                "sender": plan.is_sender(client),
            }
            if self.spec.kind == "cortex":
                spec["url"] = f"ws://127.0.0.1:{port}/ws?token={self.tokens[client]}"
            elif self.spec.kind == "ceiling":
                spec["url"] = f"ws://127.0.0.1:{port}/ws"
            elif self.spec.kind == "socketio":
                spec["url"] = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
            else:
                spec["url"] = f"ws://127.0.0.1:{port}/rooms/{room}"
                spec["send_url"] = f"ws://127.0.0.1:{port}/publish"
            specs.append(spec)
        return specs


@contextlib.contextmanager
def running_target(spec: TargetSpec, plan: RoomPlan, *, log_dir: Path):
    """Start the target's processes on fresh storage, prepare the rooms, yield it, then stop it all."""
    with contextlib.ExitStack() as stack:
        needs_redis = spec.processes > 1 or spec.kind in ("socketio", "channels")
        redis_url = stack.enter_context(private_redis(log_dir)) if needs_redis else None
        if spec.kind == "cortex":
            target = _start_cortex(spec, redis_url, stack, log_dir)
            asyncio.run(_prepare_cortex(target, plan))
        else:
            target = _start_peer(spec, redis_url, stack, log_dir)
            target.room_ids = [f"room-{index}" for index in range(plan.rooms)]
        yield target


def _stop_all(servers: list[ManagedProcess]) -> None:
    for server in servers:
        server.stop()


def _start_peer(spec: TargetSpec, redis_url: str | None, stack: contextlib.ExitStack, log_dir: Path) -> RunningTarget:
    module = {"ceiling": "bench.peers.ceiling", "socketio": "bench.peers.socketio_server", "channels": "bench.peers.litestar_channels"}[spec.kind]
    ports = [free_port() for _ in range(spec.processes)]
    servers: list[ManagedProcess] = []
    stack.callback(_stop_all, servers)
    for index, port in enumerate(ports):
        command = python_command("-m", module, "--port", str(port))
        if redis_url:
            command += ["--redis-url", redis_url]
        servers.append(ManagedProcess(f"{spec.kind}-{index}-{port}", command, log_dir=log_dir))
    for server, port in zip(servers, ports, strict=True):
        if spec.kind == "socketio":
            # The peer accepts only the WebSocket transport and has no plain HTTP route to poll.
            wait_for_port(server, port)
        else:
            wait_for_http(server, f"http://127.0.0.1:{port}/health")
    return RunningTarget(spec, ports, servers, log_dir, redis_url)


def _start_cortex(spec: TargetSpec, redis_url: str | None, stack: contextlib.ExitStack, log_dir: Path) -> RunningTarget:
    if spec.store == "postgres":
        database_name = f"cortex_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        database_url = stack.enter_context(fresh_postgres_database(database_name))
    else:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cortex-bench-")))
        database_url = f"sqlite+aiosqlite:///{data_dir / 'cortex.db'}"

    env = {
        "CORTEX_DATABASE_URL": database_url,
        "CORTEX_JWT_SECRET": BENCH_JWT_SECRET,
        "CORTEX_LOG_LEVEL": "warning",
    }
    if redis_url:
        env["CORTEX_REDIS_URL"] = redis_url
    else:
        env.pop("CORTEX_REDIS_URL", None)
        os.environ.pop("CORTEX_REDIS_URL", None)

    # Migrate once before the instances start, so they do not race to create the schema.
    migrate = ManagedProcess("cortex-migrate", python_command("-m", "realtime", "migrate"), env=env, log_dir=log_dir)
    if migrate.popen.wait(120) != 0:
        raise RuntimeError(f"cortex-core migrate failed:\n{migrate.log_tail()}")
    migrate.stop()

    ports = [free_port() for _ in range(spec.processes)]
    servers: list[ManagedProcess] = []
    stack.callback(_stop_all, servers)
    for index, port in enumerate(ports):
        command = python_command("-m", "realtime", "serve", "--host", "127.0.0.1", "--port", str(port))
        servers.append(ManagedProcess(f"cortex-{index}-{port}", command, env=env, log_dir=log_dir))
    for server, port in zip(servers, ports, strict=True):
        wait_for_http(server, f"http://127.0.0.1:{port}/ready")
    return RunningTarget(spec, ports, servers, log_dir, redis_url)


def mint_token(user_id: uuid.UUID, index: int) -> str:
    """Sign an access token that creates the user on first use (see the contract's token rules)."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "email": f"bench-user-{index}@example.com",
        "name": f"Bench user {index}",
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, BENCH_JWT_SECRET, algorithm="HS256")


async def _prepare_cortex(target: RunningTarget, plan: RoomPlan) -> None:
    """Create one user per client, a workspace, and one conversation per room with its members."""
    import aiohttp

    base = f"http://127.0.0.1:{target.ports[0]}"
    user_ids = [uuid.uuid4() for _ in range(plan.clients)]
    target.tokens = [mint_token(user_id, index) for index, user_id in enumerate(user_ids)]
    owner_token = target.owner_token = mint_token(uuid.uuid4(), -1)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async with aiohttp.ClientSession(raise_for_status=True) as session:

        async def request(method: str, path: str, token: str, body: Any = None) -> Any:
            async with gate, session.request(method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                return await response.json()

        # The first authenticated request with a minted token creates its user.
        await asyncio.gather(*(request("GET", "/auth/me", token) for token in [owner_token, *target.tokens]))
        workspace = await request("POST", "/workspaces", owner_token, {"name": "bench", "description": "benchmark rooms"})

        async def create_room(room: int) -> str:
            members = [str(user_ids[client]) for client in range(room, plan.clients, plan.rooms)]
            body = {"topic": f"room {room}", "participant_ids": members}
            conversation = await request("POST", f"/workspaces/{workspace['id']}/conversations", owner_token, body)
            return conversation["id"]

        target.room_ids = list(await asyncio.gather(*(create_room(room) for room in range(plan.rooms))))


def count_stored_messages(target: RunningTarget) -> int | None:
    """Return the number of stored messages, read over HTTP from every room's last seq."""
    if target.spec.kind != "cortex":
        return None
    import json
    import urllib.request

    total = 0
    for room in target.room_ids:
        request = urllib.request.Request(
            f"http://127.0.0.1:{target.ports[0]}/conversations/{room}", headers={"Authorization": f"Bearer {target.owner_token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            total += json.load(response)["last_seq"]
    return total
