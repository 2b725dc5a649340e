"""Redis pub/sub between server instances.

Litestar's channels plugin with its Redis backend was the first choice. In Litestar 2.25, though,
its publish and subscribe workers are bare tasks. When the Redis connection drops, the exception
ends the task and nothing is logged until shutdown, so the instance stays deaf and silent after
Redis returns. This broker keeps the same shape (one publisher task, one listener task, a channel set per
instance) and adds what the delivery guarantees need: it notices a lost connection, logs it once,
reconnects with backoff, subscribes every channel again, and tells the gateway to fill the gaps.
Publishes are batched into one pipelined round trip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.asyncio.retry import Retry

from realtime.broker.base import CONTROL_CHANNEL, Broker, BrokerEvent, EventKind

logger = logging.getLogger(__name__)

# Events waiting to be published. When Redis falls this far behind the writers, the oldest are
# dropped and counted, and the subscribers of other instances fill the gap from the database.
PUBLISH_QUEUE_MAX = 100_000
PUBLISH_BATCH_MAX = 512
RECONNECT_BACKOFF_MIN_SECONDS = 0.1
RECONNECT_BACKOFF_MAX_SECONDS = 5.0
# Conversation id of events that concern no conversation (the resync request).
NO_CONVERSATION = uuid.UUID(int=0)


class RedisBroker(Broker):
    """Fan-out through Redis pub/sub; one subscriber connection and one publisher per process."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        # No retries inside redis-py: a failure must surface at once so the broker can report it,
        # mark itself disconnected and run its own reconnect loop.
        self._redis = Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2.0,
            health_check_interval=5,
        )
        self._channels: set[str] = {CONTROL_CHANNEL}
        # Every event this instance publishes comes back to it, and starts with this.
        self._own_prefix = f"{self.instance_id} "
        self._pubsub: PubSub | None = None
        self._outgoing: collections.deque[tuple[str, str]] = collections.deque(maxlen=PUBLISH_QUEUE_MAX)
        self._outgoing_ready = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._listening = False
        self._publish_failed = False
        self.dropped_publishes = 0
        self.received_events = 0

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")
        self._publisher = asyncio.create_task(self._publish_loop(), name="redis-broker-publisher")
        logger.info("redis broker %s started", self.instance_id)

    async def stop(self) -> None:
        # Give queued events a moment to go out before the tasks stop.
        deadline = time.monotonic() + 2.0
        while self._outgoing and self._listening and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in (self._listener, self._publisher):
            if task is not None:
                task.cancel()
        for task in (self._listener, self._publisher):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self._close_pubsub()
        await self._redis.aclose()
        logger.info("redis broker %s stopped", self.instance_id)

    async def ping(self) -> None:
        await asyncio.wait_for(self._redis.ping(), timeout=2.0)

    def publish(self, channel: str, event: BrokerEvent) -> None:
        if len(self._outgoing) == PUBLISH_QUEUE_MAX:
            self.dropped_publishes += 1
        self._outgoing.append((channel, event.encode()))
        self._outgoing_ready.set()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # the listener subscribes every channel in the set when it (re)connects
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError) as error:
            # The listener notices the same failure, reconnects and subscribes the whole set.
            logger.debug("subscribe to %s deferred until Redis reconnects: %s", channel, error)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await pubsub.unsubscribe(channel)
        except (RedisError, OSError) as error:
            logger.debug("unsubscribe from %s skipped, Redis unreachable: %s", channel, error)

    async def _listen(self) -> None:
        backoff = RECONNECT_BACKOFF_MIN_SECONDS
        lost_at: float | None = None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._channels)
                self._pubsub = pubsub
                self._listening = True
                backoff = RECONNECT_BACKOFF_MIN_SECONDS
                if lost_at is not None:
                    logger.info(
                        "reconnected to Redis after %.1f s; %d channels subscribed again, filling gaps",
                        time.monotonic() - lost_at,
                        len(self._channels),
                    )
                    lost_at = None
                    await self._request_resync()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self._listening = False
                self._pubsub = None
                if lost_at is None:
                    lost_at = time.monotonic()
                    logger.warning(
                        "lost the Redis connection (%s); storing and local delivery go on, "
                        "reconnecting with backoff",
                        error,
                    )
            except Exception:
                self._listening = False
                self._pubsub = None
                logger.exception("Redis listener failed; restarting it")
                if lost_at is None:
                    lost_at = time.monotonic()
            finally:
                await self._close_pubsub(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECONDS)

    def _dispatch(self, data: str) -> None:
        if data.startswith(self._own_prefix):
            return  # delivered locally already, so it is dropped before it is parsed
        try:
            event = BrokerEvent.decode(data)
        except ValueError:
            logger.warning("ignored a malformed broker event of %d characters", len(data))
            return
        self.received_events += 1
        if event.kind is EventKind.RESYNC:
            asyncio.get_running_loop().create_task(self._request_resync())
            return
        if self._on_event is not None:
            self._on_event(event)

    async def _request_resync(self) -> None:
        if self._on_resync is None:
            return
        try:
            await self._on_resync()
        except Exception:
            logger.exception("gap fill after a Redis reconnect failed")

    async def _publish_loop(self) -> None:
        backoff = RECONNECT_BACKOFF_MIN_SECONDS
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            while self._outgoing:
                batch = [self._outgoing.popleft() for _ in range(min(PUBLISH_BATCH_MAX, len(self._outgoing)))]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel, text in batch:
                            pipe.publish(channel, text)
                        await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except (RedisError, OSError) as error:
                    # The events are stored, so only their live delivery to other instances is lost.
                    # The resync request below makes up for it once Redis is back.
                    self.dropped_publishes += len(batch)
                    if not self._publish_failed:
                        logger.warning("publishing to Redis failed (%s); retrying with backoff", error)
                    self._publish_failed = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_SECONDS)
                    continue
                except Exception:
                    self.dropped_publishes += len(batch)
                    logger.exception("publishing to Redis failed")
                    continue
                if self._publish_failed:
                    self._publish_failed = False
                    backoff = RECONNECT_BACKOFF_MIN_SECONDS
                    logger.info("publishing to Redis works again; asking every instance to fill gaps")
                    resync = BrokerEvent(EventKind.RESYNC, NO_CONVERSATION, 0, "", self.instance_id)
                    self._outgoing.appendleft((CONTROL_CHANNEL, resync.encode()))
                    self._outgoing_ready.set()
                    await self._request_resync()

    async def _close_pubsub(self, pubsub: PubSub | None = None) -> None:
        target = pubsub or self._pubsub
        if target is None:
            return
        try:
            await target.aclose()
        except (RedisError, OSError):
            pass

