"""One connection's subscription to one conversation, and the ordering rule it enforces.

A subscription remembers the last seq it delivered. An event at or below it is a duplicate and is
dropped. An event right after it goes out at once. An event further ahead means a gap, left by a
publish lost in a broker outage, by events racing between instances, or by a reconnect with
``since_seq``. The subscription then switches to filling: it reads the missing messages from the
database in pages at the pace the socket drains, and keeps newer events in hand until the gap is
closed. The same code
serves the catch-up after ``subscribe`` with ``since_seq``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from realtime.gateway.frames import message_frame
from realtime.wire import encode_json, message_to_wire

if TYPE_CHECKING:
    from realtime.gateway.connection import Connection


class ConnectionClosing(Exception):
    """The connection is closing; catch-up stops."""

logger = logging.getLogger(__name__)

# Messages read from the database per query while filling a gap.
FILL_PAGE_SIZE = 200
# Live message frames kept in hand while a gap is filled. Beyond this they are dropped and read
# from the database instead, so a long catch-up costs bounded memory.
PENDING_MAX = 1000


class Subscription:
    """The delivery state of one conversation on one connection."""

    __slots__ = (
        "conversation_id", "connection", "last_seq", "_target_seq", "_pending", "_pending_acks", "_fill_task", "_held"
    )

    def __init__(self, connection: Connection, conversation_id: uuid.UUID, last_seq: int) -> None:
        self.connection = connection
        self.conversation_id = conversation_id
        self.last_seq = last_seq
        self._target_seq = last_seq
        self._pending: dict[int, str] = {}
        # Acks of this connection's own sends that wait behind a gap. They are never dropped: an
        # ack is the sender's only proof that its message was stored.
        self._pending_acks: dict[int, str] = {}
        self._fill_task: asyncio.Task[None] | None = None
        # A new subscription holds every event back until `release`, so that the `subscribed`
        # frame goes out before any message of the conversation.
        self._held = True

    def release(self, last_seq: int) -> None:
        """Start delivering: first everything up to `last_seq`, then live events in order."""
        self._held = False
        self.fill_to(last_seq)

    def offer(self, seq: int, frame: str) -> None:
        """Deliver a live message frame in seq order: drop a duplicate, fill a gap first."""
        if seq <= self.last_seq:
            return
        if self._fill_task is None and not self._held and seq == self.last_seq + 1:
            self.last_seq = seq
            self.connection.push(frame)
            return
        if len(self._pending) < PENDING_MAX:
            self._pending[seq] = frame
        self.fill_to(seq)

    def offer_ack(self, seq: int, frame: str) -> None:
        """Send this connection's ack for `seq` in the place of that seq's message frame."""
        if seq <= self.last_seq:
            # Gap fills wait for the writer to finish its acks (MessagePipeline.settled), so the
            # seq should not have gone out yet. If it did, the sender still needs its ack.
            self.connection.push(frame)
            return
        if self._fill_task is None and not self._held and seq == self.last_seq + 1:
            self.last_seq = seq
            self.connection.push(frame)
            return
        self._pending_acks[seq] = frame
        self.fill_to(seq)

    def fill_to(self, seq: int) -> None:
        """Make sure every message up to `seq` is delivered, reading missing ones from the database."""
        if seq > self._target_seq:
            self._target_seq = seq
        if self._held:
            return
        if self._fill_task is None and (self._target_seq > self.last_seq or self._pending or self._pending_acks):
            self._fill_task = self.connection.start_task(self._fill(), f"fill-{self.conversation_id}")

    def cancel(self) -> None:
        if self._fill_task is not None:
            self._fill_task.cancel()
            self._fill_task = None
        self._pending.clear()
        self._pending_acks.clear()

    async def _fill(self) -> None:
        connection = self.connection
        try:
            while True:
                await self._deliver_pending()
                if self.last_seq >= self._target_seq and not self._pending and not self._pending_acks:
                    self._fill_task = None
                    return

                messages = await connection.hub.read_after(self.conversation_id, self.last_seq, FILL_PAGE_SIZE)
                if not messages:
                    if self._pending or self._pending_acks:
                        # Newer events are in hand but the next seq is not in the database, which
                        # means it was never committed. Skip to what is in hand rather than stall.
                        skipped_to = min([*self._pending, *self._pending_acks]) - 1
                        logger.warning(
                            "conversation %s: seqs %d to %d not found while filling a gap on connection %s",
                            self.conversation_id, self.last_seq + 1, skipped_to, connection.session_id,
                        )
                        self.last_seq = skipped_to
                        continue
                    self._target_seq = self.last_seq
                    self._fill_task = None
                    return

                for message in messages:
                    if message.seq <= self.last_seq:
                        continue
                    frame = self._take(message.seq)
                    if frame is None:
                        frame = message_frame(encode_json(message_to_wire(message)))
                    await connection.push_paced(frame)
                    self.last_seq = message.seq
                    if message.seq > self._target_seq:
                        self._target_seq = message.seq
        except asyncio.CancelledError:
            raise
        except ConnectionClosing:
            self._fill_task = None
        except Exception:
            self._fill_task = None
            logger.exception(
                "filling conversation %s on connection %s failed; the connection will be closed",
                self.conversation_id, connection.session_id,
            )
            connection.fail()

    async def _deliver_pending(self) -> None:
        while True:
            seq = self.last_seq + 1
            frame = self._take(seq)
            if frame is None:
                return
            await self.connection.push_paced(frame)
            self.last_seq = seq

    def _take(self, seq: int) -> str | None:
        """Remove and return the frame in hand for `seq`, preferring this connection's ack."""
        ack = self._pending_acks.pop(seq, None)
        message = self._pending.pop(seq, None)
        return ack if ack is not None else message
