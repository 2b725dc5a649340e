"""SQLite connection settings and transaction control for aiosqlite engines."""

from __future__ import annotations

import functools
import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

# How long a connection waits for another connection's write lock before it fails with
# "database is locked". Units of work retry a write transaction that fails that way.
BUSY_TIMEOUT_MS = 5000

# Execution option read by the `begin` listener: how the transaction starts. A write
# transaction starts with BEGIN IMMEDIATE, which takes the write lock up front and waits for it
# under the busy timeout. A deferred transaction that reads first can instead fail with
# SQLITE_BUSY when it upgrades to a write lock, without waiting.
BEGIN_MODE_OPTION = "cortex_sqlite_begin"


# SQL names of `casefold_contains` and `has_whole_words`, registered on every connection.
CONTAINS_FUNCTION = "casefold_contains"
HAS_WORD_FUNCTION = "has_whole_words"

# A word as FTS5's unicode61 tokenizer splits them: a run of letters and digits. Every other
# character, the underscore included, separates words.
_WORD = re.compile(r"[^\W_]+")


def casefold_contains(content: str | None, word: str | None) -> bool:
    """Tell whether `word` occurs in `content`, ignoring case in every script.

    SQLite's own LIKE and lower() fold ASCII letters only.
    """
    if content is None or word is None:
        return False
    return word.casefold() in content.casefold()


def has_whole_words(content: str | None, word: str | None) -> bool:
    """Tell whether the words of `word` occur in `content` as whole words in sequence, ignoring case.

    The same test as an FTS5 phrase query on the unicode61 tokenizer: `e-mail` finds "e-mail"
    and "e mail", and `port` does not find "report". Case is folded with str.lower, as
    unicode61 and PostgreSQL's `simple` configuration fold it, so `STRASSE` does not find
    "Straße".

    NOTE: not an exact copy of unicode61. Combining marks separate words here and belong to
    them there, and some case pairs fold differently (unicode61 folds final sigma `ς` to `σ`).
    For such text a search in a conversation can change its results once the conversation grows
    past the size where the index leads (SEARCH_SCAN_MAX_MESSAGES).
    """
    if content is None or word is None:
        return False
    found = _whole_words_pattern(word)
    if found is None:
        return False
    folded = content.lower()
    # A plain substring test first: most rows fail it, and it costs a fraction of the search.
    first_word, pattern = found
    return first_word in folded and pattern.search(folded) is not None


@functools.lru_cache(maxsize=256)
def _whole_words_pattern(word: str) -> tuple[str, re.Pattern[str]] | None:
    words = _WORD.findall(word.lower())
    if not words:
        return None
    inner = r"[\W_]+".join(re.escape(part) for part in words)
    return words[0], re.compile(rf"(?<![^\W_]){inner}(?![^\W_])")


def set_pragmas(dbapi_connection: Any) -> None:
    """Set the busy timeout, foreign keys, WAL mode and `synchronous = NORMAL` on a DB-API connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def configure_engine(engine: Engine) -> None:
    """Set the pragmas on every new connection and let SQLAlchemy emit BEGIN itself.

    The driver's own transaction handling is turned off (`isolation_level = None`) and the
    `begin` listener emits BEGIN, as SQLAlchemy's SQLite documentation describes for aiosqlite.
    That makes savepoints and transactional DDL work and lets a write transaction use
    BEGIN IMMEDIATE. For an AsyncEngine, pass its `sync_engine`.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        set_pragmas(dbapi_connection)
        dbapi_connection.create_function(CONTAINS_FUNCTION, 2, casefold_contains, deterministic=True)
        dbapi_connection.create_function(HAS_WORD_FUNCTION, 2, has_whole_words, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def is_lock_error(exc: OperationalError) -> bool:
    """Tell whether an OperationalError is SQLite lock contention ("locked" or "busy")."""
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message or "busy" in message
