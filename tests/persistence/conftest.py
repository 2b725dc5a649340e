"""Fixtures for the data-layer suite: every test taking `db` runs on SQLite and on PostgreSQL.

PostgreSQL tests run in a schema of their own, created and dropped around each test, in the
database named by CORTEX_TEST_POSTGRES_URL (default: the local server, database `test`). When
that server cannot be reached the PostgreSQL cases are skipped, except under CI=true, where
they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from persistence.database import Database
from persistence.models import Conversation, User, Workspace

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

POSTGRES_URL = os.environ.get(
    "CORTEX_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Store:
    """An empty store for one test: a SQLite file or a PostgreSQL schema."""

    backend: str
    url: str
    schema: str | None = None

    def database(self, **options: object) -> Database:
        """Open a Database on this store."""
        if self.schema is not None:
            options["connect_args"] = {"server_settings": {"search_path": self.schema}}
        return Database(self.url, **options)


def _asyncpg_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Store]:
    """An empty store on each backend; a PostgreSQL schema is dropped after the test."""
    if request.param == "sqlite":
        yield Store("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'cortex.db'}")
        return

    admin = await connect_admin()
    # Installed in `public`, the extension is not dropped with a test's schema, so suites
    # running at the same time do not pull it away from each other.
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    except asyncpg.PostgresError:
        pass  # Not available, or installed by a concurrent run: the migration handles both.
    schema = f"test_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield Store("postgresql", POSTGRES_URL, schema)
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
async def database_factory(store: Store) -> AsyncIterator[Callable[..., Database]]:
    """Return a function that opens another Database on the test's store.

    Every Database it opened is disposed after the test.
    """
    opened: list[Database] = []

    def open_database(**options: object) -> Database:
        database = store.database(**options)
        opened.append(database)
        return database

    yield open_database
    for database in opened:
        await database.dispose()


@pytest.fixture
async def db(database_factory) -> Database:
    """A migrated, empty database (SQLite file or PostgreSQL schema)."""
    database = database_factory()
    await database.migrate()
    return database


async def create_user(db: Database, name: str = "Ann", email: str | None = None) -> User:
    email = email or f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    async with db.unit_of_work() as uow:
        return await uow.users.create(name=name, email=email)


async def create_workspace(db: Database, owner: User, name: str = "Team") -> Workspace:
    async with db.unit_of_work() as uow:
        return await uow.workspaces.create(owner.user_id, name=name, description="Our team")


async def create_conversation(
    db: Database, owner: User, workspace: Workspace, participants: list[User], topic: str = "General"
) -> Conversation:
    async with db.unit_of_work() as uow:
        return await uow.conversations.create(
            owner.user_id,
            workspace.id,
            topic=topic,
            participant_ids=[user.user_id for user in participants],
        )


@dataclass
class World:
    """An owner, a participant and an outsider around one conversation."""

    owner: User
    member: User
    outsider: User
    workspace: Workspace
    conversation: Conversation


@pytest.fixture
async def world(db: Database) -> World:
    owner = await create_user(db, "Owner")
    member = await create_user(db, "Member")
    outsider = await create_user(db, "Outsider")
    workspace = await create_workspace(db, owner)
    conversation = await create_conversation(db, owner, workspace, [member])
    return World(owner, member, outsider, workspace, conversation)


def run_python_at_once(script: str, arguments: list[str]) -> None:
    """Run `script` in one Python process per argument, all at once; each must exit with 0."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, argument],
            cwd=REPOSITORY_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argument in arguments
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
