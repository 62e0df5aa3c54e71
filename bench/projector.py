"""Benchmark of the projector against raw consumption, on the embedded broker.

1. Publish ~1,000,000 simulated events for 100,000 tickets to a fresh
   embedded broker (6 partitions).
2. Raw aiokafka consumption of the whole topic (getmany, no processing):
   the ceiling any consumer could reach here.
3. The projector end to end: ``slatrack serve --role worker`` (a real
   worker process) consuming the topic into committed SQLite read models,
   timed from its first committed batch to its last.
4. ``slatrack rebuild`` of the same log into a fresh generation, check and
   switch included.

Prints a summary, then one JSON line: raw_events_per_s,
projector_events_per_s, ratio, rebuild_seconds, peak_rss_mb (the larger of
the worker's and the rebuild's peak resident memory).
"""

import argparse
import asyncio
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.config import Settings
from services.dev.simulator import Helpdesk
from services.kafka.client import client_options
from services.kafka.embedded import EmbeddedBroker
from services.store import open_store

SLATRACK = str(Path(sys.executable).parent / "slatrack")


def history(tickets: int, seed: int, order: str) -> Iterator[dict]:
    """The simulated desk's events: as an import sends them (invoices, then ticket by ticket, so
    a fifth of them reach the log after later events of their customer), or in time order, as a
    live desk sends them."""
    events = Helpdesk(seed=seed, customers=3000, days=60).history(tickets)
    if order == "import":
        return iter(events)
    return iter(sorted(events, key=lambda e: datetime.fromisoformat(e["occurred_at"])))


async def publish(settings: Settings, tickets: int, seed: int, order: str) -> tuple[int, float]:
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=20, max_batch_size=512 * 1024, compression_type=None
    )
    await producer.start()
    count, started, pending = 0, time.perf_counter(), []
    try:
        for event in history(tickets, seed, order):
            pending.append(
                await producer.send(
                    settings.topic_events, orjson.dumps(event), key=event["customer_id"].encode()
                )
            )
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count, time.perf_counter() - started


async def consume_raw(settings: Settings, expected: int) -> float:
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(records) for records in batch.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def applied(settings: Settings) -> int:
    store = open_store(settings)
    try:
        generation = store.active_generation()
        return (
            0 if generation is None else sum(store.stored_offsets(generation, settings.topic_events).values())
        )
    finally:
        store.close()


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_DATA_DIR": str(settings.data_dir),
        "SLATRACK_CONSUMER_MAX_RECORDS": str(settings.consumer_max_records),
        "SLATRACK_LOG_LEVEL": "WARNING",
        "SLATRACK_HTTP_PORT": "0",  # the worker's health and metrics port: any free one
    }
    return env


def run_worker(settings: Settings, expected: int) -> float:
    process = subprocess.Popen([SLATRACK, "serve", "--role", "worker"], env=environment(settings))  # noqa: S603
    first_at, first_count = None, 0
    try:
        while True:
            time.sleep(0.25)
            done = applied(settings)
            if first_at is None and done > 0:
                first_at, first_count = time.perf_counter(), done
            if done >= expected:
                break
            if process.poll() is not None:
                raise RuntimeError("the worker exited")
        assert first_at is not None
        return (expected - first_count) / (time.perf_counter() - first_at)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=2000, help="consumer batch size of the worker")
    parser.add_argument(
        "--order",
        choices=["import", "time"],
        default="import",
        help="import: invoices, then ticket by ticket (many events reach the log late); time: in time order",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="slatrack-bench-") as tmp, EmbeddedBroker() as broker:
        settings = broker.settings(Settings(data_dir=Path(tmp), consumer_max_records=args.batch))
        count, publish_seconds = asyncio.run(publish(settings, args.tickets, args.seed, args.order))
        raw_seconds = asyncio.run(consume_raw(settings, count))
        projector_rate = run_worker(settings, count)
        started = time.perf_counter()
        subprocess.run(  # noqa: S603 - our own command
            [SLATRACK, "rebuild"],
            env=environment(settings),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rebuild_seconds = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    raw_rate = count / raw_seconds
    result = {
        "events": count,
        "tickets": args.tickets,
        "order": args.order,
        "publish_events_per_s": round(count / publish_seconds),
        "raw_events_per_s": round(raw_rate),
        "projector_events_per_s": round(projector_rate),
        "ratio": round(projector_rate / raw_rate, 3),
        "rebuild_seconds": round(rebuild_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(
        f"projector: {count} events; raw aiokafka {result['raw_events_per_s']} events/s, "
        f"projector into SQLite {result['projector_events_per_s']} events/s (ratio {result['ratio']}); "
        f"rebuild {rebuild_seconds:.0f} s; peak RSS {result['peak_rss_mb']} MB",
        file=sys.stderr,
    )
    print(
        orjson.dumps(
            {
                k: result[k]
                for k in (
                    "raw_events_per_s",
                    "projector_events_per_s",
                    "ratio",
                    "rebuild_seconds",
                    "peak_rss_mb",
                )
            }
            | result
        ).decode()
    )


if __name__ == "__main__":
    main()
