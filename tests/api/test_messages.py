"""Posting messages over HTTP, history pages and search."""

from __future__ import annotations

import uuid

import pytest

from tests.api.helpers import create_conversation, create_workspace

MAX_CHARS = 20


@pytest.fixture
def settings_overrides():
    return {"max_message_chars": MAX_CHARS}


@pytest.fixture
async def conversation(client, alice, bob):
    workspace = await create_workspace(client, alice)
    return await create_conversation(client, alice, workspace["id"], [alice, bob])


async def post(client, account, conversation_id, content, **fields):
    return await client.post(
        f"/conversations/{conversation_id}/messages", json={"content": content, **fields}, headers=account.headers
    )


async def test_message_post_returns_201_with_seq(client, bob, conversation):
    first = await post(client, bob, conversation["id"], "hello", metadata={"lang": "en"})
    second = await post(client, bob, conversation["id"], "again")

    assert first.status_code == 201
    body = first.json()
    assert body["seq"] == 1
    assert body["content"] == "hello"
    assert body["sender_id"] == bob.user_id
    assert body["conversation_id"] == conversation["id"]
    assert body["metadata"] == {"lang": "en"}
    assert body["client_msg_id"] is None
    assert body["timestamp"].endswith("Z")
    assert len(body["timestamp"]) == len("2026-01-01T00:00:00.000000Z")
    assert second.json()["seq"] == 2


async def test_message_repeated_client_msg_id_returns_200(client, bob, conversation):
    first = await post(client, bob, conversation["id"], "once", client_msg_id="c-1")
    repeat = await post(client, bob, conversation["id"], "once", client_msg_id="c-1")

    assert first.status_code == 201
    assert repeat.status_code == 200
    assert repeat.json() == first.json()
    assert repeat.json()["client_msg_id"] == "c-1"
    history = (await client.get(f"/conversations/{conversation['id']}/messages", headers=bob.headers)).json()
    assert len(history["items"]) == 1


async def test_message_post_by_owner_not_participant_allowed(client, alice, bob):
    workspace = await create_workspace(client, alice)
    conversation = await create_conversation(client, alice, workspace["id"], [bob])

    response = await post(client, alice, conversation["id"], "from the owner")

    assert response.status_code == 201


async def test_message_post_by_outsider_returns_404(client, mallory, conversation):
    response = await post(client, mallory, conversation["id"], "let me in")

    assert response.status_code == 404


async def test_message_post_unknown_conversation_returns_404(client, alice):
    response = await post(client, alice, str(uuid.uuid4()), "anyone?")

    assert response.status_code == 404


async def test_message_content_over_limit_returns_422(client, bob, conversation):
    response = await post(client, bob, conversation["id"], "x" * (MAX_CHARS + 1))

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "content" in detail
    assert str(MAX_CHARS) in detail
    assert str(MAX_CHARS + 1) in detail


async def test_message_content_limit_counts_code_points(client, bob, conversation):
    # Twenty emoji are 20 characters but 80 bytes of UTF-8 and 40 UTF-16 code units.
    response = await post(client, bob, conversation["id"], "\U0001f600" * MAX_CHARS)

    assert response.status_code == 201
    assert response.json()["content"] == "\U0001f600" * MAX_CHARS


async def test_message_metadata_over_limit_returns_422(client, bob, conversation):
    response = await post(client, bob, conversation["id"], "hi", metadata={"blob": "x" * 20000})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("metadata:")


@pytest.mark.parametrize("content", ["", "   \n\t"])
async def test_message_blank_content_returns_422(client, bob, conversation, content):
    response = await post(client, bob, conversation["id"], content)

    assert response.status_code == 422
    assert response.json()["detail"].startswith("content:")


async def test_message_blank_content_detail_is_plain(client, bob, conversation):
    response = await post(client, bob, conversation["id"], "   ")

    detail = response.json()["detail"]
    assert "must not be blank" in detail
    assert "Value error" not in detail


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"content": "a\u0000b"}, id="content"),
        pytest.param({"content": "ok", "metadata": {"note": "a\u0000b"}}, id="metadata-value"),
        pytest.param({"content": "ok", "metadata": {"a\u0000b": 1}}, id="metadata-key"),
    ],
)
async def test_message_nul_character_returns_422(client, bob, conversation, fields):
    response = await client.post(f"/conversations/{conversation['id']}/messages", json=fields, headers=bob.headers)

    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]


async def test_message_content_not_string_returns_422(client, bob, conversation):
    response = await post(client, bob, conversation["id"], 42)

    assert response.status_code == 422
    assert "content" in response.json()["detail"]


async def test_message_non_uuid_conversation_returns_400(client, bob):
    response = await post(client, bob, "general", "hi")

    assert response.status_code == 400
    assert "general" in response.json()["detail"]


