"""Message append (seq, idempotency, batches) and history reads."""

from __future__ import annotations

import re
import uuid

import pytest

from persistence.errors import InvalidError, NotFoundError
from persistence.models import AppendResult, NewMessage


def new(world, content="hello", *, sender=None, client_msg_id=None, conversation_id=None):
    return NewMessage(
        conversation_id=conversation_id or world.conversation.id,
        sender_id=(sender or world.member).user_id,
        content=content,
        client_msg_id=client_msg_id,
    )


async def append_many(db, world, count: int) -> list[AppendResult]:
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch([new(world, f"message {n}") for n in range(count)])
    assert all(isinstance(result, AppendResult) for result in results)
    return results


async def test_append_assigns_seq_and_timestamp(db, world):
    """Seqs start at 1 and count up; the stored message reads back the same."""
    async with db.unit_of_work() as uow:
        first = await uow.messages.append(new(world, "one", client_msg_id="c-1"))
        second = await uow.messages.append(new(world, "two"))

    assert (first.message.seq, second.message.seq) == (1, 2)
    assert first.created and second.created
    assert first.message.timestamp.tzinfo is not None
    assert first.message.client_msg_id == "c-1"
    assert second.message.client_msg_id is None

    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
        conversation = await uow.conversations.get(world.member.user_id, world.conversation.id)
    assert page.items == [first.message, second.message]
    assert conversation.last_seq == 2


async def test_append_timestamp_has_microseconds_and_sorts(db, world):
    results = await append_many(db, world, 3)
    timestamps = [result.message.timestamp for result in results]
    assert timestamps == sorted(timestamps)

    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
    assert [message.timestamp for message in page.items] == timestamps


async def test_append_repeated_client_msg_id_returns_first(db, world):
    """The same client_msg_id from the same sender stores nothing new."""
    async with db.unit_of_work() as uow:
        first = await uow.messages.append(new(world, "hello", client_msg_id="abc"))
    async with db.unit_of_work() as uow:
        again = await uow.messages.append(new(world, "different text", client_msg_id="abc"))

    assert again.created is False
    assert again.message == first.message

    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
    assert len(page.items) == 1


async def test_append_same_client_msg_id_other_sender_is_new(db, world):
    """Idempotency keys belong to one sender."""
    async with db.unit_of_work() as uow:
        first = await uow.messages.append(new(world, "a", client_msg_id="same"))
        other = await uow.messages.append(new(world, "b", sender=world.owner, client_msg_id="same"))

    assert other.created is True
    assert other.message.id != first.message.id


async def test_batch_repeat_within_batch_returns_first(db, world):
    """A client_msg_id repeated inside one batch is stored once; seqs stay gap-free."""
    batch = [
        new(world, "a", client_msg_id="k1"),
        new(world, "b", client_msg_id="k1"),
        new(world, "c"),
    ]
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch(batch)

    assert [result.created for result in results] == [True, False, True]
    assert results[1].message == results[0].message
    assert [results[0].message.seq, results[2].message.seq] == [1, 2]


async def test_batch_message_to_deleted_conversation_fails_alone(db, world):
    """One message whose conversation is gone fails with NotFoundError; the rest are stored."""
    gone = uuid.uuid4()
    batch = [new(world, "a"), new(world, "lost", conversation_id=gone), new(world, "b")]
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch(batch)

    assert isinstance(results[1], NotFoundError)
    assert results[1].detail == f"conversation {gone} not found"
    assert [results[0].message.seq, results[2].message.seq] == [1, 2]

    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
    assert [message.content for message in page.items] == ["a", "b"]


async def test_batch_unknown_sender_fails_alone(db, world):
    """A constraint failure in a batch is retried message by message."""
    stranger = uuid.uuid4()
    bad = NewMessage(conversation_id=world.conversation.id, sender_id=stranger, content="x")
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch([new(world, "a"), bad, new(world, "b", client_msg_id="k")])

    assert isinstance(results[1], InvalidError)
    assert str(stranger) in results[1].detail
    assert isinstance(results[1].__cause__, Exception)
    assert [results[0].message.seq, results[2].message.seq] == [1, 2]

    async with db.unit_of_work() as uow:
        conversation = await uow.conversations.get(world.member.user_id, world.conversation.id)
    assert conversation.last_seq == 2


async def test_batch_across_conversations_counts_each(db, world):
    """Each conversation gets its own seq sequence, in input order."""
    async with db.unit_of_work() as uow:
        other = await uow.conversations.create(
            world.owner.user_id, world.workspace.id, topic="Other", participant_ids=[world.member.user_id]
        )
    batch = [
        new(world, "a1"),
        new(world, "b1", conversation_id=other.id),
        new(world, "a2"),
        new(world, "b2", conversation_id=other.id),
    ]
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch(batch)

    assert [result.message.seq for result in results] == [1, 1, 2, 2]


