"""Benchmark of the projector against raw consumption, on the embedded broker.

1. Publish the main log: simulated events for ``--tickets`` tickets (default 100,000: about
   1,000,000 events) in ``--order`` (default: time) to a fresh embedded broker (6 partitions).
2. Raw aiokafka consumption of the whole topic (getmany, no processing): the ceiling any
   consumer could reach here.
3. The projector end to end: ``slatrack serve --role worker`` (a real worker process)
   consuming the topic into committed SQLite read models, timed from its first committed batch
   to all events applied, or to ``--budget`` seconds after it (default 150) if that comes first:
   the rate is then that of the events applied so far (``projector_complete`` says which). At the
   end the bench scrapes the worker's ``/metrics`` (on a free port it picked) and reports where
   the time went, in µs per event consumed, from ``slatrack_projector_stage_duration_seconds``:
   ``decode`` (the consumer decoding and validating), ``engine`` (the fold), ``store`` (the
   reads and the commit), ``other`` (the rest of handling a batch); and what is in none of them
   (fetching, committing to Kafka, idling): the wall time per event less the four, approximate
   (the wall time leaves out the first batch, the stages do not: at a small size it can even be
   below zero).
4. ``slatrack rebuild`` of the whole main log into a fresh generation, check and switch included.
5. The import row (``--import-tickets``, default 10,000; 0: none; left out when ``--order`` is
   already import): the same desk's events as an import sends them (invoices, then ticket by
   ticket: about a fifth reach the log after later events of their customer), its raw
   consumption and one worker into SQLite, on a topic of its own, timed to the end (a prefix of
   an import is mostly invoices: a budget would measure those).
6. The PostgreSQL rows (``--postgres-tickets``, default 20,000, in time order, on a topic of its
   own; ``--postgres ''``: none): one worker into a fresh database on the PostgreSQL server of
   ``--postgres``, then two workers sharing the topic (one consumer group) into another fresh
   one, each timed from the first committed batch to all events applied or ``--postgres-budget``
   seconds (default 45); the databases are created and dropped by the bench. Two workers' rate
   over one's says how the projector scales out.

Prints a summary, then one JSON line. Its first keys are as before: raw_events_per_s,
projector_events_per_s, ratio (projector / raw, of the main log), rebuild_seconds and
peak_rss_mb (the largest of the worker's and the rebuild's). Then: worker_peak_rss_mb and
rebuild_peak_rss_mb apart (each the peak resident memory of the largest single process of it:
the process itself or one of its children, as wait4 reports it), stage_us_per_event (the
breakdown above), projector_events_timed and projector_complete, the import row's import_*
figures, postgres_one_worker_events_per_s, postgres_two_workers_events_per_s, postgres_scaling
(two / one), postgres_complete, and the seconds each phase took (phase_seconds).

Why these defaults: ``make bench`` must stay under 15 minutes on our 2-core machines, and the
issue's aims are about the 1M-event log (the rebuild's above all), so the main log keeps its
size. Measured with the code before issue 14's folds and parallel rebuild, at 20,000 tickets
(211,928 events) on a machine shared with other work (load 3.5-6.5), 2026-12-01: the projector
2,969 events/s in time order and 1,012 in import order (10,000 tickets), the rebuild 2,260
events/s (94 s), publishing (the simulator included) 38,000 events/s, one worker on PostgreSQL
2,260 events/s; the whole bench took 8 minutes. Timed to the end, the 1M-event log alone would
take the worker almost 6 minutes in time order and over 16 in import order. So the main log is
in time order, as a live desk sends it, and its worker is timed for at most ``--budget`` 150 s
(a prefix of a log in time order is like the rest of it: the same desk, days later); import
order, the projector's hard case, is measured to its end at 10,000 tickets (about 112,000
events, 2 minutes), and the PostgreSQL rows at 20,000 tickets, 45 s at most each. The rebuild
is timed to its end whatever it takes: it is the figure of the aim, and with that code the
largest part of the bench (about 7 minutes for 1M events: this bench then takes about 15, and
make bench the engine bench's more). With a rebuild near the aim (20 s) this bench takes about
8. ``--order import --import-tickets 0 --budget 0`` measures the 1M-event import as the bench
did before. Use ``--tickets 5000`` or fewer while developing.
"""

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.config import Settings
from services.dev.simulator import Helpdesk
from services.kafka.client import client_options, ensure_topics
from services.kafka.embedded import EmbeddedBroker
from services.kafka.routing import expected_partition
from services.metrics import PROJECTOR_STAGES
from services.store import open_store

