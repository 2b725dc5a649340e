"""Full-text search statements over message content, one builder per database.

The user's text is split on white space into words, and a message matches when every word
matches. No word is parsed as query syntax, so `foo AND (`, a lone `"` or `NEAR(` are plain
words. A word made only of punctuation is dropped, so a query of punctuation alone finds nothing.

Both databases match words the same way:
- A word in a script written without spaces between words (Chinese, Japanese, Korean, Thai,
  Lao, Khmer, Myanmar) matches anywhere inside the content, ignoring case.
- Any other word must equal a whole word of the content, ignoring case, without stemming and
  without folding accents: `port` does not find `report`, and `cafe` does not find `café`. A
  word with punctuation inside, such as `e-mail`, matches its parts in sequence.

Only messages that contain a character of those scripts go into the substring (trigram)
indexes: on chat text, indexing every three-character sequence of every message costs three to
four times what the word index costs, on both databases (`python -m bench.search_index`).

SQLite: an FTS5 table with the `unicode61` tokenizer indexes the words of every message, and an
FTS5 table with the `trigram` tokenizer indexes the messages in those scripts. Triggers keep both
in sync. When the searched conversations hold few messages, each one is read and tested with
`has_whole_words` and `casefold_contains`, functions registered on every connection.

PostgreSQL: whole words through `to_tsvector('simple', ...)` over the content with its ASCII
punctuation turned into spaces (regexp_replace), and a GIN index on that expression. Without
that step its parser keeps e-mail addresses, URLs, file names and decimals as single words, where
SQLite's tokenizer splits them. The other words go through ILIKE, served by a partial pg_trgm index over the
messages in those scripts.
"""

from __future__ import annotations

import re
import string
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

from persistence.sqlite import CONTAINS_FUNCTION, HAS_WORD_FUNCTION
from persistence.tables import messages

# The FTS5 tables over messages.content that the migrations create on SQLite: the words of
# every message, and the trigrams of the messages in scripts written without spaces.
MESSAGES_FTS = table("messages_fts", column("rowid", Integer))
MESSAGES_TRIGRAM_FTS = table("messages_trigram_fts", column("rowid", Integer))

# Bounds on the work one query can cause.
MAX_QUERY_WORDS = 16
MAX_WORD_CHARS = 100

# The shortest word the trigram index can look up.
TRIGRAM_MIN_CHARS = 3

# The scripts written without spaces between words, as a character class. The migration that
# creates the trigram indexes keeps its own copy, which must stay equal to this one:
# PostgreSQL uses its partial index only when the query repeats the index's condition.
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
_NO_SPACE_SCRIPTS = re.compile(f"[{NO_SPACE_CHARACTERS}]")

# PostgreSQL turns ASCII punctuation into spaces before it splits the content into words, in the
# expression of the word index, which the migration that creates it repeats. The marks form a
# regular expression class, with `-`, `[`, `]`, `\` and `^` escaped, as an SQL literal.
_PUNCTUATION_AS_SPACES = str.maketrans(string.punctuation, " " * len(string.punctuation))
SQL_PUNCTUATION_CLASS = (
    "'[" + "".join("\\" + char if char in "-[]\\^" else char for char in string.punctuation).replace("'", "''") + "]'"
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


def in_no_space_script(text: str) -> bool:
    """Tell whether `text` contains a character of a script written without spaces between words."""
    return _NO_SPACE_SCRIPTS.search(text) is not None


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
    scope contains few messages. Otherwise an FTS5 index drives the search from the newest match
    down, and it stops at `limit` matches in scope. The word index leads when the query has a
    whole word. Otherwise the trigram index leads, when the query has a substring word of three
    or more characters. A query of only shorter substring words has nothing for an index to look
    up, so it scans.
    """
    whole = [word for word in words if not in_no_space_script(word)]
    inside = [word for word in words if in_no_space_script(word)]
    long_inside = [word for word in inside if len(word) >= TRIGRAM_MIN_CHARS]
    if whole and not scan:
        index, looked_up = MESSAGES_FTS, whole
        tests = [_casefold_contains(word) for word in inside]
    elif long_inside and not scan:
        index, looked_up = MESSAGES_TRIGRAM_FTS, long_inside
        tests = [_casefold_contains(word) for word in inside if len(word) < TRIGRAM_MIN_CHARS]
    else:
        tests = [_has_whole_words(word) for word in whole] + [_casefold_contains(word) for word in inside]
        return select(*columns).where(scope, *tests).order_by(messages.c.pk.desc()).limit(limit)

    # Each word becomes an FTS5 string with its inner quotes doubled, so nothing in it is
    # syntax. FTS5 requires every one of several space-separated strings to match, and the
    # tokenizer splits a string into its words, which must then follow each other.
    match = " ".join('"' + word.replace('"', '""') + '"' for word in looked_up)
    return (
        select(*columns)
        .select_from(index.join(messages, messages.c.pk == index.c.rowid))
        .where(literal_column(index.name).op("MATCH")(bindparam("fts_query", match)), scope, *tests)
        # FTS5 walks its index in rowid order itself, so no sort step collects every match.
        .order_by(index.c.rowid.desc())
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
    whole = [word for word in words if not in_no_space_script(word)]
    inside = [word for word in words if in_no_space_script(word)]

    conditions: list[ColumnElement[bool]] = []
    if whole:
        # The index's own expression, with its constants as literals, so the planner can use it.
        config = literal_column("'simple'::regconfig")
        words_of_content = func.to_tsvector(
            config,
            func.regexp_replace(
                messages.c.content, literal_column(SQL_PUNCTUATION_CLASS), literal_column("' '"), literal_column("'g'")
            ),
        )
        # Each word is a phrase of its parts (`e-mail`: `e` followed by `mail`), and every word
        # must match. phraseto_tsquery does not recognise tsquery operators in its input
        # (PostgreSQL manual, "Parsing Queries"), so the words need no quoting.
        phrases = [func.phraseto_tsquery(config, word.translate(_PUNCTUATION_AS_SPACES)) for word in whole]
        query = phrases[0]
        for phrase in phrases[1:]:
            query = query.op("&&")(phrase)
        conditions.append(words_of_content.op("@@")(query))
    if inside:
        # The partial trigram index's own condition, as a literal: the planner uses the index
        # only when the query implies that condition, and a bound value proves nothing.
        conditions.append(messages.c.content.op("~")(literal_column(f"'[{NO_SPACE_CHARACTERS}]'")))
    for word in inside:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(messages.c.content.ilike(f"%{escaped}%", escape="\\"))

    statement = select(*columns).where(scope, *conditions)
    return statement.order_by(messages.c.pk.desc()).limit(limit)


def _casefold_contains(word: str) -> ColumnElement[bool]:
    return getattr(func, CONTAINS_FUNCTION)(messages.c.content, word, type_=Boolean)


def _has_whole_words(word: str) -> ColumnElement[bool]:
    return getattr(func, HAS_WORD_FUNCTION)(messages.c.content, word, type_=Boolean)
