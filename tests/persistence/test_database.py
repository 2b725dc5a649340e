"""Engine setup, pragmas and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
import threading
import time
import uuid

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from persistence.database import Database, alembic_config
from tests.persistence.conftest import run_python_at_once


async def test_sqlite_pragmas_on_every_connection(tmp_path):
    """foreign_keys, WAL, synchronous=NORMAL and a busy timeout are set on new connections."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as db:
        await db.migrate()
        async with db.engine.connect() as first, db.engine.connect() as second:
            for connection in (first, second):
                assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
                assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
                assert (await connection.exec_driver_sql("PRAGMA synchronous")).scalar() == 1
                assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000


async def test_migrate_is_idempotent(db):
    await db.migrate()
    await db.migrate()
    async with db.engine.connect() as connection:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_ping_answers(db):
    await db.ping()


async def test_ping_fails_for_unreachable_server():
    async with Database("postgresql+asyncpg://nobody@127.0.0.1:1/none") as db:
        with pytest.raises((OSError, DBAPIError)):
            await db.ping()


def test_unsupported_url_rejected():
    with pytest.raises(ValueError) as raised:
        Database("mysql://localhost/db")
    assert "sqlite+aiosqlite" in str(raised.value)


async def test_migrate_missing_folder_explains(tmp_path):
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'x.db'}") as db:
        with pytest.raises(FileNotFoundError) as raised:
            await db.migrate()
    assert "does not exist" in str(raised.value)


async def test_migrate_in_memory_sqlite():
    async with Database("sqlite+aiosqlite://") as db:
        await db.migrate()
        async with db.unit_of_work() as uow:
            user = await uow.users.create(name="Ann", email="ann@example.com")
            assert (await uow.users.get(user.user_id)).name == "Ann"


async def test_migrate_concurrently_in_one_process(database_factory):
    """Two Database objects migrating one store at once both succeed."""
    first, second = database_factory(), database_factory()
    await asyncio.gather(first.migrate(), second.migrate())
    async with first.unit_of_work() as uow:
        await uow.users.create(name="Ann", email="ann@example.com")


def test_migrate_from_two_processes_on_one_sqlite_file(tmp_path):
    """Two server processes starting at once on one new SQLite file both migrate cleanly."""
    path = tmp_path / "shared.db"
    script = textwrap.dedent(
        f"""
        import asyncio
        from persistence.database import Database

        async def main():
            async with Database("sqlite+aiosqlite:///{path}") as db:
                await db.migrate()

        asyncio.run(main())
        """
    )
    run_python_at_once(script, ["first", "second", "third"])


async def test_write_waits_out_a_held_lock(tmp_path, monkeypatch, caplog):
    """A write that finds the SQLite write lock taken past the busy timeout retries and succeeds."""
    monkeypatch.setattr("persistence.sqlite.BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "locked.db"
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        await db.migrate()
        locked = threading.Event()

        def hold_write_lock() -> None:
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.6)
            other.execute("COMMIT")
            other.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        locked.wait()
        try:
            async with db.unit_of_work() as uow:
                user = await uow.users.create(name="Ann", email="ann@example.com")
        finally:
            holder.join()

        async with db.unit_of_work() as uow:
            assert (await uow.users.get(user.user_id)).name == "Ann"
    assert any("retry 1 of" in record.getMessage() for record in caplog.records)


async def test_write_intent_begins_immediate(tmp_path):
    """A unit of work declared as writing holds the write lock from its first read."""
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'intent.db'}") as db:
        await db.migrate()
        async with db.unit_of_work(write=True) as uow:
            await uow.users.get_or_none(uuid.uuid4())
            other = sqlite3.connect(tmp_path / "intent.db", timeout=0, isolation_level=None)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()

        async with db.unit_of_work() as uow:
            await uow.users.get_or_none(uuid.uuid4())
            other = sqlite3.connect(tmp_path / "intent.db", timeout=0, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            other.close()
