"""The metadata column: JSON text on SQLite, JSONB on PostgreSQL, tolerant of bad stored text."""

from __future__ import annotations

import logging

import pytest

from persistence.errors import InvalidError
from persistence.models import NewMessage
from tests.persistence.conftest import create_user


async def test_metadata_round_trips_nested_values(db, world):
    value = {"tags": ["a", "ü"], "nested": {"n": 1, "ok": True, "none": None}}
    async with db.unit_of_work() as uow:
        stored = await uow.messages.append(
            NewMessage(
                conversation_id=world.conversation.id,
                sender_id=world.member.user_id,
                content="hi",
                metadata=value,
            )
        )
    async with db.unit_of_work() as uow:
        page = await uow.messages.history(world.member.user_id, world.conversation.id)

    assert stored.message.metadata == value
    assert page.items[0].metadata == value


async def test_metadata_column_type_per_dialect(db):
    """The column is JSONB on PostgreSQL and TEXT on SQLite."""
    async with db.engine.connect() as connection:
        if db.dialect == "postgresql":
            kind = await connection.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'users' AND column_name = 'metadata'"
            )
            assert kind.scalar() == "jsonb"
        else:
            columns = await connection.exec_driver_sql("PRAGMA table_info(users)")
            types = {row[1]: row[2] for row in columns}
            assert types["metadata"] == "TEXT"


async def test_metadata_must_be_object(db):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError):
            await uow.users.create(name="Ann", email="ann@example.com", metadata=["not", "a", "dict"])


@pytest.mark.parametrize("stored_text", ["{not json", "[1, 2]", ""], ids=["broken", "list", "empty"])
async def test_metadata_invalid_stored_json_reads_as_empty(db, world, caplog, stored_text):
    """Text written by another tool that is not a JSON object reads as {} with one warning."""
    if db.dialect != "sqlite":
        pytest.skip("JSONB cannot hold invalid JSON, so only SQLite can store such a row")
    user = await create_user(db, "Broken")
    async with db.unit_of_work() as uow:
        stored = await uow.messages.append(
            NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content="hi")
        )
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE users SET metadata = ? WHERE id = ?", (stored_text, user.user_id.hex))
        await connection.exec_driver_sql("UPDATE messages SET metadata = ?", (stored_text,))

    caplog.set_level(logging.WARNING, logger="persistence.columns")
    async with db.unit_of_work() as uow:
        loaded = await uow.users.get(user.user_id)
        page = await uow.messages.history(world.member.user_id, world.conversation.id)

    assert loaded.metadata == {}
    assert page.items[0].metadata == {}
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    if stored_text == "":
        assert warnings == []
    else:
        assert len([text for text in warnings if str(user.user_id) in text]) == 1
        assert len([text for text in warnings if str(stored.message.id) in text]) == 1
