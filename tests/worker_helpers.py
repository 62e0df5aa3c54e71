"""Worker processes for integration tests: start `slatrack serve` as production
runs it, wait for conditions, read what it stored or logged."""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
from pydantic import SecretStr

from projections.contracts import PolicyVersion
from services.store import open_store
from services.worker.batches import PolicyDecoder, PolicyRead

SLATRACK = Path(sys.executable).parent / "slatrack"


def worker(
    settings, log: Path, *extra: str, role: str = "worker", http_port: int | None = None
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_TOPIC_DLQ": settings.topic_dlq,
        "SLATRACK_TOPIC_SIGNALS": settings.topic_signals,
        "SLATRACK_TOPIC_POLICIES": settings.topic_policies,
        "SLATRACK_KAFKA_GROUP_ID": settings.kafka_group_id,
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SLATRACK_DATA_DIR": str(settings.data_dir),
    }
    # Every role listens (a worker for health and metrics): any free port unless told.
    env["SLATRACK_HTTP_PORT"] = str(http_port if http_port is not None else 0)
    if settings.database_url is not None:
        env["SLATRACK_DATABASE_URL"] = settings.database_url.get_secret_value()
    if settings.policy_file is not None:
        env["SLATRACK_POLICY_FILE"] = str(settings.policy_file)
    out = open(log, "ab")  # the child keeps it open
    return subprocess.Popen(
        [str(SLATRACK), "serve", "--role", role, *extra], env=env, stdout=out, stderr=subprocess.STDOUT
    )


def applied(settings) -> int:
    store = open_store(settings)
    try:
        generation = store.active_generation()
        return (
            0 if generation is None else sum(store.stored_offsets(generation, settings.topic_events).values())
        )
    finally:
        store.close()


def pending_signals(settings) -> int:
    store = open_store(settings)
    try:
        return len(store.pending_signals())
    finally:
        store.close()


def recorded_signals(settings) -> int:
    store = open_store(settings)
    try:
        return len(store.signal_ids())
    finally:
        store.close()


async def wait_for(condition, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)


@contextlib.contextmanager
def throwaway_database(postgres_dsn: str, prefix: str = "slatrack_test") -> Iterator[str]:
    """The URL of a PostgreSQL database of its own on the server of ``postgres_dsn``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextlib.contextmanager
def postgres_database(kafka_settings, postgres_dsn: str, tmp_path: Path) -> Iterator:
    """Settings with a PostgreSQL database of their own, dropped afterwards."""
    with throwaway_database(postgres_dsn, "slatrack_workers") as url:
        yield kafka_settings.model_copy(
            update={"database_url": SecretStr(url), "data_dir": tmp_path / "data"}
        )


def assignments(log: Path) -> set[int]:
    """The partitions of the worker's latest assignment, from its log."""
    latest = [line for line in log.read_text().splitlines() if "assigned partitions [" in line]
    if not latest:
        return set()
    inside = latest[-1].split("assigned partitions [", 1)[1].split("]", 1)[0]
    return {int(p) for p in inside.split(",") if p.strip()}


class ListPolicyLog:
    """The policy topic as a list of versions already checked (position = each version's own): a
    test appends to it, or sets ``versions``, to publish. MemoryPolicyLog takes records' bytes."""

    def __init__(self, versions: Iterable[PolicyVersion] = ()):
        self.versions = list(versions)

    async def read(self, start: int) -> PolicyRead:
        return PolicyRead([v for v in self.versions if v.position >= start], [], len(self.versions))


class MemoryPolicyLog:
    """The policy topic in memory (services.worker.batches.PolicyLog): ``append`` a record (an
    event's bytes, or anything, as a foreign producer might), ``read`` as KafkaPolicyLog reads
    (from a position to the end as of the read, each record decoded by the same PolicyDecoder)."""

    def __init__(self, records: list[bytes | None] | None = None):
        self.records: list[bytes | None] = list(records or [])
        self.decoder = PolicyDecoder()
        self.reads: list[int] = []  # the start of each read

    def append(self, value: bytes | None) -> int:
        """Record ``value``; its offset."""
        self.records.append(value)
        return len(self.records) - 1

    async def read(self, start: int) -> PolicyRead:
        self.reads.append(start)
        read = self.decoder.read(list(enumerate(self.records)), len(self.records))  # all: first copies
        return PolicyRead(
            [v for v in read.versions if v.position >= start],
            [(p, why) for p, why in read.rejected if p >= start],
            read.end,
            [p for p in read.duplicates if p >= start],
        )
