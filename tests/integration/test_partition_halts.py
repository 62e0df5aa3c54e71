"""No single message stops a partition, let alone all of them (issue 11, item 2).

- A value just under Kafka's 1 MiB default is rejected as too large; its dead letter, our
  headers added, would not fit: it is cut to fit and says so, and nothing waits for it.
  (Before: MessageSizeTooLargeError, the whole multi-partition batch read again every
  second, forever; events sent afterwards to other partitions were never projected.)
- What still cannot be handled (a dead letter that cannot be written, records that cannot be
  decoded, a projector that raises) halts only its partition at that offset, says why in
  /readyz and a metric, and goes on by itself once the cause is gone.
"""

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from aiokafka.errors import UnsupportedCodecError

from projections.policy import default_policy
from services import metrics
from services.api.app import create_app
from services.bootstrap import Services
from services.kafka.consumer import ValidatingConsumer
from services.kafka.dead_letters import plan_replay
from services.kafka.publisher import H_ORIGINAL_SHA256, H_ORIGINAL_SIZE, H_REASON, H_TRUNCATED, EventPublisher
from services.kafka.routing import expected_partition
from services.store import open_store
from services.worker.projector import Projector
from tests.feed import event
from tests.integration.test_compression import produce_compressed
from tests.kafka_helpers import produce, read_all
from tests.worker_helpers import wait_for

pytestmark = pytest.mark.broker

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def partition_of(settings, customer: str) -> int:
    return expected_partition(customer.encode(), settings.topic_partitions)


def customers_on_other_partitions(settings, avoid: int, n: int) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        customer = f"other-{i}"
        partition = partition_of(settings, customer)
        if partition != avoid and partition not in found:
            found[partition] = customer
        i += 1
    return list(found.values())


def opened(customer: str, ticket: str, eid: str | None = None) -> tuple[bytes, bytes]:
    document = event(
        eid or f"o-{ticket}", "ticket.opened", "2026-11-20T09:00:00Z", customer, ticket, priority="low"
    )
    return customer.encode(), orjson.dumps(document)


class Worker:
    def __init__(self, settings, store, projector, consumer):
        self.settings, self.store, self.projector, self.consumer = settings, store, projector, consumer

    def ticket(self, customer: str, ticket: str):
        return self.store.ticket(self.projector.generation, (customer, ticket))

    async def readyz(self, publisher) -> httpx.Response:
        wired = Services(
            self.settings,
            default_policy(),
            publisher,
            self.store,
            lag=self.consumer.lag,
            problems=self.consumer.problems,
        )
        app = create_app(wired)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            return await client.get("/readyz")


@contextlib.asynccontextmanager
async def worker(settings) -> AsyncIterator[tuple[Worker, EventPublisher]]:
    store = open_store(settings)
    projector = Projector(store, default_policy(), settings.topic_events, clock=lambda: NOW)
    await projector.open()
    stop = asyncio.Event()
    async with EventPublisher(settings) as publisher:
        consumer = ValidatingConsumer(settings, publisher, projector)
        task = asyncio.create_task(consumer.run(stop))
        try:
            yield Worker(settings, store, projector, consumer), publisher
        finally:
            stop.set()
            await task
    store.close()


def hanging_dead_letters(monkeypatch) -> asyncio.Event:
    """The dead-letter topic stops answering (a broker that takes it offline, say): dead-letter
    writes hang until the event returned (the topic is back) is set."""
    dead_letter = EventPublisher.dead_letter
    back = asyncio.Event()

    async def hanging(self, rejected):
        if not back.is_set():
            await asyncio.Event().wait()
        await dead_letter(self, rejected)

    monkeypatch.setattr(EventPublisher, "dead_letter", hanging)
    return back


def halted_gauge(partition: int, cause: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "slatrack_partition_halted", {"partition": str(partition), "cause": cause}
    )


