"""Workspaces: visible to their owner only."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from persistence.columns import load_metadata, utc_now
from persistence.errors import NotFoundError
from persistence.models import Page, Workspace
from persistence.repositories.base import (
    Repository,
    after_cursor,
    build_model,
    check_metadata,
    next_cursor,
    page_limit,
)
from persistence.tables import users, workspaces


def workspace_from_row(row: Row[Any]) -> Workspace:
    return Workspace.model_construct(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        metadata=load_metadata(row.metadata, "workspaces", row.id),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class WorkspaceRepository(Repository):
    async def create(
        self,
        actor_id: uuid.UUID,
        *,
        name: str,
        description: str,
        metadata: dict[str, Any] | None = None,
    ) -> Workspace:
        """Store a workspace owned by `actor_id`; NotFoundError when that user does not exist."""
        now = utc_now()
        workspace = build_model(
            Workspace,
            id=uuid.uuid4(),
            name=name,
            description=description,
            owner_id=actor_id,
            metadata=check_metadata(metadata),
            created_at=now,
            updated_at=now,
        )
        connection = await self._write()

        if await connection.scalar(select(users.c.id).where(users.c.id == actor_id)) is None:
            raise NotFoundError(f"user {actor_id} not found")
        try:
            await connection.execute(
                insert(workspaces).values(
                    id=workspace.id,
                    owner_id=actor_id,
                    name=workspace.name,
                    description=workspace.description,
                    metadata=workspace.metadata,
                    created_at=now,
                    updated_at=now,
                )
            )
        except IntegrityError as exc:
            # The owner was deleted after the check above.
            raise NotFoundError(f"user {actor_id} not found") from exc
        return workspace

    async def get(self, actor_id: uuid.UUID, workspace_id: uuid.UUID) -> Workspace:
        """Return the workspace if `actor_id` owns it, else NotFoundError."""
        connection = await self._read()
        row = await self._owned_row(connection, actor_id, workspace_id)
        return workspace_from_row(row)

    async def list(
        self, actor_id: uuid.UUID, *, cursor: str | None = None, limit: int = 50
    ) -> Page[Workspace]:
        """List the workspaces `actor_id` owns, oldest first; InvalidError on a bad cursor."""
        limit = page_limit(limit)
        statement = (
            select(workspaces)
            .where(workspaces.c.owner_id == actor_id)
            .order_by(workspaces.c.created_at, workspaces.c.id)
            .limit(limit + 1)
        )
        condition = after_cursor(cursor, workspaces.c.created_at, workspaces.c.id)
        if condition is not None:
            statement = statement.where(condition)

        connection = await self._read()
        rows = (await connection.execute(statement)).all()
        return Page[Workspace](
            items=[workspace_from_row(row) for row in rows[:limit]],
            next_cursor=next_cursor(rows, limit),
        )

    async def update(
        self,
        actor_id: uuid.UUID,
        workspace_id: uuid.UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Workspace:
        """Change the given fields (None leaves a field as it is); owner only."""
        connection = await self._write()
        current = workspace_from_row(await self._owned_row(connection, actor_id, workspace_id))

        now = utc_now()
        changed = build_model(
            Workspace,
            **{
                **current.model_dump(),
                "name": current.name if name is None else name,
                "description": current.description if description is None else description,
                "metadata": current.metadata if metadata is None else check_metadata(metadata),
                "updated_at": now,
            },
        )
        await connection.execute(
            update(workspaces)
            .where(workspaces.c.id == workspace_id)
            .values(
                name=changed.name,
                description=changed.description,
                metadata=changed.metadata,
                updated_at=now,
            )
        )
        return changed

    async def delete(self, actor_id: uuid.UUID, workspace_id: uuid.UUID) -> None:
        """Delete the workspace; the schema's cascades remove its conversations and messages."""
        connection = await self._write()
        await self._owned_row(connection, actor_id, workspace_id)
        await connection.execute(delete(workspaces).where(workspaces.c.id == workspace_id))

    async def _owned_row(self, connection: Any, actor_id: uuid.UUID, workspace_id: uuid.UUID) -> Row[Any]:
        row = (
            await connection.execute(
                select(workspaces).where(
                    workspaces.c.id == workspace_id, workspaces.c.owner_id == actor_id
                )
            )
        ).first()
        if row is None:
            raise NotFoundError(f"workspace {workspace_id} not found")
        return row
