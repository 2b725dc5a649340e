"""Brokers carry stored messages and control events between server instances."""

from realtime.broker.base import Broker, BrokerEvent, EventKind
from realtime.broker.memory import MemoryBroker
from realtime.broker.redis import RedisBroker

__all__ = ["Broker", "BrokerEvent", "EventKind", "MemoryBroker", "RedisBroker"]
