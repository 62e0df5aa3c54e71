"""A partition numbered 1024 or more is never projected: a record's position in the read models is
offset x 1024 + partition (services.worker.histories.seq_of), so partition 1025 at offset 0 would
be partition 1 at offset 1. The consumer halts such a partition at its first record, which stays in
the log (issue 12)."""

from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from events import decode_event
from projections.timeline import Recorded
from services import metrics
from services.config import Settings
from services.kafka.client import topic_problem, topic_specs
from services.kafka.consumer import ValidatingConsumer
from services.kafka.publisher import EventPublisher
from services.worker.batches import MAX_PARTITIONS, ConsumedBatch, partition_problem
from services.worker.histories import partition_of, seq_of
from tests.samples import sample

TOPIC = "ticket-events"


class FakeKafka:
    """What the consumer asks of aiokafka's consumer while it processes a batch."""

    def __init__(self, partitions: list[int]):
        self.tps = {TopicPartition(TOPIC, p) for p in partitions}
        self.paused_tps: set[TopicPartition] = set()
        self.seeks: dict[int, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    def pause(self, tp: TopicPartition) -> None:
        self.paused_tps.add(tp)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp.partition] = offset

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.tps}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class Handler:
    def __init__(self) -> None:
        self.batches: list[ConsumedBatch] = []

    async def handle(self, batch: ConsumedBatch) -> None:
        self.batches.append(batch)

    def take_rewind(self) -> None:
        return None


def record(partition: int, offset: int, event_id: str) -> ConsumerRecord:
    body = orjson.dumps(sample("ticket.opened", event_id=event_id, customer_id="c-1"))
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, b"c-1", body, None, 3, len(body), [])


def test_positions_are_one_to_one_below_the_bound_only():
    event = decode_event(orjson.dumps(sample("ticket.opened")))
    positions = {seq_of(p, o) for p in range(MAX_PARTITIONS) for o in range(3)}
    assert len(positions) == 3 * MAX_PARTITIONS  # no two records share a position
    for p in (0, 1, MAX_PARTITIONS - 1):
        assert partition_of(Recorded(seq_of(p, 5), event)) == p
    assert seq_of(MAX_PARTITIONS + 1, 0) == seq_of(1, 1)  # why partition 1025 is never projected


def test_only_partitions_below_the_bound_are_projectable():
    assert MAX_PARTITIONS == 1024
    assert partition_problem(0) is None and partition_problem(1023) is None
    problem = partition_problem(1024)
    assert problem is not None and problem.startswith("partition 1024 is beyond the 1024 partitions")


async def test_a_partition_of_1024_or_more_halts_and_is_not_projected():
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_events=TOPIC)
    handler = Handler()
    consumer = ValidatingConsumer(settings, EventPublisher(settings), handler)  # type: ignore[arg-type]
    kafka = FakeKafka([1, 1025])
    consumer.consumer = kafka
    consumer.assigned = {1, 1025}
    batch = {
        TopicPartition(TOPIC, 1): [record(1, 0, "e-low")],
        TopicPartition(TOPIC, 1025): [record(1025, 0, "e-high"), record(1025, 1, "e-high-2")],
    }
    try:
        await consumer._process(batch)

        # The projector got partition 1 only; partition 1025 halted at its first record, kept in the log.
        (handled,) = handler.batches
        assert [(e.partition, e.event.event_id) for e in handled.valid] == [(1, "e-low")]
        assert handled.offsets == {1: (0, 1)}
        halt = consumer.halts[1025]
        assert (halt.offset, halt.cause) == (0, "unsupported_partition")
        assert halt.cause in metrics.HALT_CAUSES
        assert halt.reason == partition_problem(1025)
        assert kafka.seeks[1025] == 0 and TopicPartition(TOPIC, 1025) in kafka.paused_tps
        assert kafka.commits == [{TopicPartition(TOPIC, 1): 1}]  # nothing of 1025 is committed
        assert consumer.problems(60.0) == [f"partition 1025 is halted at offset 0: {partition_problem(1025)}"]

        # Tried again, it halts again at the same offset: nothing of it is ever skipped.
        await consumer._process({TopicPartition(TOPIC, 1025): [record(1025, 0, "e-high")]})
        assert len(handler.batches) == 1 and consumer.halts[1025].attempts == 2
    finally:
        metrics.set_halted(1025, None)


@pytest.mark.parametrize("partitions", [[0, 1023], [5]])
async def test_partitions_below_the_bound_go_on(partitions):
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_events=TOPIC)
    handler = Handler()
    consumer = ValidatingConsumer(settings, EventPublisher(settings), handler)  # type: ignore[arg-type]
    consumer.consumer = FakeKafka(partitions)
    consumer.assigned = set(partitions)
    await consumer._process({TopicPartition(TOPIC, p): [record(p, 7, f"e-{p}")] for p in partitions})
    assert consumer.halts == {}
    assert sorted(e.partition for e in handler.batches[0].valid) == sorted(partitions)


def test_an_existing_events_topic_of_more_than_1024_partitions_is_refused_at_start():
    """A topic created elsewhere with partitions slatrack cannot project: serve refuses it at
    start (topic_problem), instead of every partition from 1024 on halting for ever."""
    settings = Settings()
    events, dlq = topic_specs(settings)[:2]

    def described(count: int) -> dict[str, Any]:
        return {"error_code": 0, "partitions": [{"partition": p} for p in range(count)]}

    assert topic_problem(settings, events, described(1024)) is None
    problem = topic_problem(settings, events, described(1025))
    assert problem is not None and "1025 partitions" in problem and "partition 1024" in problem
    assert topic_problem(settings, dlq, described(2000)) is None  # only the events are projected
    assert "does not exist" in (topic_problem(settings, events, None) or "")


def test_a_policy_topic_of_more_than_one_partition_is_refused_at_start():
    """The versions' order is the offset order of one partition: a policy topic of two is refused."""
    settings = Settings()
    (policies,) = [s for s in topic_specs(settings) if s.name == settings.topic_policies]

    def described(count: int) -> dict[str, Any]:
        return {"error_code": 0, "partitions": [{"partition": p} for p in range(count)]}

    assert topic_problem(settings, policies, described(1)) is None
    problem = topic_problem(settings, policies, described(2))
    assert problem is not None
    assert problem.startswith(
        "topic 'policy-versions' has 2 partitions; the policy topic must have exactly one"
    )
