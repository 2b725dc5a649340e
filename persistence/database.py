"""Engine setup from one URL, migrations, and the entry point to units of work."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from persistence import sqlite
from persistence.errors import PersistenceError
from persistence.models import AppendResult, NewMessage
from persistence.message_writer import MessageWriter, PostgresqlAppender
from persistence.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

MIGRATIONS_PATH = Path(__file__).parent / "migrations"

# Key of the PostgreSQL advisory lock held while migrating, so two servers starting at once
# apply the migrations one after the other.
MIGRATION_LOCK_KEY = 0x636F7274  # "cort"


class Database:
    """Owns the AsyncEngine. `async with Database(url) as db:` disposes the engine on exit.

    SQLite runs through aiosqlite with `foreign_keys=ON`, `journal_mode=WAL`,
    `synchronous=NORMAL` and a busy timeout set on every new connection. PostgreSQL runs
    through asyncpg; `connect_args` is passed to the driver (for example
    `{"server_settings": {"search_path": "my_schema"}}`).

    `url` keeps the URL as given, password included, so never log it; `engine.url` prints
    without the password. `echo=True` logs every statement with its parameters, message
    content included, so it is for debugging only.

    NOTE: an in-memory SQLite database (`sqlite+aiosqlite://`) has one connection, shared by
    every unit of work, so it suits tests that run one unit of work at a time.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int | None = None,
        connect_args: dict[str, Any] | None = None,
    ) -> None:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
                "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"
            )
        if backend == "sqlite" and parsed.get_driver_name() != "aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        if backend == "postgresql" and parsed.get_driver_name() != "asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")

        options: dict[str, Any] = {"echo": echo}
        self._connect_args = connect_args
        if connect_args:
            options["connect_args"] = connect_args
        if pool_size is not None and not _is_sqlite_memory(parsed.database, backend):
            options["pool_size"] = pool_size

        self.url = parsed.render_as_string(hide_password=False)
        self.dialect = backend
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if backend == "sqlite":
            self._sqlite_path = parsed.database
            sqlite.configure_engine(self.engine.sync_engine)
        else:
            self._sqlite_path = None
        self._batch_writer: MessageWriter | PostgresqlAppender | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    def unit_of_work(self, *, write: bool = False) -> UnitOfWork:
        """Start a unit of work: `async with db.unit_of_work() as uow: ...`.

        `write=True` declares that it will write after reading, which matters on SQLite only
        (see UnitOfWork).
        """
        return UnitOfWork(self.engine, write=write)

    async def append_messages(self, batch: list[NewMessage]) -> list[AppendResult | PersistenceError]:
        """Store a batch of messages in one transaction of its own; see `MessageRepository.append_batch`.

        On a SQLite file the batch goes to a `MessageWriter`, a process of its own, and on
        PostgreSQL to a `PostgresqlAppender` with one prepared statement. An in-memory SQLite
        database lives in this process only, so there it runs in a unit of work.
        """
        writer = self._message_writer()
        if writer is not None:
            return await writer.append_batch(batch)
        async with self.unit_of_work() as uow:
            return await uow.messages.append_batch(batch)

    async def start_message_writer(self) -> None:
        """Start the message writer process now rather than on the first batch."""
        writer = self._message_writer()
        if writer is not None:
            await writer.start()

    def _message_writer(self) -> MessageWriter | PostgresqlAppender | None:
        if _is_sqlite_memory(self._sqlite_path, self.dialect):
            return None
        if self._batch_writer is None:
            if self.dialect == "postgresql":
                self._batch_writer = PostgresqlAppender(self)
            else:
                self._batch_writer = self.create_message_writer()
        return self._batch_writer

    def create_message_writer(self) -> MessageWriter:
        """Return a new, unstarted writer process for this SQLite file (the caller closes it)."""
        if self.dialect != "sqlite":
            raise ValueError("the message writer process stores into SQLite files; PostgreSQL uses PostgresqlAppender")
        return MessageWriter(self.url)

    async def ping(self) -> None:
        """Run `SELECT 1`. Raises the driver's error when the database cannot be reached."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._batch_writer is not None:
            writer, self._batch_writer = self._batch_writer, None
            await writer.close()
        await self.engine.dispose()

    async def migrate(self) -> tuple[str | None, str | None]:
        """Apply every Alembic migration up to head; a no-op when the schema is current.

        Return the schema's revision before and after the upgrade (before is None for a new
        database).

        Creates the SQLite file (not its folder) when it does not exist. Safe when several
        processes start at once: SQLite serialises them on the write lock (BEGIN IMMEDIATE)
        and PostgreSQL on an advisory lock, and each applies only what is still missing.
        """
        if self._sqlite_path and self._sqlite_path != ":memory:":
            folder = Path(self._sqlite_path).expanduser().resolve().parent
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"folder {folder} of the SQLite database does not exist; create it first"
                )

        for attempt in range(1, 6):
            try:
                return await self._upgrade_to_head()
            except OperationalError as exc:
                if self.dialect != "sqlite" or not sqlite.is_lock_error(exc) or attempt == 5:
                    raise
                logger.warning("database is locked while migrating; retry %d of 5", attempt)
                await asyncio.sleep(0.2 * attempt)

    async def _upgrade_to_head(self) -> tuple[str | None, str | None]:
        async with self.engine.connect() as connection:
            if self.dialect == "sqlite":
                await connection.execution_options(**{sqlite.BEGIN_MODE_OPTION: "IMMEDIATE"})
            async with connection.begin():
                return await upgrade_in_transaction(connection)


async def upgrade_in_transaction(connection: AsyncConnection) -> tuple[str | None, str | None]:
    """Apply the missing migrations inside the connection's open (write) transaction.

    Return the schema's revision before and after the upgrade (before is None for a new
    database).

    Both databases roll DDL back with the transaction, so a caller that fails later in the
    same transaction leaves no trace of the migration either.
    """
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
    return await connection.run_sync(_run_alembic_upgrade)


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic configuration in code; `connection` is handed to env.py when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run_alembic_upgrade(connection: Connection) -> tuple[str | None, str | None]:
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(alembic_config(connection), "head")
    return before, MigrationContext.configure(connection).get_current_revision()


def _is_sqlite_memory(database: str | None, backend: str) -> bool:
    return backend == "sqlite" and (not database or database == ":memory:")
