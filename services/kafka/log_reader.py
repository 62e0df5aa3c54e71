"""Reading the whole event log once, in recording order: ``slatrack export`` (the audit trail).

:func:`read_log` reads every partition of ``ticket-events`` from its earliest
offset up to the end *as found when the reading starts*, so it terminates
even while publishers keep appending. It joins no consumer group (manual
``assign``, nothing committed): the workers' offsets and assignments are
never touched.

**The end of the log** is the high watermark of the first fetch of each
partition. The embedded broker's ListOffsets cannot be trusted for it
(docs/decisions/0001-embedded-broker-limits.md; ``services.worker.rebuild`` does the same);
the fetch high watermark is right there and on Apache Kafka alike. Any
record at or beyond it (appended after the start) is left out.

**The order** is the recording order the workers use: each partition in
offset order, the partitions merged by (offset, partition), which is the
order of :func:`services.worker.histories.seq_of`. ``slatrack replay`` takes the
line number as the recording position, and the position decides ties
(events at the same second apply in recording order) and duplicates (the
first copy of an ``event_id`` counts). A customer's events share a
partition, so within a customer this is simply the log's order; merging by
(offset, partition) rather than partition after partition makes the whole
file's order the workers' order too, so a replay of an export gives the
views the workers computed. Records are merged as they stream in: a
partition that runs ahead is paused once :data:`BUFFER_LIMIT` of its
records wait, so memory stays bounded however long the log.

**Validity** is the workers' own check (:func:`services.kafka.consumer.validate_records`:
the contract, the size limit, the key being the customer_id). An invalid
message was dead-lettered when it first came and never reached a read
model; it is yielded with its rejection so that the caller can report it.

**The bytes written** (:func:`jsonl_line`) are each valid message's value as
recorded, not the canonical ``encode_event`` bytes: the export is faithful
to the log byte for byte (a line can be matched with the log, the DLQ or a
publisher's own copy, and hashed), and re-validating it gives the same event
the workers folded. The one exception is a value with line breaks (JSON
whitespace): each becomes a space, so the line stays one line.
"""

import heapq
import os
import sys
import tempfile
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from events import Event, EventRejected
from projections.timeline import whole_second
from services.config import Settings
from services.kafka.client import client_options
from services.kafka.consumer import behind, validate_records
from services.worker.batches import ConsumedBatch, partition_problem

# Records of one partition held while other partitions catch up, before it is paused.
BUFFER_LIMIT = 5_000


class LogNotFound(RuntimeError):
    """The topic does not exist (or has no partitions)."""


@dataclass(frozen=True, slots=True)
class LogBounds:
    """What will be read: per partition, from ``start`` up to (not including) ``end``."""

    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def total(self) -> int:
        """Offsets to read: the record count, unless the log has gaps (compaction, transactions)."""
        return sum(max(self.end[p] - self.start[p], 0) for p in self.end)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One message of the log: the event if it is valid, else why not."""

    partition: int
    offset: int
    value: bytes | None
    event: Event | None
    rejection: EventRejected | None

    @property
    def where(self) -> str:
        return f"partition {self.partition} offset {self.offset}"

    @property
    def reason(self) -> str:
        return "" if self.rejection is None else f"{self.rejection.kind}: {self.rejection.detail}"


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events an export keeps. ``since`` and ``until`` are inclusive, in whole seconds
    (``occurred_at`` is counted as the engine counts it)."""

    customer: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, event: Event) -> bool:
        if self.customer is not None and event.customer_id != self.customer:
            return False
        if self.since is None and self.until is None:
            return True
        at = whole_second(event.occurred_at)
        return (self.since is None or at >= self.since) and (self.until is None or at <= self.until)


def jsonl_line(value: bytes | None) -> bytes:
    """A valid event's recorded bytes as one JSONL line (without the line break).

    The bytes are kept as recorded, so the export is faithful to the log byte
    for byte, except for one case: JSON allows line breaks as whitespace
    between tokens (never raw inside a string), and a line break would split
    the line; each CR or LF is then written as a space, which is the same JSON
    and the same event.
    """
    if not value:
        raise ValueError("not a valid event: it has no value")
    if b"\n" in value or b"\r" in value:
        return value.replace(b"\r", b" ").replace(b"\n", b" ")
    return value


