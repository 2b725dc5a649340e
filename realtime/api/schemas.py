"""Request and response bodies of the HTTP API.

Response models are built from the domain models in ``persistence.models``. Timestamps serialize
as RFC 3339 UTC with a ``Z`` suffix and six fractional digits, the same text the WebSocket
protocol sends.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, PlainSerializer, StringConstraints, field_validator

from persistence.models import (
    ApiKey,
    ClientMsgId,
    Content,
    Conversation,
    Description,
    Message,
    MetadataDict,
    Name,
    Topic,
    User,
    Workspace,
)
from realtime.auth.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS
from realtime.wire import format_timestamp

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)]
# Login takes any string up to the limit: a password that could never have been set is a wrong
# password (401), not a validation error that would tell the caller about the rules.
LoginPassword = Annotated[str, StringConstraints(max_length=MAX_PASSWORD_CHARS)]
# RFC 5321 caps a forward path at 256 octets, so no address is longer than this.
LoginEmail = Annotated[str, StringConstraints(max_length=320)]


def _reject_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain the NUL character (\\u0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)


class RequestBody(BaseModel):
    """Base of every request body. PostgreSQL cannot store NUL in text or JSON, so no field may contain it."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _check_no_nul(cls, value: Any) -> Any:
        _reject_nul(value)
        return value


# --- users and authentication ---


class RegisterRequest(RequestBody):
    email: EmailStr
    name: Name
    password: Password


class LoginRequest(RequestBody):
    email: LoginEmail
    password: LoginPassword


class PublicUser(BaseModel):
    """A user as other users see it: no email."""

    user_id: uuid.UUID
    name: str
    metadata: MetadataDict

    @classmethod
    def of(cls, user: User) -> PublicUser:
        return cls(user_id=user.user_id, name=user.name, metadata=user.metadata)


class UserProfile(PublicUser):
    """A user as the user themself sees it."""

    email: str

    @classmethod
    def of(cls, user: User) -> UserProfile:
        return cls(user_id=user.user_id, name=user.name, metadata=user.metadata, email=user.email)


def user_view(user: User, viewer_id: uuid.UUID) -> PublicUser:
    """Return the profile with email for the user themself, the public form for anyone else."""
    return UserProfile.of(user) if user.user_id == viewer_id else PublicUser.of(user)


class UserList(BaseModel):
    items: list[UserProfile | PublicUser]


class TokenResponse(BaseModel):
    user: UserProfile
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: Timestamp


class ApiKeyCreateRequest(RequestBody):
    name: Name


class ApiKeyView(BaseModel):
    id: uuid.UUID
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None = None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyView:
        return cls(id=key.id, name=key.name, created_at=key.created_at, last_used_at=key.last_used_at)


class ApiKeyCreated(BaseModel):
    """A new API key; ``key`` is shown in this response only."""

    id: uuid.UUID
    name: str
    key: str
    created_at: Timestamp


class ApiKeyList(BaseModel):
    items: list[ApiKeyView]


# --- workspaces ---


class WorkspaceCreateRequest(RequestBody):
    name: Name
    description: Description
    metadata: MetadataDict = Field(default_factory=dict)


class WorkspaceUpdateRequest(RequestBody):
    """Fields left out or null stay as they are."""

    name: Name | None = None
    description: Description | None = None
    metadata: MetadataDict | None = None


class WorkspaceView(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    owner_id: uuid.UUID
    metadata: MetadataDict
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, workspace: Workspace) -> WorkspaceView:
        return cls.model_validate(workspace.model_dump())


class WorkspaceList(BaseModel):
    items: list[WorkspaceView]
    next_cursor: str | None


# --- conversations ---


class ConversationCreateRequest(RequestBody):
    topic: Topic
    participant_ids: list[uuid.UUID] = Field(min_length=1)
    metadata: MetadataDict = Field(default_factory=dict)


class ConversationUpdateRequest(RequestBody):
    """Fields left out or null stay as they are."""

    topic: Topic | None = None
    metadata: MetadataDict | None = None


class ConversationView(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    topic: str
    participant_ids: list[uuid.UUID]
    metadata: MetadataDict
    last_seq: int
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationView:
        return cls.model_validate(conversation.model_dump())


class ConversationList(BaseModel):
    items: list[ConversationView]
    next_cursor: str | None


# --- messages ---


class MessageCreateRequest(RequestBody):
    """The content's maximum length is a setting, so the handler checks it."""

    content: Content
    metadata: MetadataDict = Field(default_factory=dict)
    client_msg_id: ClientMsgId | None = None


class MessageView(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    content: str
    timestamp: Timestamp
    seq: int
    metadata: MetadataDict
    client_msg_id: str | None

    @classmethod
    def of(cls, message: Message) -> MessageView:
        return cls.model_validate(message.model_dump())


class MessageHistory(BaseModel):
    items: list[MessageView]
    has_more: bool


class MessageList(BaseModel):
    items: list[MessageView]


# --- health ---


class HealthStatus(BaseModel):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)
