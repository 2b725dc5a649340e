"""The message pipeline: every message, from a WebSocket send or a bot's HTTP post, goes through here.

Steps: queue (bounded), store in a group commit, acknowledge, deliver and publish. One writer task
per process takes the messages in arrival order and stores them in batches: a batch is everything
waiting when the writer becomes free, up to ``batch_max`` messages, and when fewer are waiting it
lingers up to ``batch_wait_ms`` for more. Because there is one writer and one FIFO queue, the
messages of one connection are stored, and acknowledged, in the order they arrived.

Under load the writer spaces its batches: when the last batch contained more than one message,
the next one begins no sooner than ``batch_interval_ms`` after it. Each batch then contains more
messages, so the store, the Redis publishes and the frame writes cost less per message. A message
waits at most that long more, and a lone message goes at once.

When a batch's results arrive and more messages are waiting, the writer hands the next batch to
the database first and then runs the acks and deliveries of the batch it has. The database (the
SQLite writer process, or the PostgreSQL server) stores the next batch while this process sends
frames, instead of each waiting for the other. At most two batches are under way, and they
complete in order.

Guarantee: a completion callback (the ack) runs only after the batch has committed, so nothing
acknowledged can be lost to a crash of this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from persistence.database import Database
from persistence.errors import PersistenceError
from persistence.models import AppendResult, Message, NewMessage

from realtime.wire import encode_json, message_to_wire

logger = logging.getLogger(__name__)

# A batch that fails on a transient database error (a locked SQLite file, a dropped PostgreSQL
# connection) rolled back, so it is retried whole. After this long its messages fail with
# `internal` and are not acknowledged.
STORE_RETRY_SECONDS = 15.0
STOPPED = "the server stopped before the message was stored"


class StoredMessageSink(Protocol):
    """The receiver of stored messages: the gateway's hub, which delivers them locally and publishes them."""

    def message_stored(self, message: Message, message_json: str) -> None: ...

    def batch_stored(self) -> None:
        """Finish a committed batch. The pipeline calls it once, after the batch's last message_stored."""


@dataclass(slots=True)
class StoreOutcome:
    """The outcome of one submitted message: a result, or the error that explains the failure."""

    result: AppendResult | None
    message_json: str | None
    error: Exception | None


Completion = Callable[[StoreOutcome], None]
# One result per message of a batch, or the error that failed the whole batch.
StoreResults = list[AppendResult | PersistenceError | Exception] | Exception


