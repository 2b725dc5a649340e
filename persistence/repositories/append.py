"""Appending messages: the seq counters, idempotency and the batch insert, as synchronous steps.

The steps take a synchronous SQLAlchemy `Connection`, so one implementation serves two callers:
the async repository runs them through `AsyncConnection.run_sync`, and the SQLite batch writer
runs them on a plain sqlite3 connection in its own thread, one thread hop per batch instead of
several per statement.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, case, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from persistence.columns import dump_metadata, load_metadata, sqlite_datetime, utc_now
from persistence.errors import InvalidError, NotFoundError, PersistenceError
from persistence.models import AppendResult, Message, NewMessage
from persistence.tables import conversations, messages, users

logger = logging.getLogger(__name__)

IdempotencyKey = tuple[uuid.UUID, str]

SQLITE_INSERT = (
    "INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, "
    "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def idempotency_key(message: NewMessage) -> IdempotencyKey | None:
    if message.client_msg_id is None:
        return None
    return (message.sender_id, message.client_msg_id)


# The columns a Message is built from, in one place so every read selects the same ones.
MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.sender_id,
    messages.c.content,
    messages.c.created_at,
    messages.c.seq,
    messages.c.client_msg_id,
    messages.c.metadata,
)
def message_from_row(row: Row[Any]) -> Message:
    return Message.model_construct(
        id=row.id,
        conversation_id=row.conversation_id,
        sender_id=row.sender_id,
        content=row.content,
        timestamp=row.created_at,
        seq=row.seq,
        client_msg_id=row.client_msg_id,
        metadata=load_metadata(row.metadata, "messages", row.id),
    )


class BatchAppender:
    """The steps of `MessageRepository.append_batch` for one dialect."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def append_together(
        self, connection: Connection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store the batch with one SELECT, the counter UPDATEs and one executemany."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        stored = self._find_existing(connection, batch)

        # Sort out repeats first: what is left gets a seq.
        first_index: dict[IdempotencyKey, int] = {}
        repeats: dict[int, int] = {}
        fresh: list[int] = []
        for index, message in enumerate(batch):
            key = idempotency_key(message)
            if key is not None and key in stored:
                results[index] = AppendResult.model_construct(message=stored[key], created=False)
            elif key is not None and key in first_index:
                repeats[index] = first_index[key]
            else:
                if key is not None:
                    first_index[key] = index
                fresh.append(index)

        # Reserve seqs: each conversation's counter rises by its number of new messages.
        counts = Counter(batch[index].conversation_id for index in fresh)
        last_seqs = self._reserve_seqs_for_batch(connection, counts, utc_now())
        next_seq = {
            conversation_id: last_seq - counts[conversation_id] + 1
            for conversation_id, last_seq in last_seqs.items()
        }

        # Taken after the counters are locked, so timestamps follow seq order across writers.
        timestamp = utc_now()
        stored_messages: list[Message] = []
        for index in fresh:
            message = batch[index]
            seq = next_seq.get(message.conversation_id)
            if seq is None:
                results[index] = NotFoundError(f"conversation {message.conversation_id} not found")
                continue
            next_seq[message.conversation_id] = seq + 1
            stored_message = self._new_message(message, seq, timestamp)
            stored_messages.append(stored_message)
            results[index] = AppendResult.model_construct(message=stored_message, created=True)

        self._insert(connection, stored_messages, timestamp)
        return self._resolve_repeats(results, repeats)

    def append_one_by_one(
        self, connection: Connection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store each message under its own savepoint, so a failure undoes only that message."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        first_index: dict[IdempotencyKey, int] = {}
        repeats: dict[int, int] = {}
        for index, message in enumerate(batch):
            key = idempotency_key(message)
            if key is not None and key in first_index:
                repeats[index] = first_index[key]
                continue
            if key is not None:
                first_index[key] = index
            results[index] = self._append_alone(connection, message)
        return self._resolve_repeats(results, repeats)

    def _append_alone(
        self, connection: Connection, message: NewMessage
    ) -> AppendResult | PersistenceError:
        key = idempotency_key(message)
        try:
            with connection.begin_nested():
                if key is not None:
                    stored = self._find_existing(connection, [message])
                    if key in stored:
                        return AppendResult.model_construct(message=stored[key], created=False)

                now = utc_now()
                last_seq = self._reserve_seqs(connection, message.conversation_id, 1, now)
                if last_seq is None:
                    return NotFoundError(f"conversation {message.conversation_id} not found")
                stored_message = self._new_message(message, last_seq, utc_now())
                self._insert(connection, [stored_message], now)
                return AppendResult.model_construct(message=stored_message, created=True)
        except IntegrityError as exc:
            return self._explain_integrity_error(connection, message, exc)

    def _explain_integrity_error(
        self, connection: Connection, message: NewMessage, exc: IntegrityError
    ) -> AppendResult | PersistenceError:
        """Turn a failed insert into its result; the savepoint has undone the seq already."""
        key = idempotency_key(message)
        if key is not None:
            # A concurrent writer stored the same client_msg_id and committed first.
            stored = self._find_existing(connection, [message])
            if key in stored:
                return AppendResult.model_construct(message=stored[key], created=False)
        sender = connection.scalar(select(users.c.id).where(users.c.id == message.sender_id))
        if sender is None:
            error: PersistenceError = InvalidError(f"sender {message.sender_id} is not a user")
        else:
            error = PersistenceError(
                f"message for conversation {message.conversation_id} broke a database constraint"
            )
            logger.warning(
                "append to conversation %s failed: %s", message.conversation_id, exc.orig
            )
        error.__cause__ = exc
        return error

    def _reserve_seqs_for_batch(
        self, connection: Connection, counts: Counter[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, int]:
        """Raise each conversation's counter by its count; returns the new values of those found.

        SQLite locks the whole database for the write, so one UPDATE covers every conversation.
        PostgreSQL locks rows, so there it is one UPDATE per conversation, in the order of
        their ids, so that two batches locking the same conversations cannot deadlock.
        """
        if not counts:
            return {}
        if self.dialect == "sqlite":
            increment = case(
                {conversation_id: count for conversation_id, count in counts.items()},
                value=conversations.c.id,
            )
            rows = connection.execute(
                update(conversations)
                .where(conversations.c.id.in_(list(counts)))
                .values(last_seq=conversations.c.last_seq + increment, updated_at=now)
                .returning(conversations.c.id, conversations.c.last_seq)
            )
            return {row.id: row.last_seq for row in rows}

        last_seqs = {}
        for conversation_id in sorted(counts, key=lambda value: value.bytes):
            last_seq = self._reserve_seqs(connection, conversation_id, counts[conversation_id], now)
            if last_seq is not None:
                last_seqs[conversation_id] = last_seq
        return last_seqs

    def _reserve_seqs(
        self, connection: Connection, conversation_id: uuid.UUID, count: int, now: datetime
    ) -> int | None:
        """Raise the conversation's counter by `count` and return the new value (None if gone)."""
        return connection.scalar(
            update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(last_seq=conversations.c.last_seq + count, updated_at=now)
            .returning(conversations.c.last_seq)
        )

    def _find_existing(
        self, connection: Connection, batch: Sequence[NewMessage]
    ) -> dict[IdempotencyKey, Message]:
        """Look up stored messages with the same (sender_id, client_msg_id) as the batch's."""
        keys = {key for key in map(idempotency_key, batch) if key is not None}
        if not keys:
            return {}

        by_sender: dict[uuid.UUID, list[str]] = defaultdict(list)
        for sender_id, client_msg_id in sorted(keys):
            by_sender[sender_id].append(client_msg_id)
        # One term per sender, so the unique (sender_id, client_msg_id) index is probed once per
        # key. A row-value IN would scan that index on SQLite, and two flat IN lists would probe
        # every sender with every client_msg_id.
        rows = connection.execute(
            select(*MESSAGE_COLUMNS).where(
                messages.c.client_msg_id.is_not(None),
                or_(
                    *(
                        and_(
                            messages.c.sender_id == sender_id,
                            messages.c.client_msg_id.in_(client_msg_ids),
                        )
                        for sender_id, client_msg_ids in by_sender.items()
                    )
                ),
            )
        )

        found = {}
        for row in rows:
            key = (row.sender_id, row.client_msg_id)
            if key in keys:
                found[key] = message_from_row(row)
        return found

    @staticmethod
    def _new_message(message: NewMessage, seq: int, timestamp: datetime) -> Message:
        # NewMessage has validated every field; the rest is assigned here.
        return Message.model_construct(
            id=uuid.uuid4(),
            conversation_id=message.conversation_id,
            sender_id=message.sender_id,
            content=message.content,
            timestamp=timestamp,
            seq=seq,
            client_msg_id=message.client_msg_id,
            metadata=message.metadata,
        )

    def _insert(
        self, connection: Connection, stored: list[Message], now: datetime
    ) -> None:
        """Insert messages with one executemany."""
        if not stored:
            return
        if self.dialect == "sqlite":
            # The hot path: parameters in the column types' SQLite storage forms, passed to the
            # driver directly, skip SQLAlchemy's per-value processing (about a tenth of the
            # time of a 100-message batch, measured with bench/storage.py).
            updated_at = sqlite_datetime(now)
            connection.exec_driver_sql(
                SQLITE_INSERT,
                [
                    (
                        message.id.hex,
                        message.conversation_id.hex,
                        message.sender_id.hex,
                        message.seq,
                        message.content,
                        message.client_msg_id,
                        dump_metadata(message.metadata),
                        sqlite_datetime(message.timestamp),
                        updated_at,
                    )
                    for message in stored
                ],
            )
            return
        connection.execute(insert(messages), [self._row(message, now) for message in stored])

    @staticmethod
    def _row(message: Message, now: datetime) -> dict[str, Any]:
        return {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "sender_id": message.sender_id,
            "seq": message.seq,
            "content": message.content,
            "client_msg_id": message.client_msg_id,
            "metadata": message.metadata,
            "created_at": message.timestamp,
            "updated_at": now,
        }


    @staticmethod
    def _resolve_repeats(
        results: list[AppendResult | PersistenceError | None], repeats: dict[int, int]
    ) -> list[AppendResult | PersistenceError]:
        """Give each in-batch repeat of a client_msg_id the outcome of its first occurrence."""
        for index, first in repeats.items():
            outcome = results[first]
            if isinstance(outcome, AppendResult):
                results[index] = AppendResult.model_construct(message=outcome.message, created=False)
            else:
                results[index] = outcome
        if any(result is None for result in results):
            raise RuntimeError("append_batch left a message without a result")
        return [result for result in results if result is not None]


def log_failures(
    batch: Sequence[NewMessage], results: list[AppendResult | PersistenceError]
) -> None:
    """Log each message of the batch that was not stored, with its ids and the reason."""
    for message, result in zip(batch, results, strict=True):
        if isinstance(result, PersistenceError):
            logger.info(
                "message from sender %s to conversation %s not stored: %s",
                message.sender_id,
                message.conversation_id,
                result.detail,
            )
