"""Workspaces over HTTP: owner-only access, validation, pagination and request limits."""

from __future__ import annotations

import pytest

from tests.api.helpers import create_conversation, create_workspace


async def test_workspace_create_returns_201_owned_by_caller(client, alice):
    response = await client.post(
        "/workspaces", json={"name": "Team", "description": "Our team", "metadata": {"color": "blue"}}, headers=alice.headers
    )

    assert response.status_code == 201
    body = response.json()
    assert body["owner_id"] == alice.user_id
    assert body["name"] == "Team"
    assert body["description"] == "Our team"
    assert body["metadata"] == {"color": "blue"}
    assert body["created_at"].endswith("Z")
    assert len(body["created_at"]) == len("2026-01-01T00:00:00.000000Z")
    assert set(body) == {"id", "name", "description", "owner_id", "metadata", "created_at", "updated_at"}


async def test_workspace_get_by_owner_returns_200(client, alice):
    workspace = await create_workspace(client, alice)

    response = await client.get(f"/workspaces/{workspace['id']}", headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == workspace


async def test_workspace_get_by_other_user_returns_404(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.get(f"/workspaces/{workspace['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert workspace["id"] in response.json()["detail"]


async def test_workspace_patch_by_owner_changes_fields(client, alice):
    workspace = await create_workspace(client, alice)

    response = await client.patch(f"/workspaces/{workspace['id']}", json={"name": "Renamed"}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
    assert response.json()["description"] == workspace["description"]


async def test_workspace_patch_by_other_user_returns_404(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.patch(f"/workspaces/{workspace['id']}", json={"name": "Mine"}, headers=bob.headers)

    assert response.status_code == 404


async def test_workspace_delete_removes_conversations(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [alice, bob])

    response = await client.delete(f"/workspaces/{workspace['id']}", headers=alice.headers)

    assert response.status_code == 204
    assert (await client.get(f"/workspaces/{workspace['id']}", headers=alice.headers)).status_code == 404
    assert (await client.get(f"/conversations/{conversation['id']}", headers=bob.headers)).status_code == 404


async def test_workspace_delete_by_other_user_returns_404(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.delete(f"/workspaces/{workspace['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert (await client.get(f"/workspaces/{workspace['id']}", headers=alice.headers)).status_code == 200


async def test_workspace_list_pages_with_cursor(client, alice, bob):
    created = [await create_workspace(client, alice, name=f"Workspace {index}") for index in range(5)]
    await create_workspace(client, bob, name="Not Alice's")

    seen = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        response = await client.get("/workspaces", params=params, headers=alice.headers)
        assert response.status_code == 200
        body = response.json()
        assert len(body["items"]) <= 2
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(item["id"] for item in created)
    assert len(seen) == len(set(seen))
    assert pages == 3


async def test_workspace_list_limit_above_max_is_clamped(client, alice):
    await create_workspace(client, alice)

    response = await client.get("/workspaces", params={"limit": 1000}, headers=alice.headers)

    assert response.status_code == 200
    assert len(response.json()["items"]) == 1
    assert response.json()["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
async def test_workspace_list_invalid_limit_returns_400(client, alice, limit):
    response = await client.get("/workspaces", params={"limit": limit}, headers=alice.headers)

    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "limit" in detail
    assert repr(limit) in detail


async def test_workspace_list_invalid_cursor_rejected(client, alice):
    response = await client.get("/workspaces", params={"cursor": "garbage!"}, headers=alice.headers)

    assert response.status_code in (400, 422)
    assert response.json()["detail"]


async def test_workspace_name_too_long_returns_422_naming_value(client, alice):
    response = await client.post(
        "/workspaces", json={"name": "x" * 101, "description": "d"}, headers=alice.headers
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("name:")
    assert "100" in detail
    assert "xxxx" in detail


async def test_workspace_blank_description_returns_422(client, alice):
    response = await client.post("/workspaces", json={"name": "Team", "description": "   "}, headers=alice.headers)

    assert response.status_code == 422
    assert "description" in response.json()["detail"]


async def test_workspace_malformed_json_returns_400(client, alice):
    response = await client.post(
        "/workspaces", content=b'{"name": "Team",', headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["detail"].startswith("request body is not valid JSON: ")


async def test_workspace_body_not_object_returns_422(client, alice):
    response = await client.post("/workspaces", json=["Team"], headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["detail"]


async def test_workspace_non_uuid_id_returns_400(client, alice):
    response = await client.get("/workspaces/not-a-uuid", headers=alice.headers)

    assert response.status_code == 400
    assert "not-a-uuid" in response.json()["detail"]


async def test_workspace_oversized_body_returns_413(client, alice):
    body = b'{"name": "Team", "description": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    response = await client.post(
        "/workspaces", content=body, headers={**alice.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["detail"]


async def test_workspace_without_credentials_returns_401(client):
    response = await client.get("/workspaces")

    assert response.status_code == 401