async def test_an_oversized_dead_letter_is_cut_to_fit_and_holds_nothing_back(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    big = b'{"padding": "' + b"x" * (1_048_176 - 15) + b'"}'
    assert len(big) == 1_048_176  # valid JSON, under Kafka's 1 MiB default
    others = customers_on_other_partitions(settings, partition_of(settings, "big"), 5)
    await produce(settings, [(b"big", big)] + [opened(c, f"T-{c}-{n}") for n in range(2) for c in others])
    async with worker(settings) as (w, _):
        await wait_for(lambda: w.projector.applied_events == 10, 60, "the 10 events after it projected")
        assert w.consumer.halts == {}
    (letter,) = await read_all(settings, settings.topic_dlq, 1)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers[H_REASON] == "too_large"
    assert headers[H_ORIGINAL_SIZE] == str(len(big))
    assert headers[H_ORIGINAL_SHA256] == hashlib.sha256(big).hexdigest()
    assert "the whole message is in" in headers[H_TRUNCATED]
    assert big.startswith(letter.value) and len(letter.value) > 900_000
    # `slatrack dlq replay` does not send a cut value back as if it were the message.
    plan = await plan_replay(settings, [f"{letter.partition}@{letter.offset}"], set())
    assert plan.send == [] and [cut.name for cut in plan.cut] == [f"{letter.partition}@{letter.offset}"]


async def test_a_dead_letter_that_cannot_be_written_halts_only_its_partition(
    kafka_settings, tmp_path, monkeypatch
):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path, "dlq_send_timeout_s": 1.0})
    back = hanging_dead_letters(monkeypatch)
    stuck = partition_of(settings, "stuck")
    others = customers_on_other_partitions(settings, stuck, 3)
    await produce(
        settings,
        [opened("stuck", "T-before"), (b"stuck", b"not json"), opened("stuck", "T-after")]
        + [opened(c, f"T-{c}") for c in others],
    )
    async with worker(settings) as (w, publisher):
        await wait_for(lambda: w.projector.applied_events == 4, 60, "the other partitions and T-before")
        assert w.ticket("stuck", "T-before") is not None and w.ticket("stuck", "T-after") is None
        assert set(w.consumer.halts) == {stuck}
        assert w.consumer.halts[stuck].offset == 1  # at the message whose dead letter failed
        assert halted_gauge(stuck, "dead_letter_failed") == 1
        ready = await w.readyz(publisher)
        assert ready.status_code == 503
        assert f"partition {stuck} is halted at offset 1: its dead letter could not be written" in ready.text

        back.set()  # the topic is back
        await wait_for(
            lambda: w.ticket("stuck", "T-after") is not None, 60, "the partition going on by itself"
        )
        assert w.consumer.halts == {} and halted_gauge(stuck, "dead_letter_failed") is None
    letters = await read_all(settings, settings.topic_dlq, 1)
    assert [letter.value for letter in letters] == [b"not json"]


async def test_records_that_cannot_be_decoded_halt_only_their_partition(
    kafka_settings, tmp_path, monkeypatch
):
    import aiokafka.record._crecords.default_records as records

    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    stuck = partition_of(settings, "zstd-customer")
    others = customers_on_other_partitions(settings, stuck, 3)
    decode = records.zstd_decode

    def broken(data):
        raise UnsupportedCodecError("injected: this zstd batch cannot be decompressed")

    monkeypatch.setattr(records, "zstd_decode", broken)
    zstd_events = [
        event("z1", "ticket.opened", "2026-11-20T09:00:00Z", "zstd-customer", "T-z", priority="low"),
        event("z2", "ticket.responded", "2026-11-20T09:05:00Z", "zstd-customer", "T-z"),
    ]
    await asyncio.to_thread(produce_compressed, settings, "zstd", zstd_events)
    await produce(settings, [opened(c, f"T-{c}") for c in others])
    async with worker(settings) as (w, publisher):
        await wait_for(lambda: w.projector.applied_events == 3, 60, "the other partitions")
        await wait_for(lambda: stuck in w.consumer.halts, 30, "the partition halted")
        assert w.consumer.halts[stuck].offset == 0
        assert "cannot be read: UnsupportedCodecError: injected" in w.consumer.halts[stuck].reason
        assert halted_gauge(stuck, "undecodable") == 1
        assert "cannot be read" in (await w.readyz(publisher)).text

        monkeypatch.setattr(records, "zstd_decode", decode)  # the codec is back
        await wait_for(lambda: w.projector.applied_events == 5, 60, "the partition going on by itself")
        assert w.ticket("zstd-customer", "T-z").response_status == "stopped"
        assert w.consumer.halts == {}


