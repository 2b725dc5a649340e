"""Export every row as JSON lines, and import such a file into an empty database.

This is how a deployment moves from SQLite to PostgreSQL (or back): `cortex-core export FILE`
on the old database, `cortex-core import FILE` on the new one. The first line names the format;
each further line is one row: `{"table": "users", "row": {...}}`. Tables come parents first.
Surrogate integer keys (`participants.id`, `messages.pk`) are not exported; the target assigns
new ones in file order, which keeps participants and messages in their original order.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import BigInteger, Column, Integer, Table, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import String, Text, Uuid
from tqdm import tqdm

from persistence.columns import MetadataJSON, UtcDateTime, load_metadata
from persistence.database import Database, upgrade_in_transaction
from persistence.errors import InvalidError
from persistence.tables import TABLES_IN_DEPENDENCY_ORDER

logger = logging.getLogger(__name__)

FORMAT_NAME = "cortex-core-export"
FORMAT_VERSION = 1

TABLES = {table.name: table for table in TABLES_IN_DEPENDENCY_ORDER}

# Integer keys that the target database assigns itself.
SURROGATE_KEYS = {"participants": "id", "messages": "pk"}

# Rows fetched per round trip while exporting.
EXPORT_FETCH_SIZE = 1000


def exported_columns(table: Table) -> list[Column[Any]]:
    """Return the columns of `table` that an export carries."""
    skipped = SURROGATE_KEYS.get(table.name)
    return [column for column in table.columns if column.name != skipped]


async def export_database(db: Database, path: str | os.PathLike[str]) -> int:
    """Write every row of `db` to `path` as JSON lines; returns the number of rows written.

    The rows are read in one transaction, so the file is a consistent snapshot.
    """
    written = 0
    # Plain buffered file I/O: export and import run as commands of their own, not in a server.
    with Path(path).open("w", encoding="utf-8") as output:  # noqa: ASYNC230
        _write_line(output, {"format": FORMAT_NAME, "version": FORMAT_VERSION})
        async with db.engine.connect() as connection, connection.begin():
            for table in TABLES_IN_DEPENDENCY_ORDER:
                columns = exported_columns(table)
                order = list(table.primary_key.columns)
                statement = select(*columns).order_by(*order)
                result = await connection.stream(
                    statement.execution_options(yield_per=EXPORT_FETCH_SIZE)
                )
                async for row in result:
                    record = {
                        column.name: _to_json(table, column, row, value)
                        for column, value in zip(columns, row, strict=True)
                    }
                    _write_line(output, {"table": table.name, "row": record})
                    written += 1
    logger.info("exported %d rows to %s", written, path)
    return written


async def import_database(
    db: Database,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 1000,
    progress: bool = True,
) -> int:
    """Load an export into `db`, which must hold no rows; returns the number of rows loaded.

    Migrates `db` and inserts the rows in batches of `batch_size`, all in one transaction. So a
    malformed line raises InvalidError("line N: ...") and leaves the database as it was, without
    the migration too. `progress` shows a tqdm bar on stderr.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    path = Path(path)

    loaded = 0
    async with db.unit_of_work() as uow:
        connection = await uow.connection(write=True)
        await upgrade_in_transaction(connection)
        await _require_empty(connection)

        batch = _Batch()
        with path.open("r", encoding="utf-8") as source, tqdm(  # noqa: ASYNC230
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc="import",
            disable=not progress,
        ) as bar:
            for line_number, line in enumerate(source, start=1):
                bar.update(len(line.encode("utf-8")))
                if line_number == 1:
                    _check_header(line)
                    continue
                if not line.strip():
                    continue
                table, row = _parse_row(line, line_number)
                if batch.table is not table or len(batch.rows) >= batch_size:
                    loaded += await batch.flush(connection)
                    batch.table = table
                    batch.first_line = line_number
                batch.rows.append(row)
                batch.last_line = line_number
            loaded += await batch.flush(connection)

    logger.info("imported %d rows from %s", loaded, path)
    return loaded


