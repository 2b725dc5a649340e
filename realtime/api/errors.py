"""Exception handlers: every error response is JSON with ``status_code`` and a readable ``detail``.

Data-layer errors map to 404 (not found or not visible), 409 (conflict), 403 (visible but not
allowed) and 422 (breaks a domain rule). Request validation failures name the field, the rule and
the value that was sent: 422 for a request body that breaks a rule, 400 for a bad query or path
parameter. Litestar itself responds to malformed JSON with 400 and to an oversized body with 413.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar._signature.types import ExtendedMsgSpecValidationError
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from persistence.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError, PersistenceError

from realtime.wire import describe_value

logger = logging.getLogger(__name__)

PERSISTENCE_STATUS: dict[type[PersistenceError], int] = {
    NotFoundError: HTTP_404_NOT_FOUND,
    ConflictError: HTTP_409_CONFLICT,
    ForbiddenError: HTTP_403_FORBIDDEN,
    InvalidError: HTTP_422_UNPROCESSABLE_ENTITY,
}


class BadRequestError(HTTPException):
    """A malformed request: a path id that is not a UUID, conflicting query parameters."""

    status_code = HTTP_400_BAD_REQUEST


class UnprocessableError(HTTPException):
    """A well-formed request whose value breaks a rule (a message longer than the limit)."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY


def error_response(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content={"status_code": status_code, "detail": detail},
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _body_problems(error: ExtendedMsgSpecValidationError) -> list[str]:
    problems = []
    for item in error.errors:
        # loc starts with the handler's parameter name ("data") for a body model.
        location = [str(part) for part in item.get("loc", ()) if str(part) != "data"]
        field = ".".join(location) or "body"
        message = item.get("msg", "invalid value")
        # Pydantic puts this before the text of a ValueError raised by a validator.
        message = message.removeprefix("Value error, ")
        if "input" in item and item.get("type") != "missing":
            problems.append(f"{field}: {message} (got {describe_value(field, item['input'])})")
        else:
            problems.append(f"{field}: {message}")
    return problems


def _parameter_problems(request: Request[Any, Any, Any], extra: Any) -> list[str]:
    problems = []
    for item in extra if isinstance(extra, list) else []:
        key = str(item.get("key", "")) if isinstance(item, dict) else ""
        message = item.get("message", "invalid value") if isinstance(item, dict) else str(item)
        source = item.get("source", "") if isinstance(item, dict) else ""
        source = getattr(source, "value", source)
        if source == "body":
            # Litestar reports a missing or empty body under the handler's parameter name.
            problems.append("request body is missing or empty; send a JSON object")
            continue
        value = request.query_params.get(key) if key else None
        label = f"{source} parameter {key}".strip() if key else "request"
        if value is not None:
            problems.append(f"{label}: {message} (got {describe_value(key, value)})")
        else:
            problems.append(f"{label}: {message}")
    return problems


def handle_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Return 422 for a body that breaks a rule, 400 for bad parameters, each naming field and value."""
    cause = exc.__cause__
    if isinstance(cause, ExtendedMsgSpecValidationError):
        problems = _body_problems(cause)
        status_code = HTTP_422_UNPROCESSABLE_ENTITY
    else:
        problems = _parameter_problems(request, exc.extra)
        status_code = HTTP_400_BAD_REQUEST
    if not problems:
        problems = [exc.detail]
    return error_response(status_code, "; ".join(problems))


def handle_persistence_error(_: Request[Any, Any, Any], exc: PersistenceError) -> Response[Any]:
    status_code = HTTP_400_BAD_REQUEST
    for error_type, code in PERSISTENCE_STATUS.items():
        if isinstance(exc, error_type):
            status_code = code
            break
    return error_response(status_code, exc.detail)


def handle_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    if isinstance(exc.__cause__, SerializationException):
        # Litestar turns a body that fails to decode into a 400 with only the decoder's message
        # ("Input data was truncated"), which names neither the body nor JSON.
        detail = f"request body is not valid JSON: {detail}"
    return error_response(exc.status_code, detail, headers=exc.headers)


def handle_recursion_error(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """Return 400 for a JSON body nested deeper than the decoder's recursion limit."""
    logger.warning("rejected %s %s: %s", request.method, request.url.path, exc)
    return error_response(HTTP_400_BAD_REQUEST, "request body is nested too deeply to decode")


def handle_unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.error(
        "unhandled error on %s %s", request.method, request.url.path, exc_info=(type(exc), exc, exc.__traceback__)
    )
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


EXCEPTION_HANDLERS = {
    ValidationException: handle_validation_error,
    PersistenceError: handle_persistence_error,
    HTTPException: handle_http_error,
    # msgspec, which Litestar decodes JSON with, raises RecursionError for very deep nesting.
    RecursionError: handle_recursion_error,
    HTTP_500_INTERNAL_SERVER_ERROR: handle_unexpected_error,
}
