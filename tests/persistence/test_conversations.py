"""Conversations: visibility, participants, owner-only changes."""

from __future__ import annotations

import uuid

import pytest

from persistence.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)
from tests.persistence.conftest import (
    create_conversation,
    create_user,
    create_workspace,
)


async def test_conversation_visible_to_participant_and_owner(db, world):
    """Participants and the workspace owner can read it, and an outsider gets NotFoundError."""
    async with db.unit_of_work() as uow:
        as_member = await uow.conversations.get(world.member.user_id, world.conversation.id)
        as_owner = await uow.conversations.get(world.owner.user_id, world.conversation.id)
        with pytest.raises(NotFoundError) as hidden:
            await uow.conversations.get(world.outsider.user_id, world.conversation.id)
        with pytest.raises(NotFoundError) as missing:
            await uow.conversations.get(world.member.user_id, uuid.uuid4())

    assert as_member == as_owner == world.conversation
    assert as_member.participant_ids == [world.member.user_id]
    assert hidden.value.detail == f"conversation {world.conversation.id} not found"
    assert type(hidden.value) is type(missing.value)


async def test_conversation_create_keeps_participant_order(db):
    owner = await create_user(db, "Owner")
    users = [await create_user(db, f"U{index}") for index in range(4)]
    workspace = await create_workspace(db, owner)

    conversation = await create_conversation(db, owner, workspace, list(reversed(users)))
    async with db.unit_of_work() as uow:
        loaded = await uow.conversations.get(owner.user_id, conversation.id)

    assert loaded.participant_ids == [user.user_id for user in reversed(users)]


async def test_conversation_create_rejects_bad_participants(db, world):
    """Empty, repeated and unknown participant ids are InvalidError; unknown ids are named."""
    unknown = uuid.uuid4()
    member_id = world.member.user_id
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError):
            await uow.conversations.create(
                world.owner.user_id, world.workspace.id, topic="t", participant_ids=[]
            )
        with pytest.raises(InvalidError):
            await uow.conversations.create(
                world.owner.user_id, world.workspace.id, topic="t", participant_ids=[member_id, member_id]
            )
        with pytest.raises(InvalidError) as raised:
            await uow.conversations.create(
                world.owner.user_id, world.workspace.id, topic="t", participant_ids=[member_id, unknown]
            )

    assert str(unknown) in raised.value.detail


async def test_conversation_create_in_foreign_workspace_not_found(db, world):
    """Only the workspace owner creates conversations in it."""
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.conversations.create(
                world.member.user_id,
                world.workspace.id,
                topic="t",
                participant_ids=[world.member.user_id],
            )


async def test_conversation_topic_length_checked(db, world):
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError):
            await uow.conversations.create(
                world.owner.user_id,
                world.workspace.id,
                topic="x" * 201,
                participant_ids=[world.member.user_id],
            )


async def test_conversation_update_by_participant_forbidden(db, world):
    """A participant may read but not change the conversation, and to an outsider it is missing."""
    async with db.unit_of_work() as uow:
        with pytest.raises(ForbiddenError):
            await uow.conversations.update(world.member.user_id, world.conversation.id, topic="x")
        with pytest.raises(NotFoundError):
            await uow.conversations.update(world.outsider.user_id, world.conversation.id, topic="x")
        with pytest.raises(ForbiddenError):
            await uow.conversations.delete(world.member.user_id, world.conversation.id)
        with pytest.raises(NotFoundError):
            await uow.conversations.delete(world.outsider.user_id, world.conversation.id)


async def test_conversation_update_by_owner(db, world):
    async with db.unit_of_work() as uow:
        changed = await uow.conversations.update(
            world.owner.user_id, world.conversation.id, topic="Renamed", metadata={"pinned": True}
        )
    async with db.unit_of_work() as uow:
        loaded = await uow.conversations.get(world.member.user_id, world.conversation.id)

    assert loaded == changed
    assert loaded.topic == "Renamed"
    assert loaded.metadata == {"pinned": True}


async def test_conversation_delete_by_owner(db, world):
    async with db.unit_of_work() as uow:
        await uow.conversations.delete(world.owner.user_id, world.conversation.id)
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.conversations.get(world.owner.user_id, world.conversation.id)


