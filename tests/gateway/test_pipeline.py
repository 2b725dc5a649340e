"""The message pipeline against a real database: batch hand-over, completion order, settled()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from persistence.models import Message, NewMessage
from realtime.pipeline import MessagePipeline, StoreOutcome
from tests.persistence.conftest import database_factory, db, store, world  # noqa: F401  (fixtures)


class StoredLog:
    """The pipeline's sink: records the seq of every stored message it is given."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        # The number of message seqs recorded when each batch ended.
        self.batch_ends: list[int] = []

    def message_stored(self, message: Message, message_json: str) -> None:
        self.seqs.append(message.seq)

    def batch_stored(self) -> None:
        self.batch_ends.append(len(self.seqs))


def new_message(world, number: int) -> NewMessage:  # noqa: F811
    return NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content=f"message {number}")


async def wait_for_batches(pipeline: MessagePipeline, count: int) -> None:
    while pipeline._begun_batches < count:
        await asyncio.sleep(0)


async def test_next_batch_handed_over_before_acks(db, world):  # noqa: F811
    """Messages waiting when a batch's results arrive are sent to the database before its acks run."""
    log = StoredLog()
    pipeline = MessagePipeline(db, log, batch_wait_ms=0)
    await pipeline.start()
    begun_at_ack: list[int] = []
    outcomes: list[StoreOutcome] = []
    finished = asyncio.Event()

    def on_done(outcome: StoreOutcome) -> None:
        begun_at_ack.append(pipeline._begun_batches)
        outcomes.append(outcome)
        if len(outcomes) == 5:
            finished.set()

    try:
        await pipeline.enqueue(new_message(world, 1), on_done)
        await wait_for_batches(pipeline, 1)
        for number in range(2, 6):
            await pipeline.enqueue(new_message(world, number), on_done)
        await asyncio.wait_for(finished.wait(), 30)
    finally:
        await pipeline.stop()

    assert begun_at_ack[0] == 2
    assert [outcome.result.message.seq for outcome in outcomes] == [1, 2, 3, 4, 5]
    assert log.seqs == [1, 2, 3, 4, 5]
    assert pipeline.committed_batches == 2


async def test_settled_returns_under_continuous_load(db, world):  # noqa: F811
    """settled() waits for the batches begun before the call, not for the queue to run dry."""
    total = 3000
    pipeline = MessagePipeline(db, StoredLog(), batch_max=100, batch_wait_ms=0)
    await pipeline.start()

    async def produce() -> None:
        for number in range(total):
            await pipeline.enqueue(new_message(world, number), lambda _outcome: None)
            await asyncio.sleep(0)

    producer = asyncio.create_task(produce())
    try:
        await wait_for_batches(pipeline, 3)
        await asyncio.wait_for(pipeline.settled(), 30)
        stored_when_settled = pipeline.stored_messages
        await producer
        assert await pipeline.drain(60)
    finally:
        producer.cancel()
        await pipeline.stop()

    assert stored_when_settled < total
    assert pipeline.stored_messages == total


async def test_stop_during_hand_over_completes_both_batches(db, world):  # noqa: F811
    """A writer stopped just after it handed over the next batch still acks the committed one.

    The batch it handed over may or may not be stored, so its senders get an error, and
    settled() does not wait for it.
    """
    pipeline = MessagePipeline(db, StoredLog(), batch_wait_ms=0)
    await pipeline.start()
    outcomes: dict[int, StoreOutcome] = {}
    begin = pipeline._begin

    def begin_then_stop(batch):
        storing = begin(batch)
        if pipeline._begun_batches == 2:
            pipeline._writer.cancel()  # the writer is at its pass of the event loop next
        return storing

    both_done = asyncio.Event()

    def record(number: int) -> Callable[[StoreOutcome], None]:
        def on_done(outcome: StoreOutcome) -> None:
            outcomes[number] = outcome
            if len(outcomes) == 2:
                both_done.set()

        return on_done

    pipeline._begin = begin_then_stop
    try:
        await pipeline.enqueue(new_message(world, 1), record(1))
        await wait_for_batches(pipeline, 1)
        await pipeline.enqueue(new_message(world, 2), record(2))
        await asyncio.wait_for(both_done.wait(), 10)
        await asyncio.wait_for(pipeline.settled(), 5)
    finally:
        await pipeline.stop(timeout=0)

    assert outcomes[1].result.message.seq == 1
    assert outcomes[2].result is None
    assert "stopped" in str(outcomes[2].error)


async def wait_for_outcomes(outcomes: list[StoreOutcome], count: int) -> None:
    while len(outcomes) < count:
        await asyncio.sleep(0.001)


def record_begins(pipeline: MessagePipeline) -> list[tuple[float, int]]:
    """Record when each batch of `pipeline` begins and how many messages it contains."""
    begins: list[tuple[float, int]] = []
    begin = pipeline._begin

    def recording_begin(batch):
        begins.append((asyncio.get_running_loop().time(), len(batch)))
        return begin(batch)

    pipeline._begin = recording_begin
    return begins


async def test_loaded_batches_begin_interval_apart(db, world):  # noqa: F811
    """After a batch of several messages, the next batch waits out the interval and takes all that came."""
    log = StoredLog()
    pipeline = MessagePipeline(db, log, batch_wait_ms=0, batch_interval_ms=500)
    begins = record_begins(pipeline)
    outcomes: list[StoreOutcome] = []
    await pipeline.start()
    try:
        # A lone message first, so that the store is warm. It does not hold the next batch back.
        await asyncio.wait_for(pipeline.submit(new_message(world, 1)), 30)
        # Queued before the writer runs, so they form one batch.
        await pipeline.enqueue(new_message(world, 2), outcomes.append)
        await pipeline.enqueue(new_message(world, 3), outcomes.append)
        await asyncio.wait_for(wait_for_outcomes(outcomes, 2), 30)
        for number in (4, 5, 6):
            await pipeline.enqueue(new_message(world, number), outcomes.append)
            await asyncio.sleep(0.01)
        assert await pipeline.drain(30)
    finally:
        await pipeline.stop()

    assert [size for _, size in begins] == [1, 2, 3]
    assert begins[2][0] - begins[1][0] >= 0.5
    assert [outcome.result.message.seq for outcome in outcomes] == [2, 3, 4, 5, 6]
    # The sink gets one batch_stored call per batch, after the batch's last message.
    assert log.batch_ends == [1, 3, 6]


async def test_lone_message_batch_not_spaced(db, world):  # noqa: F811
    """A batch of one message means the writer keeps up, so the next message is stored at once."""
    pipeline = MessagePipeline(db, StoredLog(), batch_wait_ms=0, batch_interval_ms=60_000)
    await pipeline.start()
    try:
        for number in (1, 2, 3):
            await asyncio.wait_for(pipeline.submit(new_message(world, number)), 10)
    finally:
        await pipeline.stop()

    assert pipeline.committed_batches == 3
