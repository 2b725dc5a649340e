"""Alembic environment for the Cortex Core schema.

`Database.migrate()` passes an open connection in `config.attributes["connection"]`. Run from
the `alembic` command line instead, the URL comes from `-x url=...` or CORTEX_DATABASE_URL and
an async engine is created here.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from persistence.database import Database
from persistence.tables import Base

config = context.config
target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLAlchemy emits BEGIN itself on SQLite here (see persistence.sqlite), so DDL is
        # transactional there as it is on PostgreSQL.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_url(url: str) -> None:
    # Database sets the SQLite pragmas and transaction handling that migrations rely on.
    async with Database(url) as database, database.engine.begin() as connection:
        await connection.run_sync(run_with_connection)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "CORTEX_DATABASE_URL", "sqlite+aiosqlite:///./cortex.db"
    )
    asyncio.run(run_with_url(url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
