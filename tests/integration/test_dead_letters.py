"""Foreign producers and dead letters, through the real broker (issue 11, item 6): a librdkafka
producer with its default partitioner is found and its events still projected; dead letters keep
key, value and headers byte for byte; `slatrack dlq list` shows them and `slatrack dlq replay`
sends each back once."""

import asyncio
import logging
from contextlib import asynccontextmanager

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner
from confluent_kafka import Producer

from events import EventRejected, RejectKind
from projections.policy import default_policy
from services import metrics
from services.cli.commands import main
from services.kafka import routing
from services.kafka.client import client_options
from services.kafka.consumer import ValidatingConsumer
from services.kafka.dead_letters import H_REPLAY_OF
from services.kafka.publisher import DLQ_HEADERS, H_DETAIL, H_REASON, EventPublisher
from services.kafka.routing import MisroutedReporter, expected_partition
from services.store import open_store
from services.worker.batches import RawRecord
from services.worker.projector import Projector
from tests.feed import event
from tests.integration.test_export_cli import cli_env
from tests.integration.test_projector import AS_OF
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.broker

FOREIGN = "ck-cust"  # CRC32 (librdkafka's default) puts it on partition 2 of 6, murmur2 on 0


@asynccontextmanager
async def worker(settings):
    """A worker (the validating consumer and the projector) running until the block ends."""
    store = open_store(settings)
    projector = Projector(store, default_policy(), settings.topic_events, clock=lambda: AS_OF)
    await projector.open()
    stop = asyncio.Event()
    try:
        async with EventPublisher(settings) as publisher:
            task = asyncio.create_task(ValidatingConsumer(settings, publisher, projector).run(stop))
            try:
                yield projector
            finally:
                stop.set()
                await task
    finally:
        store.close()


async def applied(projector: Projector, count: int) -> None:
    async with asyncio.timeout(60):
        while projector.applied_events < count:  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.05)


def produce_with_librdkafka_defaults(settings, document: dict) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap(), "acks": "all"})
    producer.produce(settings.topic_events, orjson.dumps(document), key=document["customer_id"].encode())
    assert producer.flush(30) == 0


