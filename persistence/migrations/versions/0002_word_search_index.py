"""Search by whole words, with trigram indexes only over the scripts written without spaces.

The first schema indexed every three-character sequence of every message, which made each
stored chat message three to four times as costly to index as its words. Words in spaced
scripts now match as whole words on both databases. Only messages that contain a character of a
script written without spaces (Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar) go into a
trigram index, where a word matches anywhere inside the content.

SQLite: the FTS5 table `messages_fts` is rebuilt with the unicode61 tokenizer, and a trigram
FTS5 table `messages_trigram_fts` indexes the messages in those scripts.

PostgreSQL: the word index turns ASCII punctuation into spaces before `to_tsvector('simple',
...)`, so that words split where SQLite's tokenizer splits them. Without that step its parser
keeps e-mail addresses, URLs, file names and decimals as single words. The pg_trgm index becomes
a partial index over the messages in those scripts.

Both databases rebuild the indexes from the stored messages, which takes a while on a large
database, and writes wait meanwhile.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The scripts written without spaces, as a character class. persistence.search holds the same
# class, and PostgreSQL's searches repeat the index condition built from it, so the two must
# stay equal. A later change to the class needs a migration of its own.
NO_SPACE_CHARACTERS = (
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0002fa1f"  # CJK ideographs, supplementary planes
)
# SQLite's GLOB compares the code points of a class's ranges.
NO_SPACE_GLOB = f"'*[{NO_SPACE_CHARACTERS}]*'"
NO_SPACE_REGEX = f"'[{NO_SPACE_CHARACTERS}]'"

FTS_TRIGGERS = ("messages_fts_after_insert", "messages_fts_after_delete", "messages_fts_after_update")
TRIGRAM_TRIGGERS = (
    "messages_trigram_fts_after_insert",
    "messages_trigram_fts_after_delete",
    "messages_trigram_fts_after_update",
)

# ASCII punctuation (Python's string.punctuation) and as many spaces, as SQL literals.
PUNCTUATION = "'" + "!\"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~" + "'"
SPACES = "'" + " " * 32 + "'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        upgrade_sqlite()
    else:
        replace_postgresql_word_index(f"translate(content, {PUNCTUATION}, {SPACES})")
        replace_postgresql_trigram_index(f"WHERE content ~ {NO_SPACE_REGEX}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        downgrade_sqlite()
    else:
        replace_postgresql_word_index("content")
        replace_postgresql_trigram_index("")


def replace_postgresql_word_index(text: str) -> None:
    """Create the word index again over `to_tsvector('simple', text)`."""
    op.execute("DROP INDEX IF EXISTS ix_messages_content_fts")
    op.execute(
        f"CREATE INDEX ix_messages_content_fts ON messages USING gin (to_tsvector('simple'::regconfig, {text}))"
    )


def upgrade_sqlite() -> None:
    drop_sqlite_search()
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
        "content_rowid='pk', tokenize='unicode61 remove_diacritics 0')"
    )
    op.execute(
        "CREATE VIRTUAL TABLE messages_trigram_fts USING fts5(content, content='messages', "
        "content_rowid='pk', tokenize='trigram')"
    )
    create_word_triggers()
    op.execute(
        f"CREATE TRIGGER messages_trigram_fts_after_insert AFTER INSERT ON messages "
        f"WHEN new.content GLOB {NO_SPACE_GLOB} BEGIN "
        "INSERT INTO messages_trigram_fts(rowid, content) VALUES (new.pk, new.content); END"
    )
    op.execute(
        f"CREATE TRIGGER messages_trigram_fts_after_delete AFTER DELETE ON messages "
        f"WHEN old.content GLOB {NO_SPACE_GLOB} BEGIN "
        "INSERT INTO messages_trigram_fts(messages_trigram_fts, rowid, content) "
        "VALUES ('delete', old.pk, old.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_trigram_fts_after_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO messages_trigram_fts(messages_trigram_fts, rowid, content) "
        f"SELECT 'delete', old.pk, old.content WHERE old.content GLOB {NO_SPACE_GLOB}; "
        "INSERT INTO messages_trigram_fts(rowid, content) "
        f"SELECT new.pk, new.content WHERE new.content GLOB {NO_SPACE_GLOB}; END"
    )
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    op.execute(
        "INSERT INTO messages_trigram_fts(rowid, content) "
        f"SELECT pk, content FROM messages WHERE content GLOB {NO_SPACE_GLOB}"
    )


def downgrade_sqlite() -> None:
    drop_sqlite_search()
    op.execute(
        "CREATE VIRTUAL TABLE messages_fts USING fts5("
        "content, content='messages', content_rowid='pk', tokenize='trigram')"
    )
    create_word_triggers()
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")


def drop_sqlite_search() -> None:
    for trigger in FTS_TRIGGERS + TRIGRAM_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS messages_trigram_fts")
    op.execute("DROP TABLE IF EXISTS messages_fts")


def create_word_triggers() -> None:
    """Create the triggers that keep messages_fts equal to messages.content, whatever its tokenizer."""
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


def replace_postgresql_trigram_index(condition: str) -> None:
    """Create the pg_trgm index again with `condition`, where the first schema created one."""
    bind = op.get_bind()
    schema = bind.scalar(
        sa.text(
            "SELECT n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        )
    )
    if schema is None:
        # Without the extension there was no index: those searches scan, as before.
        return
    op.execute("DROP INDEX IF EXISTS ix_messages_content_trgm")
    op.execute(
        "CREATE INDEX ix_messages_content_trgm ON messages "
        f'USING gin (content "{schema}".gin_trgm_ops) {condition}'
    )
