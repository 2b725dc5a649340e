"""The message writers: how a server process stores its message batches.

SQLite: `MessageWriter`, a process of its own. Storing a batch (the insert, its indexes, the
search index and the commit) took about half of the event loop's core at 2,500 messages per
second. A thread cannot take that work elsewhere. The sqlite3 module releases the GIL around
every statement and every row, and the thread waits to get it back from the busy loop each
time: a batch took 4.8 ms in a thread at 1,500 messages per second. A child process has its own
interpreter and GIL. The server's loop only sends the batch and reads the results: 13% of the
loop's samples at 2,000 messages per second (docs/benchmarks.md). The child runs `BatchAppender`
with `SqliteSteps` on a plain sqlite3 connection, because there SQLAlchemy's work per statement
cost more than SQLite's own.

PostgreSQL: `PostgresqlAppender`, in the server process. It stores each batch with one prepared
statement (`append_postgresql`), one round trip, and falls back to
`MessageRepository.append_batch` in a unit of work when that statement fails. With one round
trip per batch, the database does the work. A child process only added pickling, a pipe and a
process to wake per batch. Two instances held 18,500 delivered messages per second with the
appender in the server process, against 14,000 with it in a child (`python -m bench fanout
--targets cortex:2:postgres --sweep`, one run each).

Batches go to the writer process one at a time over a pipe. The parent sends the batch's fields
as tuples, and the child replies with one result per message or with the error that failed the
whole batch. Both writers raise the same errors. A transient error (a lock held past the busy
timeout, a lost connection, a child that died) reaches the caller as SQLAlchemy's
OperationalError. An error caused by the data reaches it as SQLAlchemy's DatabaseError. The
caller therefore handles both as it would without them. A child that died is started again on
the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

from persistence import errors
from persistence.errors import PersistenceError
from persistence.models import AppendResult, Message, NewMessage
from persistence.repositories.append import BatchAppender, SqliteSteps, log_failures, stored_message
from persistence.repositories.append_postgresql import APPEND_STATEMENT, append_in_one_statement
from persistence.sqlite import set_pragmas

logger = logging.getLogger(__name__)

# Seconds to wait for a new child to open the database and reply.
START_TIMEOUT_SECONDS = 30.0
# Seconds to wait for the child to exit after the pipe closes, before it is killed.
STOP_TIMEOUT_SECONDS = 10.0
# Seconds between two WAL checkpoints of a SQLite file.
CHECKPOINT_SECONDS = 0.5
# Passes a checkpoint makes beside the writer before it takes the writer's lock, and the
# growth of the WAL during the last pass below which it takes the lock sooner.
MAX_CHECKPOINT_PASSES = 4
LOCKED_PASS_FRAMES = 256
# A WAL file larger than this is cut back to it when the WAL restarts.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

# The wire format between the processes.
# Parent to child: a list of (conversation_id bytes, sender_id bytes, content, client_msg_id,
# metadata) tuples, one per message, or None to stop.
# Child to parent: ("ok", results) with one tuple per message, or ("failed", kind, text) where
# kind is "transient", "data" or "bug". A result is ("new", id bytes, seq, timestamp) for a
# stored message, ("old", the stored message's fields) for a repeated client_msg_id, or
# ("error", PersistenceError class name, detail).
NewFields = tuple[bytes, bytes, str, str | None, dict[str, Any]]
Reply = tuple[Any, ...]


class MessageWriter:
    """Appends message batches through a writer process, one batch at a time."""

    def __init__(self, database_url: str) -> None:
        # The URL may hold a password: it goes to the child as an argument and is never logged.
        self._url = database_url
        self._process: BaseProcess | None = None
        self._pipe: Pipe | None = None
        self._lock = asyncio.Lock()
        # The file descriptor registered with the event loop, and the reply being awaited.
        self._watched: int | None = None
        self._readable: asyncio.Future[None] | None = None
        # Set when a batch was cancelled before its reply was read.
        self._out_of_step = False

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
                # NOTE: a batch larger than the pipe's buffer (64 KB on Linux) blocks the event
                # loop until the child has read the rest, which it does at once while it is alive.
                pipe.send(fields)
                reply = await self._receive(pipe)
            except asyncio.CancelledError:
                # The reply to this batch will arrive unread, so the next batch would read it as
                # its own. Start a new child for the next batch instead.
                self._out_of_step = True
                raise
            except (EOFError, OSError) as error:
                # The batch may or may not have committed. A retry stores it again unless the
                # messages carry a client_msg_id.
                logger.error("the message writer process stopped during a batch (%s); restarting it", error)
                await self._stop()
                raise _rebuild_error("transient", f"the message writer process stopped: {error}") from error
        if reply[0] == "failed":
            raise _rebuild_error(reply[1], reply[2])
        results = [_rebuild_result(message, result) for message, result in zip(batch, reply[1], strict=True)]
        log_failures(batch, results)
        return results

    async def close(self) -> None:
        """Let the writer process finish its batch and exit."""
        async with self._lock:
            await self._stop()

    async def _ensure_started(self) -> Pipe:
        if (
            self._pipe is not None
            and self._process is not None
            and self._process.is_alive()
            and not self._out_of_step
        ):
            return self._pipe
        self._out_of_step = False
        if self._process is not None:
            await self._stop()
        # spawn: a fresh interpreter, rather than a fork of a process with an event loop and threads.
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(target=_serve, args=(child_end, self._url), name="cortex-message-writer", daemon=True)
        process.start()
        child_end.close()
        self._process, self._pipe = process, parent_end
        try:
            reply = await asyncio.wait_for(self._receive(parent_end), START_TIMEOUT_SECONDS)
        except (TimeoutError, EOFError, OSError) as error:
            await self._stop()
            raise _rebuild_error("transient", f"the message writer process did not start: {error!r}") from error
        if reply[0] == "failed":
            await self._stop()
            raise _rebuild_error(reply[1], reply[2])
        logger.info("message writer process %d started", process.pid)
        return parent_end

    async def _receive(self, pipe: Pipe) -> Reply:
        """Wait until the pipe is readable without blocking the event loop, then read a reply.

        The pipe stays registered with the event loop between batches, which saves two system
        calls per batch. CPython's multiprocessing writes a message of at most 16 KB in one
        write, so once the pipe is readable, `recv` of such a reply returns without waiting.
        """
        loop = asyncio.get_running_loop()
        if self._watched is None:
            loop.add_reader(pipe.fileno(), self._on_readable)
            self._watched = pipe.fileno()
        self._readable = loop.create_future()
        try:
            await self._readable
        finally:
            self._readable = None
        return pipe.recv()

    def _on_readable(self) -> None:
        waiter = self._readable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return
        # Readable while no reply is awaited: the reply is about to be read, or the child closed
        # its end. Stop watching until the next batch, so a closed pipe does not wake the loop
        # on every iteration.
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_reader(self._watched)
            self._watched = None

    async def _stop(self) -> None:
        self._stop_watching()
        await asyncio.to_thread(self._stop_process)

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
                logger.error("the message writer process %d did not exit; killing it", process.pid)
                process.kill()
                process.join()


def _rebuild_result(message: NewMessage, result: Reply) -> AppendResult | PersistenceError:
    kind = result[0]
    if kind == "new":
        _, message_id, seq, timestamp = result
        stored = stored_message(message, seq, timestamp, uuid.UUID(bytes=message_id))
        return AppendResult.model_construct(message=stored, created=True)
    if kind == "old":
        return AppendResult.model_construct(message=_message_from_fields(result[1]), created=False)
    _, class_name, detail = result
    error_class = getattr(errors, class_name, PersistenceError)
    if not (isinstance(error_class, type) and issubclass(error_class, PersistenceError)):
        error_class = PersistenceError
    return error_class(detail)


def _rebuild_error(kind: str, text: str) -> Exception:
    """Turn a batch failure reported by the child into the exception the caller expects."""
    if kind == "transient":
        return OperationalError(None, None, _ChildError(text))
    if kind == "data":
        return DatabaseError(None, None, _ChildError(text))
    return RuntimeError(f"the message writer process failed: {text}")


class _ChildError(Exception):
    """The database error the writer process reported, as its text."""


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


def _serve(pipe: Pipe, url: str) -> None:
    """Store batches from `pipe` until it sends None or closes."""
    # The parent decides when to stop: after SIGINT or SIGTERM it drains the pipeline first,
    # and this process must still be there to store what drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _serve_sqlite(pipe, make_url(url).database or "")
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the parent has gone


def _serve_sqlite(pipe: Pipe, path: str) -> None:
    try:
        connection = _connect_sqlite(path)
    except sqlite3.Error as error:
        pipe.send(("failed", "transient", f"opening {path} failed: {error}"))
        return
    # A checkpoint on commit copies pages into the database file and syncs it, which stalled the
    # batch that triggered it. A thread of this process checkpoints instead, beside the writes,
    # and takes `between_batches` only for the short last pass that lets the WAL restart.
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    between_batches = threading.Lock()
    checkpointer = _Checkpointer(path, between_batches)
    checkpointer.start()
    pipe.send(("ok", []))
    steps = SqliteSteps(connection.cursor())
    appender = BatchAppender("sqlite")
    try:
        while (batch := _next_batch(pipe)) is not None:
            try:
                with between_batches:
                    results = _append_sqlite(connection, steps, appender, batch)
            except sqlite3.OperationalError as error:
                pipe.send(("failed", "transient", str(error)))
            except sqlite3.Error as error:
                pipe.send(("failed", "data", str(error)))
            except Exception as error:  # reported to the parent, which fails the batch with it
                pipe.send(("failed", "bug", repr(error)))
            else:
                pipe.send(("ok", [_result_fields(result) for result in results]))
    finally:
        checkpointer.stop()
        connection.close()


class _Checkpointer(threading.Thread):
    """A thread that checkpoints a WAL database every CHECKPOINT_SECONDS on a connection of its own.

    SQLite starts writing at the beginning of the WAL file again only after a checkpoint has
    copied every frame in it. A checkpoint beside a busy writer never gets there, because the
    writer commits new frames meanwhile. With one pass per round, the WAL grew by about 100 MB
    per second at 2,000 messages per second (`python -m bench fanout`), and every write got
    slower as it grew. So each round copies beside the writes until a pass finds little new,
    then makes a last pass between two batches, under the writer's lock, which copies only what
    was committed during the pass before. After it, the next transaction restarts the WAL.
    """

    def __init__(self, path: str, between_batches: threading.Lock, *, interval: float = CHECKPOINT_SECONDS) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self._path = path
        self._between_batches = between_batches
        self._interval = interval
        self._stopped = threading.Event()
        self._connection: sqlite3.Connection | None = None

    def run(self) -> None:
        self._connection = _connect_sqlite(self._path)
        try:
            while not self._stopped.wait(self._interval):
                self._checkpoint()
            self._checkpoint()
        finally:
            self._connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def _copy(self) -> int:
        """Run one PASSIVE checkpoint and return the number of frames the WAL had when it started."""
        assert self._connection is not None  # opened by run
        _, frames, _ = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    def _checkpoint(self) -> None:
        try:
            # PASSIVE copies what it can without waiting for readers or writers. Each pass beside
            # the writer copies what was committed during the one before, so the passes shrink.
            frames = self._copy()
            for _ in range(MAX_CHECKPOINT_PASSES):
                previous, frames = frames, self._copy()
                if frames - previous <= LOCKED_PASS_FRAMES:
                    break
            started = time.perf_counter()
            with self._between_batches:
                self._copy()
            logger.debug("WAL checkpoint held the writer for %.1f ms", 1000 * (time.perf_counter() - started))
        except sqlite3.Error as error:
            # Committed data stays in the WAL file, which grows until a later checkpoint succeeds.
            logger.warning("WAL checkpoint of %s failed: %s", self._path, error)


class PostgresqlAppender:
    """Stores batches with one statement each on a connection it keeps (`append_postgresql`).

    The same interface and errors as `MessageWriter`, in the calling process. A batch that the
    statement cannot store, because it breaks a constraint or meets another database error, is
    stored again through the repository in a unit of work, which isolates the message at fault.
    """

    def __init__(self, db: Any) -> None:
        self._db = db
        self._connection: Any = None
        self._statement: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the connection and prepare the statement now rather than on the first batch."""
        async with self._lock:
            if self._statement is None:
                await self._connect()

    async def _connect(self) -> None:
        # The engine's connection, so that the URL and connect_args apply as everywhere else.
        self._connection = await self._db.engine.connect()
        try:
            raw = (await self._connection.get_raw_connection()).driver_connection
            # PostgreSQL keeps one plan for this statement, made on the statistics of the moment.
            # Every table it reads has an index for it, so the session never scans (slower as the
            # table grows) and never plans again per batch (650 against 300 us for one message).
            await raw.execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
            self._statement = await raw.prepare(APPEND_STATEMENT)
        except BaseException:
            await self._close()
            raise

    async def close(self) -> None:
        """Close the connection once the batch being stored, if any, is done."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection, self._statement = self._connection, None, None
            try:
                # Closed rather than returned to the pool, because of its session setting.
                await connection.invalidate()
                await connection.close()
            except (DBAPIError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                logger.debug("closing the appender's database connection failed: %s", error)

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[AppendResult | PersistenceError]:
        """Store a batch; the same results and rules as `MessageRepository.append_batch`.

        A lost connection or a deadlock raises OperationalError, so the caller retries the batch.
        """
        async with self._lock:
            try:
                if self._statement is None:
                    await self._connect()
                results = await append_in_one_statement(self._statement, batch)
            except (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                asyncpg.OperatorInterventionError,
            ) as error:
                # The connection is gone or unusable: the next batch opens a new one. After the
                # server terminated the session, asyncpg sometimes raised InternalClientError
                # ("another operation is in progress") on the next statement instead.
                await self._close()
                raise _rebuild_error("transient", str(error)) from error
            except (DBAPIError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as error:
                raise _rebuild_error("transient", str(error)) from error
            except asyncpg.PostgresError as error:
                logger.info(
                    "storing a batch of %d messages in one statement failed (%s), so it is stored in a unit of work",
                    len(batch), type(error).__name__,
                )
                async with self._db.unit_of_work() as uow:
                    return await uow.messages.append_batch(batch)
        log_failures(batch, results)
        return results


def _next_batch(pipe: Pipe) -> list[NewMessage] | None:
    """Read the next batch, or None when the parent sent the stop request or has gone."""
    try:
        fields: list[NewFields] | None = pipe.recv()
    except EOFError:
        return None
    if fields is None:
        return None
    return [
        NewMessage.model_construct(
            conversation_id=uuid.UUID(bytes=conversation_id),
            sender_id=uuid.UUID(bytes=sender_id),
            content=content,
            client_msg_id=client_msg_id,
            metadata=metadata,
        )
        for conversation_id, sender_id, content, client_msg_id, metadata in fields
    ]


def _append_sqlite(
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


def _result_fields(result: AppendResult | PersistenceError) -> Reply:
    if isinstance(result, PersistenceError):
        return ("error", type(result).__name__, result.detail)
    message = result.message
    if result.created:
        return ("new", message.id.bytes, message.seq, message.timestamp)
    return ("old", _message_fields(message))


def _connect_sqlite(path: str) -> sqlite3.Connection:
    # The driver's autocommit mode (isolation_level None) lets the writer issue BEGIN itself.
    connection = sqlite3.connect(path, isolation_level=None)
    set_pragmas(connection)
    return connection


__all__ = ["MessageWriter"]
