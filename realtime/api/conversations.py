"""Conversations and their participants: ``/conversations``.

A conversation is visible to its participants and to the owner of its workspace; everyone else
gets 404. Changes are made by the workspace owner, except that a participant may remove themself.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, put
from litestar.datastructures import State
from litestar.params import JSONBody

from persistence.models import User
from realtime.api.params import DEFAULT_PAGE_SIZE, IdPath, PageCursor, PageLimit, clamp_limit, parse_id
from realtime.api.schemas import ConversationList, ConversationUpdateRequest, ConversationView

logger = logging.getLogger(__name__)


async def notify_conversation_deleted(state: State, conversation_id: uuid.UUID) -> None:
    """End every live subscription to a deleted conversation, on every instance.

    The deletion is already committed, so a failure here is logged and not raised: the client's
    request did succeed, and the gateway finds the conversation gone on its next database read.
    """
    try:
        await state.hub.conversation_deleted(conversation_id)
    except Exception:
        logger.exception("failed to end subscriptions of deleted conversation %s", conversation_id)


async def notify_participant_removed(state: State, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """End a removed participant's live subscriptions, on every instance; failures are logged."""
    try:
        await state.hub.participant_removed(conversation_id, user_id)
    except Exception:
        logger.exception(
            "failed to end subscriptions of user %s removed from conversation %s", user_id, conversation_id
        )


class ConversationController(Controller):
    path = "/conversations"
    tags = ["conversations"]

    @get("/", summary="Every conversation the caller participates in or whose workspace it owns")
    async def list_conversations(
        self,
        request: Request[User, Any, State],
        state: State,
        cursor: PageCursor = None,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
    ) -> ConversationList:
        async with state.db.unit_of_work() as uow:
            page = await uow.conversations.list_for_user(request.user.user_id, cursor=cursor, limit=clamp_limit(limit))
        return ConversationList(items=[ConversationView.of(item) for item in page.items], next_cursor=page.next_cursor)

    @get("/{conversation_id:str}", summary="One conversation (participants and the workspace owner)")
    async def get_conversation(
        self, request: Request[User, Any, State], state: State, conversation_id: IdPath
    ) -> ConversationView:
        async with state.db.unit_of_work() as uow:
            conversation = await uow.conversations.get(
                request.user.user_id, parse_id(conversation_id, "conversation_id")
            )
        return ConversationView.of(conversation)

    @patch("/{conversation_id:str}", summary="Change topic or metadata (workspace owner only)")
    async def update_conversation(
        self, request: Request[User, Any, State], state: State, conversation_id: IdPath, data: JSONBody[ConversationUpdateRequest]
    ) -> ConversationView:
        async with state.db.unit_of_work() as uow:
            conversation = await uow.conversations.update(
                request.user.user_id,
                parse_id(conversation_id, "conversation_id"),
                topic=data.topic,
                metadata=data.metadata,
            )
        return ConversationView.of(conversation)

    @delete("/{conversation_id:str}", summary="Delete a conversation and its messages (workspace owner only)")
    async def delete_conversation(self, request: Request[User, Any, State], state: State, conversation_id: IdPath) -> None:
        parsed_id = parse_id(conversation_id, "conversation_id")
        async with state.db.unit_of_work() as uow:
            await uow.conversations.delete(request.user.user_id, parsed_id)
        await notify_conversation_deleted(state, parsed_id)

    @put("/{conversation_id:str}/participants/{user_id:str}", summary="Add a participant (workspace owner only)")
    async def add_participant(
        self, request: Request[User, Any, State], state: State, conversation_id: IdPath, user_id: IdPath
    ) -> ConversationView:
        async with state.db.unit_of_work() as uow:
            conversation = await uow.conversations.add_participant(
                request.user.user_id, parse_id(conversation_id, "conversation_id"), parse_id(user_id, "user_id")
            )
        return ConversationView.of(conversation)

    @delete(
        "/{conversation_id:str}/participants/{user_id:str}",
        summary="Remove a participant (workspace owner, or the participant themself); the last one cannot go",
    )
    async def remove_participant(
        self, request: Request[User, Any, State], state: State, conversation_id: IdPath, user_id: IdPath
    ) -> None:
        parsed_conversation_id = parse_id(conversation_id, "conversation_id")
        parsed_user_id = parse_id(user_id, "user_id")
        async with state.db.unit_of_work() as uow:
            await uow.conversations.remove_participant(request.user.user_id, parsed_conversation_id, parsed_user_id)
        await notify_participant_removed(state, parsed_conversation_id, parsed_user_id)
