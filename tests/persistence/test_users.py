"""Users and credentials."""

from __future__ import annotations

import uuid

import pytest

from persistence.errors import ConflictError, InvalidError, NotFoundError
from tests.persistence.conftest import create_user


async def test_user_create_then_get_returns_same(db):
    """A created user reads back with the same fields."""
    async with db.unit_of_work() as uow:
        user = await uow.users.create(name="Ann", email="ann@example.com", metadata={"tz": "UTC"})

    async with db.unit_of_work() as uow:
        loaded = await uow.users.get(user.user_id)

    assert loaded == user
    assert loaded.metadata == {"tz": "UTC"}
    assert loaded.created_at.tzinfo is not None


async def test_user_email_duplicate_in_other_case_conflicts(db):
    """`Bob@X.io` and `bob@x.io` are one account."""
    await create_user(db, "Bob", "Bob@X.io")

    async with db.unit_of_work() as uow:
        with pytest.raises(ConflictError) as raised:
            await uow.users.create(name="Bobby", email="bob@x.io")

    assert "bob@x.io" in raised.value.detail.lower()


async def test_user_get_by_email_ignores_case(db):
    """Lookup by email matches whatever the letter case."""
    user = await create_user(db, "Bob", "Bob@X.io")

    async with db.unit_of_work() as uow:
        found = await uow.users.get_by_email("BOB@x.IO")
        missing = await uow.users.get_by_email("nobody@x.io")

    assert found is not None
    assert found.user_id == user.user_id
    assert missing is None


@pytest.mark.parametrize(
    ("name", "email"),
    [("", "a@example.com"), ("   ", "a@example.com"), ("x" * 101, "a@example.com"), ("Ann", "not-an-email")],
    ids=["empty-name", "blank-name", "long-name", "bad-email"],
)
async def test_user_invalid_fields_rejected(db, name, email):
    """Names must be 1-100 characters and not blank; emails must be valid."""
    async with db.unit_of_work() as uow:
        with pytest.raises(InvalidError):
            await uow.users.create(name=name, email=email)


async def test_user_missing_is_not_found(db):
    """An unknown id raises NotFoundError naming the id, or gives None."""
    unknown = uuid.uuid4()
    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError) as raised:
            await uow.users.get(unknown)
        assert await uow.users.get_or_none(unknown) is None

    assert str(unknown) in raised.value.detail


async def test_user_get_many_keeps_order_skips_unknown(db):
    """get_many returns existing users in the order asked."""
    ann = await create_user(db, "Ann")
    bob = await create_user(db, "Bob")

    async with db.unit_of_work() as uow:
        users = await uow.users.get_many([bob.user_id, uuid.uuid4(), ann.user_id])

    assert [user.user_id for user in users] == [bob.user_id, ann.user_id]


async def test_user_create_with_given_id(db):
    """A caller may choose the user id (a token's subject seen for the first time)."""
    chosen = uuid.uuid4()
    async with db.unit_of_work() as uow:
        user = await uow.users.create(name="Ann", email="ann@example.com", user_id=chosen)

    assert user.user_id == chosen


async def test_password_hash_set_replace_get(db):
    """A password hash is stored, replaced and read back."""
    user = await create_user(db)

    async with db.unit_of_work() as uow:
        assert await uow.credentials.get_password_hash(user.user_id) is None
        await uow.credentials.set_password_hash(user.user_id, "hash-1")
        await uow.credentials.set_password_hash(user.user_id, "hash-2")

    async with db.unit_of_work() as uow:
        assert await uow.credentials.get_password_hash(user.user_id) == "hash-2"


async def test_api_key_lifecycle(db):
    """An API key resolves to its user until it is revoked."""
    user = await create_user(db)

    async with db.unit_of_work() as uow:
        key = await uow.credentials.create_api_key(user_id=user.user_id, name="bot", key_hash="h1")
    async with db.unit_of_work() as uow:
        assert await uow.credentials.user_id_for_api_key("h1") == user.user_id
        assert [item.id for item in await uow.credentials.list_api_keys(user.user_id)] == [key.id]
        await uow.credentials.revoke_api_key(user.user_id, key.id)

    async with db.unit_of_work() as uow:
        assert await uow.credentials.user_id_for_api_key("h1") is None
        assert await uow.credentials.list_api_keys(user.user_id) == []
        with pytest.raises(NotFoundError):
            await uow.credentials.revoke_api_key(user.user_id, key.id)


async def test_api_key_of_other_user_cannot_be_revoked(db):
    """Revoking someone else's key is reported as not found."""
    ann = await create_user(db, "Ann")
    bob = await create_user(db, "Bob")
    async with db.unit_of_work() as uow:
        key = await uow.credentials.create_api_key(user_id=ann.user_id, name="bot", key_hash="h2")

    async with db.unit_of_work() as uow:
        with pytest.raises(NotFoundError):
            await uow.credentials.revoke_api_key(bob.user_id, key.id)
        assert await uow.credentials.user_id_for_api_key("h2") == ann.user_id
