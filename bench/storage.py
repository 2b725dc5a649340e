"""Storage benchmark: message write rates and read latencies of the data layer on SQLite.

Run: `python -m bench.storage` (100,000 conversations and 1,000,000 messages) or
`python -m bench.storage --small` (a tenth of that). Not part of the test suite.

It seeds a fresh SQLite file with raw `sqlite3.executemany`, then measures in one run:

- writes: a raw `sqlite3` `executemany` of 100 rows per commit, `append_batch` of the same
  kind of rows (100 per unit of work), and the naive path, one ORM unit of work per message.
  Write rounds alternate between the raw and the batch path so that both see the same database.
- reads: a 50-message history page in a busy conversation, a user's first page of
  conversations and a search for a common word, each through a unit of work as the server
  calls them. It prints the median
  and the 95th percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from persistence.columns import dump_metadata, utc_now
from persistence.database import Database
from persistence.models import NewMessage
from persistence.tables import ConversationRow, MessageRow

WORDS = [
    "deploy", "build", "release", "review", "merge", "branch", "test", "failing", "green",
    "ticket", "sprint", "standup", "coffee", "lunch", "meeting", "roadmap", "design", "schema",
    "index", "query", "latency", "cache", "redis", "socket", "北京", "東京タワー", "ข้าวผัด", "مرحبا",
    "שלום", "customer", "invoice", "budget", "hiring", "launch",
]

SEED_CHUNK = 20_000
WRITE_BATCH = 100


@dataclass(frozen=True)
class Scale:
    users: int
    workspaces: int
    conversations: int
    messages: int
    busy_conversations: int
    busy_messages_each: int


FULL = Scale(10_000, 1_000, 100_000, 1_000_000, 1_000, 500)
SMALL = Scale(2_000, 200, 10_000, 100_000, 100, 500)


@dataclass
class Seeded:
    user_ids: list[uuid.UUID]
    conversation_ids: list[uuid.UUID]
    busy_ids: list[uuid.UUID]
    # Each user's conversations with who may write there: (conversation, participant).
    writable: list[tuple[uuid.UUID, uuid.UUID]]


def sqlite_time(value: datetime) -> str:
    """Format a UTC datetime the way SQLAlchemy stores it in SQLite."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def random_content(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))


def seed(path: Path, scale: Scale, rng: random.Random) -> Seeded:
    """Fill the migrated database at `path` with raw executemany, fast.

    The FTS triggers are dropped while messages load and the index is rebuilt once afterwards,
    which is quicker than maintaining it row by row.
    """
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous = OFF")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stamp = sqlite_time(base)

    user_ids = [uuid.uuid4() for _ in range(scale.users)]
    connection.executemany(
        "INSERT INTO users (id, name, email, email_normalized, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, '{}', ?, ?)",
        (
            (user_id.hex, f"User {n}", f"user{n}@example.com", f"user{n}@example.com", stamp, stamp)
            for n, user_id in enumerate(user_ids)
        ),
    )

    workspace_ids = [uuid.uuid4() for _ in range(scale.workspaces)]
    connection.executemany(
        "INSERT INTO workspaces (id, owner_id, name, description, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, 'seeded', '{}', ?, ?)",
        (
            (workspace_id.hex, rng.choice(user_ids).hex, f"Workspace {n}", stamp, stamp)
            for n, workspace_id in enumerate(workspace_ids)
        ),
    )

    conversation_ids = [uuid.uuid4() for _ in range(scale.conversations)]
    busy_ids = conversation_ids[: scale.busy_conversations]
    busy_total = scale.busy_conversations * scale.busy_messages_each
    quiet_ids = conversation_ids[scale.busy_conversations :]
    # Messages per conversation: busy ones get a fixed count, the rest share what is left.
    counts = dict.fromkeys(busy_ids, scale.busy_messages_each)
    for index in range(scale.messages - busy_total):
        conversation_id = quiet_ids[index % len(quiet_ids)]
        counts[conversation_id] = counts.get(conversation_id, 0) + 1

    members: dict[uuid.UUID, list[uuid.UUID]] = {}
    conversation_rows = []
    participant_rows = []
    for n, conversation_id in enumerate(conversation_ids):
        created = sqlite_time(base + timedelta(seconds=n))
        conversation_rows.append(
            (conversation_id.hex, workspace_ids[n % len(workspace_ids)].hex, f"Topic {n}",
             counts.get(conversation_id, 0), created, created)
        )
        members[conversation_id] = rng.sample(user_ids, rng.randint(2, 3))
        for user_id in members[conversation_id]:
            participant_rows.append((conversation_id.hex, user_id.hex, created, created))
    connection.executemany(
        "INSERT INTO conversations (id, workspace_id, topic, last_seq, metadata, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?)",
        conversation_rows,
    )
    connection.executemany(
        "INSERT INTO participants (conversation_id, user_id, created_at, updated_at) "
        "VALUES (?, ?, ?, ?)",
        participant_rows,
    )

    triggers = [
        row[0]
        for row in connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'"
        )
    ]
    for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'"
    ).fetchall():
        connection.execute(f"DROP TRIGGER {name}")

    def message_rows() -> Iterator[tuple[object, ...]]:
        for conversation_id, count in counts.items():
            senders = members[conversation_id]
            for seq in range(1, count + 1):
                created = sqlite_time(base + timedelta(seconds=seq))
                yield (
                    uuid.uuid4().hex, conversation_id.hex, rng.choice(senders).hex, seq,
                    random_content(rng), created, created,
                )

    rows = message_rows()
    while chunk := [row for _, row in zip(range(SEED_CHUNK), rows)]:
        connection.executemany(
            "INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, "
            "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, NULL, '{}', ?, ?)",
            chunk,
        )
    connection.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    # The seeded words are Latin, so the trigram index of the scripts without spaces stays empty.
    for sql in triggers:
        connection.execute(sql)
    connection.commit()
    connection.execute("ANALYZE")
    # Start the measurements from an empty write-ahead log, as a long-running server would be.
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()

    writable = [(conversation_id, members[conversation_id][0]) for conversation_id in busy_ids]
    return Seeded(user_ids, conversation_ids, busy_ids, writable)


