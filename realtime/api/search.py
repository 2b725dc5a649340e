"""Full-text message search across the conversations the caller can see: ``GET /search/messages``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from persistence.models import User
from realtime.api.params import DEFAULT_PAGE_SIZE, PageLimit, clamp_limit, parse_id
from realtime.api.schemas import MessageList, MessageView

MAX_QUERY_CHARS = 200


@get("/search/messages", tags=["messages"], summary="Full-text search in the conversations the caller can see")
async def search_messages(
    request: Request[User, Any, State],
    state: State,
    q: Annotated[str, QueryParameter(name="q", min_length=1, max_length=MAX_QUERY_CHARS, description="Words to find")],
    conversation_id: Annotated[
        str | None, QueryParameter(name="conversation_id", description="Search only this conversation")
    ] = None,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
) -> MessageList:
    parsed_id = parse_id(conversation_id, "conversation_id") if conversation_id is not None else None
    async with state.db.unit_of_work() as uow:
        messages = await uow.messages.search(
            request.user.user_id, q, conversation_id=parsed_id, limit=clamp_limit(limit)
        )
    return MessageList(items=[MessageView.of(message) for message in messages])