@contextmanager
def output_file(path: Path | None) -> Iterator[BinaryIO]:
    """Binary stdout (``path`` None), or a temporary file beside ``path`` renamed to it once
    complete and synced: readers never see a partial export. On failure it is removed."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


async def read_log(
    settings: Settings,
    on_bounds: Callable[[LogBounds], None] | None = None,
    *,
    topic: str | None = None,
    buffer_limit: int = BUFFER_LIMIT,
) -> AsyncGenerator[LogRecord, None]:
    """Every record of ``topic`` (default: the events topic) up to its end as of the start, in
    (offset, partition) order, each classified as an event or a rejection. ``on_bounds`` is
    called once, before the first record, with what will be read. Raises :class:`LogNotFound`
    if the topic does not exist, and aiokafka's errors if the broker fails."""
    records = read_records(settings, topic or settings.topic_events, on_bounds, buffer_limit=buffer_limit)
    async with aclosing(records):
        async for tp, record in records:
            yield _classify(tp, record, settings.max_event_bytes)


async def read_records(
    settings: Settings,
    topic: str,
    on_bounds: Callable[[LogBounds], None] | None = None,
    *,
    buffer_limit: int = BUFFER_LIMIT,
) -> AsyncGenerator[tuple[TopicPartition, ConsumerRecord], None]:
    """:func:`read_log`'s records as Kafka gave them (key, value, headers), unclassified."""
    consumer, assigned = await from_the_beginning(settings, topic)
    try:
        tps = {tp.partition: tp for tp in assigned}
        start = {p: await consumer.position(tp) for p, tp in tps.items()}
        merge = _Merge(consumer, tps, buffer_limit)
        announced = False
        while True:
            merge.take(await consumer.getmany(timeout_ms=200, max_records=settings.consumer_max_records))
            await merge.update()
            if not announced:
                if len(merge.end) < len(tps):
                    continue  # some partition was not fetched yet: its end is unknown
                announced = True
                if on_bounds is not None:
                    on_bounds(LogBounds(topic, dict(start), dict(merge.end)))
            for ready in merge.ready():
                yield ready
            if merge.finished():
                return
            await merge.update()
    finally:
        await consumer.stop()