def new_messages(seeded: Seeded, rng: random.Random, count: int) -> list[NewMessage]:
    """Messages spread over ten busy conversations, each with a client_msg_id."""
    targets = rng.sample(seeded.writable, 10)
    result = []
    for _ in range(count):
        conversation_id, sender_id = rng.choice(targets)
        result.append(
            NewMessage(
                conversation_id=conversation_id,
                sender_id=sender_id,
                content=random_content(rng),
                client_msg_id=uuid.uuid4().hex,
            )
        )
    return result


def raw_rows(messages: list[NewMessage], next_seq: dict[uuid.UUID, int]) -> list[tuple[object, ...]]:
    """Build the rows that append_batch would write, as sqlite3 parameters."""
    stamp = sqlite_time(utc_now())
    rows = []
    for message in messages:
        seq = next_seq[message.conversation_id] = next_seq.get(message.conversation_id, 10**9) + 1
        rows.append(
            (
                uuid.uuid4().hex, message.conversation_id.hex, message.sender_id.hex, seq,
                message.content, message.client_msg_id, dump_metadata(message.metadata), stamp, stamp,
            )
        )
    return rows


def write_raw(path: Path, batches: list[list[tuple[object, ...]]]) -> float:
    """Insert with sqlite3 executemany, one commit per batch; returns rows per second."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    started = time.perf_counter()
    for rows in batches:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, "
            "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return sum(len(rows) for rows in batches) / elapsed


async def write_batches(db: Database, batches: list[list[NewMessage]]) -> float:
    """Store with append_batch, one unit of work per batch; returns messages per second."""
    started = time.perf_counter()
    for batch in batches:
        async with db.unit_of_work() as uow:
            results = await uow.messages.append_batch(batch)
        if any(isinstance(result, Exception) for result in results):
            raise RuntimeError(f"append_batch failed: {results!r}")
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


async def write_naive(db: Database, messages: list[NewMessage]) -> float:
    """Store each message in its own ORM session and transaction; returns messages per second."""
    started = time.perf_counter()
    for message in messages:
        async with AsyncSession(db.engine) as session, session.begin():
            conversation = await session.get(ConversationRow, message.conversation_id)
            if conversation is None:
                raise RuntimeError(f"conversation {message.conversation_id} not found")
            conversation.last_seq += 1
            now = utc_now()
            session.add(
                MessageRow(
                    id=uuid.uuid4(),
                    conversation_id=message.conversation_id,
                    sender_id=message.sender_id,
                    seq=conversation.last_seq,
                    content=message.content,
                    client_msg_id=message.client_msg_id,
                    metadata_=message.metadata,
                    created_at=now,
                    updated_at=now,
                )
            )
    return len(messages) / (time.perf_counter() - started)


async def latencies_ms(call: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    for _ in range(10):
        await call()
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(scale: Scale, folder: Path, rounds: int, seed_value: int) -> dict[str, object]:
    rng = random.Random(seed_value)
    path = folder / "storage-bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        await db.migrate()
    started = time.perf_counter()
    seeded = seed(path, scale, rng)
    seed_seconds = time.perf_counter() - started
    print(f"seeded {scale.conversations:,} conversations and {scale.messages:,} messages "
          f"in {seed_seconds:.0f} s")

    results: dict[str, object] = {"seed_seconds": round(seed_seconds, 1)}
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        # Writes: alternate raw and batch rounds of 20 batches of 100 rows each.
        raw_rates, batch_rates = [], []
        next_raw_seq: dict[uuid.UUID, int] = {}
        for _ in range(rounds):
            batches = [new_messages(seeded, rng, WRITE_BATCH) for _ in range(20)]
            raw_rates.append(write_raw(path, [raw_rows(batch, next_raw_seq) for batch in batches]))
            batches = [new_messages(seeded, rng, WRITE_BATCH) for _ in range(20)]
            batch_rates.append(await write_batches(db, batches))
        naive_rate = await write_naive(db, new_messages(seeded, rng, 500))
        results["raw_executemany_per_s"] = round(statistics.median(raw_rates))
        results["append_batch_per_s"] = round(statistics.median(batch_rates))
        results["naive_orm_per_s"] = round(naive_rate)

        # Reads: a 50-message page in the middle of a busy conversation, and a user's first
        # page of conversations.
        async def history_page() -> None:
            conversation_id, reader = rng.choice(seeded.writable)
            async with db.unit_of_work() as uow:
                page = await uow.messages.history(
                    reader, conversation_id, before_seq=rng.randint(60, 450), limit=50
                )
            if len(page.items) != 50:
                raise RuntimeError(f"expected 50 messages, got {len(page.items)}")

        async def conversation_list() -> None:
            async with db.unit_of_work() as uow:
                await uow.conversations.list_for_user(rng.choice(seeded.user_ids), cursor=None, limit=50)

        async def search_common_word() -> None:
            async with db.unit_of_work() as uow:
                await uow.messages.search(rng.choice(seeded.user_ids), "deploy", limit=50)

        history = await latencies_ms(history_page, 500)
        listing = await latencies_ms(conversation_list, 500)
        searching = await latencies_ms(search_common_word, 100)
        results["history_median_ms"] = round(statistics.median(history), 2)
        results["history_p95_ms"] = round(percentile(history, 0.95), 2)
        results["list_median_ms"] = round(statistics.median(listing), 2)
        results["list_p95_ms"] = round(percentile(listing, 0.95), 2)
        results["search_median_ms"] = round(statistics.median(searching), 2)
        results["search_p95_ms"] = round(percentile(searching, 0.95), 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="seed 10,000 conversations and 100,000 messages")
    parser.add_argument("--folder", type=Path, help="folder for the database file (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=5, help="write rounds per path (default: 5)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON as well")
    arguments = parser.parse_args()

    scale = SMALL if arguments.small else FULL
    with tempfile.TemporaryDirectory(prefix="cortex-storage-") as temporary:
        folder = arguments.folder or Path(temporary)
        results = asyncio.run(run(scale, folder, arguments.rounds, arguments.seed))

    ratio = results["append_batch_per_s"] / results["raw_executemany_per_s"]  # type: ignore[operator]
    print()
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"data: {scale.conversations:,} conversations, {scale.messages:,} messages, "
          f"{scale.users:,} users")
    print()
    print("| measurement | result |")
    print("| --- | --- |")
    print(f"| raw sqlite3 executemany, 100 rows per commit | {results['raw_executemany_per_s']:,} messages/s |")
    print(f"| append_batch, 100 messages per unit of work | {results['append_batch_per_s']:,} messages/s ({ratio:.0%} of raw) |")
    print(f"| one ORM unit of work per message | {results['naive_orm_per_s']:,} messages/s |")
    print(f"| history page of 50, median / p95 | {results['history_median_ms']} / {results['history_p95_ms']} ms |")
    print(f"| first page of a user's conversations, median / p95 | {results['list_median_ms']} / {results['list_p95_ms']} ms |")
    print(f"| search for a common word (in about 1 of 5 messages), median / p95 | {results['search_median_ms']} / {results['search_p95_ms']} ms |")
    if arguments.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
