"""Users: accounts identified by id and by an email that is unique case-insensitively."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError

from persistence.columns import load_metadata, utc_now
from persistence.errors import ConflictError, NotFoundError
from persistence.models import User, normalize_email
from persistence.repositories.base import Repository, build_model, check_metadata
from persistence.tables import users


def user_from_row(row: Row[Any]) -> User:
    return User.model_construct(
        user_id=row.id,
        name=row.name,
        email=row.email,
        metadata=load_metadata(row.metadata, "users", row.id),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class UserRepository(Repository):
    async def create(
        self,
        *,
        name: str,
        email: str,
        metadata: dict[str, Any] | None = None,
        user_id: uuid.UUID | None = None,
    ) -> User:
        """Store a new user; raises ConflictError when the email is taken in any letter case."""
        now = utc_now()
        user = build_model(
            User,
            user_id=user_id or uuid.uuid4(),
            name=name,
            email=email,
            metadata=check_metadata(metadata),
            created_at=now,
            updated_at=now,
        )
        email_key = normalize_email(user.email)
        connection = await self._write()

        existing_id = await connection.scalar(
            select(users.c.id).where(users.c.email_normalized == email_key)
        )
        if existing_id is not None:
            raise ConflictError(f"email {user.email} is already registered")

        try:
            async with connection.begin_nested():
                await connection.execute(
                    insert(users).values(
                        id=user.user_id,
                        name=user.name,
                        email=user.email,
                        email_normalized=email_key,
                        metadata=user.metadata,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            # Another transaction took the email, or the id, since the check above.
            raise ConflictError(
                f"email {user.email} or user id {user.user_id} is already registered"
            ) from exc
        return user

    async def get(self, user_id: uuid.UUID) -> User:
        user = await self.get_or_none(user_id)
        if user is None:
            raise NotFoundError(f"user {user_id} not found")
        return user

    async def get_or_none(self, user_id: uuid.UUID) -> User | None:
        connection = await self._read()
        row = (await connection.execute(select(users).where(users.c.id == user_id))).first()
        return user_from_row(row) if row is not None else None

    async def get_by_email(self, email: str) -> User | None:
        """Find a user by exact email, ignoring letter case."""
        connection = await self._read()
        statement = select(users).where(users.c.email_normalized == normalize_email(email))
        row = (await connection.execute(statement)).first()
        return user_from_row(row) if row is not None else None

    async def get_many(self, user_ids: Iterable[uuid.UUID]) -> list[User]:
        """Return the users that exist among `user_ids`, in the order given, each once."""
        requested = list(dict.fromkeys(user_ids))
        if not requested:
            return []
        connection = await self._read()
        rows = (await connection.execute(select(users).where(users.c.id.in_(requested)))).all()
        by_id = {row.id: user_from_row(row) for row in rows}
        return [by_id[user_id] for user_id in requested if user_id in by_id]
