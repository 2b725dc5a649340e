"""Concurrent writers: seqs stay unique and gap-free, client_msg_id stays idempotent."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

from persistence.models import AppendResult, NewMessage
from tests.persistence.conftest import REPOSITORY_ROOT, run_python_at_once


async def _writer(database, world, label: str, batches: int, batch_size: int) -> list[AppendResult]:
    results = []
    for batch_number in range(batches):
        batch = [
            NewMessage(
                conversation_id=world.conversation.id,
                sender_id=world.member.user_id,
                content=f"{label} {batch_number}.{index}",
            )
            for index in range(batch_size)
        ]
        async with database.unit_of_work() as uow:
            results.extend(await uow.messages.append_batch(batch))
    return results


async def test_two_engines_append_to_one_conversation(db, database_factory, world):
    """Two engines writing batches at once produce seqs 1..N with no gap and no repeat."""
    second = database_factory()
    first_results, second_results = await asyncio.gather(
        _writer(db, world, "first", 20, 10), _writer(second, world, "second", 20, 10)
    )

    seqs = sorted(result.message.seq for result in first_results + second_results)
    assert seqs == list(range(1, 401))

    async with db.unit_of_work() as uow:
        conversation = await uow.conversations.get(world.member.user_id, world.conversation.id)
        stored = []
        after = 0
        while True:
            page = await uow.messages.history(world.member.user_id, world.conversation.id, after_seq=after, limit=200)
            stored.extend(page.items)
            if not page.has_more:
                break
            after = page.items[-1].seq
    assert conversation.last_seq == 400
    assert [message.seq for message in stored] == list(range(1, 401))
    # Per writer, seqs follow the order the writer sent its messages in.
    for results in (first_results, second_results):
        assert [result.message.seq for result in results] == sorted(r.message.seq for r in results)


async def test_two_engines_same_client_msg_id_store_once(db, database_factory, world):
    """The same client_msg_id sent through two engines at once is stored once."""
    second = database_factory()

    async def send(database):
        async with database.unit_of_work() as uow:
            return await uow.messages.append(
                NewMessage(
                    conversation_id=world.conversation.id,
                    sender_id=world.member.user_id,
                    content="once",
                    client_msg_id="retry-1",
                )
            )

    for _ in range(5):
        results = await asyncio.gather(send(db), send(second), send(db), send(second))
        assert len({result.message.id for result in results}) == 1
        assert sum(result.created for result in results) <= 1

    async with db.unit_of_work() as uow:
        conversation = await uow.conversations.get(world.member.user_id, world.conversation.id)
    assert conversation.last_seq == 1


def test_two_processes_append_to_one_sqlite_file(tmp_path):
    """Two processes writing one SQLite file keep seqs gap-free (busy timeout and retries)."""
    path = tmp_path / "shared.db"
    setup = textwrap.dedent(
        f"""
        import asyncio
        from persistence.database import Database

        async def main():
            async with Database("sqlite+aiosqlite:///{path}") as db:
                await db.migrate()
                async with db.unit_of_work() as uow:
                    user = await uow.users.create(name="Ann", email="ann@example.com")
                    workspace = await uow.workspaces.create(user.user_id, name="W", description="d")
                    conversation = await uow.conversations.create(
                        user.user_id, workspace.id, topic="t", participant_ids=[user.user_id]
                    )
                print(user.user_id, conversation.id)

        asyncio.run(main())
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", setup], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    user_id, conversation_id = output[-2], output[-1]

    writer = textwrap.dedent(
        f"""
        import asyncio, sys, uuid
        from persistence.database import Database
        from persistence.models import NewMessage

        async def main():
            async with Database("sqlite+aiosqlite:///{path}") as db:
                for batch_number in range(30):
                    batch = [
                        NewMessage(
                            conversation_id=uuid.UUID("{conversation_id}"),
                            sender_id=uuid.UUID("{user_id}"),
                            content=f"{{sys.argv[1]}} {{batch_number}} {{index}}",
                        )
                        for index in range(20)
                    ]
                    async with db.unit_of_work() as uow:
                        results = await uow.messages.append_batch(batch)
                    assert all(not isinstance(result, Exception) for result in results)

        asyncio.run(main())
        """
    )
    run_python_at_once(writer, ["a", "b"])

    with sqlite3.connect(path) as connection:
        seqs = [row[0] for row in connection.execute("SELECT seq FROM messages ORDER BY seq")]
        last_seq = connection.execute("SELECT last_seq FROM conversations").fetchone()[0]
    assert seqs == list(range(1, 1201))
    assert last_seq == 1200
