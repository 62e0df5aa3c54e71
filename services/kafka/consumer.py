"""The validating consumer stage: every message of ``ticket-events`` is checked
against the contract; valid events go on to a handler (the projector), invalid
ones to the dead-letter topic with their reason. A bad message never stops its
partition and is never dropped: the handler sees a batch only after its dead
letters were acknowledged.

Where reading starts is the handler's choice: :meth:`BatchHandler.start_offsets`
is asked on every partition assignment. The projector answers with the
offsets it stored atomically with its read models (exactly-once effect);
a handler that answers None gets Kafka's committed offsets. Offsets are
committed to Kafka after each batch either way, so that lag tools work.

This hot path drives aiokafka directly rather than through a faststream
subscriber: batches from ``getmany`` measured about 4x faster here
(docs/decisions/0001-embedded-broker-limits.md), faststream's batch ``nack`` rewinds only
one partition of a multi-partition batch, and seeking to stored offsets needs
a rebalance listener.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from events import Event, EventRejected, RejectKind, decode_event, quoted
from services import metrics
from services.config import Settings
from services.kafka import routing
from services.kafka.client import client_options
from services.kafka.publisher import EventPublisher
from services.worker import stages
from services.worker.batches import (
    BatchHandler,
    ConsumedBatch,
    ConsumedEvent,
    DeadLettersFailed,
    RawRecord,
    Rewind,
    dead_letter_each_partition,
    partition_problem,
    said,
)
from services.worker.ports import StoreUnavailable

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0
# What `slatrack restore` writes at an offset whose message was not an event (services/kafka/restore.py).
PLACEHOLDER_HEADER = "slatrack-restore-placeholder"
STOP_TIMEOUT_S = 5.0


@dataclass
class Halt:
    """A partition held at an offset: what is there cannot be handled yet (README, Operations,
    "A halted partition"). It is tried again by itself, less and less often."""

    offset: int
    cause: str  # one of metrics.HALT_CAUSES
    reason: str
    since: float  # time.monotonic()
    attempts: int = 1
    retry_at: float = 0.0
    logged_at: float = 0.0

    def backoff(self) -> float:
        return float(min(2 ** (self.attempts - 1), HALT_MAX_BACKOFF_S))


HALT_MAX_BACKOFF_S = 60
HALT_LOG_EVERY_S = 60.0  # while a partition stays halted, a line this often (not one per attempt)
ISOLATION_ROUNDS = 3  # per-partition fetches to find which partition an error comes from


class SimpleHandler:
    """A handler that only wants the valid events, from Kafka's committed offsets."""

    def __init__(self, on_events: Callable[[list[ConsumedEvent]], Awaitable[None]]):
        self.on_events = on_events

    async def start_offsets(self, partitions: set[int]) -> None:
        return None

    async def revoked(self, partitions: set[int]) -> None:
        return None

    async def handle(self, batch: ConsumedBatch) -> None:
        await self.on_events(batch.valid)

    async def log_ended_before(self, partitions: dict[int, tuple[int, int]]) -> None:
        raise RuntimeError(f"committed offsets beyond the end of the log: {partitions}")

    def take_rewind(self) -> None:
        return None


Batch = dict[TopicPartition, list[ConsumerRecord]]


