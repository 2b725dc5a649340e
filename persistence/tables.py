"""Tables as SQLAlchemy 2 typed mappings.

Every row has `created_at` and `updated_at`. Foreign keys carry ON DELETE CASCADE in the schema
itself, so deleting a workspace removes its conversations, participants and messages whether the
delete comes from a repository, from SQL typed by hand or from another tool. Repositories read
and write these tables with Core statements and return domain models; rows never leave them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from persistence.columns import MetadataJSON, UtcDateTime, utc_now
from persistence.ids import new_message_id
from persistence.models import CLIENT_MSG_ID_MAX_CHARS

# SQLite makes a column an alias of the rowid only when its type is exactly INTEGER, so the
# 64-bit surrogate keys are declared as INTEGER there and BIGINT elsewhere.
RowKey = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        uuid.UUID: Uuid(),
        datetime: UtcDateTime(),
    }


class TimestampedRow:
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class UserRow(TimestampedRow, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(320))
    # `normalize_email(email)`: the unique key that makes `Bob@X.io` and `bob@x.io` one account.
    email_normalized: Mapped[str] = mapped_column(String(320), unique=True)
    # Named `metadata_` because declarative classes reserve `metadata`; the column is `metadata`.
    metadata_: Mapped[Any] = mapped_column("metadata", MetadataJSON(), default=dict)


class PasswordCredentialRow(TimestampedRow, Base):
    __tablename__ = "password_credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(Text)


class ApiKeyRow(TimestampedRow, Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(255), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class WorkspaceRow(TimestampedRow, Base):
    __tablename__ = "workspaces"
    __table_args__ = (Index("ix_workspaces_owner_id_created_at", "owner_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500))
    metadata_: Mapped[Any] = mapped_column("metadata", MetadataJSON(), default=dict)


class ConversationRow(TimestampedRow, Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_workspace_id_created_at", "workspace_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    topic: Mapped[str] = mapped_column(String(200))
    # The seq of the newest message. Appending raises it in the transaction that inserts the
    # messages, and the lock that write takes orders concurrent writers: a row lock on
    # PostgreSQL, the database write lock on SQLite.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    metadata_: Mapped[Any] = mapped_column("metadata", MetadataJSON(), default=dict)


class ParticipantRow(TimestampedRow, Base):
    """Membership of a user in a conversation; `id` keeps the order participants were added in."""

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("conversation_id", "user_id"),
        # Serves "is this user a participant" and "this user's conversations".
        Index("ix_participants_user_id_conversation_id", "user_id", "conversation_id"),
    )

    id: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))


class MessageRow(TimestampedRow, Base):
    """A stored message. `created_at` is the message's server timestamp.

    `pk` is an integer key: inserts append to the end of the table's B-tree, and SQLite's FTS5
    index refers to messages by this stable integer (an implicit rowid may change on VACUUM).
    """

    __tablename__ = "messages"
    __table_args__ = (
        # Also the index for reading a conversation's messages: conversation_id leads.
        UniqueConstraint("conversation_id", "seq"),
        # Also the index for finding a sender's messages: sender_id leads, and a NULL
        # client_msg_id never collides with another.
        Index("uq_messages_sender_id_client_msg_id", "sender_id", "client_msg_id", unique=True),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True, default=new_message_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    sender_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(CLIENT_MSG_ID_MAX_CHARS))
    metadata_: Mapped[Any] = mapped_column("metadata", MetadataJSON(), default=dict)


users = UserRow.__table__
password_credentials = PasswordCredentialRow.__table__
api_keys = ApiKeyRow.__table__
workspaces = WorkspaceRow.__table__
conversations = ConversationRow.__table__
participants = ParticipantRow.__table__
messages = MessageRow.__table__

# Parents before children: the order in which rows are exported and imported.
TABLES_IN_DEPENDENCY_ORDER = (
    users,
    password_credentials,
    api_keys,
    workspaces,
    conversations,
    participants,
    messages,
)
