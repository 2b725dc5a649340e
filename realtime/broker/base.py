"""The broker interface and the event envelope shared by every broker.

An event travels as one text line: a header with the sending instance, the kind, the conversation
and the seq, then a newline and the body. The body of a message event is the ready-made ``message``
frame, so a receiving instance hands the same text to every local subscriber without parsing it.
"""

from __future__ import annotations

import abc
import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class EventKind(str, enum.Enum):
    MESSAGE = "m"
    # Several messages of one conversation with consecutive seqs, from one batch: `seq` is the
    # first, and the body contains their frames, one per line (JSON text has no raw line breaks).
    MESSAGES = "g"
    TYPING = "t"
    PARTICIPANT_REMOVED = "r"
    CONVERSATION_DELETED = "d"
    # Asks every instance to compare each subscription with the database, after publishes were lost.
    RESYNC = "s"


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    kind: EventKind
    conversation_id: uuid.UUID
    # The message's seq for MESSAGE events, the first seq for MESSAGES events, else 0.
    seq: int
    # The frame text for MESSAGE and TYPING events, the frames for MESSAGES, and the removed user's
    # id for PARTICIPANT_REMOVED.
    body: str
    origin: str

    def encode(self) -> str:
        return f"{self.origin} {self.kind.value} {self.conversation_id} {self.seq}\n{self.body}"

    @classmethod
    def decode(cls, text: str) -> BrokerEvent:
        """Parse an encoded event; raise ValueError on anything malformed."""
        header, _, body = text.partition("\n")
        origin, kind, conversation_id, seq = header.split(" ")
        return cls(EventKind(kind), uuid.UUID(conversation_id), int(seq), body, origin)


EventHandler = Callable[[BrokerEvent], None]
ResyncHandler = Callable[[], Awaitable[None]]

CONTROL_CHANNEL = "cortex:control"


def conversation_channel(conversation_id: uuid.UUID) -> str:
    return f"cortex:conversation:{conversation_id}"


class Broker(abc.ABC):
    """Publish-subscribe between instances.

    Delivery through a broker is at-most-once: an event published while the broker is unreachable
    is lost. The gateway makes up for that from the database, so a broker calls it back when it
    has reconnected (``on_resync``). Every subscription then compares its last delivered seq with
    its conversation's last seq.
    """

    instance_id: str
    # False for a broker that has no other instance to reach, so publishing can be skipped.
    reaches_other_instances = True

    def __init__(self) -> None:
        self.instance_id = uuid.uuid4().hex[:12]
        self._on_event: EventHandler | None = None
        self._on_resync: ResyncHandler | None = None

    def set_handlers(self, on_event: EventHandler, on_resync: ResyncHandler) -> None:
        """Set the callbacks for events from other instances and for a completed reconnect."""
        self._on_event = on_event
        self._on_resync = on_resync

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def publish(self, channel: str, event: BrokerEvent) -> None:
        """Queue an event for other instances; returns before it is delivered and never blocks."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the broker cannot be reached right now."""