async def test_a_projector_that_raises_halts_only_its_partition(kafka_settings, tmp_path, monkeypatch):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    stuck = partition_of(settings, "poisoned")
    others = customers_on_other_partitions(settings, stuck, 3)
    handle = Projector.handle
    broken = {"on": True}

    async def buggy(self, batch):
        if broken["on"] and any(item.event.event_id == "poison" for item in batch.valid):
            raise ValueError("injected projector bug")
        await handle(self, batch)

    monkeypatch.setattr(Projector, "handle", buggy)
    await produce(settings, [opened("poisoned", "T-p", "poison")] + [opened(c, f"T-{c}") for c in others])
    async with worker(settings) as (w, _):
        await wait_for(lambda: w.projector.applied_events == 3, 60, "the other partitions")
        await wait_for(lambda: stuck in w.consumer.halts, 30, "the partition halted")
        assert "the projector raised: ValueError: injected projector bug" in w.consumer.halts[stuck].reason
        broken["on"] = False  # the fixed release
        await wait_for(
            lambda: w.ticket("poisoned", "T-p") is not None, 60, "the partition going on by itself"
        )
        assert w.consumer.halts == {}


async def test_a_rejected_message_with_a_null_header_is_dead_lettered(kafka_settings, tmp_path):
    """Kafka allows a header without a value; making its dead letter once crashed the worker."""
    from aiokafka import AIOKafkaProducer

    from services.kafka.client import client_options

    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_events, b"not json", key=b"c", headers=[("trace", None)])
    finally:
        await producer.stop()
    others = customers_on_other_partitions(settings, partition_of(settings, "c"), 3)
    await produce(settings, [opened(c, f"T-{c}") for c in others])
    async with worker(settings) as (w, _):
        await wait_for(lambda: w.projector.applied_events == 3, 60, "the events after it")
        assert w.consumer.halts == {}
    (letter,) = await read_all(settings, settings.topic_dlq, 1)
    assert letter.value == b"not json" and ("trace", None) in [(n, v) for n, v in letter.headers]


async def test_a_conflicting_copy_whose_dead_letter_hangs_halts_only_its_partition(
    kafka_settings, tmp_path, monkeypatch
):
    """The projector dead-letters a second body of an event id itself: that write is bounded and
    partition-local too (before, a hanging one froze every partition)."""
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    back = hanging_dead_letters(monkeypatch)
    stuck = partition_of(settings, "twice")
    others = customers_on_other_partitions(settings, stuck, 3)
    first, second = opened("twice", "T-1", "same-id"), opened("twice", "T-2", "same-id")
    await produce(settings, [first, second] + [opened(c, f"T-{c}") for c in others])
    store = open_store(settings)
    projector = Projector(
        store, default_policy(), settings.topic_events, clock=lambda: NOW, dead_letter_timeout_s=1.0
    )
    await projector.open()
    stop = asyncio.Event()
    async with EventPublisher(settings) as publisher:
        projector.dead_letter = publisher.dead_letter
        consumer = ValidatingConsumer(settings, publisher, projector)
        task = asyncio.create_task(consumer.run(stop))
        try:
            await wait_for(
                lambda: projector.applied_events >= 4, 60, "the other partitions and the first copy"
            )
            assert set(consumer.halts) == {stuck} and consumer.halts[stuck].offset == 1
            back.set()
            await wait_for(lambda: consumer.halts == {}, 60, "the partition going on by itself")
        finally:
            stop.set()
            await task
    store.close()
    (letter,) = await read_all(settings, settings.topic_dlq, 1)
    assert orjson.loads(letter.value)["ticket_id"] == "T-2"
