"""Initial schema: users, credentials, workspaces, conversations, participants, messages.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from persistence.columns import MetadataJSON, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger(__name__)

# INTEGER on SQLite so that the column is the rowid; BIGINT elsewhere.
ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_normalized", sa.String(320), nullable=False),
        sa.Column("metadata", MetadataJSON(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email_normalized", name="uq_users_email_normalized"),
    )
    op.create_table(
        "password_credentials",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("user_id", name="pk_password_credentials"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_password_credentials_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(255), nullable=False),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])

    op.create_table(
        "workspaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("metadata", MetadataJSON(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_workspaces_owner_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_workspaces_owner_id_created_at", "workspaces", ["owner_id", "created_at", "id"]
    )

    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("metadata", MetadataJSON(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_conversations_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_conversations_workspace_id_created_at",
        "conversations",
        ["workspace_id", "created_at", "id"],
    )

    op.create_table(
        "participants",
        sa.Column("id", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_participants"),
        sa.UniqueConstraint(
            "conversation_id", "user_id", name="uq_participants_conversation_id_user_id"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_participants_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_participants_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_participants_user_id_conversation_id", "participants", ["user_id", "conversation_id"]
    )

    op.create_table(
        "messages",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("sender_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(128), nullable=True),
        sa.Column("metadata", MetadataJSON(), nullable=False),
        *timestamps(),
        sa.PrimaryKeyConstraint("pk", name="pk_messages"),
        sa.UniqueConstraint("id", name="uq_messages_id"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_id_seq"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sender_id"], ["users.id"], name="fk_messages_sender_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_messages_sender_id", "messages", ["sender_id"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_index(
        "uq_messages_sender_id_client_msg_id",
        "messages",
        ["sender_id", "client_msg_id"],
        unique=True,
        sqlite_where=sa.text("client_msg_id IS NOT NULL"),
        postgresql_where=sa.text("client_msg_id IS NOT NULL"),
    )

    if op.get_bind().dialect.name == "sqlite":
        create_sqlite_search()
    else:
        create_postgresql_search()


def create_sqlite_search() -> None:
    # An external-content FTS5 table over messages.content, keyed by messages.pk. The trigram
    # tokenizer (SQLite 3.34 and later) indexes every three-character sequence, so text in
    # scripts without spaces between words is findable too.
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "content, content='messages', content_rowid='pk', tokenize='trigram')"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_after_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.pk, new.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_after_delete AFTER DELETE ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.pk, old.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_after_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.pk, old.content); "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.pk, new.content); END"
    )


def create_postgresql_search() -> None:
    op.execute(
        "CREATE INDEX ix_messages_content_fts ON messages "
        "USING gin (to_tsvector('simple'::regconfig, content))"
    )
    # pg_trgm serves substring search for scripts written without spaces. Without the
    # extension those searches still work, by scanning the visible conversations' messages.
    bind = op.get_bind()
    schema = trigram_extension_schema(bind)
    if schema is None:
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        except sa.exc.DBAPIError as exc:
            logger.warning("pg_trgm is not available (%s); substring search will scan", exc.orig)
            return
        schema = trigram_extension_schema(bind)
    op.execute(
        "CREATE INDEX ix_messages_content_trgm ON messages "
        f'USING gin (content "{schema}".gin_trgm_ops)'
    )


def trigram_extension_schema(bind: sa.Connection) -> str | None:
    """Return the schema pg_trgm is installed in, or None when it is not installed."""
    return bind.scalar(
        sa.text(
            "SELECT n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        )
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("after_insert", "after_delete", "after_update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    for table in (
        "messages",
        "participants",
        "conversations",
        "workspaces",
        "api_keys",
        "password_credentials",
        "users",
    ):
        op.drop_table(table)
