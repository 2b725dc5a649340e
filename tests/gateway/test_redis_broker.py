"""RedisBroker against the shared Redis: which events reach which instance."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from realtime.broker.base import BrokerEvent, EventKind, conversation_channel
from realtime.broker.redis import RedisBroker
from tests.support.services import require_redis

pytestmark = pytest.mark.redis


async def wait_for_events(events: list[BrokerEvent], count: int) -> None:
    while len(events) < count:
        await asyncio.sleep(0.01)


async def test_publisher_skips_own_events():
    """Only the other instance handles an event, although Redis sends it to the publisher too."""
    url = require_redis()
    conversation_id = uuid.uuid4()
    channel = conversation_channel(conversation_id)
    brokers = [RedisBroker(url), RedisBroker(url)]
    received: list[list[BrokerEvent]] = [[], []]

    async def no_resync() -> None:
        return None

    for broker, events in zip(brokers, received, strict=True):
        broker.set_handlers(events.append, no_resync)
        await broker.start()
    try:
        for broker in brokers:
            await broker.subscribe(channel)
        # Publish once Redis counts both listeners on the channel.
        async with Redis.from_url(url) as redis:
            for _ in range(500):
                if dict(await redis.pubsub_numsub(channel)).get(channel.encode()) == 2:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the brokers did not subscribe within 5 s")
        for seq in (1, 2):
            event = BrokerEvent(EventKind.MESSAGE, conversation_id, seq, f'{{"seq":{seq}}}', brokers[0].instance_id)
            brokers[0].publish(channel, event)
        await asyncio.wait_for(wait_for_events(received[1], 2), 5)
        # Redis sends a subscriber its messages in the order it took the publishes, so once the
        # first broker has this marker it has also read its own copies of the two events.
        marker = BrokerEvent(EventKind.MESSAGE, conversation_id, 3, '{"seq":3}', brokers[1].instance_id)
        brokers[1].publish(channel, marker)
        await asyncio.wait_for(wait_for_events(received[0], 1), 5)
    finally:
        for broker in brokers:
            await broker.stop()

    assert [(event.seq, event.body) for event in received[1]] == [(1, '{"seq":1}'), (2, '{"seq":2}')]
    assert [event.seq for event in received[0]] == [3]
    assert brokers[0].received_events == 1
    assert brokers[1].received_events == 2
