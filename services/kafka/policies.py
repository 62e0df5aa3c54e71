"""The policy topic: publishing a version of a contract's policy, and reading the versions back.

The topic (``SLATRACK_TOPIC_POLICIES``) has one partition and is kept forever
(services.kafka.client.topic_specs): a version's position is its offset, one order for every
reader. Each record is decoded by services.worker.batches.PolicyDecoder (the envelope, then the
policy and its digest); a record that is no version is reported with why, never raised: a
malformed policy event must not stop a reader. A missing topic reads as empty (no version
published: the configured policy is the default contract's only version).

**The end** of a read is the high watermark of the first fetch after the reading starts, as for
the whole log (services.kafka.log_reader): the embedded broker's ListOffsets cannot be trusted
for it. A reader joins no consumer group and commits nothing.
"""

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from events.policies import MAX_POLICY_EVENT_BYTES, PolicyVersionPublished, encode_policy_event
from services.config import Settings
from services.kafka.client import TopicProblem, policy_partitions_problem, raw_producer
from services.kafka.log_reader import LogNotFound, from_the_beginning
from services.worker.batches import PolicyDecoder, PolicyRead

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyRecords:
    """The records of the policy topic from a position up to ``end``: (offset, value) in order."""

    records: list[tuple[int, bytes | None]]
    end: int


async def read_policies(settings: Settings, start: int = 0) -> PolicyRead:
    """Every policy version of the topic from offset ``start`` up to its end as found when the
    reading starts (:class:`~services.worker.batches.PolicyRead`); a missing topic reads as empty.
    Raises TopicProblem for a topic of more than one partition, aiokafka's errors if the broker
    fails."""
    async with KafkaPolicyLog(settings) as policies:
        return await policies.read(start)


async def read_policy_records(settings: Settings, start: int = 0) -> PolicyRecords:
    """The topic's records as recorded (``slatrack export`` writes their bytes), as read_policies
    reads them."""
    async with KafkaPolicyLog(settings) as policies:
        return await policies.records(start)


class KafkaPolicyLog:
    """The policy topic followed by a running process (services.worker.batches.PolicyLog): each
    :meth:`read` reads from a position to the end as found then, with one consumer kept open
    between reads (in no group). Remembers each version's first copy across reads (reading what
    it has not seen before the position asked once), so that a later copy is a duplicate
    whichever read finds it. Use it as an async context manager, or :meth:`close` it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.decoder = PolicyDecoder()
        self._known = 0  # the decoder has seen every record below this offset
        self._consumer: AIOKafkaConsumer | None = None
        self._tp = TopicPartition(settings.topic_policies, 0)
        self._reading = asyncio.Lock()

    async def __aenter__(self) -> "KafkaPolicyLog":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await consumer.stop()
            except asyncio.CancelledError:
                # With the broker gone, aiokafka's fetcher raises its own tasks' cancellation out
                # of stop(): not ours, unless this task is being cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def read(self, start: int) -> PolicyRead:
        # One read at a time: each assigns and seeks the one consumer.
        async with self._reading:
            return await self._read(start)

    async def _read(self, start: int) -> PolicyRead:
        # The records before ``start`` not seen yet are read too (and not returned): a later copy
        # of an event id is a duplicate whichever read finds it, and the topic is small.
        found = await self.records(min(start, self._known))
        read = self.decoder.read(found.records, found.end)
        self._known = max(self._known, found.end)
        return PolicyRead(
            [v for v in read.versions if v.position >= start],
            [(p, why) for p, why in read.rejected if p >= start],
            read.end,
            [p for p in read.duplicates if p >= start],
        )

    async def records(self, start: int) -> PolicyRecords:
        """The records from offset ``start`` to the end as found now (a missing topic: empty)."""
        consumer = await self._open()
        if consumer is None:
            return PolicyRecords([], 0)
        tp = self._tp
        # Assigned afresh: a new partition state, so no high watermark of an earlier read is taken
        # for the end of this one.
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[tuple[int, bytes | None]] = []
        end: int | None = None
        while True:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=self.settings.consumer_max_records)
            if end is None:
                end = consumer.highwater(tp)  # known once a fetch answered
            # On Apache Kafka a start beyond the end resets to the earliest offset: none of
            # those records is asked for.
            records += [
                (r.offset, r.value) for r in batch.get(tp, ()) if end is not None and start <= r.offset < end
            ]
            if end is not None and await consumer.position(tp) >= end:
                return PolicyRecords(records, end)

    async def _open(self) -> AIOKafkaConsumer | None:
        if self._consumer is not None:
            return self._consumer
        topic = self.settings.topic_policies
        try:
            consumer, tps = await from_the_beginning(self.settings, topic)
        except LogNotFound:
            return None  # no version published yet: asked again at the next read
        if len(tps) != 1:
            await consumer.stop()
            raise TopicProblem(policy_partitions_problem(self.settings, len(tps)))
        self._consumer = consumer
        return consumer


async def publish_policy(settings: Settings, event: PolicyVersionPublished) -> int:
    """Send one policy event to the policy topic (partition 0, key = the contract, acks=all, with
    the configured TLS and SASL); return its offset once the broker acknowledged it."""
    # Large enough for the largest policy event a reader accepts, with the record's framing.
    producer = raw_producer(settings, max_request_size=MAX_POLICY_EVENT_BYTES + 64 * 1024)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.topic_policies, encode_policy_event(event), key=event.contract.encode(), partition=0
        )
    finally:
        await producer.stop()
    log.info(
        "published %s of contract %s to %s at offset %d",
        event.policy_version,
        event.contract,
        settings.topic_policies,
        sent.offset,
    )
    return sent.offset
