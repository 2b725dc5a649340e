"""The HTTP API: route handlers, exception handlers and the authentication middleware.

``realtime.app`` registers ``ROUTE_HANDLERS``, ``EXCEPTION_HANDLERS`` and ``AUTH_MIDDLEWARE`` on the
Litestar application and passes ``request_max_body_size(settings)`` as its request body limit.
"""

from realtime.settings import Settings

from realtime.api.auth import AuthController
from realtime.api.conversations import ConversationController
from realtime.api.errors import EXCEPTION_HANDLERS
from realtime.api.health import health, ready
from realtime.api.messages import MessageController
from realtime.api.search import search_messages
from realtime.api.users import find_users
from realtime.api.workspaces import WorkspaceController
from realtime.auth.guard import AUTH_MIDDLEWARE

MIN_REQUEST_MAX_BODY_SIZE = 1024 * 1024
# A JSON-escaped character takes at most 12 bytes (a surrogate pair as two \uXXXX escapes).
_MAX_BYTES_PER_ESCAPED_CHAR = 12

ROUTE_HANDLERS: list = [
    AuthController,
    find_users,
    WorkspaceController,
    ConversationController,
    MessageController,
    search_messages,
    health,
    ready,
]



def request_max_body_size(settings: Settings) -> int:
    """Return the largest accepted request body in bytes; larger bodies get 413.

    It fits a message of ``max_message_chars`` characters in the worst JSON escaping plus metadata,
    and never goes below 1 MiB.
    """
    return max(MIN_REQUEST_MAX_BODY_SIZE, settings.max_message_chars * _MAX_BYTES_PER_ESCAPED_CHAR + 64 * 1024)


__all__ = ["AUTH_MIDDLEWARE", "EXCEPTION_HANDLERS", "ROUTE_HANDLERS", "request_max_body_size"]
