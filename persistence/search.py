"""Full-text search statements over message content, one builder per database.

The user's text is split on white space into words, and a message matches when every word
matches. No word is parsed as query syntax, so `foo AND (`, a lone `"` or `NEAR(` are plain
words. A word made only of punctuation is dropped, so a query of punctuation alone finds nothing.

SQLite: every word matches wherever it appears inside the content, in any script, ignoring case.
An FTS5 table with the `trigram` tokenizer, kept in sync by triggers, finds words of three or
more characters. Shorter words, and every word when the searched conversations hold few
messages, are tested row by row with `casefold_contains` (Python's str.casefold). The trigram
tokenizer folds case by Unicode's simple case mapping, so the two agree except for letters
whose full folding differs, such as `ß`, which casefolds to `ss`.

PostgreSQL: a word in a script written without spaces between words (Chinese, Japanese, Korean,
Thai, Lao, Khmer, Myanmar) matches anywhere inside the content with ILIKE, served by a pg_trgm
index for three or more characters. Any other word must equal a whole word of the content under
the `simple` text search configuration (lower-cased, not stemmed), served by a GIN index.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    Select,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
)

from persistence.sqlite import CONTAINS_FUNCTION
from persistence.tables import messages

# The FTS5 table over messages.content that the initial migration creates on SQLite.
MESSAGES_FTS = table("messages_fts", column("rowid", Integer))

# Bounds on the work one query can cause.
MAX_QUERY_WORDS = 16
MAX_WORD_CHARS = 100

# The shortest word the trigram index can look up.
TRIGRAM_MIN_CHARS = 3

_NO_SPACE_SCRIPTS = re.compile(
    "["
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0002fa1f"  # CJK ideographs, supplementary planes
    "]"
)


def split_words(query: str) -> list[str]:
    """Split the user's text into the words to search for, keeping their order."""
    words = []
    for word in query.split():
        if not any(char.isalnum() for char in word):
            continue
        words.append(word[:MAX_WORD_CHARS])
        if len(words) == MAX_QUERY_WORDS:
            break
    return words


def sqlite_search(
    columns: Sequence[ColumnElement[Any]],
    words: list[str],
    scope: ColumnElement[bool],
    *,
    scan: bool,
    limit: int,
) -> Select[Any]:
    """Build the SQLite search for `words` among the messages that `scope` admits, newest first.

    `scan` reads the messages in scope and tests each word on them, which is fastest when the
    scope contains few messages. Otherwise the FTS5 index drives the search from the newest match
    down, and it stops at `limit` matches in scope. A query with no word of three or more
    characters has nothing for the index to look up, so it always scans.
    """
    indexed = [word for word in words if len(word) >= TRIGRAM_MIN_CHARS]
    if scan or not indexed:
        statement = select(*columns).where(scope, *(_casefold_contains(word) for word in words))
        return statement.order_by(messages.c.pk.desc()).limit(limit)

    # Each word becomes an FTS5 string with its inner quotes doubled, so nothing in it is
    # syntax. FTS5 requires every one of several space-separated strings to match.
    match = " ".join('"' + word.replace('"', '""') + '"' for word in indexed)
    short = [word for word in words if len(word) < TRIGRAM_MIN_CHARS]
    return (
        select(*columns)
        .select_from(MESSAGES_FTS.join(messages, messages.c.pk == MESSAGES_FTS.c.rowid))
        .where(
            literal_column("messages_fts").op("MATCH")(bindparam("fts_query", match)),
            scope,
            *(_casefold_contains(word) for word in short),
        )
        # FTS5 walks its index in rowid order itself, so no sort step collects every match.
        .order_by(MESSAGES_FTS.c.rowid.desc())
        .limit(limit)
    )


def postgresql_search(
    columns: Sequence[ColumnElement[Any]],
    words: list[str],
    scope: ColumnElement[bool],
    *,
    limit: int,
) -> Select[Any]:
    """Build the PostgreSQL search for `words` among the messages that `scope` admits."""
    substring_words = [word for word in words if _NO_SPACE_SCRIPTS.search(word)]
    whole_words = [word for word in words if not _NO_SPACE_SCRIPTS.search(word)]

    conditions: list[ColumnElement[bool]] = []
    if whole_words:
        # plainto_tsquery does not recognise tsquery operators in its input (PostgreSQL manual,
        # "Parsing Queries"), so the words need no quoting.
        config = literal_column("'simple'::regconfig")
        conditions.append(
            func.to_tsvector(config, messages.c.content).op("@@")(
                func.plainto_tsquery(config, " ".join(whole_words))
            )
        )
    for word in substring_words:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(messages.c.content.ilike(f"%{escaped}%", escape="\\"))

    statement = select(*columns).where(scope, *conditions)
    return statement.order_by(messages.c.pk.desc()).limit(limit)


def _casefold_contains(word: str) -> ColumnElement[bool]:
    return getattr(func, CONTAINS_FUNCTION)(messages.c.content, word, type_=Boolean)
