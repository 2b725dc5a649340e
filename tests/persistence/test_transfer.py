"""Export to JSON lines and import into an empty database of either kind."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, inspect, select

from persistence.database import Database
from persistence.errors import InvalidError
from persistence.models import NewMessage
from persistence.tables import TABLES_IN_DEPENDENCY_ORDER, messages
from persistence.transfer import export_database, import_database


async def fill(db: Database) -> dict:
    """Store one of everything; return what to compare after a round trip."""
    async with db.unit_of_work() as uow:
        ann = await uow.users.create(name="Ann", email="Ann@Example.com", metadata={"tz": "Europe/Paris"})
        bob = await uow.users.create(name="Bob", email="bob@example.com")
        await uow.credentials.set_password_hash(ann.user_id, "argon2-hash")
        await uow.credentials.create_api_key(user_id=bob.user_id, name="bot", key_hash="key-hash")
        workspace = await uow.workspaces.create(ann.user_id, name="Team", description="Our team")
        conversation = await uow.conversations.create(
            ann.user_id, workspace.id, topic="General", participant_ids=[bob.user_id, ann.user_id]
        )
        results = await uow.messages.append_batch(
            [
                NewMessage(
                    conversation_id=conversation.id,
                    sender_id=bob.user_id,
                    content=text,
                    client_msg_id=f"c{index}",
                    metadata={"index": index},
                )
                for index, text in enumerate(["hello", "北京见", "שלום עולם"])
            ]
        )
    return {
        "ann": ann,
        "bob": bob,
        "conversation": conversation,
        "messages": [result.message for result in results],
    }


async def row_counts(db: Database) -> dict[str, int]:
    async with db.engine.connect() as connection:
        return {
            table.name: await connection.scalar(select(func.count()).select_from(table))
            for table in TABLES_IN_DEPENDENCY_ORDER
        }


async def test_round_trip_sqlite_to_either_kind(db, tmp_path):
    """Everything exported from SQLite reads back the same from the imported database."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'source.db'}") as source:
        await source.migrate()
        expected = await fill(source)
        exported = await export_database(source, tmp_path / "dump.jsonl")
        source_counts = await row_counts(source)

    imported = await import_database(db, tmp_path / "dump.jsonl", batch_size=2, progress=False)

    assert imported == exported == sum(source_counts.values())
    assert await row_counts(db) == source_counts
    ann, bob, conversation = expected["ann"], expected["bob"], expected["conversation"]
    async with db.unit_of_work() as uow:
        assert await uow.users.get(ann.user_id) == ann
        assert (await uow.users.get_by_email("ann@example.com")).user_id == ann.user_id
        assert await uow.credentials.get_password_hash(ann.user_id) == "argon2-hash"
        assert await uow.credentials.user_id_for_api_key("key-hash") == bob.user_id
        loaded = await uow.conversations.get(ann.user_id, conversation.id)
        page = await uow.messages.history(bob.user_id, conversation.id)
        found = await uow.messages.search(bob.user_id, "北京见")
        again = await uow.messages.append(
            NewMessage(conversation_id=conversation.id, sender_id=bob.user_id, content="x", client_msg_id="c0")
        )
        fresh = await uow.messages.append(
            NewMessage(conversation_id=conversation.id, sender_id=bob.user_id, content="new")
        )

    assert loaded.participant_ids == [bob.user_id, ann.user_id]
    assert loaded.last_seq == 3
    assert page.items == expected["messages"]
    assert [message.id for message in found] == [expected["messages"][1].id]
    assert again.created is False
    assert fresh.message.seq == 4


async def test_round_trip_to_sqlite(db, tmp_path):
    """An export of either kind imports into a new SQLite file."""
    expected = await fill(db)
    await export_database(db, tmp_path / "dump.jsonl")

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'target.db'}") as target:
        await import_database(target, tmp_path / "dump.jsonl", progress=False)
        assert await row_counts(target) == await row_counts(db)
        async with target.unit_of_work() as uow:
            page = await uow.messages.history(expected["bob"].user_id, expected["conversation"].id)
    assert page.items == expected["messages"]


async def test_import_malformed_line_keeps_database_unchanged(db, tmp_path):
    """A broken line stops the import with its line number and nothing is kept."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'source.db'}") as source:
        await source.migrate()
        await fill(source)
        await export_database(source, tmp_path / "dump.jsonl")

    lines = (tmp_path / "dump.jsonl").read_text(encoding="utf-8").splitlines()
    broken_line = len(lines) - 1
    lines[broken_line - 1] = lines[broken_line - 1][:-5]
    (tmp_path / "broken.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(InvalidError) as raised:
        await import_database(db, tmp_path / "broken.jsonl", batch_size=2, progress=False)

    assert raised.value.detail.startswith(f"line {broken_line}:")
    assert set((await row_counts(db)).values()) == {0}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"table": "nope", "row": {}}, "unknown table"),
        ({"table": "users", "row": {"id": "not-a-uuid"}}, "users.id"),
        ({"table": "users", "row": {"id": "6a0c8f4e-4d7b-4a3c-9f0e-1b2c3d4e5f60", "bogus": 1}}, "bogus"),
        ([1, 2], "expected"),
    ],
    ids=["unknown-table", "bad-uuid", "unknown-column", "not-an-object"],
)
async def test_import_rejects_bad_rows(db, tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"format": "cortex-core-export", "version": 1}) + "\n" + json.dumps(record) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidError) as raised:
        await import_database(db, path, progress=False)
    assert raised.value.detail.startswith("line 2:")
    assert message in raised.value.detail


async def test_import_constraint_failure_names_lines(db, tmp_path):
    """A row the database rejects (a message of an unknown conversation) names its lines."""
    await fill(db)
    await export_database(db, tmp_path / "dump.jsonl")
    lines = (tmp_path / "dump.jsonl").read_text(encoding="utf-8").splitlines()
    message_lines = [line for line in lines if '"table":"messages"' in line]

    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'target.db'}") as target:
        await target.migrate()
        path = tmp_path / "orphans.jsonl"
        path.write_text(lines[0] + "\n" + "\n".join(message_lines) + "\n", encoding="utf-8")
        with pytest.raises(InvalidError) as raised:
            await import_database(target, path, progress=False)
        assert raised.value.detail.startswith("lines 2-4:")
        async with target.engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(messages)) == 0


async def test_import_into_non_empty_database_rejected(db, tmp_path):
    await fill(db)
    await export_database(db, tmp_path / "dump.jsonl")
    with pytest.raises(InvalidError) as raised:
        await import_database(db, tmp_path / "dump.jsonl", progress=False)
    assert "not empty" in raised.value.detail


async def test_import_rejects_file_without_header(db, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text('{"hello": 1}\n', encoding="utf-8")
    with pytest.raises(InvalidError) as raised:
        await import_database(db, path, progress=False)
    assert raised.value.detail.startswith("line 1:")


async def test_failed_import_leaves_new_database_without_schema(database_factory, tmp_path):
    """Into a database never migrated, a failed import leaves no tables behind either."""
    path = tmp_path / "broken.jsonl"
    path.write_text('{"format": "cortex-core-export", "version": 1}\n{"table": "users"\n', encoding="utf-8")
    target = database_factory()

    with pytest.raises(InvalidError):
        await import_database(target, path, progress=False)

    async with target.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert tables == []