class ValidatingConsumer:
    def __init__(self, settings: Settings, publisher: EventPublisher, handler: BatchHandler):
        self.settings = settings
        self.publisher = publisher
        self.handler = handler
        self.topic = settings.topic_events
        self.consumer = AIOKafkaConsumer(
            group_id=settings.kafka_group_id,
            enable_auto_commit=False,
            # Where to start is decided on assignment; an offset out of range
            # is an error to report, never something to skip silently.
            auto_offset_reset="none",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(1_000, settings.kafka_session_timeout_ms // 3),
            max_poll_records=settings.consumer_max_records,
            **client_options(settings),
        )
        self._unchecked: set[int] = set()  # assigned partitions whose start is not yet checked
        self.assigned: set[int] = set()
        self._next: dict[int, int] = {}  # partition -> next offset to process (once known)
        self.halts: dict[int, Halt] = {}
        self._isolate = 0  # fetch one partition at a time for this many rounds (after an error)
        self._retry_logged_at = 0.0
        self._progress: dict[int, float] = {}  # partition -> when it last moved on (or was assigned)

    def problems(self, stalled_after_s: float) -> list[str]:
        """Why this worker's partitions are not going on, for /readyz: the halted ones, and
        those with records to project that made no progress for ``stalled_after_s``."""
        found = [
            f"partition {p} is halted at offset {h.offset}: {h.reason}" for p, h in sorted(self.halts.items())
        ]
        now = time.monotonic()
        for partition, behind in self.lag().items():
            since = self._progress.get(partition)
            if behind and partition not in self.halts and since is not None and now - since > stalled_after_s:
                found.append(
                    f"partition {partition} has {behind} records to project and made no progress "
                    f"for {now - since:.0f} s"
                )
        return found

    def lag(self) -> dict[int, int | None]:
        """Per assigned partition, how many records of the log are not processed yet.

        From the high watermark of the latest fetch, so None until a partition
        was fetched once (and until its start is known after a seek to the beginning).
        """
        lag: dict[int, int | None] = {}
        for partition in sorted(self.assigned):
            end = self.consumer.highwater(TopicPartition(self.topic, partition))
            done = self._next.get(partition)
            lag[partition] = None if end is None or done is None else max(end - done, 0)
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit and leave the group."""
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        log.info("consuming %s as group %s", self.topic, self.settings.kafka_group_id)
        try:
            while not stop.is_set():
                self._resume_due()
                try:
                    batch = await (self._fetch_isolated() if self._isolate else self._fetch())
                except OffsetOutOfRangeError as exc:  # Apache Kafka says so itself
                    await self._beyond_end({tp.partition for tp in exc.args[0]} if exc.args else set())
                    continue
                except NoOffsetForPartitionError:
                    # The fetcher looked for a position while our rebalance
                    # listener was still deciding where to start; it seeks
                    # every assigned partition, so the next fetch has one.
                    continue
                except Exception:  # e.g. a record batch that cannot be decoded
                    await self._fetch_failed()
                    continue
                self._caught_up()
                if batch:
                    await self._process(batch)
                if (rewind := self.handler.take_rewind()) is not None:
                    await self._rewind(rewind)
                if self._unchecked:
                    await self._check_start_positions()
        finally:
            try:  # leaving the group needs the broker: one that does not answer cannot hold us
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.consumer.stop()
                log.info("left consumer group %s", self.settings.kafka_group_id)
            except TimeoutError:
                log.warning(
                    "could not leave consumer group %s: the broker does not answer",
                    self.settings.kafka_group_id,
                )

    # -- fetching, and partitions that cannot go on ------------------------

    async def _fetch(self) -> Batch:
        return await self.consumer.getmany(timeout_ms=250, max_records=self.settings.consumer_max_records)

    async def _fetch_isolated(self) -> Batch:
        """One partition at a time: an error aiokafka raises for a fetch does not say which
        partition's records caused it; fetched alone, the one that raises is the one."""
        self._isolate -= 1
        batch: Batch = {}
        failed: dict[TopicPartition, Exception] = {}
        fetchable = sorted(self.consumer.assignment() - self.consumer.paused(), key=lambda tp: tp.partition)
        for tp in fetchable:
            try:
                batch |= await self.consumer.getmany(
                    tp, timeout_ms=100, max_records=self.settings.consumer_max_records
                )
            except (OffsetOutOfRangeError, NoOffsetForPartitionError):
                raise
            except Exception as exc:
                failed[tp] = exc
        if not failed:
            return batch
        self._isolate = 0
        if len(failed) == len(fetchable) > 1:
            # Every partition raises: not one partition's records (the topic, the broker). Keep
            # what was fetched, try again later.
            error = next(iter(failed.values()))
            self._log_retry(f"fetching failed in every partition: {said(error)}", error)
            await asyncio.sleep(RETRY_DELAY_S)
            return batch
        for tp, failure in failed.items():
            position = await self.consumer.position(tp)
            self._halt(tp.partition, position, "undecodable", f"its records cannot be read: {said(failure)}")
        return batch

    async def _fetch_failed(self) -> None:
        # aiokafka had taken the records of other partitions before one raised, moving their
        # positions past records we never got: put every position back where we are, then
        # fetch one partition at a time to find the one it comes from.
        for tp in self.consumer.assignment():
            await self._seek(tp, self._next.get(tp.partition))
        self._isolate = ISOLATION_ROUNDS

    def _halt(self, partition: int, offset: int, cause: str, reason: str) -> None:
        """Hold ``partition`` at ``offset`` (nothing there or after it is skipped) and try again later."""
        tp = TopicPartition(self.topic, partition)
        if tp not in self.consumer.assignment():
            return
        now = time.monotonic()
        halt = self.halts.get(partition)
        if halt is None or halt.offset != offset:
            halt = self.halts[partition] = Halt(offset, cause, reason, since=now, logged_at=now)
            log.error(
                "PARTITION %d HALTED at offset %d: %s. The other partitions go on; this one is tried again "
                "by itself (README, Operations: a halted partition)",
                partition,
                offset,
                reason,
            )
        else:
            halt.attempts += 1
            halt.cause, halt.reason = cause, reason
            if now - halt.logged_at >= HALT_LOG_EVERY_S:
                halt.logged_at = now
                log.warning(
                    "partition %d still halted at offset %d after %d attempts over %.0f s: %s",
                    partition,
                    offset,
                    halt.attempts,
                    now - halt.since,
                    reason,
                )
        halt.retry_at = now + halt.backoff()
        self.consumer.pause(tp)
        self.consumer.seek(tp, offset)
        self._next[partition] = offset
        metrics.set_halted(partition, cause)

    def _caught_up(self) -> None:
        """A partition with nothing left to project is making progress too: an idle partition that
        gets one record is not stalled for as long as it was idle."""
        now = time.monotonic()
        for partition, behind in self.lag().items():
            if behind == 0:
                self._progress[partition] = now

    def _resume_due(self) -> None:
        now = time.monotonic()
        for partition, halt in self.halts.items():
            tp = TopicPartition(self.topic, partition)
            if halt.retry_at <= now and tp in self.consumer.paused():
                self.consumer.resume(tp)

    def _went_on(self, batch: Batch) -> None:
        """Partitions handled past where they halted are no longer halted."""
        for tp, records in batch.items():
            partition = tp.partition
            halt = self.halts.get(partition)
            if halt is not None and records[-1].offset >= halt.offset:
                del self.halts[partition]
                log.info(
                    "partition %d goes on from offset %d (halted %.0f s, %d attempts)",
                    partition,
                    halt.offset,
                    time.monotonic() - halt.since,
                    halt.attempts,
                )
                metrics.set_halted(partition, None)

    def _log_retry(self, what: str, error: BaseException) -> None:
        """A batch to read again (the broker or the store is away): a traceback at first, then
        a line at most every HALT_LOG_EVERY_S, not one per attempt."""
        now = time.monotonic()
        if now - self._retry_logged_at < HALT_LOG_EVERY_S:
            return
        first = self._retry_logged_at == 0.0
        self._retry_logged_at = now
        if first:
            log.error("%s; trying again every %.0f s", what, RETRY_DELAY_S, exc_info=error)
        else:
            log.warning("%s; still trying again every %.0f s", what, RETRY_DELAY_S)

    # -- assignment --------------------------------------------------------

    async def _assigned(self, partitions: set[int]) -> None:
        self.assigned |= partitions
        self._progress |= dict.fromkeys(partitions, time.monotonic())
        starts = await self.handler.start_offsets(partitions)
        for partition in partitions:
            tp = TopicPartition(self.topic, partition)
            if starts is None:
                committed = await self.consumer.committed(tp)
                await self._seek(tp, committed)
            else:
                await self._seek(tp, starts.get(partition))
        self._unchecked |= partitions

    async def _revoked(self, partitions: set[int]) -> None:
        self.assigned -= partitions
        for partition in partitions:
            self._next.pop(partition, None)
            self._progress.pop(partition, None)
            if self.halts.pop(partition, None) is not None:
                metrics.set_halted(partition, None)  # its next owner says so if it still cannot go on
        self._unchecked -= partitions
        await self.handler.revoked(partitions)

    async def _seek(self, tp: TopicPartition, offset: int | None) -> None:
        if offset is None:
            self._next.pop(tp.partition, None)
            await self.consumer.seek_to_beginning(tp)
        else:
            self._next[tp.partition] = offset
            self.consumer.seek(tp, offset)

    async def _check_start_positions(self) -> None:
        """A stored offset beyond the end of the log means the log was replaced (an empty broker).

        Apache Kafka answers such a fetch with OFFSET_OUT_OF_RANGE; the
        embedded broker answers nothing, with a high watermark below our
        position. Either way we find out after the first fetch.
        """
        beyond: dict[int, tuple[int, int]] = {}
        for partition in list(self._unchecked):
            tp = TopicPartition(self.topic, partition)
            end = self.consumer.highwater(tp)
            if end is None:
                continue  # not fetched yet
            self._unchecked.discard(partition)
            position = await self.consumer.position(tp)
            self._next[partition] = position  # known now even after a seek to the beginning
            if position > end:
                beyond[partition] = (position, end)
        if beyond:
            await self._beyond_end(set(beyond), beyond)

    async def _beyond_end(
        self, partitions: set[int], found: dict[int, tuple[int, int]] | None = None
    ) -> None:
        found = found or {p: (-1, -1) for p in partitions}
        try:
            await self.handler.log_ended_before(found)
        except Rewind as rewind:
            await self._rewind(rewind)

    # -- batches -----------------------------------------------------------

    async def _process(self, batch: Batch) -> None:
        batch = self._projectable(batch)
        if not batch:
            return
        valid, rejected = self._validate(batch)
        if rejected:
            for partition, (offset, reason) in (await self._dead_letter(rejected)).items():
                self._halt(partition, offset, "dead_letter_failed", reason)
                batch = _before(batch, partition, offset)
            valid, rejected = _within(batch, valid, rejected)
        if not batch:
            return
        try:
            while True:
                try:
                    await self._handle(batch, valid, len(rejected))
                    break
                except DeadLettersFailed as failed:  # the handler's own dead letters: halt those partitions
                    for partition, offset in failed.offsets.items():
                        self._halt(partition, offset, "dead_letter_failed", failed.reason)
                        batch = _before(batch, partition, offset)
                    valid, rejected = _within(batch, valid, rejected)
                    if not batch:
                        return
        except Rewind as rewind:
            await self._rewind(rewind)
            return
        except (KafkaError, OSError, TimeoutError, StoreUnavailable) as exc:
            # The broker (or the store) is unavailable: keep nothing, read the batch again.
            self._log_retry(f"batch not processed ({said(exc)}); reading it again", exc)
            await self._rewind(
                Rewind({tp.partition: records[0].offset for tp, records in batch.items()}, "retry")
            )
            await asyncio.sleep(RETRY_DELAY_S)
            return
        except Exception as exc:  # a bug, not the weather: find the partition it comes from
            batch = await self._handle_alone(batch, valid, rejected, exc)
            valid, rejected = _within(batch, valid, rejected)
            if not batch:
                return
        self._retry_logged_at = 0.0
        self._went_on(batch)
        for record, rejection in rejected:
            metrics.EVENTS_REJECTED.labels(reason=str(rejection.kind)).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejection
            )
        metrics.DLQ_MESSAGES.inc(len(rejected))
        for item in valid:
            metrics.EVENTS_CONSUMED.labels(type=item.event.type).inc()
        now = time.monotonic()
        for tp, records in batch.items():
            self._next[tp.partition] = records[-1].offset + 1
            self._progress[tp.partition] = now
        await self._commit(batch)

    def _projectable(self, batch: Batch) -> Batch:
        """The batch without the partitions whose records cannot be projected (beyond
        MAX_PARTITIONS): those halt at their first record, which stays in the log; neither it nor
        anything after it is projected or dead-lettered."""
        kept: Batch = {}
        for tp, records in batch.items():
            problem = partition_problem(tp.partition)
            if problem is None:
                kept[tp] = records
            else:
                self._halt(tp.partition, records[0].offset, "unsupported_partition", problem)
        return kept

    async def _handle(self, batch: Batch, valid: list[ConsumedEvent], rejected: int) -> None:
        offsets = {tp.partition: (records[0].offset, records[-1].offset + 1) for tp, records in batch.items()}
        await self.handler.handle(ConsumedBatch(valid, offsets, rejected, behind(self.consumer, batch)))

    async def _handle_alone(
        self,
        batch: Batch,
        valid: list[ConsumedEvent],
        rejected: list[tuple[RawRecord, EventRejected]],
        error: Exception,
    ) -> Batch:
        """The handler raised on a batch: hand over each partition's part alone, and halt the
        partitions whose part still fails. Returns the part that was handled."""
        if len(batch) == 1:
            ((tp, records),) = batch.items()
            self._handler_failed(tp.partition, records, error)
            return {}
        handled: Batch = {}
        for tp, records in sorted(batch.items(), key=lambda item: item[0].partition):
            part = {tp: records}
            mine = [v for v in valid if v.partition == tp.partition]
            try:
                await self._handle(part, mine, sum(r.partition == tp.partition for r, _ in rejected))
            except Rewind as rewind:
                await self._rewind(rewind)
            except DeadLettersFailed as failed:  # the projector's own dead letters
                # Halted where this part starts (nothing of it was applied): read again from there.
                self._halt(tp.partition, records[0].offset, "dead_letter_failed", failed.reason)
            except (KafkaError, OSError, TimeoutError, StoreUnavailable) as exc:
                self._log_retry(
                    f"partition {tp.partition} not processed ({said(exc)}); reading it again", exc
                )
                await self._rewind(Rewind({tp.partition: records[0].offset}, "retry"))
            except Exception as exc:
                self._handler_failed(tp.partition, records, exc)
            else:
                handled |= part
        return handled

    def _handler_failed(self, partition: int, records: list[ConsumerRecord], error: Exception) -> None:
        log.error(
            "partition %d: the projector raised on offsets %d..%d",
            partition,
            records[0].offset,
            records[-1].offset,
            exc_info=error,
        )
        self._halt(partition, records[0].offset, "handler_failed", f"the projector raised: {said(error)}")

    async def _dead_letter(
        self, rejected: list[tuple[RawRecord, EventRejected]]
    ) -> dict[int, tuple[int, str]]:
        return await dead_letter_each_partition(
            self.publisher.dead_letter, rejected, self.settings.dlq_send_timeout_s
        )

    def _validate(self, batch: Batch) -> tuple[list[ConsumedEvent], list[tuple[RawRecord, EventRejected]]]:
        partitions = len(self.consumer.partitions_for_topic(self.topic) or ())
        started = time.perf_counter()
        valid, rejected = validate_records(batch, self.settings.max_event_bytes, partitions)
        stages.observe_decode(time.perf_counter() - started)
        # A restore's placeholder holds the place of a message that was dead-lettered (or counted
        # as a repeat) when it first came: not a dead letter again.
        return valid, [(r, why) for r, why in rejected if not is_placeholder(r)]

    async def _commit(self, batch: Batch) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Lost the partitions in a rebalance (or the broker blinked). The
            # handler's own offsets, if it keeps them, are the truth anyway.
            log.warning("Kafka commit failed (%s); the next owner starts from its own offsets", exc)

    async def _rewind(self, rewind: Rewind) -> None:
        assigned = self.consumer.assignment()
        for partition, offset in rewind.offsets.items():
            tp = TopicPartition(self.topic, partition)
            if tp in assigned:
                await self._seek(tp, offset)
                self._unchecked.add(partition)
        log.info("reading partitions %s again: %s", sorted(rewind.offsets), rewind)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: ValidatingConsumer):
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner._revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.owner._assigned({tp.partition for tp in assigned})


