"""Appending a message batch on PostgreSQL in one statement, for the message writer process.

`BatchAppender` with `CoreSteps` stores a batch in five round trips (BEGIN, the idempotency
lookup, the seq counters, the insert, COMMIT), and the conversations stay locked from the
counter update until the commit. Here one prepared statement does the lookup, the counters and
the insert, and it commits on its own, so a batch costs one round trip and holds its locks only
while that statement runs.

The rules are those of `BatchAppender.together`. Repeats of a client_msg_id inside the batch are
sorted out in Python, and the statement gets each key once. A message whose key is stored
already returns the stored message. A message to a conversation that does not exist fails with
NotFoundError. The others get consecutive seqs per conversation in batch order. A statement that
fails (a sender that is not a user, a key that another writer stored meanwhile) raises asyncpg's
error, and the caller stores the batch through `BatchAppender.one_by_one` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from persistence.columns import dump_metadata, load_metadata
from persistence.errors import NotFoundError, PersistenceError
from persistence.ids import new_message_id
from persistence.models import AppendResult, Message, NewMessage
from persistence.repositories.append import first_occurrences, resolve_repeats, stored_message

# The conversations are locked in id order (the MATERIALIZED CTE sorts them before it locks), so
# two writers cannot deadlock on them. `stamp` reads the clock after it has counted every raised counter,
# so timestamps follow seq order across writers. Each result row is one input message, found by
# `ord` (counted from 1). A message to a missing conversation has no row. The LATERAL subquery
# looks up each input key in the index on its own (its LIMIT keeps PostgreSQL from turning it into
# a join). As a join, a plan made while the table was nearly empty read the whole client_msg_id
# index for every batch once the table had grown.
APPEND_STATEMENT = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])
        WITH ORDINALITY AS i(id, conversation_id, sender_id, content, client_msg_id, metadata, ord)
),
existing AS (
    SELECT i.ord, m.*
    FROM input AS i
    CROSS JOIN LATERAL (
        SELECT id, conversation_id, sender_id, content, created_at, seq, client_msg_id, metadata::text AS metadata
        FROM messages
        WHERE sender_id = i.sender_id AND client_msg_id = i.client_msg_id
        LIMIT 1
    ) AS m
),
fresh AS (
    SELECT * FROM input WHERE ord NOT IN (SELECT ord FROM existing)
),
counts AS (
    SELECT conversation_id, count(*) AS n FROM fresh GROUP BY conversation_id
),
locked AS MATERIALIZED (
    SELECT c.id FROM conversations AS c
    WHERE c.id IN (SELECT conversation_id FROM counts)
    ORDER BY c.id FOR NO KEY UPDATE
),
raised AS (
    UPDATE conversations AS c SET last_seq = c.last_seq + counts.n, updated_at = clock_timestamp()
    FROM counts
    WHERE c.id = counts.conversation_id AND c.id IN (SELECT id FROM locked)
    RETURNING c.id, c.last_seq - counts.n AS first_seq
),
stamp AS MATERIALIZED (
    SELECT clock_timestamp() AS at FROM (SELECT count(*) FROM raised) AS all_raised
),
numbered AS (
    SELECT f.*, r.first_seq + row_number() OVER (PARTITION BY f.conversation_id ORDER BY f.ord) AS seq
    FROM fresh AS f JOIN raised AS r ON r.id = f.conversation_id
),
inserted AS (
    INSERT INTO messages (id, conversation_id, sender_id, seq, content, client_msg_id, metadata, created_at, updated_at)
    SELECT n.id, n.conversation_id, n.sender_id, n.seq, n.content, n.client_msg_id, n.metadata::jsonb, s.at, s.at
    FROM numbered AS n CROSS JOIN stamp AS s
    RETURNING id, seq, created_at
)
SELECT 'new' AS kind, n.ord, n.id, NULL::uuid AS conversation_id, NULL::uuid AS sender_id,
       NULL::text AS content, ins.created_at, ins.seq, NULL::text AS client_msg_id, NULL::text AS metadata
FROM inserted AS ins JOIN numbered AS n ON n.id = ins.id
UNION ALL
SELECT 'old', e.ord, e.id, e.conversation_id, e.sender_id, e.content, e.created_at, e.seq, e.client_msg_id, e.metadata
FROM existing AS e
"""


async def append_in_one_statement(statement: Any, batch: Sequence[NewMessage]) -> list[AppendResult | PersistenceError]:
    """Store the batch with `statement`, APPEND_STATEMENT prepared on an asyncpg connection.

    The connection must not be in a transaction, so the statement commits on its own.
    """
    unique, repeats = first_occurrences(batch)
    messages = [batch[index] for index in unique]
    ids = [new_message_id() for _ in messages]
    rows = await statement.fetch(
        ids,
        [message.conversation_id for message in messages],
        [message.sender_id for message in messages],
        [message.content for message in messages],
        [message.client_msg_id for message in messages],
        [dump_metadata(message.metadata) for message in messages],
    )
    by_ord = {row["ord"]: row for row in rows}

    results: list[AppendResult | PersistenceError | None] = [None] * len(batch)
    for position, index in enumerate(unique):
        message = batch[index]
        row = by_ord.get(position + 1)
        if row is None:
            results[index] = NotFoundError(f"conversation {message.conversation_id} not found")
        elif row["kind"] == "new":
            stored = stored_message(message, row["seq"], row["created_at"], row["id"])
            results[index] = AppendResult.model_construct(message=stored, created=True)
        else:
            stored = Message.model_construct(
                id=row["id"],
                conversation_id=row["conversation_id"],
                sender_id=row["sender_id"],
                content=row["content"],
                timestamp=row["created_at"],
                seq=row["seq"],
                client_msg_id=row["client_msg_id"],
                metadata=load_metadata(row["metadata"], "messages", row["id"]),
            )
            results[index] = AppendResult.model_construct(message=stored, created=False)
    return resolve_repeats(results, repeats)
