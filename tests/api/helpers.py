"""Helpers for the HTTP API suite: register users, create workspaces and conversations."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests.support.services import unavailable

JWT_SECRET = "test-secret-for-the-api-suite-0123456789abcdef"

# The PostgreSQL server and database to connect to first; tests create databases of their own there.
POSTGRES_ADMIN_DSN = os.environ.get("CORTEX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def temporary_postgres_database(prefix: str) -> AsyncIterator[str]:
    """Create an empty PostgreSQL database, yield its SQLAlchemy URL, and drop it afterwards.

    An unreachable server skips the test, or fails it under CI=true.
    """
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_DSN} is unreachable: {error!r}")
    database = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{database}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


@dataclass
class Account:
    """A registered user: its public id, email, password and ready-made Authorization header."""

    user_id: str
    email: str
    name: str
    password: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)


async def register(client: AsyncTestClient, email: str, name: str, password: str = "correct horse") -> Account:
    response = await client.post("/auth/register", json={"email": email, "name": name, "password": password})
    assert response.status_code == 201, response.text
    body = response.json()
    token = body["access_token"]
    return Account(
        user_id=body["user"]["user_id"],
        email=email,
        name=name,
        password=password,
        token=token,
        headers={"Authorization": f"Bearer {token}"},
    )


async def create_workspace(client: AsyncTestClient, owner: Account, name: str = "Team") -> dict[str, Any]:
    response = await client.post(
        "/workspaces", json={"name": name, "description": "A workspace for tests"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def create_conversation(
    client: AsyncTestClient, owner: Account, workspace_id: str, participants: list[Account], topic: str = "general"
) -> dict[str, Any]:
    response = await client.post(
        f"/workspaces/{workspace_id}/conversations",
        json={"topic": topic, "participant_ids": [account.user_id for account in participants]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()