def is_placeholder(record: RawRecord) -> bool:
    """What ``slatrack restore`` wrote where the log held a message that was not an event."""
    return not record.value and any(name == PLACEHOLDER_HEADER for name, _ in record.headers)


def _before(batch: Batch, partition: int, offset: int) -> Batch:
    """The batch without ``partition``'s records from ``offset`` on."""
    kept: Batch = {}
    for tp, records in batch.items():
        mine = records if tp.partition != partition else [r for r in records if r.offset < offset]
        if mine:
            kept[tp] = mine
    return kept


def _within(
    batch: Batch, valid: list[ConsumedEvent], rejected: list[tuple[RawRecord, EventRejected]]
) -> tuple[list[ConsumedEvent], list[tuple[RawRecord, EventRejected]]]:
    """The valid events and rejected messages that are still in ``batch`` (after a trim)."""
    return (
        [v for v in valid if _kept(batch, v.partition, v.offset)],
        [(r, why) for r, why in rejected if _kept(batch, r.partition, r.offset)],
    )


def _kept(batch: Batch, partition: int, offset: int) -> bool:
    return any(
        tp.partition == partition and records[0].offset <= offset <= records[-1].offset
        for tp, records in batch.items()
    )


def behind(consumer: AIOKafkaConsumer, batch: Batch) -> set[int]:
    """Partitions of the batch whose log goes on after it (by the high watermark of the fetch)."""
    lagging = set()
    for tp, records in batch.items():
        end = consumer.highwater(tp)
        if end is not None and records[-1].offset + 1 < end:
            lagging.add(tp.partition)
    return lagging


