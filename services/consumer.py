"""The validating consumer stage: every message of ``ticket-events`` is checked
against the contract; valid events go on to a handler (the projector), invalid
ones to the dead-letter topic with their reason. A bad message never stops its
partition and is never dropped: the batch's offsets are committed only after
the dead letters were acknowledged and the handler returned.

This hot path drives aiokafka directly rather than through a faststream
subscriber: batches from ``getmany`` measured about 4x faster here
(shared/notes/embedded-broker.md), faststream's batch ``nack`` rewinds only
one partition of a multi-partition batch, and the projector needs a rebalance
listener that seeks to offsets it stores itself.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from events import Event, EventRejected, RejectKind, decode_event
from services import metrics
from services.config import Settings
from services.kafka import client_options
from services.publisher import EventPublisher, RawRecord

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class ConsumedEvent:
    event: Event
    partition: int
    offset: int


Handler = Callable[[list[ConsumedEvent]], Awaitable[None]]
Batch = dict[TopicPartition, list[ConsumerRecord]]


class ValidatingConsumer:
    def __init__(self, settings: Settings, publisher: EventPublisher, handler: Handler):
        self.settings = settings
        self.publisher = publisher
        self.handler = handler
        self.consumer = AIOKafkaConsumer(
            settings.topic_events,
            group_id=settings.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(1_000, settings.kafka_session_timeout_ms // 3),
            max_poll_records=settings.consumer_max_records,
            **client_options(settings),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand, commit and leave the group."""
        await self.consumer.start()
        log.info("consuming %s as group %s", self.settings.topic_events, self.settings.kafka_group_id)
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=250, max_records=self.settings.consumer_max_records
                )
                if batch:
                    await self._process(batch)
        finally:
            await self.consumer.stop()
            log.info("left consumer group %s", self.settings.kafka_group_id)

    async def _process(self, batch: Batch) -> None:
        valid, rejected = self._validate(batch)
        try:
            if rejected:
                await self.publisher.dead_letter(rejected)
            await self.handler(valid)
        except (TimeoutError, KafkaError, OSError):
            # The broker is unavailable: keep nothing, read the batch again.
            log.exception("batch not processed; reading it again in %.0f s", RETRY_DELAY_S)
            self._rewind(batch)
            await asyncio.sleep(RETRY_DELAY_S)
            return
        for record, rejection in rejected:
            metrics.EVENTS_REJECTED.labels(reason=str(rejection.kind)).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, rejection
            )
        metrics.DLQ_MESSAGES.inc(len(rejected))
        for consumed in valid:
            metrics.EVENTS_CONSUMED.labels(type=consumed.event.type).inc()
        await self._commit(batch)

    def _validate(self, batch: Batch) -> tuple[list[ConsumedEvent], list[tuple[RawRecord, EventRejected]]]:
        valid: list[ConsumedEvent] = []
        rejected: list[tuple[RawRecord, EventRejected]] = []
        for tp, records in batch.items():
            for record in records:
                try:
                    event = decode_event(record.value, max_bytes=self.settings.max_event_bytes)
                    _check_key(record.key, event)
                except EventRejected as rejection:
                    rejected.append((_raw(record), rejection))
                else:
                    valid.append(ConsumedEvent(event, tp.partition, record.offset))
        return valid, rejected

    async def _commit(self, batch: Batch) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us: the new owner reads these records
            # again (at least once; event ids make a repeat harmless).
            log.warning("commit failed after a rebalance; the batch will be read again")

    def _rewind(self, batch: Batch) -> None:
        assigned = self.consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self.consumer.seek(tp, records[0].offset)


def _check_key(key: bytes | None, event: Event) -> None:
    if key != event.customer_id.encode():
        raise EventRejected(
            RejectKind.KEY_MISMATCH,
            f"the message key {key!r} is not the event's customer_id {event.customer_id!r}",
        )


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
