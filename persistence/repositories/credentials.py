"""Password hashes and API keys. Only hashes are stored; hashing is the caller's job."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from persistence.columns import utc_now
from persistence.errors import ConflictError, NotFoundError
from persistence.models import ApiKey
from persistence.repositories.base import Repository, build_model
from persistence.tables import api_keys, password_credentials, users


class CredentialRepository(Repository):
    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        """Store or replace the user's password hash; NotFoundError for an unknown user."""
        connection = await self._write()
        now = utc_now()

        result = await connection.execute(
            update(password_credentials)
            .where(password_credentials.c.user_id == user_id)
            .values(password_hash=password_hash, updated_at=now)
        )
        if result.rowcount:
            return

        if await connection.scalar(select(users.c.id).where(users.c.id == user_id)) is None:
            raise NotFoundError(f"user {user_id} not found")
        await connection.execute(
            insert(password_credentials).values(
                user_id=user_id, password_hash=password_hash, created_at=now, updated_at=now
            )
        )

    async def get_password_hash(self, user_id: uuid.UUID) -> str | None:
        connection = await self._read()
        return await connection.scalar(
            select(password_credentials.c.password_hash).where(
                password_credentials.c.user_id == user_id
            )
        )

    async def create_api_key(self, *, user_id: uuid.UUID, name: str, key_hash: str) -> ApiKey:
        """Store an API key's hash; NotFoundError for an unknown user, ConflictError for a reused hash."""
        now = utc_now()
        key = build_model(ApiKey, id=uuid.uuid4(), user_id=user_id, name=name, created_at=now)
        connection = await self._write()

        if await connection.scalar(select(users.c.id).where(users.c.id == user_id)) is None:
            raise NotFoundError(f"user {user_id} not found")
        try:
            async with connection.begin_nested():
                await connection.execute(
                    insert(api_keys).values(
                        id=key.id,
                        user_id=user_id,
                        name=key.name,
                        key_hash=key_hash,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError("an API key with this hash already exists") from exc
        return key

    async def list_api_keys(self, user_id: uuid.UUID) -> list[ApiKey]:
        """Return the user's API keys that are not revoked, oldest first."""
        connection = await self._read()
        rows = await connection.execute(
            select(api_keys)
            .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        return [
            ApiKey.model_construct(
                id=row.id,
                user_id=row.user_id,
                name=row.name,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
            )
            for row in rows
        ]

    async def revoke_api_key(self, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
        """Revoke one of the user's keys; another user's key or a revoked one is NotFoundError."""
        connection = await self._write()
        now = utc_now()
        result = await connection.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.user_id == user_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=now, updated_at=now)
        )
        if not result.rowcount:
            raise NotFoundError(f"API key {key_id} not found")

    async def user_id_for_api_key(self, key_hash: str) -> uuid.UUID | None:
        """Return the owner of a key that is not revoked, else None.

        NOTE: `last_used_at` is not updated here, because that would make every authenticated
        request a write transaction.
        """
        connection = await self._read()
        return await connection.scalar(
            select(api_keys.c.user_id).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
            )
        )
