"""Column types shared by the tables: UTC timestamps and the `metadata` JSON document."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime with microseconds."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC with microseconds and always read back as an aware datetime.

    PostgreSQL stores `timestamp with time zone`. SQLite stores SQLAlchemy's fixed-width text
    form (`2026-01-02 03:04:05.000006`), which sorts in time order.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC) if dialect.name != "sqlite" else value
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def sqlite_datetime(value: datetime) -> str:
    """Format an aware datetime as UtcDateTime stores it on SQLite.

    The same text as SQLAlchemy's SQLite DATETIME storage format, for statements that pass
    parameters to the driver directly.
    """
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class MetadataJSON(TypeDecorator[Any]):
    """The `metadata` document: JSONB on PostgreSQL, JSON text on SQLite.

    On SQLite the column is read back as the raw text, unparsed, because another tool may have
    written text that is not JSON. `load_metadata` parses it where the row id is known, so that
    a bad value is logged with its row.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return value
        if value is None:
            return None
        return dump_metadata(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value


def dump_metadata(value: dict[str, Any]) -> str:
    """Serialise a metadata dict the way the SQLite column stores it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_metadata(raw: Any, table: str, row_id: Any) -> dict[str, Any]:
    """Turn a stored metadata value into a dict.

    A value that is not a JSON object (invalid text written by another tool, a list, a number)
    reads as an empty dict. It logs one warning naming the table and the row id, and the read
    that met it goes on.
    """
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (str, bytes)):
        try:
            value = json.loads(raw)
        except ValueError:
            logger.warning("invalid JSON in %s.metadata for row %s; reading it as {}", table, row_id)
            return {}
        if isinstance(value, dict):
            return value
    logger.warning("%s.metadata for row %s is not a JSON object; reading it as {}", table, row_id)
    return {}