async def test_history_after_seq_returns_newer_ascending(client, bob, conversation):
    for index in range(5):
        await post(client, bob, conversation["id"], f"m{index + 1}")
    path = f"/conversations/{conversation['id']}/messages"

    first = (await client.get(path, params={"after_seq": 0, "limit": 2}, headers=bob.headers)).json()
    last = (await client.get(path, params={"after_seq": 4, "limit": 2}, headers=bob.headers)).json()

    assert [item["seq"] for item in first["items"]] == [1, 2]
    assert first["has_more"] is True
    assert [item["content"] for item in last["items"]] == ["m5"]
    assert last["has_more"] is False


async def test_history_before_seq_returns_older_ascending(client, bob, conversation):
    for index in range(5):
        await post(client, bob, conversation["id"], f"m{index + 1}")
    path = f"/conversations/{conversation['id']}/messages"

    middle = (await client.get(path, params={"before_seq": 4, "limit": 2}, headers=bob.headers)).json()
    oldest = (await client.get(path, params={"before_seq": 2, "limit": 2}, headers=bob.headers)).json()

    assert [item["seq"] for item in middle["items"]] == [2, 3]
    assert middle["has_more"] is True
    assert [item["seq"] for item in oldest["items"]] == [1]
    assert oldest["has_more"] is False


async def test_history_without_bounds_returns_latest(client, bob, conversation):
    for index in range(5):
        await post(client, bob, conversation["id"], f"m{index + 1}")

    page = (
        await client.get(f"/conversations/{conversation['id']}/messages", params={"limit": 3}, headers=bob.headers)
    ).json()

    assert [item["seq"] for item in page["items"]] == [3, 4, 5]
    assert page["has_more"] is True


async def test_history_limit_above_max_is_clamped(client, bob, conversation):
    await post(client, bob, conversation["id"], "only")

    response = await client.get(
        f"/conversations/{conversation['id']}/messages", params={"limit": 5000}, headers=bob.headers
    )

    assert response.status_code == 200
    assert len(response.json()["items"]) == 1


async def test_history_both_bounds_returns_400(client, bob, conversation):
    response = await client.get(
        f"/conversations/{conversation['id']}/messages", params={"after_seq": 1, "before_seq": 5}, headers=bob.headers
    )

    assert response.status_code == 400
    assert "after_seq" in response.json()["detail"]


async def test_history_negative_after_seq_returns_400(client, bob, conversation):
    response = await client.get(
        f"/conversations/{conversation['id']}/messages", params={"after_seq": -1}, headers=bob.headers
    )

    assert response.status_code == 400
    assert "after_seq" in response.json()["detail"]


async def test_history_after_seq_beyond_64_bits_returns_400(client, bob, conversation):
    response = await client.get(
        f"/conversations/{conversation['id']}/messages", params={"after_seq": 2**64}, headers=bob.headers
    )

    assert response.status_code == 400
    assert "after_seq" in response.json()["detail"]


async def test_message_deeply_nested_metadata_returns_400(client, bob, conversation):
    body = b'{"content": "x", "metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"

    response = await client.post(
        f"/conversations/{conversation['id']}/messages",
        content=body,
        headers={**bob.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


async def test_history_by_outsider_returns_404(client, mallory, conversation):
    response = await client.get(f"/conversations/{conversation['id']}/messages", headers=mallory.headers)

    assert response.status_code == 404


async def test_conversation_last_seq_follows_posts(client, bob, conversation):
    await post(client, bob, conversation["id"], "one")
    await post(client, bob, conversation["id"], "two")

    response = await client.get(f"/conversations/{conversation['id']}", headers=bob.headers)

    assert response.json()["last_seq"] == 2


async def test_search_finds_only_visible_messages(client, alice, bob, mallory, conversation):
    await post(client, bob, conversation["id"], "the blue whale")
    workspace = await create_workspace(client, mallory)
    hidden = await create_conversation(client, mallory, workspace["id"], [mallory])
    await post(client, mallory, hidden["id"], "a blue secret")

    bob_results = await client.get("/search/messages", params={"q": "blue"}, headers=bob.headers)
    mallory_results = await client.get("/search/messages", params={"q": "blue"}, headers=mallory.headers)

    assert bob_results.status_code == 200
    assert [item["content"] for item in bob_results.json()["items"]] == ["the blue whale"]
    assert [item["content"] for item in mallory_results.json()["items"]] == ["a blue secret"]


async def test_search_scoped_to_conversation(client, alice, bob, conversation):
    workspace = await create_workspace(client, alice, name="Other")
    other = await create_conversation(client, alice, workspace["id"], [alice, bob])
    await post(client, bob, conversation["id"], "green apple")
    await post(client, bob, other["id"], "green pear")

    response = await client.get(
        "/search/messages", params={"q": "green", "conversation_id": other["id"]}, headers=bob.headers
    )

    assert [item["content"] for item in response.json()["items"]] == ["green pear"]


async def test_search_without_query_returns_400(client, bob):
    response = await client.get("/search/messages", headers=bob.headers)

    assert response.status_code == 400
    assert "q" in response.json()["detail"]


async def test_search_bad_conversation_id_returns_400(client, bob):
    response = await client.get("/search/messages", params={"q": "x", "conversation_id": "nope"}, headers=bob.headers)

    assert response.status_code == 400
    assert "nope" in response.json()["detail"]