async def test_batch_empty_returns_empty(db):
    async with db.unit_of_work() as uow:
        assert await uow.messages.append_batch([]) == []


async def test_append_rolled_back_with_unit_of_work(db, world):
    """An error inside the unit of work undoes the append and its seq."""
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as uow:
            await uow.messages.append(new(world, "never stored"))
            raise RuntimeError("abort")

    async with db.unit_of_work() as uow:
        stored = await uow.messages.append(new(world, "stored"))
    assert stored.message.seq == 1


async def test_history_latest_after_and_before(db, world):
    """The three page kinds return ascending seqs and report has_more in their direction."""
    await append_many(db, world, 10)
    member, conversation_id = world.member.user_id, world.conversation.id

    async with db.unit_of_work() as uow:
        latest = await uow.messages.history(member, conversation_id, limit=3)
        after = await uow.messages.history(member, conversation_id, after_seq=2, limit=3)
        after_end = await uow.messages.history(member, conversation_id, after_seq=7, limit=3)
        before = await uow.messages.history(member, conversation_id, before_seq=4, limit=3)
        before_start = await uow.messages.history(member, conversation_id, before_seq=3, limit=3)

    assert [m.seq for m in latest.items] == [8, 9, 10] and latest.has_more
    assert [m.seq for m in after.items] == [3, 4, 5] and after.has_more
    assert [m.seq for m in after_end.items] == [8, 9, 10] and not after_end.has_more
    assert [m.seq for m in before.items] == [1, 2, 3] and not before.has_more
    assert [m.seq for m in before_start.items] == [1, 2] and not before_start.has_more


async def test_history_limit_clamped_to_200(db, world):
    await append_many(db, world, 205)
    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id, after_seq=0, limit=1000)
        with pytest.raises(InvalidError):
            await uow.messages.history(world.member.user_id, world.conversation.id, limit=0)

    assert len(page.items) == 200
    assert page.has_more


async def test_history_invisible_is_not_found(db, world):
    """An outsider's history read is NotFoundError, as for a conversation that does not exist."""
    await append_many(db, world, 1)
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError) as hidden:
            await uow.messages.history(world.outsider.user_id, world.conversation.id)
        with pytest.raises(NotFoundError) as missing:
            await uow.messages.history(world.outsider.user_id, uuid.uuid4())
        owner_page = await uow.messages.history(world.owner.user_id, world.conversation.id)

    assert type(hidden.value) is type(missing.value)
    assert len(owner_page.items) == 1


async def test_read_after_needs_no_actor(db, world):
    await append_many(db, world, 5)
    async with db.unit_of_work() as uow:
        messages = await uow.messages.read_after(world.conversation.id, 2, 2)
    assert [message.seq for message in messages] == [3, 4]


async def test_history_uses_the_conversation_seq_index(db, world):
    """The history query is served by the unique (conversation_id, seq) index."""
    if db.dialect != "sqlite":
        pytest.skip("the plan is checked on SQLite; PostgreSQL picks plans by table size")
    async with db.engine.connect() as connection:
        plan = await connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE conversation_id = ? AND seq > ? "
            "ORDER BY seq LIMIT 51",
            (world.conversation.id.hex, 0),
        )
        details = " ".join(str(row[-1]) for row in plan)
    # SQLite names the index of a UNIQUE constraint sqlite_autoindex_messages_N.
    assert "USING INDEX" in details
    assert "(conversation_id=? AND seq>?)" in details
    assert "SCAN" not in details


async def test_batch_failure_after_other_work_keeps_that_work(db, world):
    """Inside a busy unit of work a failing batch is undone to a savepoint, not further."""
    stranger = uuid.uuid4()
    bad = NewMessage(conversation_id=world.conversation.id, sender_id=stranger, content="x")
    async with db.unit_of_work() as uow:
        renamed = await uow.conversations.update(world.owner.user_id, world.conversation.id, topic="Renamed")
        results = await uow.messages.append_batch([new(world, "a"), bad, new(world, "b")])

    assert isinstance(results[1], InvalidError)
    async with db.unit_of_work() as uow:
        conversation = await uow.conversations.get(world.member.user_id, world.conversation.id)
    assert conversation.topic == renamed.topic == "Renamed"
    assert conversation.last_seq == 2


async def test_append_stores_timestamps_as_sqlalchemy_does(db, world):
    """Messages written by the batch path store time in the same text form as other rows."""
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL stores timestamptz, not text")
    await append_many(db, world, 1)
    async with db.engine.connect() as connection:
        message_row = (await connection.exec_driver_sql("SELECT created_at, updated_at, id FROM messages")).one()
        user_row = (await connection.exec_driver_sql("SELECT created_at, id FROM users LIMIT 1")).one()

    pattern = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$"
    assert re.match(pattern, message_row[0])
    assert re.match(pattern, message_row[1])
    assert re.match(pattern, user_row[0])
    assert len(message_row[2]) == len(user_row[1]) == 32
