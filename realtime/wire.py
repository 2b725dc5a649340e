"""JSON forms of domain objects as the HTTP API and the WebSocket protocol send them.

Timestamps are RFC 3339 in UTC with a ``Z`` suffix and always six fractional digits, so clients
can compare them as strings. The message form is built here once per stored message and the same
text goes to every subscriber.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from persistence.models import Message

_encoder = msgspec.json.Encoder()

# Request fields whose values never appear in an error detail.
SECRET_FIELDS = frozenset({"password"})
# Maximum length of a rejected value as shown inside a detail.
MAX_VALUE_CHARS = 80


def describe_value(field: str, value: Any) -> str:
    """Render a rejected value for an error detail, hiding secrets and shortening long values."""
    if field.split(".")[-1] in SECRET_FIELDS:
        return "<hidden>"
    text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    return text


def format_timestamp(value: datetime) -> str:
    """Format a datetime as RFC 3339 UTC with microseconds, for example ``2026-12-04T21:02:18.000000Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_to_wire(message: Message) -> dict[str, Any]:
    """Return the contract's message object."""
    return {
        "id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "sender_id": str(message.sender_id),
        "content": message.content,
        "timestamp": format_timestamp(message.timestamp),
        "seq": message.seq,
        "metadata": message.metadata,
        "client_msg_id": message.client_msg_id,
    }


def encode_json(value: Any) -> str:
    """Serialize to compact JSON text (non-ASCII characters are kept as they are)."""
    return _encoder.encode(value).decode()
