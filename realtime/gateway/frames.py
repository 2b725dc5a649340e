"""Client frames of the WebSocket protocol, parsed and validated from raw text in one step.

Server frames are built as JSON text by the functions at the bottom; the ``message`` part of a
message or ack frame is serialized once per stored message and reused for every subscriber.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from persistence.models import CLIENT_MSG_ID_MAX_CHARS

from realtime.wire import describe_value, encode_json

Ref = Annotated[str, StringConstraints(max_length=128)]

# Error codes of the protocol's `error` frame.
BAD_FRAME = "bad_frame"
INVALID = "invalid"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
INTERNAL = "internal"


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)

    ref: Ref | None = None


class SubscribeFrame(_Frame):
    type: Literal["subscribe"]
    conversation_id: uuid.UUID
    since_seq: Annotated[int, Field(ge=0)] | None = None


class UnsubscribeFrame(_Frame):
    type: Literal["unsubscribe"]
    conversation_id: uuid.UUID


class SendFrame(_Frame):
    type: Literal["send"]
    conversation_id: uuid.UUID
    # Blank and over-long content are rule violations (`invalid`), checked by the gateway, so the
    # type check here only makes sure content is a string.
    content: str
    client_msg_id: str | None = None
    metadata: dict[str, Any] | None = None


class TypingFrame(_Frame):
    type: Literal["typing"]
    conversation_id: uuid.UUID


class PingFrame(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[
    Union[SubscribeFrame, UnsubscribeFrame, SendFrame, TypingFrame, PingFrame],
    Field(discriminator="type"),
]
_client_frame = TypeAdapter(ClientFrame)


class FrameError(Exception):
    """A client frame that cannot be handled; becomes an `error` frame, never a closed connection."""

    def __init__(self, code: str, detail: str, ref: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref


def parse_client_frame(text: str) -> SubscribeFrame | UnsubscribeFrame | SendFrame | TypingFrame | PingFrame:
    """Parse one text frame; raise FrameError with code `bad_frame` naming what is wrong."""
    try:
        return _client_frame.validate_json(text)
    except ValidationError as error:
        raise FrameError(BAD_FRAME, _describe(error), _salvage_ref(text)) from error


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        return "frame is not valid JSON"
    if kind == "union_tag_not_found":
        return "frame has no `type` field"
    if kind == "union_tag_invalid":
        sent = first["input"].get("type") if isinstance(first.get("input"), dict) else None
        if not isinstance(sent, str):
            return f"field `type` must be a string naming the frame (got {describe_value('type', sent)})"
        return f"unknown frame type {sent!r}; expected subscribe, unsubscribe, send, typing or ping"
    if not first["loc"]:
        return "frame must be a JSON object"
    location = ".".join(str(part) for part in first["loc"][1:]) or "frame"
    if kind == "missing" or "input" not in first:
        return f"field `{location}`: {first['msg']}"
    return f"field `{location}`: {first['msg']} (got {describe_value(location, first['input'])})"


def _salvage_ref(text: str) -> str | None:
    """Return the frame's `ref` if the text is a JSON object with a string ref, so errors can carry it."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("ref"), str) and len(value["ref"]) <= 128:
        return value["ref"]
    return None


def check_client_msg_id(frame: SendFrame) -> None:
    if frame.client_msg_id is not None and not 1 <= len(frame.client_msg_id) <= CLIENT_MSG_ID_MAX_CHARS:
        raise FrameError(
            INVALID,
            f"client_msg_id must be 1 to {CLIENT_MSG_ID_MAX_CHARS} characters long (got {len(frame.client_msg_id)})",
            frame.ref,
        )


# Server frames. Field order follows the contract; `ref` is included only when the client sent one.


def _with_ref(frame: dict[str, Any], ref: str | None) -> str:
    if ref is not None:
        frame["ref"] = ref
    return encode_json(frame)


def ready_frame(session_id: str, user_id: uuid.UUID, name: str) -> str:
    return encode_json(
        {"type": "ready", "session_id": session_id, "user": {"user_id": str(user_id), "name": name}, "protocol": 1}
    )


def subscribed_frame(conversation_id: uuid.UUID, last_seq: int, ref: str | None) -> str:
    return _with_ref({"type": "subscribed", "conversation_id": str(conversation_id), "last_seq": last_seq}, ref)


def unsubscribed_frame(conversation_id: uuid.UUID, reason: str, ref: str | None) -> str:
    return _with_ref({"type": "unsubscribed", "conversation_id": str(conversation_id), "reason": reason}, ref)


def error_frame(code: str, detail: str, ref: str | None) -> str:
    return _with_ref({"type": "error", "code": code, "detail": detail}, ref)


def pong_frame(ref: str | None) -> str:
    return _with_ref({"type": "pong"}, ref)


def typing_frame(conversation_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return encode_json({"type": "typing", "conversation_id": str(conversation_id), "user_id": str(user_id)})


def message_frame(message_json: str) -> str:
    """Wrap an already serialized message object; built once and sent to every subscriber."""
    return '{"type":"message","message":' + message_json + "}"


def ack_frame(message_json: str, client_msg_id: str | None, ref: str | None) -> str:
    head = {"type": "ack", "client_msg_id": client_msg_id}
    if ref is not None:
        head["ref"] = ref
    return encode_json(head)[:-1] + ',"message":' + message_json + "}"
