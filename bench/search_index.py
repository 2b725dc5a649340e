"""Search index benchmark: what each kind of full-text index adds to storing a message.

Run: `python -m bench.search_index [--postgres-url URL] [--messages N]`. Not part of the test
suite.

It stores the same messages into a bare table (an integer key, a conversation and seq index and
the content) in batches of 30, one transaction per batch, as the message writer does. It does so
once with each index and once without, and prints the time per message. Two kinds of content: 35 random
words of 2 to 9 letters cut to 200 characters, like chat text, and the load generator's
`~T<time>~R<room>~C<client>~` followed by 200 `x`. On SQLite the indexes are FTS5 tables kept by
a trigger, with the `unicode61` and the `trigram` tokenizer. On PostgreSQL they are GIN indexes
over `to_tsvector('simple', content)` and over `content gin_trgm_ops`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import string
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

BATCH = 30
WORDS = 5000


def chat_text(rng: random.Random) -> Callable[[int], str]:
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(WORDS)]
    return lambda _: " ".join(rng.choices(vocabulary, k=35))[:200]


def load_generator_text(index: int) -> str:
    return f"~T{time.time_ns() // 1000}~R{index % 10}~C{index % 100}~" + "x" * 200


def sqlite_rate(folder: Path, index: str, contents: list[str]) -> float:
    """Return microseconds per message for storing `contents` with `index` on SQLite."""
    path = folder / f"{index}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE messages (pk INTEGER PRIMARY KEY, conversation INT, seq INT, content TEXT)")
    connection.execute("CREATE INDEX ix_seq ON messages (conversation, seq)")
    if index != "none":
        connection.execute(
            "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
            f"content_rowid='pk', tokenize='{index}')"
        )
        connection.execute(
            "CREATE TRIGGER fts AFTER INSERT ON messages BEGIN "
            "INSERT INTO messages_fts(rowid, content) VALUES (new.pk, new.content); END"
        )
    started = time.perf_counter()
    for first in range(0, len(contents), BATCH):
        rows = [(n % 10, n, contents[n]) for n in range(first, min(first + BATCH, len(contents)))]
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO messages (conversation, seq, content) VALUES (?, ?, ?)", rows)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / len(contents) * 1e6


async def postgresql_rate(url: str, index: str, contents: list[str]) -> float:
    """Return microseconds per message for storing `contents` with `index` on PostgreSQL."""
    table = f"bench_search_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            f"CREATE TABLE {table} (pk bigserial PRIMARY KEY, conversation int, seq int, content text)"
        )
        await connection.execute(f"CREATE INDEX ON {table} (conversation, seq)")
        if index == "unicode61":
            await connection.execute(f"CREATE INDEX ON {table} USING gin (to_tsvector('simple'::regconfig, content))")
        elif index == "trigram":
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            await connection.execute(f"CREATE INDEX ON {table} USING gin (content gin_trgm_ops)")
        insert = f"INSERT INTO {table} (conversation, seq, content) VALUES ($1, $2, $3)"
        started = time.perf_counter()
        for first in range(0, len(contents), BATCH):
            rows = [(n % 10, n, contents[n]) for n in range(first, min(first + BATCH, len(contents)))]
            async with connection.transaction():
                await connection.executemany(insert, rows)
        elapsed = time.perf_counter() - started
        await connection.execute(f"DROP TABLE {table}")
    finally:
        await connection.close()
    return elapsed / len(contents) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000, help="messages per measurement (default: 60,000)")
    parser.add_argument("--postgres-url", help="also measure on this PostgreSQL database, e.g. postgresql://postgres@127.0.0.1/test")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    options = parser.parse_args()

    rng = random.Random(options.seed)
    kinds = {"chat text": chat_text(rng), "load generator": load_generator_text}
    print(f"microseconds per message, {options.messages:,} messages in batches of {BATCH}")
    print(f"{'database':<11}{'content':<16}{'no index':>10}{'words':>10}{'trigrams':>10}")
    for kind, make in kinds.items():
        contents = [make(n) for n in range(options.messages)]
        with tempfile.TemporaryDirectory(prefix="cortex-search-index-") as folder:
            rates = [sqlite_rate(Path(folder), index, contents) for index in ("none", "unicode61", "trigram")]
        print(f"{'SQLite':<11}{kind:<16}" + "".join(f"{rate:>10.0f}" for rate in rates))
        if options.postgres_url:
            rates = [
                asyncio.run(postgresql_rate(options.postgres_url, index, contents))
                for index in ("none", "unicode61", "trigram")
            ]
            print(f"{'PostgreSQL':<11}{kind:<16}" + "".join(f"{rate:>10.0f}" for rate in rates))


if __name__ == "__main__":
    main()