SLATRACK = str(Path(sys.executable).parent / "slatrack")
DEFAULT_POSTGRES = os.environ.get(
    "SLATRACK_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


CUSTOMERS = 3000  # of the simulated desk


def history(tickets: int, seed: int, order: str, customers: int = CUSTOMERS) -> Iterator[dict]:
    """The simulated desk's events: as an import sends them (invoices, then ticket by ticket, so
    a fifth of them reach the log after later events of their customer), or in time order, as a
    live desk sends them."""
    events = Helpdesk(seed=seed, customers=customers, days=60).history(tickets)
    if order == "import":
        return iter(events)
    return iter(sorted(events, key=lambda e: datetime.fromisoformat(e["occurred_at"])))


async def publish(
    settings: Settings, tickets: int, seed: int, order: str, customers: int = CUSTOMERS
) -> tuple[int, float]:
    """Publish the desk's events, keyed by customer and in the partition Kafka's default
    partitioner gives the key (so the workers see no misrouted event), a batch per partition at a
    time (aiokafka's ``send`` per message would take longer than the projector at this size)."""
    await ensure_topics(settings, create=True)
    producer = AIOKafkaProducer(**client_options(settings), acks="all", max_batch_size=512 * 1024)
    await producer.start()
    count, started, pending = 0, time.perf_counter(), []
    batches: dict[int, BatchBuilder] = {}
    try:
        for event in history(tickets, seed, order, customers):
            key, value = event["customer_id"].encode(), orjson.dumps(event)
            partition = expected_partition(key, settings.topic_partitions)
            batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                pending.append(await producer.send_batch(batch, settings.topic_events, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            count += 1
            if len(pending) >= 32:
                await asyncio.gather(*pending)
                pending = []
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, settings.topic_events, partition=partition))
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


def free_port() -> int:
    """A port free now, for a worker's /metrics (the worker binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(settings: Settings, http_port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_KAFKA_GROUP_ID": settings.kafka_group_id,
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_DATA_DIR": str(settings.data_dir),
        "SLATRACK_CONSUMER_MAX_RECORDS": str(settings.consumer_max_records),
        "SLATRACK_LOG_LEVEL": "WARNING",
        "SLATRACK_HTTP_HOST": "127.0.0.1",
        "SLATRACK_HTTP_PORT": str(http_port),  # 0: any free one
    }
    if settings.database_url is not None:
        env["SLATRACK_DATABASE_URL"] = settings.database_url.get_secret_value()
    return env


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> float | None:
    """Wait for ``process`` to exit (SIGKILL after ``timeout_s``); its peak RSS in MB, as wait4
    reports it (the process or its largest child), or None if it was already reaped."""
    if process.returncode is not None:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            process.kill()
            deadline = float("inf")
        time.sleep(0.05)


def scrape_stages(port: int) -> dict[str, float]:
    """µs per consumed event of each stage, from a worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    seconds: dict[str, float] = {}
    events = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "slatrack_projector_stage_duration_seconds_sum":
                seconds[sample.labels["stage"]] = sample.value
            elif sample.name == "slatrack_events_consumed_total":
                events += sample.value
    return {stage: round(seconds.get(stage, 0.0) / max(events, 1) * 1e6, 1) for stage in PROJECTOR_STAGES}


@dataclass
class WorkerRun:
    events_per_s: float
    timed: int  # events applied while timed
    complete: bool  # all applied (else the budget ran out first)
    peak_rss_mb: float | None
    stages: dict[str, float] | None  # µs per event (one worker only)


def run_workers(settings: Settings, expected: int, workers: int = 1, budget_s: float = 0) -> WorkerRun:
    """``workers`` worker processes in one group on the topic of ``settings``, timed from the first
    committed batch (of any) to all ``expected`` events applied, or to ``budget_s`` after it
    (0: no budget), whichever comes first."""
    ports = [free_port() for _ in range(workers)]
    processes = [
        subprocess.Popen([SLATRACK, "serve", "--role", "worker"], env=environment(settings, port))  # noqa: S603
        for port in ports
    ]
    first_at, first_count, stages = None, 0, None
    peaks: list[float | None] = []
    try:
        while True:
            time.sleep(0.25)
            done = applied(settings)
            if first_at is None and done > 0:
                first_at, first_count = time.perf_counter(), done
            if done >= expected:
                break
            if budget_s and first_at is not None and time.perf_counter() - first_at >= budget_s:
                break
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a worker exited")
        assert first_at is not None
        # (0 if the first batch committed held every event: too small a log, or too large a batch)
        rate = (done - first_count) / (time.perf_counter() - first_at)
        if workers == 1:
            time.sleep(0.5)  # the last batch's stages are recorded just after its commit
            stages = scrape_stages(ports[0])
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        peaks = [stop(process) for process in processes]
    known = [peak for peak in peaks if peak is not None]
    return WorkerRun(rate, done - first_count, done >= expected, max(known) if known else None, stages)


def run_rebuild(settings: Settings) -> tuple[float, float | None]:
    """``slatrack rebuild`` of the log: its seconds and peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - our own command
        [SLATRACK, "rebuild"], env=environment(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peak = stop(process, timeout_s=3600)
    if process.returncode != 0:
        raise RuntimeError(f"slatrack rebuild exited with {process.returncode}")
    return time.perf_counter() - started, peak


@contextlib.contextmanager
def throwaway_database(dsn: str) -> Iterator[str]:
    """The URL of a fresh database on the PostgreSQL server of ``dsn``, dropped afterwards."""
    import psycopg

    name = f"slatrack_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def postgres_reachable(dsn: str) -> str | None:
    """None if PostgreSQL answers at ``dsn``, else why not."""
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def own_log(base: Settings, name: str, data_dir: Path) -> Settings:
    """Settings for a topic, consumer group and data directory of their own."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return base.model_copy(
        update={
            "topic_events": f"ticket-events-{name}",
            "kafka_group_id": f"slatrack-bench-{name}",
            "data_dir": data_dir,
        }
    )


