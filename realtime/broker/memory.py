"""The in-process broker: the embedded default for a single server process."""

from __future__ import annotations

from realtime.broker.base import Broker, BrokerEvent


class MemoryBroker(Broker):
    """A broker with no other instances to reach.

    The gateway already delivers every event to the subscribers of its own process, so publishing
    here has nothing left to do. It cannot connect several processes: the server refuses to start
    it with more than one worker.
    """

    reaches_other_instances = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def publish(self, channel: str, event: BrokerEvent) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def ping(self) -> None:
        return None
