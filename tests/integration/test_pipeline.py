"""Valid and malformed messages through the real broker: valid ones reach the
handler exactly once, malformed ones land in the dead-letter topic, byte for
byte, with their reason."""

import asyncio
import random

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events import RejectKind
from services import metrics
from services.kafka.client import client_options
from services.kafka.consumer import SimpleHandler, ValidatingConsumer
from services.kafka.publisher import H_DETAIL, H_OFFSET, H_PARTITION, H_REASON, H_TOPIC, EventPublisher
from services.worker.batches import ConsumedEvent
from tests.kafka_helpers import produce, read_all
from tests.samples import sample

pytestmark = pytest.mark.broker

VALID = 10_000
TYPES = [
    "ticket.opened",
    "ticket.responded",
    "ticket.status_changed",
    "ticket.work_logged",
    "account.invoice_due",
]


def valid_messages() -> list[tuple[bytes, bytes]]:
    messages = []
    for i in range(VALID):
        customer = f"cust-{i % 300}"
        event = sample(TYPES[i % len(TYPES)], event_id=f"evt-{i}", customer_id=customer)
        if "ticket_id" in event:
            event["ticket_id"] = f"T-{i % 2000}"
        messages.append((customer.encode(), orjson.dumps(event)))
    return messages


def malformed_messages() -> list[tuple[bytes | None, bytes, RejectKind]]:
    """100 bad messages, of every kind a publisher can get wrong."""

    def ticket(i: int, **change) -> bytes:
        return orjson.dumps({**sample("ticket.opened", event_id=f"bad-{i}"), **change})

    def without(i: int, field: str) -> bytes:
        event = sample("ticket.opened", event_id=f"bad-{i}")
        del event[field]
        return orjson.dumps(event)

    makers = [
        (lambda i: b'{"event_id": "bad-%d", "type": ' % i, RejectKind.INVALID_JSON),
        (lambda i: b"\xff\xfe not utf-8 %d" % i, RejectKind.INVALID_JSON),
        (lambda i: ticket(i, occurred_at="2026-10-30T15:30:00"), RejectKind.INVALID_EVENT),
        (lambda i: ticket(i, type="ticket.teleported"), RejectKind.UNKNOWN_TYPE),
        (lambda i: without(i, "customer_id"), RejectKind.INVALID_EVENT),
        (lambda i: ticket(i, data={"priority": "low", "pad": "x" * 70_000}), RejectKind.TOO_LARGE),
        (lambda i: ticket(i, data={"priority": 3}), RejectKind.INVALID_EVENT),
        (lambda i: ticket(i, schema_version="1"), RejectKind.UNSUPPORTED_SCHEMA_VERSION),
        (
            lambda i: ticket(i, data={"priority": "low", "third_party_disconnect": "no"}),
            RejectKind.INVALID_EVENT,
        ),
        (lambda i: ticket(i, schema_version=2), RejectKind.UNSUPPORTED_SCHEMA_VERSION),
    ]
    out: list[tuple[bytes | None, bytes, RejectKind]] = []
    for i in range(100):
        make, kind = makers[i % len(makers)]
        out.append((b"cust-1", make(i), kind))
    # A valid event under another customer's key: it may sit in the wrong partition.
    out[-1] = (b"cust-2", ticket(99), RejectKind.KEY_MISMATCH)
    return out


def counter(metric, **labels) -> float:
    return (metric.labels(**labels) if labels else metric)._value.get()


