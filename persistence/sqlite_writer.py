"""The SQLite message writer: a process of its own that stores message batches.

Storing a batch is mostly SQLite's own work: the insert, its indexes, the trigram search index
and the commit. In the server's process that work ran on the event loop's core, and it took
about half of that core at 2,500 messages per second. A thread cannot take it elsewhere,
because the sqlite3 module releases the GIL around every statement and every row, and the
thread waits to get the GIL back from the busy event loop each time (a batch took 4.8 ms in a
thread at 1,500 messages per second). A child process has its own interpreter and GIL, so the
event loop only sends the batch and reads the results, about 50 microseconds per batch.

The child runs the same append steps as the repository (`BatchAppender` with `SqliteSteps`) on
a plain sqlite3 connection. Batches go one at a time over a pipe. The parent sends the batch's
fields as tuples, and the child replies with one result per message or with the error that
failed the whole batch. A transient error (a lock held longer than the busy timeout, a child
that died) reaches the caller as SQLAlchemy's OperationalError, so the caller retries as it
would on any other database. A child that died is started again on the next batch.

This module uses sqlite3 directly rather than SQLAlchemy because the hot path is where the
library's overhead was measured to dominate (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sqlite3
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from persistence import errors
from persistence.errors import PersistenceError
from persistence.models import AppendResult, Message, NewMessage
from persistence.repositories.append import BatchAppender, SqliteSteps, log_failures
from persistence.sqlite import BUSY_TIMEOUT_MS

logger = logging.getLogger(__name__)

# Seconds to wait for a new child to open the database and reply.
START_TIMEOUT_SECONDS = 30.0
# Seconds to wait for the child to exit after the pipe closes, before it is killed.
STOP_TIMEOUT_SECONDS = 10.0

# The wire format between the processes.
# Parent to child: a list of (conversation_id bytes, sender_id bytes, content, client_msg_id,
# metadata) tuples, one per message, or None to stop.
# Child to parent: ("ok", results) with one tuple per message, or ("failed", class name, text).
# A result is ("new", id bytes, seq, timestamp) for a stored message, ("old", the stored
# message's fields) for a repeated client_msg_id, or ("error", class name, detail).
NewFields = tuple[bytes, bytes, str, str | None, dict[str, Any]]


class SqliteBatchWriter:
    """Appends message batches to a SQLite file through a writer process, one batch at a time."""

    def __init__(self, database_path: str) -> None:
        self._path = database_path
        self._process: BaseProcess | None = None
        self._pipe: Pipe | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The writer process's id, or None while none runs."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the writer process and wait until it has opened the database."""
        async with self._lock:
            await self._ensure_started()

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[AppendResult | PersistenceError]:
        """Store a batch; the same results and rules as `MessageRepository.append_batch`."""
        if not batch:
            return []
        async with self._lock:
            pipe = await self._ensure_started()
            fields = [
                (m.conversation_id.bytes, m.sender_id.bytes, m.content, m.client_msg_id, m.metadata) for m in batch
            ]
            try:
                pipe.send(fields)
                reply = await self._receive(pipe)
            except (EOFError, OSError) as error:
                # The batch may or may not have committed; a retry stores it again unless the
                # messages carry a client_msg_id.
                logger.error("the SQLite writer process stopped during a batch (%s); restarting it", error)
                await asyncio.to_thread(self._stop_process)
                raise _transient(f"the SQLite writer process stopped: {error}") from error
        if reply[0] == "failed":
            raise _rebuild_error(reply[1], reply[2])
        results = [_rebuild_result(message, result) for message, result in zip(batch, reply[1], strict=True)]
        log_failures(batch, results)
        return results

    async def close(self) -> None:
        """Let the writer process finish its batch and exit."""
        async with self._lock:
            await asyncio.to_thread(self._stop_process)

    async def _ensure_started(self) -> Pipe:
        if self._pipe is not None and self._process is not None and self._process.is_alive():
            return self._pipe
        if self._process is not None:
            await asyncio.to_thread(self._stop_process)
        # spawn: a fresh interpreter, rather than a fork of a process with an event loop and threads.
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve, args=(child_end, self._path), name="cortex-sqlite-writer", daemon=True
        )
        process.start()
        child_end.close()
        self._process, self._pipe = process, parent_end
        try:
            reply = await asyncio.wait_for(self._receive(parent_end), START_TIMEOUT_SECONDS)
        except (TimeoutError, EOFError, OSError) as error:
            await asyncio.to_thread(self._stop_process)
            raise _transient(f"the SQLite writer process did not start: {error!r}") from error
        if reply[0] == "failed":
            await asyncio.to_thread(self._stop_process)
            raise _rebuild_error(reply[1], reply[2])
        logger.info("SQLite writer process %d started", process.pid)
        return parent_end

    @staticmethod
    async def _receive(pipe: Pipe) -> Any:
        """Wait until the pipe is readable without blocking the event loop, then read a reply."""
        loop = asyncio.get_running_loop()
        while not pipe.poll():
            readable = loop.create_future()

            def wake() -> None:
                if not readable.done():
                    readable.set_result(None)

            loop.add_reader(pipe.fileno(), wake)
            try:
                await readable
            finally:
                loop.remove_reader(pipe.fileno())
        return pipe.recv()

    def _stop_process(self) -> None:
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        if pipe is not None:
            try:
                pipe.send(None)
            except OSError:
                pass  # the child has gone already
            pipe.close()
        if process is not None:
            process.join(STOP_TIMEOUT_SECONDS)
            if process.is_alive():
                logger.error("the SQLite writer process %d did not exit; killing it", process.pid)
                process.kill()
                process.join()


