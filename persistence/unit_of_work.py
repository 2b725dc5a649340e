"""The unit of work: one transaction shared by the repositories used inside it."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from persistence import sqlite
from persistence.repositories.conversations import ConversationRepository
from persistence.repositories.credentials import CredentialRepository
from persistence.repositories.messages import MessageRepository
from persistence.repositories.users import UserRepository
from persistence.repositories.workspaces import WorkspaceRepository

logger = logging.getLogger(__name__)

# Attempts to start a SQLite write transaction while another process holds the write lock.
# Each attempt already waits up to the connection's busy timeout.
SQLITE_WRITE_ATTEMPTS = 4


class UnitOfWork:
    """An async context manager: commit on success, roll back on error.

    The connection is taken from the pool on first use and kept until the context exits, so
    every repository of one unit of work reads and writes in one transaction. After `commit()`
    or `rollback()` the next statement starts a new transaction on the same connection.

    On SQLite, a transaction whose first repository call writes starts with BEGIN IMMEDIATE, so
    it waits for the write lock at the start instead of failing later on a lock upgrade. Pass
    `write=True` for a unit of work that reads first and writes later, so that it starts the
    same way. Otherwise it starts DEFERRED, and under contention from another process its first
    write can fail with "database is locked".
    """

    def __init__(self, engine: AsyncEngine, *, write: bool = False) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._write_intent = write
        self._connection: AsyncConnection | None = None
        self._transaction: AsyncTransaction | None = None

        self.users = UserRepository(self)
        self.credentials = CredentialRepository(self)
        self.workspaces = WorkspaceRepository(self)
        self.conversations = ConversationRepository(self)
        self.messages = MessageRepository(self)

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._dialect

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open, that is, a statement ran since the last commit."""
        return self._transaction is not None and self._transaction.is_active

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.commit()
            else:
                await self.rollback()
        finally:
            await self.close()

    async def connection(self, *, write: bool = False) -> AsyncConnection:
        """Return the connection of this unit of work inside an open transaction."""
        if self._connection is None:
            self._connection = await self._engine.connect()
        if self._transaction is None or not self._transaction.is_active:
            await self._begin(write or self._write_intent)
        return self._connection

    async def commit(self) -> None:
        if self._transaction is not None and self._transaction.is_active:
            await self._transaction.commit()
        self._transaction = None

    async def rollback(self) -> None:
        if self._transaction is not None and self._transaction.is_active:
            await self._transaction.rollback()
        self._transaction = None

    async def close(self) -> None:
        """Roll back anything uncommitted and return the connection to the pool."""
        try:
            await self.rollback()
        finally:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None

    async def _begin(self, write: bool) -> None:
        connection = self._connection
        if connection is None:
            raise RuntimeError("unit of work has no connection")
        if self._dialect != "sqlite":
            self._transaction = await connection.begin()
            return

        mode = "IMMEDIATE" if write else "DEFERRED"
        await connection.execution_options(**{sqlite.BEGIN_MODE_OPTION: mode})
        for attempt in range(1, SQLITE_WRITE_ATTEMPTS + 1):
            try:
                self._transaction = await connection.begin()
                return
            except OperationalError as exc:
                if not sqlite.is_lock_error(exc) or attempt == SQLITE_WRITE_ATTEMPTS:
                    raise
                logger.warning(
                    "SQLite write lock busy; retry %d of %d", attempt, SQLITE_WRITE_ATTEMPTS
                )
                await asyncio.sleep(0.05 * 2**attempt)
