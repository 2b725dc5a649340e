"""The hub: this process's registry of WebSocket connections and their subscriptions.

It delivers each stored message to the local subscribers of its conversation and publishes it to
the other instances through the broker; events from other instances come back in through
``on_broker_event``. Membership changes travel on the broker's control channel, so a removed
participant loses its subscriptions on every instance.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING

from persistence.database import Database
from persistence.errors import NotFoundError
from persistence.models import Message

from realtime.broker.base import CONTROL_CHANNEL, Broker, BrokerEvent, EventKind, conversation_channel
from realtime.gateway.frames import message_frame, typing_frame

if TYPE_CHECKING:
    from realtime.gateway.connection import Connection
    from realtime.gateway.subscription import Subscription
    from realtime.pipeline import MessagePipeline

logger = logging.getLogger(__name__)

# Seconds between checks for idle writer tasks. A connection with nothing queued for one to two
# intervals ends its writer task (see Connection.release_idle_writer).
WRITER_IDLE_CHECK_SECONDS = 2.0


class Hub:
    """Local connections, local subscriptions per conversation, and the bridge to the broker."""

    def __init__(self, db: Database, broker: Broker) -> None:
        self.db = db
        self.broker = broker
        self.pipeline: MessagePipeline | None = None
        self.connections: dict[str, Connection] = {}
        self._by_user: dict[uuid.UUID, set[Connection]] = defaultdict(set)
        self._subscribers: dict[uuid.UUID, set[Subscription]] = {}
        # Frames of the current batch, not yet published, per conversation, as runs of consecutive
        # seqs: (first seq, frames).
        self._unpublished: dict[uuid.UUID, list[tuple[int, list[str]]]] = {}
        self.closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._idle_writer_check: asyncio.Task[None] | None = None
        broker.set_handlers(self.on_broker_event, self.resync)

    def start_sweeping(self, interval_seconds: float) -> None:
        """Check every `interval_seconds` for messages that a lost live event left undelivered."""
        self._sweeper = asyncio.create_task(self._sweep_loop(interval_seconds), name="lost-event-sweeper")

    async def stop_sweeping(self) -> None:
        """Stop the lost-event sweeper and the idle writer check."""
        for task in (self._sweeper, self._idle_writer_check):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._sweeper = None
        self._idle_writer_check = None

    async def _release_idle_writers(self) -> None:
        while True:
            await asyncio.sleep(WRITER_IDLE_CHECK_SECONDS)
            for connection in list(self.connections.values()):
                connection.release_idle_writer()

    async def _sweep_loop(self, interval_seconds: float) -> None:
        """Fill subscriptions that are still behind a seq stored one interval ago.

        A publish is lost without any broker outage when the instance that stored the message
        dies before the event leaves it (kill -9 between commit and publish). Nothing else would
        reveal that gap until the next message. A message stored a whole interval ago has had time
        to arrive live, so only those trigger a fill, and messages still in flight do not.
        """
        previous: dict[uuid.UUID, int] = {}
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                behind = 0
                for conversation_id, stored_seq in previous.items():
                    for subscription in list(self._subscribers.get(conversation_id, ())):
                        if subscription.last_seq < stored_seq:
                            subscription.fill_to(stored_seq)
                            behind += 1
                if behind:
                    logger.info("%d subscriptions had missed live events; filling them from the database", behind)
                async with self.db.unit_of_work() as uow:
                    previous = await uow.conversations.last_seqs(list(self._subscribers))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("checking subscriptions for lost live events failed; retrying")

    # Connections and subscriptions

    def register(self, connection: Connection) -> None:
        if self._idle_writer_check is None and not self.closing:
            self._idle_writer_check = asyncio.create_task(self._release_idle_writers(), name="idle-writer-check")
        self.connections[connection.session_id] = connection
        self._by_user[connection.user_id].add(connection)

    def unregister(self, connection: Connection) -> None:
        self.connections.pop(connection.session_id, None)
        user_connections = self._by_user.get(connection.user_id)
        if user_connections is not None:
            user_connections.discard(connection)
            if not user_connections:
                del self._by_user[connection.user_id]

    async def add_subscription(self, subscription: Subscription) -> None:
        """Register a subscription for live events; returns once the broker listens on its channel."""
        subscribers = self._subscribers.get(subscription.conversation_id)
        if subscribers is not None:
            subscribers.add(subscription)
            return
        self._subscribers[subscription.conversation_id] = {subscription}
        await self.broker.subscribe(conversation_channel(subscription.conversation_id))

    async def remove_subscription(self, subscription: Subscription) -> None:
        subscription.cancel()
        subscribers = self._subscribers.get(subscription.conversation_id)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscribers[subscription.conversation_id]
            await self.broker.unsubscribe(conversation_channel(subscription.conversation_id))

    # Database reads for the gateway

    async def visible_last_seq(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> int:
        """Return the conversation's last seq if the user may see it; raise NotFoundError otherwise."""
        async with self.db.unit_of_work() as uow:
            return await uow.conversations.visible_last_seq(user_id, conversation_id)

    async def read_after(self, conversation_id: uuid.UUID, after_seq: int, limit: int) -> list[Message]:
        """Read stored messages for a gap fill, once this process has acked everything they include."""
        async with self.db.unit_of_work() as uow:
            messages = await uow.messages.read_after(conversation_id, after_seq, limit)
        if self.pipeline is not None:
            await self.pipeline.settled()
        return messages

    # Events

    def message_stored(self, message: Message, message_json: str) -> None:
        """Deliver a stored message to local subscribers, and keep it for the batch's publish."""
        frame = message_frame(message_json)
        self._deliver(message.conversation_id, message.seq, frame)
        if not self.broker.reaches_other_instances:
            return
        runs = self._unpublished.setdefault(message.conversation_id, [])
        if runs and runs[-1][0] + len(runs[-1][1]) == message.seq:
            runs[-1][1].append(frame)
        else:
            runs.append((message.seq, [frame]))

    def batch_stored(self) -> None:
        """Publish the batch's messages to the other instances.

        The messages of one conversation with consecutive seqs go out as one event, so another
        instance reads and parses one Redis message for them.
        """
        unpublished, self._unpublished = self._unpublished, {}
        origin = self.broker.instance_id
        for conversation_id, runs in unpublished.items():
            channel = conversation_channel(conversation_id)
            for first_seq, frames in runs:
                if len(frames) == 1:
                    event = BrokerEvent(EventKind.MESSAGE, conversation_id, first_seq, frames[0], origin)
                else:
                    event = BrokerEvent(EventKind.MESSAGES, conversation_id, first_seq, "\n".join(frames), origin)
                self.broker.publish(channel, event)

    def typing(self, conversation_id: uuid.UUID, user_id: uuid.UUID, origin: Connection) -> None:
        """Relay a typing notice; at-most-once and unordered with messages, never stored."""
        frame = typing_frame(conversation_id, user_id)
        self._deliver_typing(conversation_id, frame, origin)
        event = BrokerEvent(EventKind.TYPING, conversation_id, 0, frame, self.broker.instance_id)
        self.broker.publish(conversation_channel(conversation_id), event)

    async def participant_removed(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """End the removed user's subscriptions to the conversation on every instance."""
        event = BrokerEvent(EventKind.PARTICIPANT_REMOVED, conversation_id, 0, str(user_id), self.broker.instance_id)
        self.broker.publish(CONTROL_CHANNEL, event)
        self._handle_removed(conversation_id, user_id)

    async def conversation_deleted(self, conversation_id: uuid.UUID) -> None:
        """End every subscription to a deleted conversation on every instance."""
        event = BrokerEvent(EventKind.CONVERSATION_DELETED, conversation_id, 0, "", self.broker.instance_id)
        self.broker.publish(CONTROL_CHANNEL, event)
        self._handle_deleted(conversation_id)

    def on_broker_event(self, event: BrokerEvent) -> None:
        """Handle an event published by another instance."""
        if event.kind is EventKind.MESSAGE:
            self._deliver(event.conversation_id, event.seq, event.body)
        elif event.kind is EventKind.MESSAGES:
            for offset, frame in enumerate(event.body.split("\n")):
                self._deliver(event.conversation_id, event.seq + offset, frame)
        elif event.kind is EventKind.TYPING:
            self._deliver_typing(event.conversation_id, event.body, None)
        elif event.kind is EventKind.PARTICIPANT_REMOVED:
            try:
                user_id = uuid.UUID(event.body)
            except ValueError:
                logger.warning("ignored a participant-removed event with a malformed user id")
                return
            self._handle_removed(event.conversation_id, user_id)
        elif event.kind is EventKind.CONVERSATION_DELETED:
            self._handle_deleted(event.conversation_id)

    def _deliver(self, conversation_id: uuid.UUID, seq: int, frame: str) -> None:
        subscribers = self._subscribers.get(conversation_id)
        if not subscribers:
            return
        for subscription in subscribers:
            subscription.offer(seq, frame)

    def _deliver_typing(self, conversation_id: uuid.UUID, frame: str, origin: Connection | None) -> None:
        for subscription in self._subscribers.get(conversation_id, ()):
            if subscription.connection is not origin:
                subscription.connection.push_droppable(frame)

    def _handle_removed(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        for connection in list(self._by_user.get(user_id, ())):
            connection.access_changed(conversation_id)

    def _handle_deleted(self, conversation_id: uuid.UUID) -> None:
        for subscription in list(self._subscribers.get(conversation_id, ())):
            subscription.connection.end_subscription(conversation_id, "deleted")
        for connection in list(self.connections.values()):
            connection.visible.discard(conversation_id)

    async def resync(self) -> None:
        """Compare every subscription with its conversation's last seq and fill what is missing.

        Runs after the broker reconnects, because events published while it was away are lost to
        this instance. It also checks access again, since a removal may have been missed too.
        """
        checks = [
            (subscription, subscription.connection.user_id)
            for subscribers in list(self._subscribers.values())
            for subscription in list(subscribers)
        ]
        filled = 0
        for subscription, user_id in checks:
            try:
                last_seq = await self.visible_last_seq(user_id, subscription.conversation_id)
            except NotFoundError:
                subscription.connection.access_changed(subscription.conversation_id)
                continue
            if last_seq > subscription.last_seq:
                filled += 1
            subscription.fill_to(last_seq)
        logger.info("resync checked %d subscriptions, %d had missed messages", len(checks), filled)

    async def shutdown(self, grace_seconds: float) -> None:
        """Close every connection with 1001 after its queued frames are sent (within the grace time)."""
        self.closing = True
        connections = list(self.connections.values())
        if not connections:
            return
        logger.info("closing %d WebSocket connections for shutdown", len(connections))
        await asyncio.gather(
            *(connection.close_gracefully(grace_seconds) for connection in connections), return_exceptions=True
        )