class MessagePipeline:
    """Stores messages in group commits, then acknowledges, delivers and publishes them."""

    def __init__(
        self,
        db: Database,
        sink: StoredMessageSink,
        *,
        batch_max: int = 200,
        batch_wait_ms: float = 1.0,
        batch_interval_ms: float = 0.0,
        queue_max: int = 10_000,
    ) -> None:
        self._db = db
        self._sink = sink
        self._batch_max = batch_max
        self._batch_wait = batch_wait_ms / 1000
        self._batch_interval = batch_interval_ms / 1000
        # The earliest start of the next batch, or 0 while the writer keeps up (see _begin).
        self._next_batch_at = 0.0
        self._queue: asyncio.Queue[tuple[NewMessage, Completion]] = asyncio.Queue(maxsize=queue_max)
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Batches handed to the database, and batches whose acks and deliveries have run. The
        # event is set, and replaced, each time a batch finishes.
        self._begun_batches = 0
        self._finished_batches = 0
        self._batch_finished = asyncio.Event()
        self.stored_messages = 0
        self.committed_batches = 0

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="message-writer")
        logger.info("message writer started (batch_max=%d)", self._batch_max)

    async def stop(self, timeout: float = 8.0) -> None:
        """Store what is queued (within `timeout` seconds), then stop the writer."""
        await self.drain(timeout)
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        logger.info("message writer stopped after %d messages in %d batches", self.stored_messages, self.committed_batches)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued message is stored and acknowledged; False if time ran out."""
        deadline = time.monotonic() + timeout
        while self._queue.qsize() or not self._idle.is_set():
            if time.monotonic() >= deadline:
                logger.warning("%d messages were still waiting to be stored at shutdown", self._queue.qsize())
                return False
            await asyncio.sleep(0.01)
        return True

    async def settled(self) -> None:
        """Wait until every batch handed to the database so far has run its acks and deliveries.

        A database read that may have seen a batch's rows waits on this before it uses them, so a
        gap fill never sends a sender's own message before the sender's ack. Batches begun after
        the call do not hold it up, so it returns under any load.
        """
        target = self._begun_batches
        while self._finished_batches < target:
            await self._batch_finished.wait()

    async def enqueue(self, message: NewMessage, on_done: Completion) -> None:
        """Queue a message; waits while the queue is full, so a fast sender slows to the store's pace."""
        await self._queue.put((message, on_done))

    async def submit(self, message: NewMessage) -> tuple[AppendResult, str]:
        """Store one message and wait for it; return the result and its serialized form."""
        future: asyncio.Future[StoreOutcome] = asyncio.get_running_loop().create_future()

        def complete(outcome: StoreOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        await self.enqueue(message, complete)
        outcome = await future
        if outcome.error is not None:
            raise outcome.error
        if outcome.result is None or outcome.message_json is None:
            raise RuntimeError("the message writer completed a message without a result")
        return outcome.result, outcome.message_json

    async def _write_loop(self) -> None:
        # The batch being stored and the task storing it.
        in_flight: tuple[list[tuple[NewMessage, Completion]], asyncio.Task[StoreResults]] | None = None
        try:
            while True:
                try:
                    if in_flight is None:
                        first = await self._queue.get()
                        self._idle.clear()
                        batch = [first]
                        try:
                            await self._collect(batch)
                        except asyncio.CancelledError:
                            # Stopped while the batch waited for its turn, so nothing of it is stored.
                            self._complete_batch(batch, RuntimeError(STOPPED))
                            raise
                        in_flight = (batch, self._begin(batch))
                    batch, storing = in_flight
                    results = await storing
                    in_flight = None
                    try:
                        if not self._queue.empty() and time.monotonic() >= self._next_batch_at:
                            following: list[tuple[NewMessage, Completion]] = []
                            self._take_waiting(following)
                            in_flight = (following, self._begin(following))
                            # One pass of the event loop lets the new task hand its batch over.
                            await asyncio.sleep(0)
                    finally:
                        # Also when the writer is cancelled meanwhile: the batch is committed.
                        self._finish(batch, results)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # _append_with_retry reports every failure to the submitters; reaching here is
                    # a bug, and the writer must keep going for every other connection.
                    logger.exception("message writer failed on a batch; continuing")
                finally:
                    if in_flight is None and self._queue.empty():
                        self._idle.set()
        finally:
            if in_flight is not None:
                # Stopped before the batch's result came: it may or may not be stored, so its
                # senders get an error (a resend with the same client_msg_id is safe), and
                # settled() stops waiting for it.
                batch, storing = in_flight
                storing.cancel()
                self._finish(batch, RuntimeError(STOPPED))

    def _begin(self, batch: list[tuple[NewMessage, Completion]]) -> asyncio.Task[StoreResults]:
        """Start storing `batch` in a task of its own."""
        self._begun_batches += 1
        # A batch of one message means the writer keeps up, so the next batch need not wait.
        self._next_batch_at = time.monotonic() + self._batch_interval if len(batch) > 1 else 0.0
        return asyncio.create_task(self._append_with_retry([message for message, _ in batch]))

    def _take_waiting(self, batch: list[tuple[NewMessage, Completion]]) -> None:
        queue = self._queue
        while len(batch) < self._batch_max and not queue.empty():
            batch.append(queue.get_nowait())

    async def _collect(self, batch: list[tuple[NewMessage, Completion]]) -> None:
        queue = self._queue
        spacing = self._next_batch_at - time.monotonic()
        if spacing > 0:
            # Under load, so everything that arrives meanwhile joins this batch.
            await asyncio.sleep(spacing)
        self._take_waiting(batch)
        if len(batch) >= self._batch_max or self._batch_wait <= 0:
            return
        deadline = time.monotonic() + self._batch_wait
        while len(batch) < self._batch_max:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                return
            self._take_waiting(batch)

    def _finish(self, batch: list[tuple[NewMessage, Completion]], results: StoreResults) -> None:
        """Acknowledge, deliver and publish a stored batch, then wake the readers waiting on it."""
        try:
            self._complete_batch(batch, results)
        finally:
            self._finished_batches += 1
            finished, self._batch_finished = self._batch_finished, asyncio.Event()
            finished.set()

    def _complete_batch(self, batch: list[tuple[NewMessage, Completion]], results: StoreResults) -> None:
        if isinstance(results, Exception):
            for _, on_done in batch:
                _complete(on_done, StoreOutcome(None, None, results))
            return

        self.committed_batches += 1
        for (_, on_done), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                _complete(on_done, StoreOutcome(None, None, result))
                continue
            message_json = encode_json(message_to_wire(result.message))
            # Ack first, then deliver: on the sending connection the ack takes the place of the
            # message frame for this seq.
            _complete(on_done, StoreOutcome(result, message_json, None))
            if result.created:
                self.stored_messages += 1
                self._sink.message_stored(result.message, message_json)
        self._sink.batch_stored()

    async def _append_with_retry(self, messages: list[NewMessage]) -> StoreResults:
        """Store a batch, retrying transient database failures; isolate a message the database rejects."""
        delay = 0.02
        deadline = time.monotonic() + STORE_RETRY_SECONDS
        while True:
            try:
                return await self._db.append_messages(messages)
            except (OperationalError, InterfaceError, OSError) as error:
                # Lock contention, a restarting or unreachable database: the batch rolled back,
                # so storing it again is safe.
                if time.monotonic() + delay > deadline:
                    logger.error("storing a batch of %d messages failed for good: %s", len(messages), error)
                    return error
                logger.warning("storing a batch of %d messages failed (%s); retrying in %.2f s", len(messages), error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except DBAPIError as error:
                # The database rejected something in the data itself. Store the messages one at
                # a time, so only the message that causes it fails.
                if len(messages) == 1:
                    logger.error("the database rejected a message: %s", error)
                    return error
                logger.warning("the database rejected a batch of %d messages (%s); storing them one by one", len(messages), error)
                return [await self._append_alone(message) for message in messages]
            except Exception as error:
                logger.exception("storing a batch of %d messages failed", len(messages))
                return error

    async def _append_alone(self, message: NewMessage) -> AppendResult | PersistenceError | Exception:
        outcome = await self._append_with_retry([message])
        if isinstance(outcome, Exception):
            return outcome
        return outcome[0]


def _complete(on_done: Completion, outcome: StoreOutcome) -> None:
    try:
        on_done(outcome)
    except Exception:
        logger.exception("a message completion callback failed")
