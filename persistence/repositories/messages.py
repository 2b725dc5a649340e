"""Messages: append with per-conversation seq and idempotency, history, and search."""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.columns import dump_metadata, load_metadata, sqlite_datetime, utc_now
from persistence.errors import InvalidError, NotFoundError, PersistenceError
from persistence.models import AppendResult, HistoryPage, Message, NewMessage
from persistence.repositories.base import Repository, page_limit
from persistence.repositories.conversations import (
    load_access,
    visible_conversation,
    visible_conversation_ids,
)
from persistence.search import postgresql_search, split_words, sqlite_search
from persistence.tables import conversations, messages, users

logger = logging.getLogger(__name__)

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

IdempotencyKey = tuple[uuid.UUID, str]

# Up to this many messages in the searched conversations, SQLite search reads them all and tests
# the words on each. Above it, the FTS5 index leads the search.
SEARCH_SCAN_MAX_MESSAGES = 20_000

SQLITE_INSERT = (
    "INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, "
    "metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
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


def _idempotency_key(message: NewMessage) -> IdempotencyKey | None:
    if message.client_msg_id is None:
        return None
    return (message.sender_id, message.client_msg_id)


class MessageRepository(Repository):
    async def append(self, message: NewMessage) -> AppendResult:
        """Store one message; raises the PersistenceError that `append_batch` would return."""
        (result,) = await self.append_batch([message])
        if isinstance(result, PersistenceError):
            raise result
        return result

    async def append_batch(
        self, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store a batch of messages in the unit of work's transaction.

        Returns one result per input, in input order. Each conversation's next seqs are taken
        from its `last_seq` counter in input order. The counter is raised once per batch and
        conversation inside the transaction, so seqs stay unique and gap-free under concurrent
        writers.

        A `client_msg_id` that the sender already used, earlier in the database or earlier in
        this batch, returns that first message with `created=False` and stores nothing. A
        message whose conversation does not exist gets NotFoundError, and the others are stored.
        The batch insert can break a constraint: a concurrent writer used the same
        `client_msg_id`, or the sender does not exist. Then it is undone and the batch is stored
        one message at a time under savepoints, so only the offending message fails.
        """
        if not batch:
            return []

        # When the batch opens the transaction, a failure can roll back the whole transaction
        # and lose nothing else, so the fast path needs no savepoint (two statements fewer).
        opens_transaction = not self._uow.in_transaction
        connection = await self._write()
        try:
            if opens_transaction:
                results = await self._append_together(connection, batch)
            else:
                async with connection.begin_nested():
                    results = await self._append_together(connection, batch)
        except IntegrityError:
            logger.info("batch of %d messages hit a constraint; storing one by one", len(batch))
            if opens_transaction:
                await self._uow.rollback()
                connection = await self._write()
            results = await self._append_one_by_one(connection, batch)

        self._log_failures(batch, results)
        return results

    async def history(
        self,
        actor_id: uuid.UUID,
        conversation_id: uuid.UUID,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """Read one page of a visible conversation, in ascending seq order.

        With `after_seq`, the messages just above it and `has_more` for newer ones. With
        `before_seq` (or neither), the messages just below it (or the latest) and `has_more`
        for older ones. Both together bound the page on both sides, read upwards.
        """
        limit = page_limit(limit)
        connection = await self._read()

        # The visibility check rides along in the same statement. Only an empty page needs a
        # second query, to tell an empty conversation from one the actor may not see.
        statement = select(*MESSAGE_COLUMNS).where(
            messages.c.conversation_id == conversation_id,
            exists(visible_conversation(actor_id, conversation_id)),
        )
        if after_seq is not None:
            statement = statement.where(messages.c.seq > after_seq)
        if before_seq is not None:
            statement = statement.where(messages.c.seq < before_seq)
        ascending = after_seq is not None
        order = messages.c.seq.asc() if ascending else messages.c.seq.desc()
        rows = (await connection.execute(statement.order_by(order).limit(limit + 1))).all()
        if not rows:
            await load_access(connection, actor_id, conversation_id)

        has_more = len(rows) > limit
        rows = rows[:limit]
        if not ascending:
            rows.reverse()
        return HistoryPage(items=[message_from_row(row) for row in rows], has_more=has_more)

    async def read_after(
        self, conversation_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[Message]:
        """Read up to `limit` (at most 200) messages above `after_seq`, ascending, with NO access check.

        For the gateway, which checks access once per subscription and then fills gaps with this.
        """
        limit = page_limit(limit)
        connection = await self._read()
        rows = await connection.execute(
            select(*MESSAGE_COLUMNS)
            .where(messages.c.conversation_id == conversation_id, messages.c.seq > after_seq)
            .order_by(messages.c.seq)
            .limit(limit)
        )
        return [message_from_row(row) for row in rows]

    async def search(
        self,
        actor_id: uuid.UUID,
        query: str,
        *,
        conversation_id: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[Message]:
        """Find messages whose content matches every word of `query`, newest stored first.

        Only conversations visible to `actor_id` are searched, and a `conversation_id` it cannot
        see raises NotFoundError. What a word matches is described in `persistence.search`.
        """
        limit = page_limit(limit)
        connection = await self._read()
        if conversation_id is not None:
            await load_access(connection, actor_id, conversation_id)

        words = split_words(query)
        if not words:
            return []

        if conversation_id is not None:
            in_scope = conversations.c.id == conversation_id
        else:
            in_scope = conversations.c.id.in_(visible_conversation_ids(actor_id))
        scope = messages.c.conversation_id.in_(select(conversations.c.id).where(in_scope))

        if self._dialect == "sqlite":
            # last_seq counts every message ever stored, so this bounds the scan from above.
            messages_in_scope = await connection.scalar(
                select(func.coalesce(func.sum(conversations.c.last_seq), 0)).where(in_scope)
            )
            statement = sqlite_search(
                MESSAGE_COLUMNS,
                words,
                scope,
                scan=messages_in_scope <= SEARCH_SCAN_MAX_MESSAGES,
                limit=limit,
            )
        else:
            statement = postgresql_search(MESSAGE_COLUMNS, words, scope, limit=limit)
        rows = await connection.execute(statement)
        return [message_from_row(row) for row in rows]

    # -- append internals ---------------------------------------------------------------------

    async def _append_together(
        self, connection: AsyncConnection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store the batch with one SELECT, the counter UPDATEs and one executemany."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        stored = await self._find_existing(connection, batch)

        # Sort out repeats first: what is left gets a seq.
        first_index: dict[IdempotencyKey, int] = {}
        repeats: dict[int, int] = {}
        fresh: list[int] = []
        for index, message in enumerate(batch):
            key = _idempotency_key(message)
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
        last_seqs = await self._reserve_seqs_for_batch(connection, counts, utc_now())
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

        await self._insert(connection, stored_messages, timestamp)
        return self._resolve_repeats(results, repeats)

    async def _append_one_by_one(
        self, connection: AsyncConnection, batch: Sequence[NewMessage]
    ) -> list[AppendResult | PersistenceError]:
        """Store each message under its own savepoint, so a failure undoes only that message."""
        results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
        first_index: dict[IdempotencyKey, int] = {}
        repeats: dict[int, int] = {}
        for index, message in enumerate(batch):
            key = _idempotency_key(message)
            if key is not None and key in first_index:
                repeats[index] = first_index[key]
                continue
            if key is not None:
                first_index[key] = index
            results[index] = await self._append_alone(connection, message)
        return self._resolve_repeats(results, repeats)

    async def _append_alone(
        self, connection: AsyncConnection, message: NewMessage
    ) -> AppendResult | PersistenceError:
        key = _idempotency_key(message)
        try:
            async with connection.begin_nested():
                if key is not None:
                    stored = await self._find_existing(connection, [message])
                    if key in stored:
                        return AppendResult.model_construct(message=stored[key], created=False)

                now = utc_now()
                last_seq = await self._reserve_seqs(connection, message.conversation_id, 1, now)
                if last_seq is None:
                    return NotFoundError(f"conversation {message.conversation_id} not found")
                stored_message = self._new_message(message, last_seq, utc_now())
                await self._insert(connection, [stored_message], now)
                return AppendResult.model_construct(message=stored_message, created=True)
        except IntegrityError as exc:
            return await self._explain_integrity_error(connection, message, exc)

    async def _explain_integrity_error(
        self, connection: AsyncConnection, message: NewMessage, exc: IntegrityError
    ) -> AppendResult | PersistenceError:
        """Turn a failed insert into its result; the savepoint has undone the seq already."""
        key = _idempotency_key(message)
        if key is not None:
            # A concurrent writer stored the same client_msg_id and committed first.
            stored = await self._find_existing(connection, [message])
            if key in stored:
                return AppendResult.model_construct(message=stored[key], created=False)
        sender = await connection.scalar(select(users.c.id).where(users.c.id == message.sender_id))
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

    async def _reserve_seqs_for_batch(
        self, connection: AsyncConnection, counts: Counter[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, int]:
        """Raise each conversation's counter by its count; returns the new values of those found.

        SQLite locks the whole database for the write, so one UPDATE covers every conversation.
        PostgreSQL locks rows, so there it is one UPDATE per conversation, in the order of
        their ids, so that two batches locking the same conversations cannot deadlock.
        """
        if not counts:
            return {}
        if self._dialect == "sqlite":
            increment = case(
                {conversation_id: count for conversation_id, count in counts.items()},
                value=conversations.c.id,
            )
            rows = await connection.execute(
                update(conversations)
                .where(conversations.c.id.in_(list(counts)))
                .values(last_seq=conversations.c.last_seq + increment, updated_at=now)
                .returning(conversations.c.id, conversations.c.last_seq)
            )
            return {row.id: row.last_seq for row in rows}

        last_seqs = {}
        for conversation_id in sorted(counts, key=lambda value: value.bytes):
            last_seq = await self._reserve_seqs(connection, conversation_id, counts[conversation_id], now)
            if last_seq is not None:
                last_seqs[conversation_id] = last_seq
        return last_seqs

    async def _reserve_seqs(
        self, connection: AsyncConnection, conversation_id: uuid.UUID, count: int, now: datetime
    ) -> int | None:
        """Raise the conversation's counter by `count` and return the new value (None if gone)."""
        return await connection.scalar(
            update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(last_seq=conversations.c.last_seq + count, updated_at=now)
            .returning(conversations.c.last_seq)
        )

    async def _find_existing(
        self, connection: AsyncConnection, batch: Sequence[NewMessage]
    ) -> dict[IdempotencyKey, Message]:
        """Look up stored messages with the same (sender_id, client_msg_id) as the batch's."""
        keys = {key for key in map(_idempotency_key, batch) if key is not None}
        if not keys:
            return {}

        by_sender: dict[uuid.UUID, list[str]] = defaultdict(list)
        for sender_id, client_msg_id in sorted(keys):
            by_sender[sender_id].append(client_msg_id)
        # One term per sender, so the unique (sender_id, client_msg_id) index is probed once per
        # key. A row-value IN would scan that index on SQLite, and two flat IN lists would probe
        # every sender with every client_msg_id.
        rows = await connection.execute(
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

    async def _insert(
        self, connection: AsyncConnection, stored: list[Message], now: datetime
    ) -> None:
        """Insert messages with one executemany."""
        if not stored:
            return
        if self._dialect == "sqlite":
            # The hot path: parameters in the column types' SQLite storage forms, passed to the
            # driver directly, skip SQLAlchemy's per-value processing (about a tenth of the
            # time of a 100-message batch, measured with bench/storage.py).
            updated_at = sqlite_datetime(now)
            await connection.exec_driver_sql(
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
        await connection.execute(insert(messages), [self._row(message, now) for message in stored])

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
    def _log_failures(
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