class _Batch:
    """Rows of one table waiting for one executemany."""

    def __init__(self) -> None:
        self.table: Table | None = None
        self.rows: list[dict[str, Any]] = []
        self.first_line = 0
        self.last_line = 0

    async def flush(self, connection: Any) -> int:
        if self.table is None or not self.rows:
            return 0
        count = len(self.rows)
        try:
            await connection.execute(insert(self.table), self.rows)
        except DBAPIError as exc:
            lines = f"line {self.first_line}" if count == 1 else (
                f"lines {self.first_line}-{self.last_line}"
            )
            raise InvalidError(
                f"{lines}: the database rejected rows of table {self.table.name}: {exc.orig}"
            ) from exc
        self.rows = []
        return count


async def _require_empty(connection: Any) -> None:
    for table in TABLES_IN_DEPENDENCY_ORDER:
        count = await connection.scalar(select(func.count()).select_from(table))
        if count:
            raise InvalidError(
                f"the target database is not empty: table {table.name} has {count} rows; "
                "import into a new database"
            )


def _check_header(line: str) -> None:
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise InvalidError(f"line 1: not JSON ({exc}); is this a cortex-core export?") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise InvalidError(f'line 1: expected the header {{"format": "{FORMAT_NAME}", ...}}')
    if header.get("version") != FORMAT_VERSION:
        raise InvalidError(
            f"line 1: export format version {header.get('version')!r} is not supported; "
            f"this program reads version {FORMAT_VERSION}"
        )


def _parse_row(line: str, line_number: int) -> tuple[Table, dict[str, Any]]:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise InvalidError(f"line {line_number}: not JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("row"), dict):
        raise InvalidError(f'line {line_number}: expected {{"table": ..., "row": {{...}}}}')

    table = TABLES.get(record.get("table"))  # type: ignore[arg-type]
    if table is None:
        raise InvalidError(f"line {line_number}: unknown table {record.get('table')!r}")

    columns = {column.name: column for column in exported_columns(table)}
    raw_row: dict[str, Any] = record["row"]
    unknown = sorted(set(raw_row) - set(columns))
    if unknown:
        raise InvalidError(
            f"line {line_number}: table {table.name} has no column {', '.join(unknown)}"
        )

    row: dict[str, Any] = {}
    for name, column in columns.items():
        if name not in raw_row:
            if column.nullable:
                row[name] = None
                continue
            raise InvalidError(f"line {line_number}: {table.name}.{name} is missing")
        try:
            row[name] = _from_json(column, raw_row[name])
        except (TypeError, ValueError) as exc:
            raise InvalidError(f"line {line_number}: {table.name}.{name}: {exc}") from exc
    return table, row


def _to_json(table: Table, column: Column[Any], row: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, MetadataJSON):
        return load_metadata(value, table.name, row[0])
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _from_json(column: Column[Any], value: Any) -> Any:
    """Convert a JSON value back to the column's Python type; raises ValueError or TypeError."""
    column_type = column.type
    if value is None:
        if not column.nullable:
            raise ValueError("must not be null")
        return None
    if isinstance(column_type, MetadataJSON):
        if not isinstance(value, dict):
            raise TypeError("must be a JSON object")
        return value
    if isinstance(column_type, Uuid):
        if not isinstance(value, str):
            raise TypeError("must be a UUID string")
        return uuid.UUID(value)
    if isinstance(column_type, UtcDateTime):
        if not isinstance(value, str):
            raise TypeError("must be an ISO 8601 timestamp string")
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no time zone")
        return parsed
    if isinstance(column_type, (Integer, BigInteger)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be an integer")
        return value
    if isinstance(column_type, (String, Text)):
        if not isinstance(value, str):
            raise TypeError("must be a string")
        return value
    return value


def _write_line(output: IO[str], record: dict[str, Any]) -> None:
    output.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    output.write("\n")
