"""Workspaces and the conversations inside them: ``/workspaces``. Only the owner sees a workspace."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import JSONBody

from persistence.models import User
from realtime.api.conversations import notify_conversation_deleted
from realtime.api.params import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    IdPath,
    PageCursor,
    PageLimit,
    clamp_limit,
    parse_id,
)
from realtime.api.schemas import (
    ConversationCreateRequest,
    ConversationList,
    ConversationView,
    WorkspaceCreateRequest,
    WorkspaceList,
    WorkspaceUpdateRequest,
    WorkspaceView,
)

if TYPE_CHECKING:
    from persistence.unit_of_work import UnitOfWork


class WorkspaceController(Controller):
    path = "/workspaces"
    tags = ["workspaces"]

    @post("/", summary="Create a workspace owned by the caller")
    async def create_workspace(
        self, request: Request[User, Any, State], state: State, data: JSONBody[WorkspaceCreateRequest]
    ) -> WorkspaceView:
        async with state.db.unit_of_work() as uow:
            workspace = await uow.workspaces.create(
                request.user.user_id, name=data.name, description=data.description, metadata=data.metadata
            )
        return WorkspaceView.of(workspace)

    @get("/", summary="The caller's workspaces, one page at a time")
    async def list_workspaces(
        self,
        request: Request[User, Any, State],
        state: State,
        cursor: PageCursor = None,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
    ) -> WorkspaceList:
        async with state.db.unit_of_work() as uow:
            page = await uow.workspaces.list(request.user.user_id, cursor=cursor, limit=clamp_limit(limit))
        return WorkspaceList(items=[WorkspaceView.of(item) for item in page.items], next_cursor=page.next_cursor)

    @get("/{workspace_id:str}", summary="One workspace (owner only)")
    async def get_workspace(self, request: Request[User, Any, State], state: State, workspace_id: IdPath) -> WorkspaceView:
        async with state.db.unit_of_work() as uow:
            workspace = await uow.workspaces.get(request.user.user_id, parse_id(workspace_id, "workspace_id"))
        return WorkspaceView.of(workspace)

    @patch("/{workspace_id:str}", summary="Change name, description or metadata (owner only)")
    async def update_workspace(
        self, request: Request[User, Any, State], state: State, workspace_id: IdPath, data: JSONBody[WorkspaceUpdateRequest]
    ) -> WorkspaceView:
        async with state.db.unit_of_work() as uow:
            workspace = await uow.workspaces.update(
                request.user.user_id,
                parse_id(workspace_id, "workspace_id"),
                name=data.name,
                description=data.description,
                metadata=data.metadata,
            )
        return WorkspaceView.of(workspace)

    @delete("/{workspace_id:str}", summary="Delete a workspace with its conversations and messages (owner only)")
    async def delete_workspace(self, request: Request[User, Any, State], state: State, workspace_id: IdPath) -> None:
        actor_id = request.user.user_id
        parsed_id = parse_id(workspace_id, "workspace_id")
        async with state.db.unit_of_work() as uow:
            conversation_ids = await _conversation_ids_in_workspace(uow, actor_id, parsed_id)
            await uow.workspaces.delete(actor_id, parsed_id)

        # Live subscriptions to the removed conversations end only after the commit.
        for conversation_id in conversation_ids:
            await notify_conversation_deleted(state, conversation_id)

    @post("/{workspace_id:str}/conversations", summary="Create a conversation (workspace owner only)")
    async def create_conversation(
        self, request: Request[User, Any, State], state: State, workspace_id: IdPath, data: JSONBody[ConversationCreateRequest]
    ) -> ConversationView:
        async with state.db.unit_of_work() as uow:
            conversation = await uow.conversations.create(
                request.user.user_id,
                parse_id(workspace_id, "workspace_id"),
                topic=data.topic,
                participant_ids=data.participant_ids,
                metadata=data.metadata,
            )
        return ConversationView.of(conversation)

    @get("/{workspace_id:str}/conversations", summary="The conversations of a workspace (owner only)")
    async def list_conversations(
        self,
        request: Request[User, Any, State],
        state: State,
        workspace_id: IdPath,
        cursor: PageCursor = None,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
    ) -> ConversationList:
        async with state.db.unit_of_work() as uow:
            page = await uow.conversations.list_in_workspace(
                request.user.user_id, parse_id(workspace_id, "workspace_id"), cursor=cursor, limit=clamp_limit(limit)
            )
        return ConversationList(items=[ConversationView.of(item) for item in page.items], next_cursor=page.next_cursor)


async def _conversation_ids_in_workspace(uow: UnitOfWork, actor_id: uuid.UUID, workspace_id: uuid.UUID) -> list[uuid.UUID]:
    conversation_ids: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await uow.conversations.list_in_workspace(actor_id, workspace_id, cursor=cursor, limit=MAX_PAGE_SIZE)
        conversation_ids.extend(conversation.id for conversation in page.items)
        if page.next_cursor is None:
            return conversation_ids
        cursor = page.next_cursor
