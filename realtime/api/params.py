"""Path and query parameters shared by the controllers."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from realtime.api.errors import BadRequestError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

# Requested page size; values above MAX_PAGE_SIZE are clamped, not rejected.
PageLimit = Annotated[
    int,
    QueryParameter(
        name="limit",
        ge=1,
        description=f"Page size, default {DEFAULT_PAGE_SIZE}; values above {MAX_PAGE_SIZE} are clamped.",
    ),
]
# A path id. It is declared as a string and parsed by parse_id, because Litestar responds to a
# failed typed path parameter with 404, and a malformed id must get 400.
IdPath = Annotated[str, PathParameter(format="uuid", description="A UUID; any other value gets 400.")]
PageCursor = Annotated[
    str | None,
    QueryParameter(name="cursor", description="The next_cursor of the previous page.", max_length=1000),
]


def clamp_limit(limit: int) -> int:
    return min(limit, MAX_PAGE_SIZE)


def parse_id(value: str, name: str) -> uuid.UUID:
    """Parse a path id; a value that is not a UUID is a malformed request (400), not a missing object."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequestError(detail=f"{name}: not a valid UUID (got {value[:80]!r})") from None

# OpenAPI security requirement of the endpoints that need no credentials. An empty requirement
# object overrides the document-wide bearer requirement for that operation.
PUBLIC: list[dict[str, list[str]]] = [{}]