def stage_line(what: str, stages: dict[str, float] | None, rate: float) -> str:
    if not stages or not rate:
        return f"{what}: no stage breakdown"
    wall = 1e6 / rate
    parts = ", ".join(f"{stage} {stages[stage]:.1f}" for stage in PROJECTOR_STAGES)
    rest = wall - sum(stages.values())
    return f"{what} (µs per event): {parts}; in none (fetch, Kafka commit, idle) {rest:.1f}; wall {wall:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=100_000, help="tickets of the main log")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--customers", type=int, default=CUSTOMERS, help="of the simulated desk (each has its invoices)"
    )
    parser.add_argument("--batch", type=int, default=2000, help="consumer batch size of the workers")
    parser.add_argument(
        "--order",
        choices=["import", "time"],
        default="time",
        help="of the main log. import: invoices, then ticket by ticket (many events reach the log late); "
        "time: in time order",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=150,
        help="seconds the main log's worker is timed at most (0: until it has applied every event)",
    )
    parser.add_argument(
        "--import-tickets", type=int, default=10_000, help="tickets of the import-order row (0: none)"
    )
    parser.add_argument(
        "--postgres-tickets", type=int, default=20_000, help="tickets of the PostgreSQL rows (0: none)"
    )
    parser.add_argument(
        "--postgres-budget",
        type=float,
        default=45,
        help="seconds each PostgreSQL row is timed at most (0: until every event is applied)",
    )
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="a PostgreSQL server's URL; its rows use fresh databases there ('': no PostgreSQL rows)",
    )
    args = parser.parse_args()
    phases: dict[str, float] = {}
    result: dict[str, object] = {}

    def phase(name: str, started: float) -> None:
        phases[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {phases[name]} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="slatrack-bench-") as tmp, EmbeddedBroker() as broker:
        base = broker.settings(Settings(data_dir=Path(tmp), consumer_max_records=args.batch))

        # The main log: raw, one worker into SQLite, the rebuild.
        settings = own_log(base, "main", Path(tmp) / "main")
        started = time.perf_counter()
        count, publish_seconds = asyncio.run(
            publish(settings, args.tickets, args.seed, args.order, args.customers)
        )
        phase("publish", started)
        started = time.perf_counter()
        raw_seconds = asyncio.run(consume_raw(settings, count))
        phase("raw", started)
        started = time.perf_counter()
        worker = run_workers(settings, count, budget_s=args.budget)
        phase("worker", started)
        rebuild_seconds, rebuild_peak = run_rebuild(settings)
        phases["rebuild"] = round(rebuild_seconds, 1)
        print(f"  rebuild: {phases['rebuild']} s", file=sys.stderr, flush=True)
        raw_rate = count / raw_seconds
        peaks = [p for p in (worker.peak_rss_mb, rebuild_peak) if p is not None]
        result |= {
            "raw_events_per_s": round(raw_rate),
            "projector_events_per_s": round(worker.events_per_s),
            "ratio": round(worker.events_per_s / raw_rate, 3),
            "rebuild_seconds": round(rebuild_seconds, 1),
            "peak_rss_mb": round(max(peaks)) if peaks else None,
            "events": count,
            "tickets": args.tickets,
            "order": args.order,
            "publish_events_per_s": round(count / publish_seconds),
            "worker_peak_rss_mb": None if worker.peak_rss_mb is None else round(worker.peak_rss_mb),
            "rebuild_peak_rss_mb": None if rebuild_peak is None else round(rebuild_peak),
            "stage_us_per_event": worker.stages,
            "projector_events_timed": worker.timed,
            "projector_complete": worker.complete,
        }
        timed = "" if worker.complete else f", over its first {worker.timed} events ({args.budget:.0f} s)"
        lines = [
            f"projector: {count} events ({args.order} order); raw aiokafka {result['raw_events_per_s']} "
            f"events/s, projector into SQLite {result['projector_events_per_s']} events/s{timed} (ratio "
            f"{result['ratio']}); rebuild {rebuild_seconds:.0f} s; peak RSS worker "
            f"{result['worker_peak_rss_mb']} MB, rebuild {result['rebuild_peak_rss_mb']} MB",
            stage_line("  stages, one worker into SQLite", worker.stages, worker.events_per_s),
        ]

        # The import row: the projector's hard case, smaller.
        if args.import_tickets > 0 and args.order != "import":
            settings = own_log(base, "import", Path(tmp) / "import")
            started = time.perf_counter()
            imported, _ = asyncio.run(
                publish(settings, args.import_tickets, args.seed, "import", args.customers)
            )
            import_raw = imported / asyncio.run(consume_raw(settings, imported))
            phase("import publish and raw", started)
            started = time.perf_counter()
            run = run_workers(settings, imported)
            phase("import worker", started)
            result |= {
                "import_tickets": args.import_tickets,
                "import_events": imported,
                "import_raw_events_per_s": round(import_raw),
                "import_projector_events_per_s": round(run.events_per_s),
                "import_ratio": round(run.events_per_s / import_raw, 3),
                "import_stage_us_per_event": run.stages,
            }
            lines += [
                f"import order: {imported} events ({args.import_tickets} tickets); raw {round(import_raw)} "
                f"events/s, projector into SQLite {round(run.events_per_s)} events/s (ratio "
                f"{result['import_ratio']})",
                stage_line("  stages, one worker into SQLite", run.stages, run.events_per_s),
            ]

        # PostgreSQL: one worker, then two sharing the topic.
        asked = bool(args.postgres) and args.postgres_tickets > 0
        why_not = postgres_reachable(args.postgres) if asked else "not asked"
        if why_not is None:
            settings = own_log(base, "postgres", Path(tmp) / "postgres")
            started = time.perf_counter()
            events, _ = asyncio.run(
                publish(settings, args.postgres_tickets, args.seed, "time", args.customers)
            )
            phase("postgres publish", started)
            rates: list[float] = []
            complete: list[bool] = []
            for workers in (1, 2):
                started = time.perf_counter()
                with throwaway_database(args.postgres) as url:
                    run = run_workers(
                        settings.model_copy(
                            update={
                                "database_url": SecretStr(url),
                                "kafka_group_id": f"{settings.kafka_group_id}-{workers}",
                            }
                        ),
                        events,
                        workers,
                        budget_s=args.postgres_budget,
                    )
                rates.append(run.events_per_s)
                complete.append(run.complete)
                if workers == 1:
                    result["postgres_stage_us_per_event"] = run.stages
                    what = "  stages, one worker into PostgreSQL"
                    lines.append(stage_line(what, run.stages, run.events_per_s))
                phase(f"postgres {workers} worker(s)", started)
            result |= {
                "postgres_tickets": args.postgres_tickets,
                "postgres_events": events,
                "postgres_one_worker_events_per_s": round(rates[0]),
                "postgres_two_workers_events_per_s": round(rates[1]),
                "postgres_scaling": round(rates[1] / rates[0], 2) if rates[0] else None,
                "postgres_complete": complete,
            }
            lines.insert(
                -1,
                f"PostgreSQL, {events} events in time order ({args.postgres_tickets} tickets): one worker "
                f"{round(rates[0])} events/s, two workers sharing the topic {round(rates[1])} events/s "
                f"together (x{result['postgres_scaling']})"
                + ("" if all(complete) else f" (timed {args.postgres_budget:.0f} s at most)"),
            )
        else:
            lines.append(f"PostgreSQL rows left out: {why_not}")

    result |= {"phase_seconds": phases, "python": platform.python_version(), "cpus": os.cpu_count()}
    print("\n".join(lines), file=sys.stderr)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
