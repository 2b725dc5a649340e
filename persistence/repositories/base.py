"""Helpers shared by the repositories: connections, validation, cursors and page limits."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import InvalidError

if TYPE_CHECKING:
    from persistence.unit_of_work import UnitOfWork

MAX_PAGE_SIZE = 200

ModelT = TypeVar("ModelT", bound=BaseModel)


class Repository:
    """Base of the repositories: every one works inside the transaction of its unit of work."""

    def __init__(self, unit_of_work: UnitOfWork) -> None:
        self._uow = unit_of_work

    @property
    def _dialect(self) -> str:
        return self._uow.dialect

    async def _read(self) -> AsyncConnection:
        """Return the connection for a method that only reads."""
        return await self._uow.connection(write=False)

    async def _write(self) -> AsyncConnection:
        """Return the connection for a method that writes (BEGIN IMMEDIATE on SQLite)."""
        return await self._uow.connection(write=True)


def build_model(model: type[ModelT], **fields: Any) -> ModelT:
    """Validate `fields` into `model`; a broken rule becomes InvalidError naming the field."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise InvalidError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(item) for item in error["loc"]) or "value"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Return `metadata` as a dict; None means empty, anything but a dict is invalid."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidError(f"metadata must be a JSON object, not {type(metadata).__name__}")
    return metadata


def page_limit(limit: int) -> int:
    """Clamp a requested page size to MAX_PAGE_SIZE; a size below 1 is invalid."""
    if limit < 1:
        raise InvalidError(f"limit must be at least 1, not {limit}")
    return min(limit, MAX_PAGE_SIZE)


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """Make the opaque cursor that continues a list after the row (created_at, id)."""
    raw = f"{created_at.isoformat()}|{row_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Read a cursor made by `encode_cursor`; anything else raises InvalidError."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at_text, id_text = base64.urlsafe_b64decode(padded).decode().split("|")
        created_at = datetime.fromisoformat(created_at_text)
        row_id = uuid.UUID(hex=id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidError(
            f"invalid cursor {cursor!r}: pass the next_cursor of an earlier page, "
            "or no cursor for the first page"
        ) from exc
    if created_at.tzinfo is None:
        raise InvalidError(f"invalid cursor {cursor!r}: it carries no time zone")
    return created_at, row_id


def after_cursor(
    cursor: str | None, created_at: ColumnElement[Any], row_id: ColumnElement[Any]
) -> ColumnElement[bool] | None:
    """Build the keyset condition "(created_at, id) after the cursor", or None for page one."""
    if cursor is None:
        return None
    cursor_time, cursor_id = decode_cursor(cursor)
    return or_(created_at > cursor_time, and_(created_at == cursor_time, row_id > cursor_id))


def next_cursor(rows: list[Any], limit: int) -> str | None:
    """Return the cursor after the last of `limit` rows when one more row was fetched."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(last.created_at, last.id)
