"""Posting messages over HTTP and reading history: ``/conversations/{id}/messages``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from persistence.models import NewMessage, User
from realtime.api.errors import BadRequestError, UnprocessableError
from realtime.api.params import DEFAULT_PAGE_SIZE, IdPath, PageLimit, clamp_limit, parse_id
from realtime.api.schemas import MessageCreateRequest, MessageHistory, MessageView
from realtime.gateway.connection import MAX_METADATA_BYTES
from realtime.wire import encode_json

# Largest seq a query may name: the maximum of a signed 64-bit SQL integer, the column's type.
MAX_SEQ = 2**63 - 1


class MessageController(Controller):
    path = "/conversations/{conversation_id:str}/messages"
    tags = ["messages"]

    @post(
        "/",
        summary="Post a message; a repeated client_msg_id returns the first message with 200",
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=MessageView, description="The message stored first under this client_msg_id"
            )
        },
    )
    async def post_message(
        self, request: Request[User, Any, State], state: State, conversation_id: IdPath, data: JSONBody[MessageCreateRequest]
    ) -> Response[MessageView]:
        parsed_id = parse_id(conversation_id, "conversation_id")
        max_chars = state.settings.max_message_chars
        if len(data.content) > max_chars:
            raise UnprocessableError(
                detail=f"content: must be at most {max_chars} characters (got {len(data.content)})"
            )

        # The same limit as a WebSocket send, so both paths accept the same messages.
        metadata_size = len(encode_json(data.metadata)) if data.metadata else 0
        if metadata_size > MAX_METADATA_BYTES:
            raise UnprocessableError(
                detail=f"metadata: must be at most {MAX_METADATA_BYTES} bytes of JSON (got {metadata_size})"
            )

        # Visibility check: the pipeline stores for any existing conversation, so outsiders get 404 here.
        async with state.db.unit_of_work() as uow:
            await uow.conversations.get(request.user.user_id, parsed_id)

        # The pipeline also returns the serialized message that went to live subscribers.
        result, _ = await state.pipeline.submit(
            NewMessage(
                conversation_id=parsed_id,
                sender_id=request.user.user_id,
                content=data.content,
                client_msg_id=data.client_msg_id,
                metadata=data.metadata,
            )
        )
        status_code = HTTP_201_CREATED if result.created else HTTP_200_OK
        return Response(MessageView.of(result.message), status_code=status_code)

    @get("/", summary="Message history in ascending seq order")
    async def history(
        self,
        request: Request[User, Any, State],
        state: State,
        conversation_id: IdPath,
        after_seq: Annotated[
            int | None, QueryParameter(name="after_seq", ge=0, le=MAX_SEQ, description="Messages with a larger seq")
        ] = None,
        before_seq: Annotated[
            int | None,
            QueryParameter(name="before_seq", ge=1, le=MAX_SEQ, description="The messages just below this seq"),
        ] = None,
        limit: PageLimit = DEFAULT_PAGE_SIZE,
    ) -> MessageHistory:
        parsed_id = parse_id(conversation_id, "conversation_id")
        if after_seq is not None and before_seq is not None:
            raise BadRequestError(detail="after_seq and before_seq cannot be combined; pass one of them")

        async with state.db.unit_of_work() as uow:
            page = await uow.messages.history(
                request.user.user_id,
                parsed_id,
                after_seq=after_seq,
                before_seq=before_seq,
                limit=clamp_limit(limit),
            )
        return MessageHistory(items=[MessageView.of(item) for item in page.items], has_more=page.has_more)
