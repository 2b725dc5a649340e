"""Reads the WebSocket gateway makes: access with the last seq, and last seqs without access checks."""

from __future__ import annotations

import uuid

import pytest

from persistence.errors import NotFoundError
from persistence.models import NewMessage


async def test_visible_last_seq_for_member_and_owner(db, world):
    """A participant and the workspace owner get the conversation's last seq."""
    await db.append_messages(
        [NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content=text) for text in "ab"]
    )

    async with db.unit_of_work() as uow:
        as_member = await uow.conversations.visible_last_seq(world.member.user_id, world.conversation.id)
        as_owner = await uow.conversations.visible_last_seq(world.owner.user_id, world.conversation.id)

    assert as_member == 2
    assert as_owner == 2


@pytest.mark.parametrize("case", ["outsider", "missing"])
async def test_visible_last_seq_invisible_is_not_found(db, world, case):
    """An outsider and a missing conversation get the same NotFoundError."""
    conversation_id = world.conversation.id if case == "outsider" else uuid.uuid4()

    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError) as raised:
            await uow.conversations.visible_last_seq(world.outsider.user_id, conversation_id)

    assert raised.value.detail == f"conversation {conversation_id} not found"


async def test_last_seqs_skips_missing_conversations(db, world):
    await db.append_messages(
        [NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content="hello")]
    )

    async with db.unit_of_work() as uow:
        found = await uow.conversations.last_seqs([world.conversation.id, uuid.uuid4()])

    assert found == {world.conversation.id: 1}
