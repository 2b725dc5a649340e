"""SQLite connection settings and transaction control for aiosqlite engines."""

from __future__ import annotations

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


# SQL name of `casefold_contains`, registered on every connection.
CONTAINS_FUNCTION = "casefold_contains"


def casefold_contains(content: str | None, word: str | None) -> bool:
    """Tell whether `word` occurs in `content`, ignoring case in every script.

    SQLite's own LIKE and lower() fold ASCII letters only.
    """
    if content is None or word is None:
        return False
    return word.casefold() in content.casefold()


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
        dbapi_connection.create_function(
            CONTAINS_FUNCTION, 2, casefold_contains, deterministic=True
        )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def is_lock_error(exc: OperationalError) -> bool:
    """Tell whether an OperationalError is SQLite lock contention ("locked" or "busy")."""
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message or "busy" in message
