"""Conversations and their participants.

A conversation is visible to its participants and to the owner of its workspace. Only the
workspace owner changes or deletes it. A participant who tries gets ForbiddenError, and anyone
else gets NotFoundError, the same error as for a conversation that does not exist.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Row,
    Uuid,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.columns import load_metadata, utc_now
from persistence.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)
from persistence.models import Conversation, Page
from persistence.repositories.base import (
    Repository,
    after_cursor,
    build_model,
    check_metadata,
    next_cursor,
    page_limit,
)
from persistence.tables import conversations, participants, users, workspaces


@dataclass(frozen=True)
class Access:
    """A conversation row with the acting user's role in it."""

    row: Row[Any]
    owner_id: uuid.UUID
    is_owner: bool
    is_participant: bool


def conversation_from_row(row: Row[Any], participant_ids: list[uuid.UUID]) -> Conversation:
    return Conversation.model_construct(
        id=row.id,
        workspace_id=row.workspace_id,
        topic=row.topic,
        participant_ids=participant_ids,
        metadata=load_metadata(row.metadata, "conversations", row.id),
        last_seq=row.last_seq,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def participant_list_column(dialect: str) -> Any:
    """Build a column with each conversation's participants, so a list needs no second query.

    `parse_participant_list` turns its value into the ids in the order they were added.
    """
    if dialect == "postgresql":
        return (
            select(
                func.array_agg(
                    aggregate_order_by(participants.c.user_id, participants.c.id),
                    type_=ARRAY(Uuid()),
                )
            )
            .where(participants.c.conversation_id == conversations.c.id)
            .scalar_subquery()
            .label("participant_list")
        )
    # group_concat cannot order its input before SQLite 3.44, so every entry carries the
    # participant row's key, and parse_participant_list sorts by it.
    return literal_column(
        "(SELECT group_concat(p.id || ':' || p.user_id) FROM participants AS p "
        "WHERE p.conversation_id = conversations.id)"
    ).label("participant_list")


def parse_participant_list(value: Any) -> list[uuid.UUID]:
    """Read a `participant_list_column` value: a list of UUIDs or SQLite's "key:hex,..." text."""
    if not value:
        return []
    if isinstance(value, list):
        return value
    entries = [entry.split(":", 1) for entry in value.split(",")]
    entries.sort(key=lambda entry: int(entry[0]))
    return [uuid.UUID(hex=user_id) for _, user_id in entries]


def visible_conversation(actor_id: uuid.UUID, conversation_id: uuid.UUID) -> Any:
    """Select the conversation's id if `actor_id` may see it, else no row."""
    is_participant = exists().where(
        participants.c.conversation_id == conversation_id,
        participants.c.user_id == actor_id,
    )
    return (
        select(conversations.c.id)
        .join(workspaces, workspaces.c.id == conversations.c.workspace_id)
        .where(
            conversations.c.id == conversation_id,
            or_(workspaces.c.owner_id == actor_id, is_participant),
        )
    )


def visible_conversation_ids(actor_id: uuid.UUID) -> Any:
    """Select the ids of every conversation `actor_id` may see: as participant or as owner."""
    as_participant = select(participants.c.conversation_id).where(
        participants.c.user_id == actor_id
    )
    as_owner = (
        select(conversations.c.id)
        .join(workspaces, workspaces.c.id == conversations.c.workspace_id)
        .where(workspaces.c.owner_id == actor_id)
    )
    return union(as_participant, as_owner)


async def load_access(
    connection: AsyncConnection,
    actor_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Access:
    """Read a conversation with the actor's role in one query; NotFoundError if it is invisible."""
    is_participant = (
        exists()
        .where(
            participants.c.conversation_id == conversations.c.id,
            participants.c.user_id == actor_id,
        )
        .label("is_participant")
    )
    statement = (
        select(conversations, workspaces.c.owner_id, is_participant)
        .join(workspaces, workspaces.c.id == conversations.c.workspace_id)
        .where(conversations.c.id == conversation_id)
    )
    if for_update:
        # Row lock on PostgreSQL; SQLite ignores it and relies on BEGIN IMMEDIATE.
        statement = statement.with_for_update(of=conversations)
    row = (await connection.execute(statement)).first()

    if row is None or not (row.owner_id == actor_id or row.is_participant):
        raise NotFoundError(f"conversation {conversation_id} not found")
    return Access(
        row=row,
        owner_id=row.owner_id,
        is_owner=row.owner_id == actor_id,
        is_participant=bool(row.is_participant),
    )


async def load_participant_ids(
    connection: AsyncConnection, conversation_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Return each conversation's participant ids in the order they were added."""
    if not conversation_ids:
        return {}
    rows = await connection.execute(
        select(participants.c.conversation_id, participants.c.user_id)
        .where(participants.c.conversation_id.in_(conversation_ids))
        .order_by(participants.c.id)
    )
    by_conversation: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for conversation_id, user_id in rows:
        by_conversation[conversation_id].append(user_id)
    return by_conversation


class ConversationRepository(Repository):
    async def create(
        self,
        actor_id: uuid.UUID,
        workspace_id: uuid.UUID,
        *,
        topic: str,
        participant_ids: Sequence[uuid.UUID],
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        """Store a conversation in a workspace `actor_id` owns.

        Raises NotFoundError for a workspace the actor does not own, and InvalidError for an
        empty participant list, a repeated id or an id that names no user.
        """
        participant_ids = list(participant_ids)
        if not participant_ids:
            raise InvalidError("participant_ids must name at least one user")
        repeated = {user_id for user_id in participant_ids if participant_ids.count(user_id) > 1}
        if repeated:
            names = ", ".join(sorted(str(user_id) for user_id in repeated))
            raise InvalidError(f"participant_ids must not repeat an id: {names}")

        now = utc_now()
        conversation = build_model(
            Conversation,
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            topic=topic,
            participant_ids=participant_ids,
            metadata=check_metadata(metadata),
            last_seq=0,
            created_at=now,
            updated_at=now,
        )
        connection = await self._write()

        owner_id = await connection.scalar(
            select(workspaces.c.owner_id).where(workspaces.c.id == workspace_id)
        )
        if owner_id != actor_id:
            raise NotFoundError(f"workspace {workspace_id} not found")
        await self._check_users_exist(connection, participant_ids)

        try:
            await connection.execute(
                insert(conversations).values(
                    id=conversation.id,
                    workspace_id=workspace_id,
                    topic=conversation.topic,
                    last_seq=0,
                    metadata=conversation.metadata,
                    created_at=now,
                    updated_at=now,
                )
            )
            await connection.execute(
                insert(participants),
                [
                    {
                        "conversation_id": conversation.id,
                        "user_id": user_id,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for user_id in participant_ids
                ],
            )
        except IntegrityError as exc:
            # The checks above passed, so another transaction deleted the workspace or a user
            # in between (PostgreSQL, where the reads take no locks).
            raise ConflictError(
                f"workspace {workspace_id} or a participant was deleted meanwhile; try again"
            ) from exc
        return conversation

    async def get(self, actor_id: uuid.UUID, conversation_id: uuid.UUID) -> Conversation:
        """Return a conversation visible to `actor_id`, else NotFoundError."""
        connection = await self._read()
        access = await load_access(connection, actor_id, conversation_id)
        return await self._with_participants(connection, access.row)

    async def list_for_user(
        self, actor_id: uuid.UUID, *, cursor: str | None = None, limit: int = 50
    ) -> Page[Conversation]:
        """List every conversation visible to `actor_id` (participant or workspace owner), oldest first."""
        limit = page_limit(limit)
        statement = select(conversations).where(
            conversations.c.id.in_(visible_conversation_ids(actor_id))
        )
        return await self._page(statement, cursor, limit)

    async def list_in_workspace(
        self,
        actor_id: uuid.UUID,
        workspace_id: uuid.UUID,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Conversation]:
        """List a workspace's conversations; only its owner sees the workspace (else NotFoundError)."""
        limit = page_limit(limit)
        connection = await self._read()
        owner_id = await connection.scalar(
            select(workspaces.c.owner_id).where(workspaces.c.id == workspace_id)
        )
        if owner_id != actor_id:
            raise NotFoundError(f"workspace {workspace_id} not found")

        statement = select(conversations).where(conversations.c.workspace_id == workspace_id)
        return await self._page(statement, cursor, limit)

    async def update(
        self,
        actor_id: uuid.UUID,
        conversation_id: uuid.UUID,
        *,
        topic: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        """Change the topic or metadata (None leaves it as it is); workspace owner only."""
        connection = await self._write()
        access = await self._owner_access(connection, actor_id, conversation_id, "change")
        current = await self._with_participants(connection, access.row)

        now = utc_now()
        changed = build_model(
            Conversation,
            **{
                **current.model_dump(),
                "topic": current.topic if topic is None else topic,
                "metadata": current.metadata if metadata is None else check_metadata(metadata),
                "updated_at": now,
            },
        )
        await connection.execute(
            update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(topic=changed.topic, metadata=changed.metadata, updated_at=now)
        )
        return changed

    async def delete(self, actor_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """Delete a conversation with its participants and messages; workspace owner only."""
        connection = await self._write()
        await self._owner_access(connection, actor_id, conversation_id, "delete")
        await connection.execute(delete(conversations).where(conversations.c.id == conversation_id))

    async def add_participant(
        self, actor_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> Conversation:
        """Add a user (workspace owner only); adding a current participant changes nothing.

        Raises InvalidError when `user_id` names no user.
        """
        connection = await self._write()
        access = await self._owner_access(
            connection, actor_id, conversation_id, "add participants to", for_update=True
        )
        await self._check_users_exist(connection, [user_id])

        already = await connection.scalar(
            select(participants.c.id).where(
                participants.c.conversation_id == conversation_id,
                participants.c.user_id == user_id,
            )
        )
        if already is None:
            now = utc_now()
            try:
                await connection.execute(
                    insert(participants).values(
                        conversation_id=conversation_id,
                        user_id=user_id,
                        created_at=now,
                        updated_at=now,
                    )
                )
            except IntegrityError as exc:
                raise ConflictError(f"user {user_id} was deleted meanwhile; try again") from exc
        return await self._with_participants(connection, access.row)

    async def remove_participant(
        self, actor_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> Conversation:
        """Remove a participant: the workspace owner may remove anyone, a participant themself.

        Raises NotFoundError when `user_id` is not a participant, and ConflictError when they
        are the last one (a conversation always has at least one participant).
        """
        connection = await self._write()
        access = await load_access(connection, actor_id, conversation_id, for_update=True)
        if not access.is_owner and actor_id != user_id:
            raise ForbiddenError(
                f"only the workspace owner may remove other participants of conversation "
                f"{conversation_id}"
            )

        current = await load_participant_ids(connection, [conversation_id])
        members = current.get(conversation_id, [])
        if user_id not in members:
            raise NotFoundError(f"user {user_id} is not a participant of conversation {conversation_id}")
        if len(members) == 1:
            raise ConflictError(
                f"user {user_id} is the last participant of conversation {conversation_id}; "
                "delete the conversation instead"
            )

        await connection.execute(
            delete(participants).where(
                participants.c.conversation_id == conversation_id,
                participants.c.user_id == user_id,
            )
        )
        return conversation_from_row(access.row, [member for member in members if member != user_id])

    async def workspace_owner_id(self, conversation_id: uuid.UUID) -> uuid.UUID | None:
        """Return the owner of the conversation's workspace, without any access check."""
        connection = await self._read()
        return await connection.scalar(
            select(workspaces.c.owner_id)
            .join(conversations, conversations.c.workspace_id == workspaces.c.id)
            .where(conversations.c.id == conversation_id)
        )

    async def visible_last_seq(self, actor_id: uuid.UUID, conversation_id: uuid.UUID) -> int:
        """Return the conversation's `last_seq` if `actor_id` may see it; NotFoundError otherwise.

        One query and no participant list: the gateway calls it on every subscribe.
        """
        connection = await self._read()
        access = await load_access(connection, actor_id, conversation_id)
        return access.row.last_seq

    async def last_seqs(self, conversation_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Return each existing conversation's `last_seq`, without any access check.

        For the gateway's check for lost live events; a missing conversation is left out.
        """
        wanted = list(conversation_ids)
        connection = await self._read()
        found: dict[uuid.UUID, int] = {}
        # Chunks stay under SQLite's limit on bound parameters.
        for start in range(0, len(wanted), 500):
            rows = await connection.execute(
                select(conversations.c.id, conversations.c.last_seq).where(
                    conversations.c.id.in_(wanted[start : start + 500])
                )
            )
            found.update({row.id: row.last_seq for row in rows})
        return found

    async def _owner_access(
        self,
        connection: AsyncConnection,
        actor_id: uuid.UUID,
        conversation_id: uuid.UUID,
        action: str,
        *,
        for_update: bool = False,
    ) -> Access:
        access = await load_access(connection, actor_id, conversation_id, for_update=for_update)
        if not access.is_owner:
            raise ForbiddenError(
                f"only the workspace owner may {action} conversation {conversation_id}"
            )
        return access

    async def _check_users_exist(
        self, connection: AsyncConnection, user_ids: Sequence[uuid.UUID]
    ) -> None:
        found = set(await connection.scalars(select(users.c.id).where(users.c.id.in_(user_ids))))
        missing = [user_id for user_id in user_ids if user_id not in found]
        if missing:
            names = ", ".join(str(user_id) for user_id in missing)
            raise InvalidError(f"participant_ids name unknown users: {names}")

    async def _with_participants(self, connection: AsyncConnection, row: Row[Any]) -> Conversation:
        participant_ids = await load_participant_ids(connection, [row.id])
        return conversation_from_row(row, participant_ids.get(row.id, []))

    async def _page(self, statement: Any, cursor: str | None, limit: int) -> Page[Conversation]:
        condition = after_cursor(cursor, conversations.c.created_at, conversations.c.id)
        if condition is not None:
            statement = statement.where(condition)
        statement = (
            statement.add_columns(participant_list_column(self._dialect))
            .order_by(conversations.c.created_at, conversations.c.id)
            .limit(limit + 1)
        )

        connection = await self._read()
        rows = (await connection.execute(statement)).all()
        return Page[Conversation](
            items=[
                conversation_from_row(row, parse_participant_list(row.participant_list))
                for row in rows[:limit]
            ],
            next_cursor=next_cursor(rows, limit),
        )
