"""PostgreSQL: a cheaper word index expression, and no pending list in the word index.

The statement that appends a batch updates the word index, and it holds its conversations' row
locks until it commits, so every other append waits for that work. Two things made it costly:

- The expression turned ASCII punctuation into spaces with translate(), which compares every
  character of the content with every punctuation mark: about 35 us for a 200-character message,
  a third of what PostgreSQL spent per stored message. regexp_replace() with the same marks as a
  character class gives the same text for a fraction of that.
- GIN's fast update collected new entries in a pending list and moved the whole list into the
  index when it reached gin_pending_list_limit, inside whichever insert crossed the limit, when
  autovacuum had not done it before. That batch then held its conversations for 40 to 340 ms.
  Without the pending list every insert updates the index itself: a steady cost per message,
  and a search no longer reads an unsorted list first.

Per stored message, for 45,000 chat-sized messages in batches of 15 on this project's machine:
94 against 61 us of PostgreSQL CPU when each message has four words, the slowest batch 43 against
4.4 ms; on text of about 35 words, mostly distinct, 167 against 178 us, the slowest batch 338
against 15 ms.

SQLite's indexes are unchanged. The index is built again from the stored messages, which takes a
while on a large database, and writes wait meanwhile.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ASCII punctuation (Python's string.punctuation) as a regular expression class, with `-`, `[`,
# `]`, `\` and `^` escaped, as an SQL literal. persistence.search builds the same expression, and
# the planner uses the index only when a search repeats it exactly; a later change to it needs
# a migration of its own.
PUNCTUATION_CLASS = "'[!\"#$%&''()*+,\\-./:;<=>?@\\[\\\\\\]\\^_`{|}~]'"
WORDS = f"to_tsvector('simple'::regconfig, regexp_replace(content, {PUNCTUATION_CLASS}, ' ', 'g'))"

# The expression of revision 0002, for the downgrade.
PUNCTUATION = "'" + "!\"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~" + "'"
SPACES = "'" + " " * 32 + "'"
OLD_WORDS = f"to_tsvector('simple'::regconfig, translate(content, {PUNCTUATION}, {SPACES}))"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_messages_content_fts")
    op.execute(f"CREATE INDEX ix_messages_content_fts ON messages USING gin ({WORDS}) WITH (fastupdate = off)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_messages_content_fts")
    op.execute(f"CREATE INDEX ix_messages_content_fts ON messages USING gin ({OLD_WORDS})")
