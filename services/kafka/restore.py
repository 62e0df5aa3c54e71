"""Writing a lost event log back from the read models: ``slatrack restore``, and ``serve``
when it starts an embedded broker (which keeps its log in memory only).

The read models keep every accepted event as it was recorded: its message
value, its key (the customer id), its partition and its offset
(:class:`services.worker.ports.StoredEvent`). When the log is gone but the read
models are intact, each partition of an *empty* ``ticket-events`` gets its
stored events back, in offset order.

**Offsets.** A new partition numbers its records from 0 without gaps; the
stored events have gaps where the log held a message that never became a
stored event (rejected and dead-lettered, or a repeated copy of an event).
Each gap is filled with a *placeholder*: no key, an empty value, the header
:data:`PLACEHOLDER_HEADER`. So every event lands at its original offset, the
active generation's stored offsets are exactly the end of the restored log,
and the workers go on from there with the rows, the counters' marks and the
signal ledgers they had: nothing is projected, counted or sent again. A
rebuild or an export reads a placeholder as an invalid message (empty), as
the message at that offset was not an event either.

Every record's offset is checked as the broker acknowledges it: a log that
someone else writes to meanwhile stops the restore with an error instead of
shifting the events.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from events import quoted
from events.policies import MAX_POLICY_EVENT_BYTES
from services.config import Settings
from services.kafka.client import raw_producer
from services.kafka.consumer import PLACEHOLDER_HEADER
from services.kafka.log_reader import LogBounds, read_log
from services.kafka.routing import expected_partition
from services.worker.ports import ReadModelStore, StoredEvent

log = logging.getLogger(__name__)

PLACEHOLDER_NOTE = b"the message at this offset was not an event (rejected or repeated) before the restore"
PAGE = 2_000  # stored events read (and records in flight) at a time
PARTITIONING_SAMPLE = 200  # stored events per partition checked against the topic's partitioning


class RestoreRefused(RuntimeError):
    """The log cannot be restored as things are; nothing was written (a one-line reason)."""


class RestoreFailed(RuntimeError):
    """The broker put a restored record at another offset than its original one."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore wrote."""

    topic: str
    generation: int
    events: int
    placeholders: int
    partitions: int

    def summary(self) -> str:
        return (
            f"restored {self.events} events of read-model generation {self.generation} into {self.topic} "
            f"({self.partitions} partitions, {self.placeholders} placeholders where the log held a "
            "rejected or repeated message)"
        )


async def restore_log(settings: Settings, store: ReadModelStore) -> Restored | None:
    """Write the active generation's events back into an empty events topic (None: it has none)."""
    generation = await asyncio.to_thread(store.active_generation)
    if generation is None:
        return None
    stored = await asyncio.to_thread(store.stored_offsets, generation, settings.topic_events)
    ends = {partition: end for partition, end in sorted(stored.items()) if end > 0}
    if not ends:
        return None
    bounds = await log_bounds(settings)
    _check_target(settings.topic_events, generation, ends, bounds)
    await asyncio.to_thread(
        _check_partitioning, store, settings.topic_events, generation, ends, len(bounds.end)
    )
    producer = raw_producer(settings, max_request_size=max(1024 * 1024, 2 * settings.max_event_bytes))
    await producer.start()
    events = placeholders = 0
    try:
        for partition, end in ends.items():
            written, filled = await _restore_partition(
                producer, store, settings.topic_events, generation, partition, end
            )
            events, placeholders = events + written, placeholders + filled
    finally:
        await producer.stop()
    return Restored(settings.topic_events, generation, events, placeholders, len(ends))


async def restore_policies(settings: Settings, store: ReadModelStore) -> int | None:
    """Write the policy versions the active generation has read back into an empty policy topic,
    each at its original position (placeholders where the topic held a record that was no
    version): a worker's stored position in the topic stays true, and a version published
    afterwards gets the next one. Returns how many versions (None: nothing to restore; the topic
    holds them already)."""
    from services.kafka.policies import read_policy_records

    generation = await asyncio.to_thread(store.active_generation)
    if generation is None:
        return None
    stored = dict(await asyncio.to_thread(store.policy_versions, generation))
    if not stored:
        return None
    topic = settings.topic_policies
    # Up to where the workers have read it (records that were no version after the last one
    # count too): their stored positions stay true, and the next version published comes after.
    measured = await asyncio.to_thread(store.stored_offsets, generation, topic)
    end = max(max(stored) + 1, max(measured.values(), default=0))
    found = await read_policy_records(settings)
    if found.end >= end:
        return None  # not lost
    if found.end > 0:
        raise RestoreRefused(
            f"{topic} holds {found.end} records, but read-model generation {generation} has read policy "
            f"versions up to position {end - 1}: restore writes only into an empty policy topic"
        )
    producer = raw_producer(settings, max_request_size=MAX_POLICY_EVENT_BYTES + 64 * 1024)
    await producer.start()
    try:
        sent = []
        for position in range(end):
            body = stored.get(position)
            if body is None:
                future = await _placeholder(producer, topic, 0)
            else:
                future = await producer.send(topic, body, partition=0)
            sent.append((position, future))
        await _landed_as_sent(
            sent,
            lambda landed, position: (
                f"{topic}: a restored policy version landed at offset {landed}, not {position}: someone "
                "else writes to the policy topic; stop every publisher, empty it and restore again"
            ),
        )
    finally:
        await producer.stop()
    return len(stored)


