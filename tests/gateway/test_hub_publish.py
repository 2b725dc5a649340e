"""The hub publishes a batch's messages per conversation, and delivers grouped events in seq order."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from realtime.broker.base import BrokerEvent, EventKind, conversation_channel
from realtime.broker.memory import MemoryBroker
from realtime.gateway.frames import message_frame
from realtime.gateway.hub import Hub


class RecordingBroker(MemoryBroker):
    """A broker that keeps what is published, as if other instances were there to reach."""

    reaches_other_instances = True

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, BrokerEvent]] = []

    def publish(self, channel: str, event: BrokerEvent) -> None:
        self.published.append((channel, event))


class RecordingSubscription:
    def __init__(self, conversation_id: uuid.UUID) -> None:
        self.conversation_id = conversation_id
        self.offered: list[tuple[int, str]] = []

    def offer(self, seq: int, frame: str) -> None:
        self.offered.append((seq, frame))


def stored(hub: Hub, conversation_id: uuid.UUID, seq: int) -> str:
    message_json = f'{{"seq":{seq},"content":"line one\\nline two"}}'
    hub.message_stored(SimpleNamespace(conversation_id=conversation_id, seq=seq), message_json)
    return message_frame(message_json)


def test_batch_publish_groups_seq_runs():
    broker = RecordingBroker()
    hub = Hub(None, broker)
    first, second = uuid.uuid4(), uuid.uuid4()
    frames = {
        (first, 5): stored(hub, first, 5),
        (first, 6): stored(hub, first, 6),
        (second, 1): stored(hub, second, 1),
        (first, 7): stored(hub, first, 7),
        (first, 9): stored(hub, first, 9),
    }
    # Nothing goes out before the batch has ended.
    assert broker.published == []
    hub.batch_stored()

    published = [(channel, event.kind, event.conversation_id, event.seq, event.body) for channel, event in broker.published]
    assert published == [
        (
            conversation_channel(first),
            EventKind.MESSAGES,
            first,
            5,
            "\n".join([frames[(first, 5)], frames[(first, 6)], frames[(first, 7)]]),
        ),
        (conversation_channel(first), EventKind.MESSAGE, first, 9, frames[(first, 9)]),
        (conversation_channel(second), EventKind.MESSAGE, second, 1, frames[(second, 1)]),
    ]
    # The grouped event survives the trip through its text form.
    grouped = broker.published[0][1]
    assert BrokerEvent.decode(grouped.encode()) == grouped

    # The next batch's messages form events of their own.
    stored(hub, first, 10)
    hub.batch_stored()
    assert [(event.kind, event.seq) for _, event in broker.published[3:]] == [(EventKind.MESSAGE, 10)]


def test_grouped_event_delivers_in_order():
    hub = Hub(None, RecordingBroker())
    conversation_id = uuid.uuid4()
    subscription = RecordingSubscription(conversation_id)
    hub._subscribers[conversation_id] = {subscription}
    frames = ['{"seq":5}', '{"seq":6}', '{"seq":7}']

    hub.on_broker_event(BrokerEvent(EventKind.MESSAGES, conversation_id, 5, "\n".join(frames), "elsewhere"))

    assert subscription.offered == [(5, frames[0]), (6, frames[1]), (7, frames[2])]


def test_single_instance_keeps_nothing_to_publish():
    broker = MemoryBroker()
    hub = Hub(None, broker)
    stored(hub, uuid.uuid4(), 1)
    # The hub keeps nothing for a later publish.
    assert hub._unpublished == {}
