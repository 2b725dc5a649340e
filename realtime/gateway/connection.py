"""One WebSocket connection: its reader loop, its bounded outbox and its subscriptions.

Frames from the client are handled one at a time, in arrival order. Sends do not wait for their
ack before the next frame is read, but they enter the message pipeline in order, and the pipeline
stores and acknowledges them in that order.

The outbox is bounded (``outbox_max_frames``). A client that stops reading fills it and is closed
with 4408; it reconnects with ``since_seq`` and loses nothing. Catch-up and gap fill never fill it
past half, because they wait for room instead (``push_paced``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from litestar.types import Receive, Send

from persistence.errors import NotFoundError, PersistenceError
from persistence.models import NewMessage, User

from realtime.gateway import coalesce, frames
from realtime.gateway.frames import FrameError
from realtime.gateway.subscription import ConnectionClosing, Subscription
from realtime.pipeline import StoreOutcome
from realtime.settings import Settings
from realtime.wire import encode_json

if TYPE_CHECKING:
    from realtime.gateway.hub import Hub

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_SLOW_CONSUMER = 4408
# Sends of one connection that may wait for their ack at once. Beyond this the reader stops
# reading, so TCP slows the client down.
MAX_UNACKED_SENDS = 256
# Largest `metadata` object accepted on a message, as serialized JSON.
MAX_METADATA_BYTES = 16 * 1024


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


class Connection:
    """The server side of one authenticated WebSocket."""

    # Slots, and the outbox, task set and semaphore created on first use, keep an idle
    # connection small: tens of thousands of them share one process.
    __slots__ = (
        "session_id", "user_id", "user_name", "hub", "settings", "subscriptions", "visible",
        "_receive", "_send", "_outbox", "_outbox_max", "_paced_limit", "_outbox_ready", "_room", "_tasks",
        "_writer", "_in_flight", "_held_frames", "_protocol", "_active", "_closing", "_unacked", "_rate", "_bucket", "_bucket_updated",
    )

    def __init__(self, receive: Receive, send: Send, user: User, hub: Hub, settings: Settings) -> None:
        """Serve an accepted WebSocket through its ASGI `receive` and `send` callables."""
        self.session_id = uuid.uuid4().hex
        # Only the id and name are kept: the user model would cost about 1 KB per idle connection.
        self.user_id = user.user_id
        self.user_name = user.name
        self.hub = hub
        self.settings = settings
        self.subscriptions: dict[uuid.UUID, Subscription] = {}
        # Conversations this user was found to see; checked once, dropped on a membership change.
        self.visible: set[uuid.UUID] = set()
        self._receive = receive
        self._send = send
        # Frames waiting for the writer; None while nothing was queued yet.
        self._outbox: collections.deque[str] | None = None
        self._outbox_max = settings.outbox_max_frames
        self._paced_limit = max(1, self._outbox_max // 2)
        # The writer task waits on this future while the outbox is empty. A future is far smaller
        # than an asyncio.Event, which matters at tens of thousands of idle connections.
        self._outbox_ready: asyncio.Future[None] | None = None
        # Created on first use: catch-up waits on it for room in the outbox.
        self._room: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] | None = None
        # The writer task runs while frames are queued. The hub ends it through release_idle_writer
        # once nothing was queued for a whole check interval.
        self._writer: asyncio.Task[None] | None = None
        # A frame sent directly whose send had to wait for the socket to drain; see _send_directly.
        self._in_flight: asyncio.Task[None] | None = None
        # Frames pushed during the current event loop callback, written together right after it
        # (realtime.gateway.coalesce), and the server protocol that writes them. The protocol is
        # None under a server other than uvicorn's websockets-sansio.
        self._held_frames: list[str] | None = None
        self._protocol = coalesce.raw_protocol(send)
        # Whether a frame was queued since the last release_idle_writer call.
        self._active = False
        self._closing = False
        # Created by the first send: bounds the sends waiting for their ack.
        self._unacked: asyncio.Semaphore | None = None
        self._rate = settings.rate_limit_messages_per_second
        self._bucket = 2 * self._rate
        self._bucket_updated = time.monotonic()

    # Outbox

    def push(self, frame: str) -> None:
        """Send or queue a frame; a full outbox closes the connection as a slow consumer."""
        if self._closing:
            return
        if self._held_frames is not None:
            self._held_frames.append(frame)
            return
        if self._protocol is not None and self._can_send_now():
            # Nothing is queued or being sent: keep the frame, and the ones pushed after it in
            # this callback, for one write right after the callback.
            self._held_frames = [frame]
            coalesce.hold(self)
            return
        self._push_now(frame)

    def write_held(self) -> None:
        """Write the frames held since the callback began, in one socket write when possible."""
        held_frames, self._held_frames = self._held_frames, None
        if held_frames is None or self._closing:
            return
        if self._protocol is not None and self._can_send_now():
            try:
                if coalesce.write_frames(self._protocol, held_frames):
                    return
            except Exception:
                # A uvicorn whose protocol differs from the one this was written against: the
                # frames still go out, one by one through the ASGI send.
                logger.exception("connection %s: writing frames together failed; sending them one by one", self.session_id)
                self._protocol = None
        for frame in held_frames:
            self._push_now(frame)

    def _can_send_now(self) -> bool:
        return not self._outbox and self._in_flight is None and (self._writer is None or self._outbox_ready is not None)

    def _push_now(self, frame: str) -> None:
        if self._closing:
            return
        outbox = self._outbox
        if self._can_send_now():
            # Nothing is queued or being sent, so the frame can go out now, in order.
            self._send_directly(frame)
            return
        if outbox is None:
            outbox = self._outbox = collections.deque()
        elif len(outbox) >= self._outbox_max:
            logger.warning(
                "connection %s of user %s: outbox full (%d frames), closing as a slow consumer",
                self.session_id, self.user_id, self._outbox_max,
            )
            self._close_now(CLOSE_SLOW_CONSUMER, "outbox full: the client is not reading fast enough")
            return
        outbox.append(frame)
        self._wake_writer()

    def push_droppable(self, frame: str) -> None:
        """Queue an ephemeral frame (typing) only while the outbox is under half full."""
        if self._closing:
            return
        if self._held_frames is not None:
            self.write_held()  # the held frames were pushed first, so they go first
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = collections.deque()
        elif len(outbox) >= self._paced_limit:
            return
        outbox.append(frame)
        self._wake_writer()

    async def push_paced(self, frame: str) -> None:
        """Queue a catch-up frame, waiting for room instead of overflowing the outbox.

        A client that takes no frame at all for ``slow_consumer_seconds`` while catch-up frames
        wait is not reading, and is closed with 4408 like one whose outbox overflowed.
        """
        while self._outbox is not None and len(self._outbox) >= self._paced_limit:
            if self._closing:
                raise ConnectionClosing
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self.settings.slow_consumer_seconds)
            except TimeoutError:
                logger.warning(
                    "connection %s of user %s: no frame taken for %.1f s during catch-up, closing as a slow consumer",
                    self.session_id, self.user_id, self.settings.slow_consumer_seconds,
                )
                self._close_now(CLOSE_SLOW_CONSUMER, "the client stopped reading")
                raise ConnectionClosing from None
        if self._closing:
            raise ConnectionClosing
        if self._held_frames is not None:
            self.write_held()  # the held frames were pushed first, so they go first
        if self._outbox is None:
            self._outbox = collections.deque()
        self._outbox.append(frame)
        self._wake_writer()

    def _send_directly(self, frame: str) -> None:
        """Send a frame without the writer task when the ASGI send completes at once.

        uvicorn's send finishes without suspending while the socket accepts data, which is
        nearly always, so the frame costs no task switch (about a tenth of the event loop's time
        under fan-out load, `python -m bench fanout`). When the socket is full, the send waits
        for it to drain; a task finishes it, and frames pushed meanwhile queue behind it.
        """
        coroutine = self._send({"type": "websocket.send", "text": frame})
        try:
            blocker = coroutine.send(None)
        except StopIteration:
            return
        except Exception as error:  # the client has gone; the reader loop sees the disconnect
            logger.debug("connection %s: sending a frame failed: %s", self.session_id, error)
            return
        self._in_flight = asyncio.create_task(self._finish_send(coroutine, blocker), name=f"send-{self.session_id}")

    async def _finish_send(self, coroutine: Coroutine[Any, Any, None], blocker: Any) -> None:
        """Drive a send that suspended in `_send_directly` to its end, as a task would."""
        try:
            while True:
                try:
                    if blocker is None:
                        await asyncio.sleep(0)  # a bare yield, as asyncio.sleep(0) makes
                    else:
                        await blocker
                except BaseException as error:  # cancellation included, so the send is cancelled too
                    blocker = coroutine.throw(error)
                else:
                    blocker = coroutine.send(None)
        except StopIteration:
            pass
        except Exception as error:  # the client has gone; the reader loop sees the disconnect
            logger.debug("connection %s: sending a frame failed: %s", self.session_id, error)
        finally:
            self._in_flight = None

    def _wake_writer(self) -> None:
        self._active = True
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.session_id}")
            return
        waiter = self._outbox_ready
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def release_idle_writer(self) -> None:
        """End the writer task and drop the empty outbox if nothing was queued since the last call.

        The hub calls this periodically, so an idle connection keeps no task, future or deque. The
        next queued frame starts a new writer. A writer started for every burst instead cost about
        6% of server CPU under fan-out load (`python -m bench fanout`, docs/benchmarks.md).
        """
        if self._active:
            self._active = False
            return
        waiter = self._outbox_ready
        if waiter is not None and not waiter.done() and not self._outbox:
            waiter.set_result(None)

    def _make_room(self) -> None:
        if self._room is not None:
            self._room.set()

    async def _write_loop(self) -> None:
        send = self._send
        # Set by the push that started this writer; it stays the same object until the writer ends.
        outbox = self._outbox
        assert outbox is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._in_flight is not None:
                # A frame sent directly is still waiting for the socket; it goes first.
                await asyncio.wait([self._in_flight])
            while outbox:
                frame = outbox.popleft()
                if len(outbox) < self._paced_limit:
                    self._make_room()
                await send({"type": "websocket.send", "text": frame})
            self._outbox_ready = waiter = loop.create_future()
            await waiter
            self._outbox_ready = None
            if not outbox:
                # Only release_idle_writer wakes the writer with nothing queued. The next push
                # starts a new writer.
                self._writer = None
                self._outbox = None
                return

    # Tasks and closing

    def start_task(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"{name}-{self.session_id}")
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def fail(self) -> None:
        self._close_now(CLOSE_INTERNAL_ERROR, "internal error")

    def _close_now(self, code: int, reason: str) -> None:
        """Drop what is queued and close with `code`."""
        if self._closing:
            return
        self._closing = True
        self._make_room()
        if self._outbox is not None:
            self._outbox.clear()
        for task in (self._writer, self._in_flight):
            if task is not None:
                task.cancel()
        self.start_task(self._send_close(code, reason), "close")

    async def close_gracefully(self, grace_seconds: float) -> None:
        """Send what is queued (within the grace time), then close with 1001."""
        if self._closing:
            return
        if self._held_frames is not None:
            self.write_held()
        self._closing = True
        self._make_room()
        deadline = time.monotonic() + grace_seconds
        while (self._outbox or self._in_flight is not None) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in (self._writer, self._in_flight):
            if task is not None:
                task.cancel()
        await self._send_close(CLOSE_GOING_AWAY, "server shutting down")

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as error:  # the client may be gone already; nothing more to do
            logger.debug("connection %s: close %d not sent: %s", self.session_id, code, error)

    # Main loop

    async def run(self) -> None:
        """Serve the connection until the client or the server closes it."""
        self.hub.register(self)
        self.push(frames.ready_frame(self.session_id, self.user_id, self.user_name))
        logger.info("connection %s opened for user %s", self.session_id, self.user_id)
        close_code: int | None = None
        try:
            while True:
                event = await self._receive()
                if event["type"] == "websocket.disconnect":
                    close_code = event.get("code")
                    break
                if self._closing or self.hub.closing:
                    # Frames that arrive after the close decision, or once shutdown has begun, are
                    # not handled: the client resends them (with the same client_msg_id) elsewhere.
                    continue
                text = event.get("text")
                if text is None:
                    self.push(frames.error_frame(frames.BAD_FRAME, "frames must be text frames holding JSON", None))
                    continue
                await self._handle(text)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("connection %s failed", self.session_id)
        finally:
            await self._cleanup()
        if close_code == CLOSE_MESSAGE_TOO_BIG:
            logger.warning(
                "connection %s of user %s closed with 1009: a frame was larger than %d bytes",
                self.session_id, self.user_id, self.settings.max_frame_bytes,
            )
        logger.info("connection %s closed (code %s)", self.session_id, close_code)

    async def _cleanup(self) -> None:
        self._closing = True
        self._make_room()
        self.hub.unregister(self)
        for subscription in list(self.subscriptions.values()):
            await self.hub.remove_subscription(subscription)
        self.subscriptions.clear()
        tasks = [task for task in self._tasks or () if task.get_name().startswith("fill-")]
        tasks.extend(task for task in (self._writer, self._in_flight) if task is not None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, text: str) -> None:
        ref: str | None = None
        try:
            frame = frames.parse_client_frame(text)
            ref = frame.ref
            if isinstance(frame, frames.SendFrame):
                await self._handle_send(frame)
            elif isinstance(frame, frames.SubscribeFrame):
                await self._handle_subscribe(frame)
            elif isinstance(frame, frames.UnsubscribeFrame):
                await self._handle_unsubscribe(frame)
            elif isinstance(frame, frames.TypingFrame):
                await self._require_visible(frame.conversation_id, frame.ref)
                self.hub.typing(frame.conversation_id, self.user_id, self)
            else:
                self.push(frames.pong_frame(frame.ref))
        except FrameError as error:
            self.push(frames.error_frame(error.code, error.detail, error.ref))
        except Exception:
            logger.exception("connection %s: handling a frame failed", self.session_id)
            self.push(frames.error_frame(frames.INTERNAL, "the server failed to handle this frame", ref))

    async def _require_visible(self, conversation_id: uuid.UUID, ref: str | None) -> None:
        if conversation_id in self.visible:
            return
        try:
            await self.hub.visible_last_seq(self.user_id, conversation_id)
        except NotFoundError as error:
            raise FrameError(frames.NOT_FOUND, f"conversation {conversation_id} not found", ref) from error
        self.visible.add(conversation_id)

    async def _handle_subscribe(self, frame: frames.SubscribeFrame) -> None:
        conversation_id = frame.conversation_id
        existing = self.subscriptions.get(conversation_id)
        if existing is not None:
            self.push(frames.subscribed_frame(conversation_id, existing.last_seq, frame.ref))
            return

        try:
            last_seq = await self.hub.visible_last_seq(self.user_id, conversation_id)
        except NotFoundError as error:
            raise FrameError(frames.NOT_FOUND, f"conversation {conversation_id} not found", frame.ref) from error
        self.visible.add(conversation_id)

        start = last_seq if frame.since_seq is None else min(frame.since_seq, last_seq)
        subscription = Subscription(self, conversation_id, start)
        self.subscriptions[conversation_id] = subscription
        await self.hub.add_subscription(subscription)

        # Messages stored between the access check and the broker subscription reached neither
        # this subscription nor its catch-up, so read the last seq again now that events flow.
        try:
            current_seq = await self.hub.visible_last_seq(self.user_id, conversation_id)
        except NotFoundError as error:
            await self._drop_subscription(conversation_id)
            raise FrameError(frames.NOT_FOUND, f"conversation {conversation_id} not found", frame.ref) from error
        if self.subscriptions.get(conversation_id) is not subscription:
            return  # removed while the read was in progress
        self.push(frames.subscribed_frame(conversation_id, current_seq, frame.ref))
        subscription.release(current_seq)

    async def _handle_unsubscribe(self, frame: frames.UnsubscribeFrame) -> None:
        await self._drop_subscription(frame.conversation_id)
        self.push(frames.unsubscribed_frame(frame.conversation_id, "request", frame.ref))

    async def _drop_subscription(self, conversation_id: uuid.UUID) -> bool:
        subscription = self.subscriptions.pop(conversation_id, None)
        if subscription is None:
            return False
        await self.hub.remove_subscription(subscription)
        return True

    def end_subscription(self, conversation_id: uuid.UUID, reason: str) -> None:
        """End a subscription from the server side and tell the client why."""
        self.visible.discard(conversation_id)
        if conversation_id in self.subscriptions:
            self.start_task(self._end_subscription(conversation_id, reason), "unsubscribe")

    async def _end_subscription(self, conversation_id: uuid.UUID, reason: str) -> None:
        if await self._drop_subscription(conversation_id):
            self.push(frames.unsubscribed_frame(conversation_id, reason, None))
            logger.info("connection %s: subscription to %s ended (%s)", self.session_id, conversation_id, reason)

    def access_changed(self, conversation_id: uuid.UUID) -> None:
        """Check access again after this user was removed; end the subscription if it is gone.

        A removed participant who owns the workspace still sees the conversation and stays.
        """
        self.visible.discard(conversation_id)
        if conversation_id in self.subscriptions:
            self.start_task(self._recheck_access(conversation_id), "recheck")

    async def _recheck_access(self, conversation_id: uuid.UUID) -> None:
        try:
            await self.hub.visible_last_seq(self.user_id, conversation_id)
        except NotFoundError:
            await self._end_subscription(conversation_id, "removed")
            return
        self.visible.add(conversation_id)

    # Sending

    async def _handle_send(self, frame: frames.SendFrame) -> None:
        content = frame.content
        if not content.strip():
            raise FrameError(frames.INVALID, "content must not be empty or blank", frame.ref)
        if len(content) > self.settings.max_message_chars:
            raise FrameError(
                frames.INVALID,
                f"content is {len(content)} characters long; the maximum is {self.settings.max_message_chars}",
                frame.ref,
            )
        frames.check_client_msg_id(frame)
        metadata = frame.metadata or {}
        metadata_size = len(encode_json(metadata)) if metadata else 0
        if metadata_size > MAX_METADATA_BYTES:
            raise FrameError(
                frames.INVALID,
                f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON (got {metadata_size})",
                frame.ref,
            )
        # PostgreSQL cannot store U+0000 in text or JSON, and the failed insert would fail its batch.
        for field, value in (("content", content), ("client_msg_id", frame.client_msg_id), ("metadata", metadata)):
            if _contains_nul(value):
                raise FrameError(frames.INVALID, f"{field} must not contain U+0000 (NUL)", frame.ref)
        if not self._take_rate_token():
            raise FrameError(
                frames.RATE_LIMITED,
                f"more than {self._rate:g} messages per second; slow down and resend",
                frame.ref,
            )
        await self._require_visible(frame.conversation_id, frame.ref)

        message = NewMessage(
            conversation_id=frame.conversation_id,
            sender_id=self.user_id,
            content=content,
            client_msg_id=frame.client_msg_id,
            metadata=metadata,
        )
        if self._unacked is None:
            self._unacked = asyncio.Semaphore(MAX_UNACKED_SENDS)
        await self._unacked.acquire()
        pipeline = self.hub.pipeline
        if pipeline is None:
            self._unacked.release()
            raise FrameError(frames.INTERNAL, "the server is not ready to store messages", frame.ref)
        await pipeline.enqueue(message, partial(self._on_stored, frame))

    def _on_stored(self, frame: frames.SendFrame, outcome: StoreOutcome) -> None:
        self._unacked.release()  # type: ignore[union-attr]  # created by _handle_send
        if outcome.error is not None:
            self.push(frames.error_frame(*_describe_store_error(outcome.error, frame), frame.ref))
            return
        result = outcome.result
        if result is None or outcome.message_json is None:
            return
        ack = frames.ack_frame(outcome.message_json, frame.client_msg_id, frame.ref)
        subscription = self.subscriptions.get(frame.conversation_id)
        if subscription is not None and result.created:
            subscription.offer_ack(result.message.seq, ack)
        else:
            self.push(ack)

    def _take_rate_token(self) -> bool:
        if self._rate <= 0:
            return True
        now = time.monotonic()
        self._bucket = min(2 * self._rate, self._bucket + (now - self._bucket_updated) * self._rate)
        self._bucket_updated = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True


def _describe_store_error(error: Exception, frame: frames.SendFrame) -> tuple[str, str]:
    if isinstance(error, NotFoundError):
        return frames.NOT_FOUND, f"conversation {frame.conversation_id} not found"
    if isinstance(error, PersistenceError):
        return frames.INVALID, error.detail
    return frames.INTERNAL, "the message could not be stored; send it again with the same client_msg_id"