async def log_bounds(settings: Settings) -> LogBounds:
    """Where each partition of the events topic starts and ends (read, not trusted from ListOffsets)."""
    found: list[LogBounds] = []
    # Stops at the first record: the bounds are announced before it.
    async with contextlib.aclosing(read_log(settings, found.append)) as records:
        async for _ in records:
            break
    return found[0]


def _check_target(topic: str, generation: int, ends: dict[int, int], bounds: LogBounds) -> None:
    missing = sorted(p for p in ends if p not in bounds.end)
    if missing:
        raise RestoreRefused(
            f"read-model generation {generation} holds events of {topic} partitions up to {max(ends)}, but "
            f"the topic has {len(bounds.end)} partitions: create it with {max(ends) + 1} or more "
            "(SLATRACK_TOPIC_PARTITIONS) before restoring"
        )
    if any(bounds.end.values()):
        held = {p: end for p, end in sorted(bounds.end.items()) if end}
        raise RestoreRefused(
            f"{topic} is not empty (partition: end offset {held}): restore writes only into an empty "
            "log, so that every event gets its original offset back"
        )


def _check_partitioning(
    store: ReadModelStore, topic: str, generation: int, ends: dict[int, int], partitions: int
) -> None:
    """The topic must partition the customers as the log did: with another partition count a
    customer's new events land on another partition than its restored history (one customer, two
    orders). Checked on the first stored events of each partition against murmur2 (the default
    partitioner of Kafka's clients and ours). A few events elsewhere are a producer with another
    partitioner (counted as misrouted when they came), not another count: only most of them
    elsewhere refuses."""
    sampled = elsewhere = 0
    example = ""
    for partition in ends:
        for event in store.events_from(generation, partition, 0, PARTITIONING_SAMPLE):
            sampled += 1
            expected = expected_partition(event.customer_id.encode(), partitions)
            if expected != partition:
                elsewhere += 1
                example = example or (
                    f"customer {quoted(event.customer_id)} is in partition {partition}; with {partitions} "
                    f"partitions it would be in {expected}"
                )
    if sampled and elsewhere * 2 > sampled:
        raise RestoreRefused(
            f"{topic} has {partitions} partitions, but {elsewhere} of {sampled} stored events checked were "
            f"partitioned over another count ({example}): create the topic with as many partitions as "
            "the lost one had (SLATRACK_TOPIC_PARTITIONS)"
        )


async def _restore_partition(
    producer: AIOKafkaProducer, store: ReadModelStore, topic: str, generation: int, partition: int, end: int
) -> tuple[int, int]:
    """Offsets 0 to ``end`` of one partition: its stored events, placeholders between them."""
    events = placeholders = 0
    position = 0
    while position < end:
        page = await asyncio.to_thread(store.events_from, generation, partition, position, PAGE)
        page = [event for event in page if event.offset < end]
        # No stored event left: placeholders up to the end (a page's worth at a time).
        upto = page[-1].offset + 1 if page else min(end, position + PAGE)
        by_offset = {event.offset: event for event in page}
        if len(by_offset) < len(page):
            raise RestoreFailed(
                f"{topic}[{partition}]: read-model generation {generation} stores two events at one "
                "offset, which no log can hold; rebuild the read models from a log instead"
            )
        sent = []
        for offset in range(position, upto):
            event = by_offset.get(offset)
            sent.append((offset, await _send(producer, topic, partition, event)))
            events, placeholders = events + (event is not None), placeholders + (event is None)
        await _landed_as_sent(
            sent,
            lambda landed, offset: (
                f"{topic}[{partition}]: a restored record landed at offset {landed}, not {offset}: "
                "someone else writes to the log; stop every publisher and worker, empty the topic "
                "and restore again"
            ),
        )
        position = upto
    return events, placeholders


async def _send(
    producer: AIOKafkaProducer, topic: str, partition: int, event: StoredEvent | None
) -> asyncio.Future:
    if event is None:
        return await _placeholder(producer, topic, partition)
    return await producer.send(topic, event.body, key=event.customer_id.encode(), partition=partition)


async def _placeholder(producer: AIOKafkaProducer, topic: str, partition: int) -> asyncio.Future:
    """A record that keeps an offset that held no event (or no policy version)."""
    # An empty value, not none: a producer needs a key or a value.
    return await producer.send(
        topic, b"", partition=partition, headers=[(PLACEHOLDER_HEADER, PLACEHOLDER_NOTE)]
    )


async def _landed_as_sent(
    sent: list[tuple[int, asyncio.Future]], misplaced: Callable[[int, int], str]
) -> None:
    """Each restored record at the offset it was sent for; RestoreFailed(``misplaced(landed,
    offset)``) at the first that is not (someone else writes to the topic)."""
    for offset, future in sent:
        landed = (await future).offset
        if landed != offset:
            raise RestoreFailed(misplaced(landed, offset))