def _rebuild_result(message: NewMessage, result: tuple[Any, ...]) -> AppendResult | PersistenceError:
    kind = result[0]
    if kind == "new":
        _, message_id, seq, timestamp = result
        stored = Message.model_construct(
            id=uuid.UUID(bytes=message_id),
            conversation_id=message.conversation_id,
            sender_id=message.sender_id,
            content=message.content,
            timestamp=timestamp,
            seq=seq,
            client_msg_id=message.client_msg_id,
            metadata=message.metadata,
        )
        return AppendResult.model_construct(message=stored, created=True)
    if kind == "old":
        return AppendResult.model_construct(message=_message_from_fields(result[1]), created=False)
    _, class_name, detail = result
    error_class = getattr(errors, class_name, PersistenceError)
    if not (isinstance(error_class, type) and issubclass(error_class, PersistenceError)):
        error_class = PersistenceError
    return error_class(detail)


def _rebuild_error(class_name: str, text: str) -> Exception:
    """Turn a batch failure reported by the child into the exception SQLAlchemy would raise."""
    sqlite_class = getattr(sqlite3, class_name, None)
    if isinstance(sqlite_class, type) and issubclass(sqlite_class, sqlite3.Error):
        return DBAPIError.instance(None, None, sqlite_class(text), sqlite3.Error)
    return RuntimeError(f"the SQLite writer process failed: {class_name}: {text}")


def _transient(text: str) -> OperationalError:
    return OperationalError(None, None, sqlite3.OperationalError(text))


def _message_fields(message: Message) -> tuple[Any, ...]:
    return (
        message.id.bytes, message.conversation_id.bytes, message.sender_id.bytes, message.content,
        message.timestamp, message.seq, message.client_msg_id, message.metadata,
    )


def _message_from_fields(fields: tuple[Any, ...]) -> Message:
    message_id, conversation_id, sender_id, content, timestamp, seq, client_msg_id, metadata = fields
    return Message.model_construct(
        id=uuid.UUID(bytes=message_id),
        conversation_id=uuid.UUID(bytes=conversation_id),
        sender_id=uuid.UUID(bytes=sender_id),
        content=content,
        timestamp=timestamp,
        seq=seq,
        client_msg_id=client_msg_id,
        metadata=metadata,
    )


# The child process


def _serve(pipe: Pipe, path: str) -> None:
    """Store batches from `pipe` until it sends None or closes."""
    # The parent decides when to stop: after SIGINT or SIGTERM it drains the pipeline first,
    # and this process must still be there to store what drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        connection = _connect(path)
    except sqlite3.Error as error:
        pipe.send(("failed", type(error).__name__, str(error)))
        return
    pipe.send(("ok", []))
    steps = SqliteSteps(connection.cursor())
    appender = BatchAppender("sqlite")
    try:
        while True:
            try:
                fields = pipe.recv()
            except EOFError:
                return  # the parent has gone
            if fields is None:
                return
            pipe.send(_store(connection, steps, appender, fields))
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent has gone
    finally:
        connection.close()


def _store(
    connection: sqlite3.Connection, steps: SqliteSteps, appender: BatchAppender, fields: list[NewFields]
) -> tuple[Any, ...]:
    batch = [
        NewMessage.model_construct(
            conversation_id=uuid.UUID(bytes=conversation_id),
            sender_id=uuid.UUID(bytes=sender_id),
            content=content,
            client_msg_id=client_msg_id,
            metadata=metadata,
        )
        for conversation_id, sender_id, content, client_msg_id, metadata in fields
    ]
    try:
        results = _append(connection, steps, appender, batch)
    except sqlite3.Error as error:
        return ("failed", type(error).__name__, str(error))
    except Exception as error:  # reported to the parent, which fails the batch with it
        return ("failed", type(error).__name__, repr(error))
    return ("ok", [_result_fields(result) for result in results])


def _append(
    connection: sqlite3.Connection, steps: SqliteSteps, appender: BatchAppender, batch: list[NewMessage]
) -> list[AppendResult | PersistenceError]:
    """Store the batch in one transaction; on a constraint failure, message by message."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        try:
            results = appender.together(steps, batch)
        except sqlite3.IntegrityError:
            connection.execute("ROLLBACK")
            connection.execute("BEGIN IMMEDIATE")
            results = appender.one_by_one(steps, batch)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return results


def _result_fields(result: AppendResult | PersistenceError) -> tuple[Any, ...]:
    if isinstance(result, PersistenceError):
        return ("error", type(result).__name__, result.detail)
    message = result.message
    if result.created:
        return ("new", message.id.bytes, message.seq, message.timestamp)
    return ("old", _message_fields(message))


def _connect(path: str) -> sqlite3.Connection:
    # The driver's autocommit mode (isolation_level None) lets the writer issue BEGIN itself.
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


__all__ = ["SqliteBatchWriter"]
