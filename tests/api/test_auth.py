"""Registration, login, access tokens and API keys over HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from tests.api.helpers import JWT_SECRET, register


def mint(claims: dict, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    now = datetime.now(timezone.utc)
    full = {"iat": now, "exp": now + timedelta(minutes=5), **claims}
    return jwt.encode(full, secret, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_new_email_returns_201_with_token(client):
    response = await client.post(
        "/auth/register", json={"email": "Carol@Example.com", "name": "Carol", "password": "long enough"}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["user"]["name"] == "Carol"
    assert body["user"]["email"].lower() == "carol@example.com"
    assert uuid.UUID(body["user"]["user_id"])
    assert body["expires_at"].endswith("Z")
    assert len(body["expires_at"].split(".")[1]) == len("000000Z")
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == body["user"]["user_id"]
    assert claims["name"] == "Carol"
    assert {"exp", "iat", "email"} <= set(claims)


async def test_register_duplicate_email_other_case_returns_409(client, alice):
    response = await client.post(
        "/auth/register", json={"email": "ALICE@example.com", "name": "Other", "password": "long enough"}
    )

    assert response.status_code == 409
    assert response.json()["detail"]


async def test_register_invalid_email_returns_422_naming_value(client):
    response = await client.post("/auth/register", json={"email": "not-an-email", "name": "X", "password": "long enough"})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "email" in detail
    assert "not-an-email" in detail


async def test_register_short_password_returns_422_without_echo(client):
    response = await client.post(
        "/auth/register", json={"email": "x@example.com", "name": "X", "password": "secret7"}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "password" in detail
    assert "secret7" not in detail


async def test_register_missing_field_returns_422_naming_field(client):
    response = await client.post("/auth/register", json={"email": "x@example.com", "password": "long enough"})

    assert response.status_code == 422
    assert "name" in response.json()["detail"]


@pytest.mark.parametrize("settings_overrides", [{"allow_registration": False}])
async def test_register_when_closed_returns_403(client):
    response = await client.post(
        "/auth/register", json={"email": "x@example.com", "name": "X", "password": "long enough"}
    )

    assert response.status_code == 403
    assert "registration" in response.json()["detail"]


async def test_login_correct_password_returns_200(client, alice):
    response = await client.post("/auth/login", json={"email": "Alice@Example.COM", "password": alice.password})

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["user_id"] == alice.user_id
    assert body["token_type"] == "bearer"
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_login_wrong_password_and_unknown_email_same_401(client, alice):
    wrong_password = await client.post("/auth/login", json={"email": alice.email, "password": "not the password"})
    unknown_email = await client.post("/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})

    assert wrong_password.status_code == 401
    assert unknown_email.status_code == 401
    assert wrong_password.json()["detail"] == unknown_email.json()["detail"]


async def test_me_returns_own_email(client, alice):
    response = await client.get("/auth/me", headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == {"user_id": alice.user_id, "name": "Alice", "metadata": {}, "email": alice.email}


async def test_me_without_credentials_returns_401(client):
    response = await client.get("/auth/me")

    assert response.status_code == 401
    assert "Authorization" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer not-a-jwt", id="malformed"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Bearer ck_unknownkey", id="unknown-api-key"),
    ],
)
async def test_me_bad_credential_returns_401(client, alice, authorization):
    response = await client.get("/auth/me", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json()["detail"]


async def test_me_expired_token_returns_401(client, alice):
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    token = jwt.encode(
        {"sub": alice.user_id, "iat": past, "exp": past + timedelta(hours=1), "email": alice.email, "name": "Alice"},
        JWT_SECRET,
        algorithm="HS256",
    )

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_me_wrongly_signed_token_returns_401(client, alice):
    token = mint({"sub": alice.user_id, "email": alice.email, "name": "Alice"}, secret="another-secret-" * 4)

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_me_alg_none_token_returns_401(client, alice):
    token = mint({"sub": alice.user_id, "email": alice.email, "name": "Alice"}, secret="", algorithm="none")

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_me_token_without_exp_returns_401(client, alice):
    token = jwt.encode({"sub": alice.user_id, "iat": datetime.now(timezone.utc)}, JWT_SECRET, algorithm="HS256")

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_external_token_new_sub_creates_user(client):
    user_id = str(uuid.uuid4())
    token = mint({"sub": user_id, "email": "dave@example.com", "name": "Dave"})

    first = await client.get("/auth/me", headers=bearer(token))
    second = await client.get("/auth/me", headers=bearer(token))

    assert first.status_code == 200
    assert first.json() == {"user_id": user_id, "name": "Dave", "metadata": {}, "email": "dave@example.com"}
    assert second.json()["user_id"] == user_id
    lookup = await client.get("/users", params={"email": "dave@example.com"}, headers=bearer(token))
    assert [item["user_id"] for item in lookup.json()["items"]] == [user_id]


async def test_external_token_unknown_sub_without_claims_returns_401(client):
    token = mint({"sub": str(uuid.uuid4())})

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_external_token_taken_email_returns_401(client, alice):
    token = mint({"sub": str(uuid.uuid4()), "email": alice.email, "name": "Impostor"})

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_external_token_non_uuid_sub_returns_401(client):
    token = mint({"sub": "alice", "email": "a2@example.com", "name": "A"})

    response = await client.get("/auth/me", headers=bearer(token))

    assert response.status_code == 401


async def test_api_key_create_returns_key_once(client, alice):
    created = await client.post("/auth/api-keys", json={"name": "build bot"}, headers=alice.headers)

    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("ck_")
    assert body["name"] == "build bot"
    assert body["created_at"].endswith("Z")
    listed = await client.get("/auth/api-keys", headers=alice.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [item["id"] for item in items] == [body["id"]]
    assert "key" not in items[0]


async def test_api_key_works_as_bearer_credential(client, alice):
    key = (await client.post("/auth/api-keys", json={"name": "bot"}, headers=alice.headers)).json()["key"]

    response = await client.get("/auth/me", headers=bearer(key))

    assert response.status_code == 200
    assert response.json()["user_id"] == alice.user_id


async def test_api_key_revoked_fails_on_next_request(client, alice):
    created = (await client.post("/auth/api-keys", json={"name": "bot"}, headers=alice.headers)).json()
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200

    revoked = await client.delete(f"/auth/api-keys/{created['id']}", headers=alice.headers)

    assert revoked.status_code == 204
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 401
    assert (await client.get("/auth/api-keys", headers=alice.headers)).json()["items"] == []


async def test_api_key_revoke_other_users_key_returns_404(client, alice, bob):
    created = (await client.post("/auth/api-keys", json={"name": "bot"}, headers=alice.headers)).json()

    response = await client.delete(f"/auth/api-keys/{created['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200


async def test_api_key_revoke_non_uuid_returns_400(client, alice):
    response = await client.delete("/auth/api-keys/abc", headers=alice.headers)

    assert response.status_code == 400
    assert "abc" in response.json()["detail"]


async def test_users_lookup_case_insensitive_hides_others_email(client, alice, bob):
    other = await client.get("/users", params={"email": "BOB@example.com"}, headers=alice.headers)
    own = await client.get("/users", params={"email": alice.email}, headers=alice.headers)
    missing = await client.get("/users", params={"email": "nobody@example.com"}, headers=alice.headers)

    assert other.status_code == 200
    assert other.json()["items"] == [{"user_id": bob.user_id, "name": "Bob", "metadata": {}}]
    assert own.json()["items"][0]["email"] == alice.email
    assert missing.json()["items"] == []


async def test_users_lookup_without_email_returns_400(client, alice):
    response = await client.get("/users", headers=alice.headers)

    assert response.status_code == 400
    assert "email" in response.json()["detail"]


async def test_users_lookup_without_credentials_returns_401(client, alice):
    response = await client.get("/users", params={"email": alice.email})

    assert response.status_code == 401


async def test_register_helper_accounts_are_distinct(client):
    first = await register(client, "one@example.com", "One")
    second = await register(client, "two@example.com", "Two")

    assert first.user_id != second.user_id