async def produce_raw(settings, messages: list[tuple[bytes | None, bytes | None, list]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(settings.topic_events, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_foreign_partitioner_found_and_dead_letters_exact(
    kafka_settings, tmp_path, monkeypatch, caplog
):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    monkeypatch.setattr(routing, "REPORTER", MisroutedReporter())  # no warning held back by other tests
    opened = event("ck-1", "ticket.opened", "2026-11-16T15:00:00Z", FOREIGN, "T-ck", priority="low")
    await asyncio.to_thread(produce_with_librdkafka_defaults, settings, opened)
    valid_elsewhere = orjson.dumps(
        event("e-9", "ticket.opened", "2026-11-16T15:00:00Z", "cust-1", "T-9", priority="low")
    )
    bad = [
        (b"", b"{not json", [("trace", b"\xff\x01"), ("empty", b"")]),
        (None, b"{not json either", []),
        (b"cust-1", None, [("tombstone", b"yes")]),
        (b"someone-else", valid_elsewhere, []),
    ]
    await produce_raw(settings, bad)

    misrouted_before = metrics.EVENTS_MISROUTED._value.get()
    with caplog.at_level(logging.WARNING, logger="services.kafka.routing"):
        async with worker(settings) as projector:
            await applied(projector, 1)
            dead = await read_all(settings, settings.topic_dlq, len(bad))

    # The librdkafka record sits where CRC32 put it; it is found, and projected all the same.
    (original,) = [r for r in await read_all(settings, settings.topic_events, 5) if r.key == FOREIGN.encode()]
    assert original.partition == 2 != expected_partition(FOREIGN.encode(), 6)
    assert metrics.EVENTS_MISROUTED._value.get() - misrouted_before == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "services.kafka.routing"]
    assert f'{settings.topic_events} on partition 2 has the key "{FOREIGN}"' in warning
    assert "puts on partition 0" in warning
    store = open_store(settings)
    try:
        generation = store.active_generation()
        assert generation is not None and store.ticket(generation, (FOREIGN, "T-ck")) is not None
    finally:
        store.close()

    # Each dead letter is its message: key (empty stays empty, none stays none), value, headers.
    assert len(dead) == len(bad)
    by_value = {value: (key, headers) for key, value, headers in bad}
    for letter in dead:
        key, headers = by_value[letter.value]
        assert letter.key == key and type(letter.key) is type(key)
        own, ours = list(letter.headers[: len(headers)]), dict(letter.headers[len(headers) :])
        assert own == headers
        assert list(ours) == list(DLQ_HEADERS)
        assert all(ours.values()), "no empty header of ours"
    details = {dict(d.headers)[H_REASON].decode(): dict(d.headers)[H_DETAIL].decode() for d in dead}
    assert details["key_mismatch"] == (
        'the message key is "someone-else", not the event\'s customer_id "cust-1": '
        "a customer's events must be keyed by its customer_id"
    )


def dlq(settings, *args: str):
    env = cli_env(settings) | {"SLATRACK_MAX_EVENT_BYTES": str(settings.max_event_bytes)}
    return CliRunner().invoke(main, ["dlq", *args], env=env)


async def test_dlq_list_and_replay_once(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    big = event("big-1", "ticket.opened", "2026-11-16T15:00:00Z", "cust-big", "T-big", priority="low")
    big["data"]["note"] = "x" * 300
    bad_json = b'{"event_id": "broken", "type": '
    # Dead-lettered as a worker with SLATRACK_MAX_EVENT_BYTES=200 does it.
    rejected = [
        (
            RawRecord(settings.topic_events, 4, 10, 1_790_000_000_000, b"cust-big", orjson.dumps(big), ()),
            "too_large",
        ),
        (
            RawRecord(settings.topic_events, 1, 3, 1_790_000_000_000, b"", bad_json, (("h", b"\xff"),)),
            "invalid_json",
        ),
    ]
    async with EventPublisher(settings) as publisher:
        await publisher.dead_letter(
            [
                (record, EventRejected(RejectKind(reason), f"detail of {reason}"))
                for record, reason in rejected
            ]
        )

    listed = await asyncio.to_thread(dlq, settings, "list", "--json")
    assert listed.exit_code == 0, listed.output
    document = orjson.loads(listed.stdout)
    assert document["total"] == document["matching"] == 2
    letters = {d["reason"]: d for d in document["dead_letters"]}
    assert letters["too_large"]["original_partition"] == 4 and letters["too_large"]["original_offset"] == 10
    assert letters["too_large"]["value_start"] == orjson.dumps(big)[:40].decode() + "…"
    assert (
        letters["invalid_json"]["key"] == "" and letters["invalid_json"]["detail"] == "detail of invalid_json"
    )
    table = await asyncio.to_thread(dlq, settings, "list", "--reason", "too_large", "--limit", "1")
    assert table.exit_code == 0, table.output
    assert letters["too_large"]["dead_letter"] in table.stdout and "invalid_json" not in table.stdout
    assert "1 shown of 1 matching, 2 dead letters" in table.stdout

    # User mistakes: exit 2, one line, nothing sent.
    for args, message in [
        ((), "name the dead letters"),
        (("3x",), "is not PARTITION@OFFSET"),
        (("5@999",), "no dead letter at 5@999"),
        (("--reason", "nonsense"), "Invalid value for '--reason'"),
    ]:
        result = await asyncio.to_thread(dlq, settings, "replay", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)

    name = letters["too_large"]["dead_letter"]
    dry = await asyncio.to_thread(dlq, settings, "replay", "--reason", "too_large")
    assert dry.exit_code == 0, dry.output
    assert f"{name}: too_large, from {settings.topic_events} 4@10: would be sent" in dry.stdout
    assert "dry run: 1 to send, nothing sent (add --send)" in dry.stdout

    sent = await asyncio.to_thread(dlq, settings, "replay", name, "--send")
    assert sent.exit_code == 0, sent.output
    assert "sent 1 dead letters" in sent.stdout
    again = await asyncio.to_thread(dlq, settings, "replay", "--reason", "too_large", "--send")
    assert again.exit_code == 0, again.output
    assert f"{name}: replayed before, at {settings.topic_events}" in again.stdout
    assert "sent 0 dead letters" in again.stdout

    # One record in the log: the dry run and the second run sent nothing.
    (replayed,) = await read_all(settings, settings.topic_events, 1, timeout=10)
    assert (replayed.key, replayed.value) == (b"cust-big", orjson.dumps(big))
    assert list(replayed.headers) == [(H_REPLAY_OF, f"{settings.topic_dlq}:{name}".encode())]
    assert replayed.partition == expected_partition(b"cust-big", 6)

    # After the fix (a larger limit) a worker takes it.
    async with worker(settings) as projector:
        await applied(projector, 1)