def validate_records(
    batch: Batch, max_bytes: int, partitions: int = 0
) -> tuple[list[ConsumedEvent], list[tuple[RawRecord, EventRejected]]]:
    """Split a fetched batch into valid events and rejected messages (with why).

    ``partitions``: the topic's partition count, to report valid events that are not on the
    partition their key hashes to (:mod:`services.kafka.routing`); 0 reports nothing.
    """
    valid: list[ConsumedEvent] = []
    rejected: list[tuple[RawRecord, EventRejected]] = []
    for tp, records in batch.items():
        for record in records:
            try:
                event = decode_event(record.value, max_bytes=max_bytes)
                _check_key(record.key, event)
            except EventRejected as rejection:
                rejected.append((_raw(record), rejection))
            else:
                valid.append(ConsumedEvent(event, tp.partition, record.offset, record.value, _raw(record)))
                routing.REPORTER.check(tp.topic, tp.partition, record.key, partitions)
    return valid, rejected


def _check_key(key: bytes | None, event: Event) -> None:
    if key != event.customer_id.encode():
        raise EventRejected(
            RejectKind.KEY_MISMATCH,
            f"{_key_text(key)}, not the event's customer_id {quoted(event.customer_id)}: "
            "a customer's events must be keyed by its customer_id",
        )


def _key_text(key: bytes | None) -> str:
    if key is None:
        return "the message has no key"
    if not key:
        return "the message key is empty"
    try:
        return f"the message key is {quoted(key.decode())}"
    except UnicodeDecodeError:
        return f"the message key is {len(key)} bytes that are not UTF-8"


def _raw(record: ConsumerRecord) -> RawRecord:
    return RawRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
    )