async def from_the_beginning(
    settings: Settings, topic: str, only: Collection[int] | None = None
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer in no group (nothing committed, no assignment of the workers touched),
    assigned every partition of ``topic`` (``only``: those of them) from its earliest offset, and
    those partitions in order; :class:`LogNotFound` if the topic has none. The caller stops it."""
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.consumer_max_records,
        **client_options(settings),
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so that the partitions are known
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise LogNotFound(f"topic {topic!r} not found on {settings.bootstrap()}")
        if only is not None:
            if missing := set(only) - set(partitions):
                raise LogNotFound(f"topic {topic!r} has no partition {sorted(missing)}")
            partitions = sorted(only)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


class _Merge:
    """Per-partition buffers merged by (offset, partition), with the ends fixed at first sight."""

    def __init__(self, consumer: AIOKafkaConsumer, tps: dict[int, TopicPartition], limit: int):
        self.consumer = consumer
        self.tps = tps
        self.limit = limit
        self.end: dict[int, int] = {}
        self.buffers: dict[int, deque[ConsumerRecord]] = {p: deque() for p in tps}
        self.position: dict[int, int] = {}
        self.done: set[int] = set()  # read up to the end: nothing more to fetch
        self.paused: set[int] = set()

    def take(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            p = tp.partition
            if p not in self.end:  # records came with a fetch: its high watermark is known now
                self.end[p] = self.consumer.highwater(tp)
            end = self.end[p]
            self.buffers[p].extend(r for r in records if r.offset < end)

    async def update(self) -> None:
        """Fix the ends now known, note positions, pause what must not be fetched, resume the rest."""
        for p, tp in self.tps.items():
            if p not in self.end:
                highwater = self.consumer.highwater(tp)
                if highwater is None:
                    continue
                self.end[p] = highwater
            self.position[p] = await self.consumer.position(tp)
            if self.position[p] >= self.end[p]:
                self.done.add(p)
            hold = p in self.done or len(self.buffers[p]) >= self.limit
            if hold and p not in self.paused:
                self.consumer.pause(tp)
                self.paused.add(p)
            elif not hold and p in self.paused:
                self.consumer.resume(tp)
                self.paused.discard(p)

    def ready(self) -> list[tuple[TopicPartition, ConsumerRecord]]:
        """Buffered records that no record still to come can precede, in order (taken out)."""
        # A partition with nothing buffered that is not done yet holds the merge back at
        # its position: its next record is at that offset or later.
        blocker = min(
            ((self.position.get(p, 0), p) for p in self.tps if not self.buffers[p] and p not in self.done),
            default=None,
        )
        heads = [(buf[0].offset, p) for p, buf in self.buffers.items() if buf]
        heapq.heapify(heads)
        out: list[tuple[TopicPartition, ConsumerRecord]] = []
        while heads and (blocker is None or heads[0] < blocker):
            _, p = heapq.heappop(heads)
            buffer = self.buffers[p]
            out.append((self.tps[p], buffer.popleft()))
            if buffer:
                heapq.heappush(heads, (buffer[0].offset, p))
            elif p not in self.done:
                blocker = min(blocker or (self.position[p], p), (self.position[p], p))
        return out

    def finished(self) -> bool:
        return len(self.done) == len(self.tps) and not any(self.buffers.values())


def _classify(tp: TopicPartition, record: ConsumerRecord, max_bytes: int) -> LogRecord:
    valid, rejected = validate_records({tp: [record]}, max_bytes)
    if valid:
        return LogRecord(tp.partition, record.offset, record.value, valid[0].event, None)
    return LogRecord(tp.partition, record.offset, record.value, None, rejected[0][1])


class WholeLogReader:
    """``ticket-events`` from its earliest offset, all partitions (``only``: those), no consumer
    group, in batches validated as the workers validate them (a rebuild's input:
    services.worker.batches.WholeLog). Not entered, it can be sent to another process: a
    rebuild's processes each read their partitions with :meth:`part`."""

    def __init__(self, settings: Settings, only: Collection[int] | None = None):
        self.settings = settings
        self.only = None if only is None else sorted(only)
        self.tps: list[TopicPartition] = []
        self.partitions: list[int] = []
        self.done = 0

    def part(self, partitions: Collection[int]) -> "WholeLogReader":
        """A reader of these partitions alone (not entered)."""
        return WholeLogReader(self.settings, partitions)

    def __getstate__(self) -> dict[str, object]:
        if self.tps:
            raise TypeError("an entered WholeLogReader holds a consumer: send one not entered")
        return self.__dict__.copy()

    async def seek(self, offsets: dict[int, int | None]) -> None:
        """Read on from these offsets (None or absent: the beginning) rather than from where the
        reader is, counting what lies before them as read (the progress)."""
        for tp in self.tps:
            offset = offsets.get(tp.partition)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        self.done = sum(o for o in offsets.values() if o is not None)

    async def __aenter__(self) -> "WholeLogReader":
        # Made here, not in __init__: aiokafka binds a client to the running event loop.
        topic = self.settings.topic_events
        self.consumer, self.tps = await from_the_beginning(self.settings, topic, self.only)
        self.partitions = [tp.partition for tp in self.tps]
        if (problem := partition_problem(self.partitions[-1])) is not None:  # nothing is projected
            await self.consumer.stop()
            raise RuntimeError(f"topic {topic}: {problem}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def read_to_end(
        self,
        handle: Callable[[ConsumedBatch], Awaitable[None]],
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        """Hand every record up to the end of the log as the fetches see it to ``handle``, in
        batches of ``SLATRACK_REBUILD_BATCH_RECORDS`` (fewer at the end); ``progress(records
        read, end of the log)`` after each."""
        settings, consumer = self.settings, self.consumer
        while True:
            batch = await self._fetch(settings.rebuild_batch_records)
            if batch:
                valid, rejected = validate_records(batch, settings.max_event_bytes)
                offsets = {tp.partition: (rs[0].offset, rs[-1].offset + 1) for tp, rs in batch.items()}
                await handle(ConsumedBatch(valid, offsets, len(rejected), lagging=behind(consumer, batch)))
                self.done += sum(len(rs) for rs in batch.values())
            ends = [consumer.highwater(tp) for tp in self.tps]
            if all(end is not None for end in ends):
                progress(self.done, sum(e for e in ends if e is not None))
                if await self._at_end():
                    return

    async def _fetch(self, records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Up to ``records`` records, fetch after fetch (a fetch gives about a megabyte a
        partition): a rebuild's batch is larger than a worker's, as each batch costs a story
        of every ticket it touches and a transaction. Fewer if the log ends first."""
        merged: dict[TopicPartition, list[ConsumerRecord]] = {}
        count = 0
        while count < records:
            fetched = await self.consumer.getmany(
                timeout_ms=100 if merged else 1000, max_records=records - count
            )
            if not fetched:
                break
            for tp, rs in fetched.items():
                merged.setdefault(tp, []).extend(rs)
                count += len(rs)
            if await self._at_end():
                break
        return merged

    async def _at_end(self) -> bool:
        """Whether every partition is read up to the end of the log as the fetches see it (the
        high watermark: the embedded broker's ListOffsets cannot be trusted for it)."""
        for tp in self.tps:
            end = self.consumer.highwater(tp)
            if end is None or await self.consumer.position(tp) < end:
                return False
        return True
