"""``slatrack rebuild``: replay the whole log into a fresh generation, check it,
then switch to it atomically while the current one keeps serving.

1. Create a new generation and read ``ticket-events`` from its earliest offset
   (all partitions, no consumer group) with the same projector code the
   workers run, until the end of the log.
2. Check it against the live generation: for every partition, both must hold
   the same events below the offsets both have reached, and every ticket whose
   events all lie there must get the same view from the live generation's
   events as the new generation stored.
3. Switch. Workers notice at their next write (the store says the generation
   changed) and continue from the new generation's offsets. The previous
   generation is kept (for a look back); older ones are dropped.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.account import account_standing
from projections.policy import Policy
from projections.ticket import evaluate
from projections.timeline import history
from services.config import Settings
from services.consumer import ConsumedBatch, behind, validate_records
from services.kafka import client_options
from services.projector import Projector, decode_stored, keep_only
from services.store.base import ReadModelStore, TicketQuery

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    generation: int
    previous: int | None
    events: int = 0
    invalid: int = 0
    tickets: int = 0
    customers: int = 0
    seconds: float = 0.0
    checked_partitions: int = 0
    checked_tickets: int = 0
    mismatches: list[str] = field(default_factory=list)
    switched: bool = False

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


async def rebuild(
    settings: Settings,
    store: ReadModelStore,
    policy: Policy,
    progress: Callable[[int, int], None] = lambda done, total: None,
    switch: bool = True,
) -> RebuildReport:
    started = time.monotonic()
    await asyncio.to_thread(store.migrate)
    previous = await asyncio.to_thread(store.active_generation)
    generation = await asyncio.to_thread(store.create_generation, "rebuild")
    report = RebuildReport(generation, previous)
    projector = Projector(
        store, policy, settings.topic_events, generation=generation, must_be_active=False, count_metrics=False
    )
    await projector.open()

    await _replay_log(settings, projector, report, progress)
    counts = await asyncio.to_thread(store.counts, generation)
    report.tickets, report.customers = counts["tickets"], counts["customers"]
    if previous is not None:
        await asyncio.to_thread(_check, store, policy, previous, generation, settings.topic_events, report)
    if switch and not report.mismatches:
        await asyncio.to_thread(store.activate_generation, generation)
        report.switched = True
        await asyncio.to_thread(keep_only, store, {generation, previous})
        log.info("switched to generation %d (previous %s kept)", generation, previous)
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _replay_log(
    settings: Settings, projector: Projector, report: RebuildReport, progress: Callable[[int, int], None]
) -> None:
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so that the partitions are known
        partitions = sorted(consumer.partitions_for_topic(settings.topic_events) or ())
        if not partitions:
            raise RuntimeError(f"topic {settings.topic_events} not found")
        tps = [TopicPartition(settings.topic_events, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        projector.partitions = set(partitions)
        done = 0
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=settings.consumer_max_records)
            if batch:
                valid, rejected = validate_records(batch, settings.max_event_bytes)
                offsets = {tp.partition: (rs[0].offset, rs[-1].offset + 1) for tp, rs in batch.items()}
                # Invalid messages were dead-lettered when they first came; here they are only counted.
                await projector.handle(
                    ConsumedBatch(valid, offsets, len(rejected), lagging=behind(consumer, batch))
                )
                report.events += len(valid)
                report.invalid += len(rejected)
                done += sum(len(rs) for rs in batch.values())
            # The end of the log is the high watermark seen by fetches (the
            # embedded broker's ListOffsets cannot be trusted for it).
            ends = [consumer.highwater(tp) for tp in tps]
            positions = [await consumer.position(tp) for tp in tps]
            if all(end is not None for end in ends):
                progress(done, sum(e for e in ends if e is not None))
                if all(pos >= end for pos, end in zip(positions, ends, strict=True) if end is not None):
                    break
    finally:
        await consumer.stop()


def _check(
    store: ReadModelStore, policy: Policy, live: int, new: int, topic: str, report: RebuildReport
) -> None:
    """The new generation must equal what the live one holds for the same offsets."""
    live_offsets = store.stored_offsets(live, topic)
    new_offsets = store.stored_offsets(new, topic)
    below: dict[int, int] = {}
    for partition in sorted(set(live_offsets) | set(new_offsets)):
        upto = min(live_offsets.get(partition, 0), new_offsets.get(partition, 0))
        below[partition] = upto
        live_events = store.event_positions(live, partition, upto)
        new_events = store.event_positions(new, partition, upto)
        if live_events != new_events:
            report.mismatches.append(
                f"partition {partition}: events below offset {upto} differ "
                f"({len(live_events)} live, {len(new_events)} rebuilt)"
            )
        report.checked_partitions += 1

    after = None
    while True:
        rows = store.list_tickets(new, TicketQuery(after=after, limit=1000))
        if not rows:
            break
        after = rows[-1].ticket_id
        histories = store.events_of_tickets(live, [r.ticket_id for r in rows])
        accounts = store.account_events_of(live, {r.customer_id for r in rows})
        for row in rows:
            events = histories.get(row.ticket_id, []) + accounts.get(row.customer_id, [])
            if not events or any(e.offset >= below.get(e.partition, 0) for e in events):
                continue  # the live generation holds more of it than was compared: not comparable
            as_of = datetime.fromtimestamp(row.evaluated_at, UTC)
            account = decode_stored(accounts.get(row.customer_id, []))
            standing = account_standing(history(account, as_of), policy, as_of)
            state = evaluate(decode_stored(histories[row.ticket_id]), policy, as_of, standing)
            if state is None or state.view() != orjson.loads(row.view):
                report.mismatches.append(
                    f"ticket {row.ticket_id}: the live generation's events give another view"
                )
            report.checked_tickets += 1
