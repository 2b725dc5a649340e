"""Helpers for the HTTP API suite: register users, create workspaces and conversations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar.testing import AsyncTestClient

JWT_SECRET = "test-secret-for-the-api-suite-0123456789abcdef"


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
