"""Conversations and participants over HTTP: who may see and who may change what."""

from __future__ import annotations

import uuid

from tests.api.helpers import create_conversation, create_workspace


async def test_conversation_create_returns_201(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.post(
        f"/workspaces/{workspace['id']}/conversations",
        json={"topic": "launch", "participant_ids": [bob.user_id], "metadata": {"pinned": True}},
        headers=alice.headers,
    )

    assert response.status_code == 201
    body = response.json()
    assert body["workspace_id"] == workspace["id"]
    assert body["topic"] == "launch"
    assert body["participant_ids"] == [bob.user_id]
    assert body["metadata"] == {"pinned": True}
    assert body["last_seq"] == 0
    assert body["created_at"].endswith("Z")


async def test_conversation_create_in_others_workspace_returns_404(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.post(
        f"/workspaces/{workspace['id']}/conversations",
        json={"topic": "sneaky", "participant_ids": [bob.user_id]},
        headers=bob.headers,
    )

    assert response.status_code == 404


async def test_conversation_create_unknown_participant_returns_422(client, alice):
    workspace = await create_workspace(client, alice)
    stranger = str(uuid.uuid4())

    response = await client.post(
        f"/workspaces/{workspace['id']}/conversations",
        json={"topic": "t", "participant_ids": [alice.user_id, stranger]},
        headers=alice.headers,
    )

    assert response.status_code == 422
    assert stranger in response.json()["detail"]


async def test_conversation_create_empty_participants_returns_422(client, alice):
    workspace = await create_workspace(client, alice)

    response = await client.post(
        f"/workspaces/{workspace['id']}/conversations",
        json={"topic": "t", "participant_ids": []},
        headers=alice.headers,
    )

    assert response.status_code == 422
    assert "participant_ids" in response.json()["detail"]


async def test_conversation_create_bad_participant_id_returns_422(client, alice):
    workspace = await create_workspace(client, alice)

    response = await client.post(
        f"/workspaces/{workspace['id']}/conversations",
        json={"topic": "t", "participant_ids": ["bob"]},
        headers=alice.headers,
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "participant_ids.0" in detail
    assert "'bob'" in detail


async def test_conversation_visible_to_participant_and_owner_only(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])
    path = f"/conversations/{conversation['id']}"

    assert (await client.get(path, headers=bob.headers)).status_code == 200
    assert (await client.get(path, headers=alice.headers)).status_code == 200
    hidden = await client.get(path, headers=mallory.headers)
    assert hidden.status_code == 404
    missing = await client.get(f"/conversations/{uuid.uuid4()}", headers=mallory.headers)
    assert missing.status_code == 404


async def test_conversation_list_shows_participant_and_owner_views(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    shared = await create_conversation(client, alice, workspace["id"], [bob], topic="shared")
    private = await create_conversation(client, alice, workspace["id"], [alice], topic="private")

    owner_view = await client.get("/conversations", headers=alice.headers)
    participant_view = await client.get("/conversations", headers=bob.headers)
    outsider_view = await client.get("/conversations", headers=mallory.headers)
    workspace_view = await client.get(f"/workspaces/{workspace['id']}/conversations", headers=alice.headers)

    assert {item["id"] for item in owner_view.json()["items"]} == {shared["id"], private["id"]}
    assert [item["id"] for item in participant_view.json()["items"]] == [shared["id"]]
    assert outsider_view.json() == {"items": [], "next_cursor": None}
    assert {item["id"] for item in workspace_view.json()["items"]} == {shared["id"], private["id"]}


async def test_conversation_list_in_others_workspace_returns_404(client, alice, bob):
    workspace = await create_workspace(client, alice)

    response = await client.get(f"/workspaces/{workspace['id']}/conversations", headers=bob.headers)

    assert response.status_code == 404


async def test_conversation_list_pages_with_cursor(client, alice):
    workspace = await create_workspace(client, alice)
    created = [await create_conversation(client, alice, workspace["id"], [alice], topic=f"t{index}") for index in range(3)]

    first = (await client.get("/conversations", params={"limit": 2}, headers=alice.headers)).json()
    second = (
        await client.get("/conversations", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice.headers)
    ).json()

    assert len(first["items"]) == 2
    assert first["next_cursor"] is not None
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert sorted(ids) == sorted(item["id"] for item in created)


async def test_conversation_patch_by_owner_changes_topic(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.patch(f"/conversations/{conversation['id']}", json={"topic": "renamed"}, headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["topic"] == "renamed"


async def test_conversation_patch_by_participant_returns_403(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.patch(f"/conversations/{conversation['id']}", json={"topic": "mine"}, headers=bob.headers)

    assert response.status_code == 403
    assert response.json()["detail"]


async def test_conversation_patch_by_outsider_returns_404(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.patch(f"/conversations/{conversation['id']}", json={"topic": "x"}, headers=mallory.headers)

    assert response.status_code == 404


async def test_conversation_topic_too_long_returns_422(client, alice):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [alice])

    response = await client.patch(
        f"/conversations/{conversation['id']}", json={"topic": "t" * 201}, headers=alice.headers
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("topic:")


async def test_conversation_delete_by_participant_returns_403(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.delete(f"/conversations/{conversation['id']}", headers=bob.headers)

    assert response.status_code == 403


async def test_conversation_delete_by_owner_returns_204(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.delete(f"/conversations/{conversation['id']}", headers=alice.headers)

    assert response.status_code == 204
    assert (await client.get(f"/conversations/{conversation['id']}", headers=alice.headers)).status_code == 404
    assert (await client.get(f"/conversations/{conversation['id']}", headers=bob.headers)).status_code == 404


async def test_participant_add_by_owner_grants_access(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])
    path = f"/conversations/{conversation['id']}"

    response = await client.put(f"{path}/participants/{mallory.user_id}", headers=alice.headers)

    assert response.status_code == 200
    assert set(response.json()["participant_ids"]) == {bob.user_id, mallory.user_id}
    assert (await client.get(path, headers=mallory.headers)).status_code == 200


async def test_participant_add_by_participant_rejected(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.put(
        f"/conversations/{conversation['id']}/participants/{mallory.user_id}", headers=bob.headers
    )

    assert response.status_code in (403, 404)
    assert (await client.get(f"/conversations/{conversation['id']}", headers=mallory.headers)).status_code == 404


async def test_participant_add_unknown_user_rejected(client, alice):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [alice])
    stranger = str(uuid.uuid4())

    response = await client.put(f"/conversations/{conversation['id']}/participants/{stranger}", headers=alice.headers)

    assert response.status_code in (404, 422)
    assert stranger in response.json()["detail"]


async def test_participant_remove_by_owner_revokes_access(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob, mallory])
    path = f"/conversations/{conversation['id']}"

    response = await client.delete(f"{path}/participants/{mallory.user_id}", headers=alice.headers)

    assert response.status_code == 204
    assert (await client.get(path, headers=mallory.headers)).status_code == 404
    assert (await client.get(path, headers=alice.headers)).json()["participant_ids"] == [bob.user_id]


async def test_participant_remove_self_allowed(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob, mallory])

    response = await client.delete(
        f"/conversations/{conversation['id']}/participants/{bob.user_id}", headers=bob.headers
    )

    assert response.status_code == 204
    assert (await client.get(f"/conversations/{conversation['id']}", headers=bob.headers)).status_code == 404


async def test_participant_remove_other_by_participant_rejected(client, alice, bob, mallory):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob, mallory])

    response = await client.delete(
        f"/conversations/{conversation['id']}/participants/{mallory.user_id}", headers=bob.headers
    )

    assert response.status_code == 403
    assert (await client.get(f"/conversations/{conversation['id']}", headers=mallory.headers)).status_code == 200


async def test_participant_remove_last_returns_409(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await client.delete(
        f"/conversations/{conversation['id']}/participants/{bob.user_id}", headers=alice.headers
    )

    assert response.status_code == 409
    assert response.json()["detail"]


async def test_participant_path_non_uuid_returns_400(client, alice):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [alice])

    response = await client.put(f"/conversations/{conversation['id']}/participants/bob", headers=alice.headers)

    assert response.status_code == 400
    assert "user_id" in response.json()["detail"]
