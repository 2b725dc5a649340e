"""Full-text search conditions over message content, one builder per database.

The user's text is split on white space into words, and a message matches when every word
matches. No word is parsed as query syntax, so `foo AND (`, a lone `"` or `NEAR(` are plain
words. A word made only of punctuation is dropped, so a query of punctuation alone finds nothing.

SQLite: an FTS5 table with the `trigram` tokenizer, kept in sync by triggers. A word of three or
more characters matches wherever it appears inside the content, in any script, ignoring case
(Unicode case folding). FTS5 finds those through its index. Shorter words are matched with LIKE
on the rows found that way, or on the messages of the visible conversations when the query has
no longer word, and LIKE ignores case for ASCII letters only.

PostgreSQL: a word in a script written without spaces between words (Chinese, Japanese, Korean,
Thai, Lao, Khmer, Myanmar) matches anywhere inside the content with ILIKE, served by a pg_trgm
index for three or more characters. Any other word must equal a whole word of the content under
the `simple` text search configuration (lower-cased, not stemmed), served by a GIN index.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, Integer, and_, column, func, literal_column, text

from persistence.tables import messages

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


def content_condition(dialect: str, words: list[str]) -> ColumnElement[bool]:
    """Build the condition on `messages` that every word matches; `words` must not be empty."""
    if dialect == "postgresql":
        return _postgresql_condition(words)
    return _sqlite_condition(words)


def _sqlite_condition(words: list[str]) -> ColumnElement[bool]:
    indexed = [word for word in words if len(word) >= TRIGRAM_MIN_CHARS]
    short = [word for word in words if len(word) < TRIGRAM_MIN_CHARS]

    conditions: list[ColumnElement[bool]] = []
    if indexed:
        # Each word becomes an FTS5 string with its inner quotes doubled, so nothing in it is
        # syntax. FTS5 requires every one of several space-separated strings to match.
        match = " ".join('"' + word.replace('"', '""') + '"' for word in indexed)
        fts_rows = (
            text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :fts_query")
            .bindparams(fts_query=match)
            .columns(column("rowid", Integer))
        )
        conditions.append(messages.c.pk.in_(fts_rows))
    conditions.extend(_contains(word, case_insensitive=False) for word in short)
    return and_(*conditions)


def _postgresql_condition(words: list[str]) -> ColumnElement[bool]:
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
    conditions.extend(_contains(word, case_insensitive=True) for word in substring_words)
    return and_(*conditions)


def _contains(word: str, *, case_insensitive: bool) -> ColumnElement[bool]:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    if case_insensitive:
        return messages.c.content.ilike(pattern, escape="\\")
    # SQLite's LIKE already ignores ASCII case.
    return messages.c.content.like(pattern, escape="\\")

