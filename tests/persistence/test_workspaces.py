"""Workspaces: owner-only visibility, paging, updates and cascading deletes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from persistence.errors import InvalidError, NotFoundError
from persistence.models import NewMessage
from persistence.tables import conversations, messages, participants
from tests.persistence.conftest import (
    create_conversation,
    create_user,
    create_workspace,
)


async def test_workspace_visible_to_owner_only(db):
    """Another user gets NotFoundError, the same as for an id that does not exist."""
    owner = await create_user(db, "Owner")
    stranger = await create_user(db, "Stranger")
    workspace = await create_workspace(db, owner)

    async with db.unit_of_work() as uow:
        assert (await uow.workspaces.get(owner.user_id, workspace.id)) == workspace
        with pytest.raises(NotFoundError) as hidden:
            await uow.workspaces.get(stranger.user_id, workspace.id)
        with pytest.raises(NotFoundError) as missing:
            await uow.workspaces.get(owner.user_id, uuid.uuid4())

    assert hidden.value.detail == f"workspace {workspace.id} not found"
    assert type(hidden.value) is type(missing.value)


@pytest.mark.parametrize(
    ("name", "description"),
    [("", "d"), ("x" * 101, "d"), ("n", ""), ("n", "   "), ("n", "d" * 501)],
    ids=["empty-name", "long-name", "empty-description", "blank-description", "long-description"],
)
async def test_workspace_invalid_fields_rejected(db, name, description):
    """Name is 1-100 characters, description 1-500 and not blank."""
    owner = await create_user(db)
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError):
            await uow.workspaces.create(owner.user_id, name=name, description=description)


async def test_workspace_list_pages_with_cursor(db):
    """Pages follow each other without repeats and end with next_cursor None."""
    owner = await create_user(db)
    other = await create_user(db, "Other")
    created = [await create_workspace(db, owner, f"W{index}") for index in range(5)]
    await create_workspace(db, other, "not mine")

    seen = []
    cursor = None
    async with db.unit_of_work() as uow:
        while True:
            page = await uow.workspaces.list(owner.user_id, cursor=cursor, limit=2)
            seen.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break

    assert [workspace.id for workspace in seen] == [workspace.id for workspace in created]


async def test_workspace_list_bad_cursor_is_invalid(db):
    """A cursor that was not issued raises InvalidError naming the cursor."""
    owner = await create_user(db)
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError) as raised:
            await uow.workspaces.list(owner.user_id, cursor="not-a-cursor", limit=10)

    assert "cursor" in raised.value.detail
    assert "not-a-cursor" in raised.value.detail


async def test_workspace_update_changes_given_fields(db):
    """Fields left as None keep their values; updated_at moves."""
    owner = await create_user(db)
    workspace = await create_workspace(db, owner)

    async with db.unit_of_work() as uow:
        changed = await uow.workspaces.update(
            owner.user_id, workspace.id, name="Renamed", metadata={"color": "red"}
        )
    async with db.unit_of_work() as uow:
        loaded = await uow.workspaces.get(owner.user_id, workspace.id)

    assert loaded == changed
    assert loaded.name == "Renamed"
    assert loaded.description == workspace.description
    assert loaded.metadata == {"color": "red"}
    assert loaded.updated_at > workspace.updated_at


async def test_workspace_update_by_stranger_is_not_found(db):
    owner = await create_user(db)
    stranger = await create_user(db, "Stranger")
    workspace = await create_workspace(db, owner)

    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.workspaces.update(stranger.user_id, workspace.id, name="Mine now")
        with pytest.raises(NotFoundError):
            await uow.workspaces.delete(stranger.user_id, workspace.id)


async def _count(db, table) -> int:
    async with db.engine.connect() as connection:
        return await connection.scalar(select(func.count()).select_from(table))


async def test_workspace_delete_cascades_to_conversations(db):
    """Deleting a workspace removes its conversations, participants and messages."""
    owner = await create_user(db)
    member = await create_user(db, "Member")
    workspace = await create_workspace(db, owner)
    conversation = await create_conversation(db, owner, workspace, [member])
    async with db.unit_of_work() as uow:
        await uow.messages.append(
            NewMessage(conversation_id=conversation.id, sender_id=member.user_id, content="hi")
        )

    async with db.unit_of_work() as uow:
        await uow.workspaces.delete(owner.user_id, workspace.id)

    assert await _count(db, conversations) == 0
    assert await _count(db, participants) == 0
    assert await _count(db, messages) == 0


async def test_workspace_delete_in_plain_sql_cascades(db):
    """The cascade is in the schema: a DELETE typed by hand removes children too."""
    owner = await create_user(db)
    workspace = await create_workspace(db, owner)
    conversation = await create_conversation(db, owner, workspace, [owner])
    async with db.unit_of_work() as uow:
        await uow.messages.append(
            NewMessage(conversation_id=conversation.id, sender_id=owner.user_id, content="hi")
        )

    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("DELETE FROM workspaces")

    assert await _count(db, conversations) == 0
    assert await _count(db, participants) == 0
    assert await _count(db, messages) == 0