async def test_valid_events_once_malformed_to_dlq(kafka_settings):
    settings = kafka_settings
    good = valid_messages()
    bad = malformed_messages()
    mixed: list[tuple[bytes | None, bytes]] = [(k, v) for k, v in good] + [(k, v) for k, v, _ in bad]
    random.Random(7).shuffle(mixed)
    await produce(settings, mixed)

    rejected_before = {kind: counter(metrics.EVENTS_REJECTED, reason=str(kind)) for kind in RejectKind}
    dlq_before = counter(metrics.DLQ_MESSAGES)

    received: list[ConsumedEvent] = []
    done = asyncio.Event()

    async def handler(batch: list[ConsumedEvent]) -> None:
        received.extend(batch)
        if len(received) >= VALID:
            done.set()

    stop = asyncio.Event()
    async with EventPublisher(settings) as publisher:
        consumer = ValidatingConsumer(settings, publisher, SimpleHandler(handler))
        task = asyncio.create_task(consumer.run(stop))
        async with asyncio.timeout(90):
            await done.wait()
        # Anything more that would arrive (a duplicate) would arrive now.
        await asyncio.sleep(1)
        stop.set()
        await task

    ids = [c.event.event_id for c in received]
    assert len(ids) == VALID
    assert set(ids) == {f"evt-{i}" for i in range(VALID)}

    # Per customer, events arrive in the order they were produced (one partition each).
    good_ids = {value: orjson.loads(value)["event_id"] for _, value in good}
    produced_order: dict[str, list[str]] = {}
    for key, value in mixed:
        if value in good_ids:
            assert key is not None
            produced_order.setdefault(key.decode(), []).append(good_ids[value])
    seen_order: dict[str, list[str]] = {}
    for c in received:
        seen_order.setdefault(c.event.customer_id, []).append(c.event.event_id)
    assert seen_order == produced_order

    dead = await read_all(settings, settings.topic_dlq, len(bad))
    assert len(dead) == len(bad)
    expected = {value: kind for _, value, kind in bad}
    originals = await read_all(settings, settings.topic_events, len(mixed))
    by_position = {(r.partition, r.offset): r for r in originals}
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert record.value in expected, "the dead letter is the original message, byte for byte"
        assert headers[H_REASON] == str(expected[record.value])
        assert headers[H_DETAIL]
        assert headers[H_TOPIC] == settings.topic_events
        original = by_position[(int(headers[H_PARTITION]), int(headers[H_OFFSET]))]
        assert original.value == record.value and original.key == record.key

    assert counter(metrics.DLQ_MESSAGES) - dlq_before == len(bad)
    for kind in RejectKind:
        want = sum(1 for _, _, k in bad if k == kind)
        assert counter(metrics.EVENTS_REJECTED, reason=str(kind)) - rejected_before[kind] == want

    # Every partition was committed up to its end: a restart reads nothing again.
    # (The end is taken from the records read: the embedded broker's ListOffsets
    # answers the base offset of the last batch, not the end of the log.)
    ends: dict[int, int] = {}
    for record in originals:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    check = AIOKafkaConsumer(group_id=settings.kafka_group_id, **client_options(settings))
    await check.start()
    try:
        for partition, end in ends.items():
            assert await check.committed(TopicPartition(settings.topic_events, partition)) == end
    finally:
        await check.stop()


async def test_restart_resumes_from_committed_offsets(kafka_settings):
    settings = kafka_settings
    first = [
        (b"c", orjson.dumps(sample("ticket.opened", event_id=f"a-{i}", customer_id="c"))) for i in range(50)
    ]
    second = [
        (b"c", orjson.dumps(sample("ticket.opened", event_id=f"b-{i}", customer_id="c"))) for i in range(50)
    ]

    async def consume_until(count: int) -> list[str]:
        seen: list[str] = []
        enough = asyncio.Event()

        async def handler(batch):
            seen.extend(c.event.event_id for c in batch)
            if len(seen) >= count:
                enough.set()

        stop = asyncio.Event()
        async with EventPublisher(settings) as publisher:
            task = asyncio.create_task(
                ValidatingConsumer(settings, publisher, SimpleHandler(handler)).run(stop)
            )
            async with asyncio.timeout(60):
                await enough.wait()
            await asyncio.sleep(0.5)
            stop.set()
            await task
        return seen

    await produce(settings, first)
    assert await consume_until(50) == [f"a-{i}" for i in range(50)]
    await produce(settings, second)
    assert await consume_until(50) == [f"b-{i}" for i in range(50)]
