"""Appending messages: the seq counters, idempotency and the batch insert, as synchronous steps.

`BatchAppender` decides the order of the steps, and two implementations of `AppendSteps` run the
statements. `CoreSteps` builds them with SQLAlchemy Core on a synchronous `Connection`, which
the async repository reaches through `AsyncConnection.run_sync`. It serves PostgreSQL.
`SqliteSteps` runs fixed SQL text on a DB-API cursor, because SQLite executes a whole batch in
well under a millisecond and SQLAlchemy's work per statement (building, caching, result
processing) was most of the cost of a batch. The SQLite writer process calls `SqliteSteps` on a
plain sqlite3 connection, and the repository calls it on the connection of its transaction.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ARRAY, BigInteger, Integer, Row, Uuid, bindparam, insert, select, text, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from persistence.columns import UtcDateTime, dump_metadata, load_metadata, sqlite_datetime, utc_now
from persistence.errors import InvalidError, NotFoundError, PersistenceError
from persistence.ids import new_message_id
from persistence.models import AppendResult, Message, NewMessage
from persistence.tables import messages, users

logger = logging.getLogger(__name__)

IdempotencyKey = tuple[uuid.UUID, str]


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


def first_occurrences(batch: Sequence[NewMessage]) -> tuple[list[int], dict[int, int]]:
    """Return the indexes that reach the database, and each in-batch repeat's first index."""
    first_index: dict[IdempotencyKey, int] = {}
    repeats: dict[int, int] = {}
    unique: list[int] = []
    for index, message in enumerate(batch):
        key = idempotency_key(message)
        if key is not None and key in first_index:
            repeats[index] = first_index[key]
            continue
        if key is not None:
            first_index[key] = index
        unique.append(index)
    return unique, repeats


class AppendSteps(Protocol):
    """The statements of an append, for one kind of connection."""

    def find_existing(self, keys: set[IdempotencyKey]) -> dict[IdempotencyKey, Message]:
        """Return the stored messages that have these (sender_id, client_msg_id) keys."""
        ...

    def reserve_seqs(self, counts: Counter[uuid.UUID], now: datetime) -> dict[uuid.UUID, int]:
        """Raise each conversation's counter by its count; return the new values of those found."""
        ...

    def insert(self, stored: list[Message], now: datetime) -> None: ...

    def sender_exists(self, sender_id: uuid.UUID) -> bool: ...

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """Open a savepoint, release it when the block succeeds and roll back to it when it raises."""
        ...


