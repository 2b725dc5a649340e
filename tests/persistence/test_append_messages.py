"""`Database.append_messages`: the server's write path, through the message writer process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
from sqlalchemy.exc import OperationalError

from persistence.errors import InvalidError, NotFoundError
from persistence.message_writer import PostgresqlAppender
from persistence.models import AppendResult, NewMessage
from persistence.repositories.append_postgresql import APPEND_STATEMENT, append_in_one_statement
from tests.persistence.conftest import connect_admin


def new(world, content, *, client_msg_id=None, conversation_id=None, sender_id=None):
    return NewMessage(
        conversation_id=conversation_id or world.conversation.id,
        sender_id=sender_id or world.member.user_id,
        content=content,
        client_msg_id=client_msg_id,
    )


async def test_append_messages_assigns_seqs_and_honours_keys(db, world):
    """Seqs follow input order; a repeated client_msg_id returns the first message, also later."""
    first = await db.append_messages([new(world, "a", client_msg_id="k1"), new(world, "b"), new(world, "a again", client_msg_id="k1")])
    second = await db.append_messages([new(world, "a once more", client_msg_id="k1"), new(world, "c")])

    assert [result.created for result in first] == [True, True, False]
    assert [result.message.seq for result in first] == [1, 2, 1]
    assert second[0].created is False
    assert second[0].message == first[0].message
    assert second[1].message.seq == 3


async def test_message_ids_sort_in_storing_order(db, world):
    """Message ids are version 7 UUIDs, on either write path, and a batch's ids follow its seqs."""
    batch = await db.append_messages([new(world, f"m{n}") for n in range(5)])
    async with db.unit_of_work() as uow:
        alone = await uow.messages.append(new(world, "alone"))
    ids = [result.message.id for result in batch]

    assert all(message_id.version == 7 for message_id in ids)
    assert alone.message.id.version == 7
    assert ids == sorted(ids, key=lambda message_id: message_id.bytes)
    assert len(set(ids)) == 5


async def test_append_messages_bad_message_fails_alone(db, world):
    """A message to a missing conversation and one from an unknown sender fail; the rest are stored."""
    gone, stranger = uuid.uuid4(), uuid.uuid4()

    results = await db.append_messages(
        [new(world, "a"), new(world, "lost", conversation_id=gone), new(world, "x", sender_id=stranger), new(world, "b")]
    )

    assert isinstance(results[1], NotFoundError)
    assert isinstance(results[2], InvalidError)
    assert [results[0].message.seq, results[3].message.seq] == [1, 2]
    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
    assert [message.content for message in page.items] == ["a", "b"]


async def test_append_messages_two_databases_stay_gap_free(db, database_factory, world):
    """Two Database objects (two writers) appending at once give seqs 1..N once each."""
    other = database_factory()

    async def write(database, name):
        results = []
        for batch in range(10):
            results += await database.append_messages([new(world, f"{name} {batch}-{index}") for index in range(20)])
        return results

    first, second = await asyncio.gather(write(db, "first"), write(other, "second"))

    assert all(isinstance(result, AppendResult) for result in first + second)
    assert sorted(result.message.seq for result in first + second) == list(range(1, 401))
    for results in (first, second):
        assert [result.message.seq for result in results] == sorted(result.message.seq for result in results)


def process_writer(db):
    """Return a new writer process for a SQLite store; skip the test on PostgreSQL."""
    if db.dialect != "sqlite":
        pytest.skip("the message writer process serves SQLite files")
    return db.create_message_writer()


async def test_writer_process_restarts_after_dying(db, world):
    """A writer process that died is replaced on the next batch, and seqs go on without a gap."""
    writer = process_writer(db)
    try:
        (first,) = await writer.append_batch([new(world, "before")])
        old_pid = writer.pid
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.to_thread(_wait_for_exit, old_pid)

        try:
            (second,) = await writer.append_batch([new(world, "after")])
        except OperationalError:
            # The writer may notice the death only when the pipe breaks; the pipeline retries then.
            (second,) = await writer.append_batch([new(world, "after")])

        assert writer.pid != old_pid
        assert [first.message.seq, second.message.seq] == [1, 2]
    finally:
        await writer.close()


async def test_writer_process_dying_mid_batch_is_transient(db, world):
    """A batch whose writer process dies fails with OperationalError, so the pipeline retries it."""
    writer = process_writer(db)
    try:
        await writer.start()
        pid = writer.pid
        os.kill(pid, signal.SIGSTOP)
        pending = asyncio.create_task(writer.append_batch([new(world, "lost with the process", client_msg_id="k")]))
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

        with pytest.raises(OperationalError):
            await pending
        (retried,) = await writer.append_batch([new(world, "lost with the process", client_msg_id="k")])

        assert retried.message.seq == 1
        assert retried.created is True
    finally:
        await writer.close()