async def test_participant_add_and_remove(db, world):
    """A user the owner adds can read the conversation until removed."""
    async with db.unit_of_work() as uow:
        added = await uow.conversations.add_participant(
            world.owner.user_id, world.conversation.id, world.outsider.user_id
        )
        again = await uow.conversations.add_participant(
            world.owner.user_id, world.conversation.id, world.outsider.user_id
        )
    assert added.participant_ids == [world.member.user_id, world.outsider.user_id]
    assert again.participant_ids == added.participant_ids

    async with db.unit_of_work() as uow:
        await uow.conversations.get(world.outsider.user_id, world.conversation.id)
        remaining = await uow.conversations.remove_participant(
            world.outsider.user_id, world.conversation.id, world.outsider.user_id
        )
    assert remaining.participant_ids == [world.member.user_id]

    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.conversations.get(world.outsider.user_id, world.conversation.id)


async def test_participant_add_unknown_user_invalid(db, world):
    unknown = uuid.uuid4()
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError) as raised:
            await uow.conversations.add_participant(world.owner.user_id, world.conversation.id, unknown)
    assert str(unknown) in raised.value.detail


async def test_participant_add_by_participant_forbidden(db, world):
    async with db.unit_of_work() as uow:
        with pytest.raises(ForbiddenError):
            await uow.conversations.add_participant(
                world.member.user_id, world.conversation.id, world.outsider.user_id
            )


async def test_participant_remove_last_conflicts(db, world):
    """Removing the last participant is a conflict, for the owner and for the participant."""
    async with db.unit_of_work() as uow:
        with pytest.raises(ConflictError):
            await uow.conversations.remove_participant(
                world.owner.user_id, world.conversation.id, world.member.user_id
            )
        with pytest.raises(ConflictError):
            await uow.conversations.remove_participant(
                world.member.user_id, world.conversation.id, world.member.user_id
            )


async def test_participant_remove_other_by_participant_forbidden(db, world):
    async with db.unit_of_work() as uow:
        await uow.conversations.add_participant(
            world.owner.user_id, world.conversation.id, world.outsider.user_id
        )
    async with db.unit_of_work() as uow:
        with pytest.raises(ForbiddenError):
            await uow.conversations.remove_participant(
                world.member.user_id, world.conversation.id, world.outsider.user_id
            )


async def test_participant_remove_non_member_not_found(db, world):
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.conversations.remove_participant(
                world.owner.user_id, world.conversation.id, world.outsider.user_id
            )


async def test_conversation_list_for_user_covers_both_roles(db):
    """The list contains conversations the user takes part in and those in workspaces they own."""
    ann = await create_user(db, "Ann")
    bob = await create_user(db, "Bob")
    anns_workspace = await create_workspace(db, ann)
    bobs_workspace = await create_workspace(db, bob)
    owned = await create_conversation(db, ann, anns_workspace, [bob], "owned by Ann")
    joined = await create_conversation(db, bob, bobs_workspace, [ann, bob], "Ann takes part")
    await create_conversation(db, bob, bobs_workspace, [bob], "Bob alone")

    async with db.unit_of_work() as uow:
        page = await uow.conversations.list_for_user(ann.user_id, cursor=None, limit=50)

    assert [conversation.id for conversation in page.items] == [owned.id, joined.id]
    assert page.items[0].participant_ids == [bob.user_id]
    assert page.items[1].participant_ids == [ann.user_id, bob.user_id]
    assert page.next_cursor is None


async def test_conversation_list_pages_with_cursor(db, world):
    created = [world.conversation] + [
        await create_conversation(db, world.owner, world.workspace, [world.member], f"T{index}")
        for index in range(4)
    ]

    for list_page in ("list_for_user", "list_in_workspace"):
        seen = []
        cursor = None
        async with db.unit_of_work() as uow:
            while True:
                if list_page == "list_for_user":
                    page = await uow.conversations.list_for_user(world.member.user_id, cursor=cursor, limit=2)
                else:
                    page = await uow.conversations.list_in_workspace(
                        world.owner.user_id, world.workspace.id, cursor=cursor, limit=2
                    )
                seen.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert [conversation.id for conversation in seen] == [c.id for c in created], list_page


async def test_conversation_list_in_foreign_workspace_not_found(db, world):
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.conversations.list_in_workspace(
                world.member.user_id, world.workspace.id, cursor=None, limit=10
            )


async def test_workspace_owner_id_without_access_check(db, world):
    async with db.unit_of_work() as uow:
        assert await uow.conversations.workspace_owner_id(world.conversation.id) == world.owner.user_id
        assert await uow.conversations.workspace_owner_id(uuid.uuid4()) is None
