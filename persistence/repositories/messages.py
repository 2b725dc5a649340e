"""Messages: append with per-conversation seq and idempotency, history, and search."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError

from persistence.errors import PersistenceError
from persistence.models import AppendResult, HistoryPage, Message, NewMessage
from persistence.repositories.append import MESSAGE_COLUMNS, BatchAppender, log_failures, message_from_row
from persistence.repositories.base import Repository, page_limit
from persistence.repositories.conversations import (
    load_access,
    visible_conversation,
    visible_conversation_ids,
)
from persistence.search import postgresql_search, split_words, sqlite_search
from persistence.tables import conversations, messages

logger = logging.getLogger(__name__)


# Up to this many messages in the searched conversations, SQLite search reads them all and tests
# the words on each. Above it, the FTS5 index leads the search.
SEARCH_SCAN_MAX_MESSAGES = 20_000




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
        appender = BatchAppender(self._dialect)
        opens_transaction = not self._uow.in_transaction
        connection = await self._write()
        try:
            if opens_transaction:
                results = await connection.run_sync(appender.append_together, batch)
            else:
                async with connection.begin_nested():
                    results = await connection.run_sync(appender.append_together, batch)
        except IntegrityError:
            logger.info("batch of %d messages hit a constraint; storing one by one", len(batch))
            if opens_transaction:
                await self._uow.rollback()
                connection = await self._write()
            results = await connection.run_sync(appender.append_one_by_one, batch)

        log_failures(batch, results)
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
