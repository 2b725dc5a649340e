"""The SQLite message writer: each batch in one transaction on a plain sqlite3 connection.

A batch normally runs right on the event loop. Storing a few messages takes SQLite a fraction of
a millisecond, far less than handing the batch to a thread costs under load: the sqlite3 module
releases the GIL around every statement and every row of an executemany, and each time the
worker thread waits to get it back from a busy event loop (up to the interpreter's switch
interval, 5 ms), so a batch in a thread took several milliseconds. The statements run through
`SqliteSteps` as fixed SQL text, because SQLAlchemy's per-statement work cost more than SQLite's.

Two things could still block the event loop, and both go to the writer's thread instead:
- Waiting for the write lock. The batch starts with BEGIN IMMEDIATE under a busy timeout of
  zero; when another connection (another instance, an HTTP write) holds the lock, the batch runs
  in the thread, which waits under the normal busy timeout.
- WAL checkpoints, which copy pages into the database file and sync it. The writer's connection
  never checkpoints on commit (`wal_autocheckpoint = 0`); the thread checkpoints on a connection
  of its own once enough commits have gone by.

This is the one place that uses sqlite3 directly rather than SQLAlchemy: the hot path of every
message, where the library's overhead was measured to dominate (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from persistence.errors import PersistenceError
from persistence.models import AppendResult, NewMessage
from persistence.repositories.append import BatchAppender, SqliteSteps, log_failures, translate_sqlite_errors
from persistence.sqlite import BUSY_TIMEOUT_MS

logger = logging.getLogger(__name__)

# Commits between two checkpoints. SQLite's own default checkpoints at 1,000 WAL pages; a batch
# of chat messages writes a few pages, so this keeps the WAL file to a few megabytes.
COMMITS_PER_CHECKPOINT = 200


class SqliteBatchWriter:
    """Appends message batches to a SQLite file, one batch per transaction.

    A lock wait longer than the busy timeout raises OperationalError, which the caller may retry:
    the transaction has rolled back.
    """

    def __init__(self, database_path: str) -> None:
        self._path = database_path
        self._connection = _connect(database_path)
        # Zero: a batch on the event loop never waits for the lock; see the module docstring.
        self._connection.execute("PRAGMA busy_timeout = 0")
        self._connection.execute("PRAGMA wal_autocheckpoint = 0")
        self._steps = SqliteSteps(self._connection.cursor())
        self._appender = BatchAppender("sqlite")
        # One thread: it runs a batch that must wait for the lock, and the checkpoints.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._checkpoint_connection: sqlite3.Connection | None = None
        self._commits_since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[AppendResult | PersistenceError]:
        """Store a batch; the same results and rules as `MessageRepository.append_batch`."""
        if not batch:
            return []
        try:
            results = self._append(batch, "IMMEDIATE")
        except _LockBusy:
            # Another connection holds the write lock: wait for it in the thread, under the
            # busy timeout, rather than on the event loop.
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self._append_waiting, batch)
        self._after_commit()
        log_failures(batch, results)
        return results

    def _append_waiting(self, batch: Sequence[NewMessage]) -> list[AppendResult | PersistenceError]:
        connection = self._connection
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return self._append(batch, "IMMEDIATE", waiting=True)
        finally:
            connection.execute("PRAGMA busy_timeout = 0")

    def _append(
        self, batch: Sequence[NewMessage], mode: str, *, waiting: bool = False
    ) -> list[AppendResult | PersistenceError]:
        connection = self._connection
        with translate_sqlite_errors():
            try:
                connection.execute(f"BEGIN {mode}")
            except sqlite3.OperationalError as error:
                if not waiting and _is_busy(error):
                    raise _LockBusy from error
                raise
            try:
                try:
                    results = self._appender.together(self._steps, batch)
                except sqlite3.IntegrityError:
                    connection.execute("ROLLBACK")
                    logger.info("batch of %d messages hit a constraint; storing one by one", len(batch))
                    connection.execute(f"BEGIN {mode}")
                    results = self._appender.one_by_one(self._steps, batch)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        return results

    # Checkpoints

    def _after_commit(self) -> None:
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < COMMITS_PER_CHECKPOINT:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._commits_since_checkpoint = 0
        loop = asyncio.get_running_loop()
        self._checkpoint = loop.run_in_executor(self._executor, self._run_checkpoint)

    def _run_checkpoint(self) -> None:
        """Copy committed pages into the database file (PASSIVE: it never blocks a writer)."""
        try:
            if self._checkpoint_connection is None:
                self._checkpoint_connection = _connect(self._path)
            self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:
            # The next checkpoint tries again; until then the WAL file only grows.
            logger.warning("WAL checkpoint of %s failed: %s", self._path, error)

    def close(self) -> None:
        """Wait for the work in progress, checkpoint, then close the connections and the thread."""
        self._executor.shutdown(wait=True)
        self._run_checkpoint()
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
        self._connection.close()


class _LockBusy(Exception):
    """Another connection holds the write lock."""


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit at the driver level (isolation_level None): the writer issues BEGIN itself.
    # check_same_thread is off because a batch that waits for the lock runs in the thread.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


__all__ = ["SqliteBatchWriter"]