def _wait_for_exit(pid: int) -> None:
    """Wait until the killed child `pid` is gone (the writer's process object reaps it)."""
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not exit")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


async def test_writer_cancelled_batch_leaves_next_in_step(db, world):
    """A batch cancelled while it waits for the writer does not hand its reply to the next batch."""
    writer = process_writer(db)
    try:
        await writer.start()
        pid = writer.pid
        os.kill(pid, signal.SIGSTOP)
        pending = asyncio.create_task(writer.append_batch([new(world, "cancelled", client_msg_id="c")]))
        await asyncio.sleep(0.2)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        os.kill(pid, signal.SIGCONT)

        (result,) = await writer.append_batch([new(world, "next", client_msg_id="n")])

        # The cancelled batch was stored all the same (seq 1); a reply read out of step would
        # give this message that seq too.
        assert result.message.seq == 2
        async with db.unit_of_work() as uow:
            page = await uow.messages.history(world.member.user_id, world.conversation.id)
        assert [(message.seq, message.content) for message in page.items] == [(1, "cancelled"), (2, "next")]
    finally:
        await writer.close()


async def test_one_statement_append_follows_batch_rules(db, world):
    """PostgreSQL's one-statement append: seqs, repeats, stored keys and missing conversations."""
    if db.dialect != "postgresql":
        pytest.skip("the one-statement append serves PostgreSQL")
    async with db.engine.connect() as connection:
        raw = await connection.get_raw_connection()
        statement = await raw.driver_connection.prepare(APPEND_STATEMENT)
        first = await append_in_one_statement(
            statement,
            [
                new(world, "a", client_msg_id="k1"),
                new(world, "b"),
                new(world, "a again", client_msg_id="k1"),
                new(world, "lost", conversation_id=uuid.uuid4()),
            ],
        )
        second = await append_in_one_statement(statement, [new(world, "a once more", client_msg_id="k1"), new(world, "c")])

    assert [result.created for result in first[:3]] == [True, True, False]
    assert [result.message.seq for result in first[:3]] == [1, 2, 1]
    assert isinstance(first[3], NotFoundError)
    assert second[0].created is False
    assert second[0].message == first[0].message
    assert second[1].message.seq == 3
    assert first[0].message.timestamp <= first[1].message.timestamp <= second[1].message.timestamp
    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)
    assert [message.content for message in page.items] == ["a", "b", "c"]


async def test_appender_reconnects_after_backend_terminated(db, world):
    """A terminated PostgreSQL backend fails one batch as transient, and the next batch reconnects."""
    if db.dialect != "postgresql":
        pytest.skip("terminating a backend is PostgreSQL's")
    writer = PostgresqlAppender(db)
    admin = await connect_admin()
    try:
        (first,) = await writer.append_batch([new(world, "before")])
        raw = await writer._connection.get_raw_connection()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", raw.driver_connection.get_server_pid())

        with pytest.raises(OperationalError):
            await writer.append_batch([new(world, "after", client_msg_id="k")])
        (retried,) = await writer.append_batch([new(world, "after", client_msg_id="k")])

        assert retried.created is True
        assert retried.message.seq == first.message.seq + 1
    finally:
        await admin.close()
        await writer.close()


async def test_appender_plan_uses_key_index(db, world):
    """The plan made on a small table looks up each client_msg_id in the unique index.

    A plan that reads all of the sender's messages instead makes every batch slower as the
    table grows, and PostgreSQL keeps that plan for as long as the connection lives.
    """
    if db.dialect != "postgresql":
        pytest.skip("plans of prepared statements are PostgreSQL's")
    writer = PostgresqlAppender(db)
    try:
        # With 1,000 messages from one sender and an index on sender_id alone, PostgreSQL 15
        # chose that index.
        for start in range(0, 1000, 100):
            await writer.append_batch([new(world, f"m{n}", client_msg_id=f"k{n}") for n in range(start, start + 100)])
        raw = (await writer._connection.get_raw_connection()).driver_connection
        await raw.execute(f"PREPARE append_check(uuid[], uuid[], uuid[], text[], text[], text[]) AS {APPEND_STATEMENT}")
        # The appender's session plans once for all parameters, so this shows the plan it uses.
        rows = await raw.fetch("EXPLAIN EXECUTE append_check(NULL, NULL, NULL, NULL, NULL, NULL)")
        await raw.execute("DEALLOCATE append_check")
    finally:
        await writer.close()
    plan = "\n".join(row[0] for row in rows)

    assert "Index Scan using uq_messages_sender_id_client_msg_id on messages" in plan
    assert "Index Cond: ((sender_id = i_1.sender_id) AND ((client_msg_id)::text = i_1.client_msg_id))" in plan
    assert "Seq Scan" not in plan
