"""Domain models: what the data layer returns and what the API layer builds its responses from.

ORM rows never leave a repository; they are converted into these Pydantic models first.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

MetadataDict = dict[str, Any]


def _reject_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_reject_blank)]
Description = Annotated[
    str, StringConstraints(min_length=1, max_length=500), AfterValidator(_reject_blank)
]
Topic = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_reject_blank)]
Content = Annotated[str, StringConstraints(min_length=1), AfterValidator(_reject_blank)]
UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]

# Upper bound on a client-chosen idempotency key; it is stored and indexed.
CLIENT_MSG_ID_MAX_CHARS = 128
ClientMsgId = Annotated[str, StringConstraints(min_length=1, max_length=CLIENT_MSG_ID_MAX_CHARS)]


def normalize_email(email: str) -> str:
    """Return the form under which an email is unique: `Bob@X.io` and `bob@x.io` are one account."""
    return email.strip().lower()


class DomainModel(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class User(DomainModel):
    user_id: uuid.UUID
    name: Name
    email: EmailStr
    metadata: MetadataDict = Field(default_factory=dict)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class Workspace(DomainModel):
    id: uuid.UUID
    name: Name
    description: Description
    owner_id: uuid.UUID
    metadata: MetadataDict = Field(default_factory=dict)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class Conversation(DomainModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    topic: Topic
    participant_ids: list[uuid.UUID] = Field(min_length=1)
    metadata: MetadataDict = Field(default_factory=dict)
    last_seq: int = Field(ge=0)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class Message(DomainModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content
    timestamp: UtcDatetime
    seq: int = Field(ge=1)
    client_msg_id: str | None = None
    metadata: MetadataDict = Field(default_factory=dict)


class NewMessage(DomainModel):
    """A message to append; the data layer assigns `id`, `timestamp` and `seq`."""

    conversation_id: uuid.UUID
    sender_id: uuid.UUID
    content: Content
    client_msg_id: ClientMsgId | None = None
    metadata: MetadataDict = Field(default_factory=dict)


class AppendResult(DomainModel):
    """The stored message; `created` is False when `client_msg_id` matched an earlier message."""

    message: Message
    created: bool


class ApiKey(DomainModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: Name
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None = None


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list; `next_cursor` is None on the last page."""

    items: list[ItemT]
    next_cursor: str | None = None


class HistoryPage(BaseModel):
    """Messages in ascending seq order; `has_more` refers to the direction that was requested."""

    items: list[Message]
    has_more: bool
