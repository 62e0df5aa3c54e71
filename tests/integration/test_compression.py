"""Compressed batches from a producer that is not ours (librdkafka, via confluent-kafka): the
worker projects every codec Kafka has, and `slatrack export` reads them (issue 11, item 1).
Before, aiokafka without its codecs decompressed gzip only: one zstd batch stopped the worker,
again at every restart."""

import asyncio

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from services.cli.commands import main
from services.store import open_store
from tests.feed import event
from tests.integration.test_projector import project

pytestmark = pytest.mark.broker

CODECS = ("gzip", "snappy", "lz4", "zstd")


def produce_compressed(settings, codec: str, events: list[dict]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap(),
            "compression.type": codec,
            # The Java and aiokafka default: a customer's events land where ours do (docs/events.md).
            "partitioner": "murmur2_random",
            "linger.ms": 50,  # one batch, compressed as one
            "acks": "all",
        }
    )
    for document in events:
        producer.produce(settings.topic_events, orjson.dumps(document), key=document["customer_id"].encode())
    assert producer.flush(30) == 0, f"{codec}: not all delivered"


def codec_events(codec: str) -> list[dict]:
    return [
        event(
            f"{codec}-1", "ticket.opened", "2026-11-16T15:00:00Z", f"c-{codec}", f"T-{codec}", priority="low"
        ),
        event(f"{codec}-2", "ticket.responded", "2026-11-16T15:10:00Z", f"c-{codec}", f"T-{codec}"),
    ]


async def test_every_codec_is_projected_and_exported(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    for codec in CODECS:
        await asyncio.to_thread(produce_compressed, settings, codec, codec_events(codec))
    await project(settings, [], 2 * len(CODECS))

    store = open_store(settings)
    try:
        generation = store.active_generation()
        assert generation is not None
        for codec in CODECS:
            row = store.ticket(generation, (f"c-{codec}", f"T-{codec}"))
            assert row is not None and row.response_status == "stopped", codec
    finally:
        store.close()

    out = tmp_path / "log.jsonl"
    env = {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_DATA_DIR": str(tmp_path),
    }
    result = await asyncio.to_thread(CliRunner().invoke, main, ["export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    exported = [orjson.loads(line)["event_id"] for line in out.read_text().splitlines()]
    assert sorted(exported) == sorted(e["event_id"] for codec in CODECS for e in codec_events(codec))


def test_the_codecs_are_installed():
    """A packaging slip (aiokafka without its extras) fails here at once, not as a stopped worker."""
    from aiokafka import codec

    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()