class BatchAppender:
    """The steps of `MessageRepository.append_batch`, in order, on top of `AppendSteps`."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def steps(self, connection: Connection) -> AppendSteps:
        if self.dialect == "sqlite":
            return SqliteSteps(connection.connection.dbapi_connection.cursor())  # type: ignore[union-attr]
        return CoreSteps(connection)

    # Entry points for `AsyncConnection.run_sync`.

    def append_together(
        self, connection: Connection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        with translate_sqlite_errors():
            return self.together(self.steps(connection), batch)

    def append_one_by_one(
        self, connection: Connection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        with translate_sqlite_errors():
            return self.one_by_one(self.steps(connection), batch)

    # The steps.

    def together(
        self, steps: AppendSteps, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store the batch with one idempotency lookup, the counter updates and one executemany."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        keys = {key for key in map(idempotency_key, batch) if key is not None}
        stored = steps.find_existing(keys) if keys else {}

        # Sort out repeats first: what is left gets a seq.
        unique, repeats = first_occurrences(batch)
        fresh: list[int] = []
        for index in unique:
            key = idempotency_key(batch[index])
            if key is not None and key in stored:
                results[index] = AppendResult.model_construct(message=stored[key], created=False)
            else:
                fresh.append(index)

        # Reserve seqs: each conversation's counter rises by its number of new messages.
        counts = Counter(batch[index].conversation_id for index in fresh)
        last_seqs = steps.reserve_seqs(counts, utc_now()) if counts else {}
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
            appended = stored_message(message, seq, timestamp)
            stored_messages.append(appended)
            results[index] = AppendResult.model_construct(message=appended, created=True)

        if stored_messages:
            steps.insert(stored_messages, timestamp)
        return resolve_repeats(results, repeats)

    def one_by_one(
        self, steps: AppendSteps, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store each message under its own savepoint, so a failure undoes only that message."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        unique, repeats = first_occurrences(batch)
        for index in unique:
            results[index] = self._append_alone(steps, batch[index])
        return resolve_repeats(results, repeats)

    def _append_alone(self, steps: AppendSteps, message: NewMessage) -> AppendResult | PersistenceError:
        key = idempotency_key(message)
        try:
            with steps.savepoint():
                if key is not None:
                    stored = steps.find_existing({key})
                    if key in stored:
                        return AppendResult.model_construct(message=stored[key], created=False)

                now = utc_now()
                last_seq = steps.reserve_seqs(Counter({message.conversation_id: 1}), now).get(
                    message.conversation_id
                )
                if last_seq is None:
                    return NotFoundError(f"conversation {message.conversation_id} not found")
                appended = stored_message(message, last_seq, utc_now())
                steps.insert([appended], now)
                return AppendResult.model_construct(message=appended, created=True)
        except (IntegrityError, sqlite3.IntegrityError) as exc:
            return self._explain_integrity_error(steps, message, exc)

    @staticmethod
    def _explain_integrity_error(
        steps: AppendSteps, message: NewMessage, exc: Exception
    ) -> AppendResult | PersistenceError:
        """Turn a failed insert into its result; the savepoint has undone the seq already."""
        key = idempotency_key(message)
        if key is not None:
            # A concurrent writer stored the same client_msg_id and committed first.
            stored = steps.find_existing({key})
            if key in stored:
                return AppendResult.model_construct(message=stored[key], created=False)
        if not steps.sender_exists(message.sender_id):
            error: PersistenceError = InvalidError(f"sender {message.sender_id} is not a user")
        else:
            error = PersistenceError(
                f"message for conversation {message.conversation_id} broke a database constraint"
            )
            logger.warning(
                "append to conversation %s failed: %s",
                message.conversation_id,
                getattr(exc, "orig", exc),
            )
        error.__cause__ = exc
        return error


# PostgreSQL locks rows, so two batches that lock the same conversations in different orders
# could deadlock. The MATERIALIZED CTE locks the batch's conversations in id order (the rows are
# sorted before they are locked) before the UPDATE raises every counter in one statement.
_POSTGRESQL_RESERVE = (
    text(
        "WITH batch AS (SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:counts AS integer[])) AS b(id, count)), "
        "locked AS MATERIALIZED (SELECT c.id FROM conversations AS c "
        "WHERE c.id IN (SELECT id FROM batch) ORDER BY c.id FOR UPDATE) "
        "UPDATE conversations AS c SET last_seq = c.last_seq + batch.count, updated_at = :now "
        "FROM batch WHERE c.id = batch.id AND c.id IN (SELECT id FROM locked) "
        "RETURNING c.id, c.last_seq"
    )
    .bindparams(
        bindparam("ids", type_=ARRAY(Uuid())),
        bindparam("counts", type_=ARRAY(Integer())),
        bindparam("now", type_=UtcDateTime()),
    )
    .columns(id=Uuid(), last_seq=BigInteger())
)


class CoreSteps:
    """The append statements as SQLAlchemy Core, for PostgreSQL.

    Every statement has one shape whatever the batch contains (lists are bound as expanding or
    array parameters), so SQLAlchemy compiles each once and serves it from its cache afterwards.
    """

    _find = select(*MESSAGE_COLUMNS).where(
        tuple_(messages.c.sender_id, messages.c.client_msg_id).in_(bindparam("keys", expanding=True))
    )
    _sender = select(users.c.id).where(users.c.id == bindparam("sender_id"))

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def find_existing(self, keys: set[IdempotencyKey]) -> dict[IdempotencyKey, Message]:
        rows = self._connection.execute(self._find, {"keys": sorted(keys)})
        found = {}
        for row in rows:
            key = (row.sender_id, row.client_msg_id)
            if key in keys:
                found[key] = message_from_row(row)
        return found

    def reserve_seqs(self, counts: Counter[uuid.UUID], now: datetime) -> dict[uuid.UUID, int]:
        ids = list(counts)
        rows = self._connection.execute(
            _POSTGRESQL_RESERVE, {"ids": ids, "counts": [counts[conversation_id] for conversation_id in ids], "now": now}
        )
        return {row.id: row.last_seq for row in rows}

    def insert(self, stored: list[Message], now: datetime) -> None:
        self._connection.execute(insert(messages), [_row(message, now) for message in stored])

    def sender_exists(self, sender_id: uuid.UUID) -> bool:
        return self._connection.scalar(self._sender, {"sender_id": sender_id}) is not None

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        with self._connection.begin_nested():
            yield


# SQLite forms of the columns: ids as 32 hex digits, timestamps as `sqlite_datetime` text and
# metadata as JSON text, the same storage forms the SQLAlchemy column types produce.
_SQLITE_FIND = (
    "SELECT id, conversation_id, sender_id, content, created_at, seq, client_msg_id, metadata "
    "FROM messages WHERE sender_id = ? AND client_msg_id = ?"
)
_SQLITE_RESERVE = "UPDATE conversations SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? RETURNING last_seq"
_SQLITE_INSERT = (
    "INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, "
    "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SENDER = "SELECT 1 FROM users WHERE id = ?"


class SqliteSteps:
    """The append statements as fixed SQL text on a DB-API cursor of a SQLite connection.

    SQLite takes the write lock for the whole database, so the counter updates need no ordering.
    Each statement has one text, so sqlite3 prepares it once per connection and reuses it.
    """

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def find_existing(self, keys: set[IdempotencyKey]) -> dict[IdempotencyKey, Message]:
        # One probe of the unique (sender_id, client_msg_id) index per key. A statement with a
        # different number of terms per batch would be prepared again every time.
        cursor = self._cursor
        found = {}
        for sender_id, client_msg_id in keys:
            cursor.execute(_SQLITE_FIND, (sender_id.hex, client_msg_id))
            row = cursor.fetchone()
            if row is not None:
                found[(sender_id, client_msg_id)] = _message_from_sqlite(row)
        return found

    def reserve_seqs(self, counts: Counter[uuid.UUID], now: datetime) -> dict[uuid.UUID, int]:
        cursor = self._cursor
        updated_at = sqlite_datetime(now)
        last_seqs = {}
        for conversation_id, count in counts.items():
            cursor.execute(_SQLITE_RESERVE, (count, updated_at, conversation_id.hex))
            row = cursor.fetchone()
            if row is not None:
                last_seqs[conversation_id] = row[0]
        return last_seqs

    def insert(self, stored: list[Message], now: datetime) -> None:
        updated_at = sqlite_datetime(now)
        self._cursor.executemany(
            _SQLITE_INSERT,
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

    def sender_exists(self, sender_id: uuid.UUID) -> bool:
        self._cursor.execute(_SQLITE_SENDER, (sender_id.hex,))
        return self._cursor.fetchone() is not None

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        cursor = self._cursor
        cursor.execute("SAVEPOINT append_one")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO append_one")
            cursor.execute("RELEASE append_one")
            raise
        cursor.execute("RELEASE append_one")


@contextlib.contextmanager
def translate_sqlite_errors() -> Iterator[None]:
    """Raise sqlite3's errors as SQLAlchemy's, as if the statements had gone through SQLAlchemy.

    Callers tell a transient failure (OperationalError: the file is locked or unreachable) from
    one caused by the data (IntegrityError and other DBAPIErrors) by SQLAlchemy's classes.
    """
    try:
        yield
    except sqlite3.Error as error:
        raise DBAPIError.instance(None, None, error, sqlite3.Error) from error


def _message_from_sqlite(row: tuple[Any, ...]) -> Message:
    message_id, conversation_id, sender_id, content, created_at, seq, client_msg_id, metadata = row
    return Message.model_construct(
        id=uuid.UUID(message_id),
        conversation_id=uuid.UUID(conversation_id),
        sender_id=uuid.UUID(sender_id),
        content=content,
        timestamp=datetime.fromisoformat(created_at).replace(tzinfo=UTC),
        seq=seq,
        client_msg_id=client_msg_id,
        metadata=load_metadata(metadata, "messages", message_id),
    )


def stored_message(
    message: NewMessage, seq: int, timestamp: datetime, message_id: uuid.UUID | None = None
) -> Message:
    """Build the stored form of `message`; a new id is drawn unless `message_id` is given."""
    # NewMessage has validated every field; the rest is assigned here.
    return Message.model_construct(
        id=message_id or new_message_id(),
        conversation_id=message.conversation_id,
        sender_id=message.sender_id,
        content=message.content,
        timestamp=timestamp,
        seq=seq,
        client_msg_id=message.client_msg_id,
        metadata=message.metadata,
    )


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


def resolve_repeats(
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
