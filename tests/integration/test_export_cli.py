"""`slatrack export`: the event log as JSONL, the input of `slatrack replay --events`."""

import asyncio
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from projections.timeline import whole_second
from services.cli.commands import main
from services.dev.simulator import Helpdesk
from services.kafka.client import client_options
from services.kafka.log_reader import LogBounds, read_log
from tests.kafka_helpers import produce, read_all
from tests.samples import sample

pytestmark = pytest.mark.broker

SLATRACK = Path(sys.executable).parent / "slatrack"


def cli_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    return env | {
        "SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(),
        "SLATRACK_TOPIC_EVENTS": settings.topic_events,
        "SLATRACK_TOPIC_DLQ": settings.topic_dlq,
        "SLATRACK_TOPIC_SIGNALS": settings.topic_signals,
        "SLATRACK_TOPIC_POLICIES": settings.topic_policies,
        "SLATRACK_KAFKA_REQUEST_TIMEOUT_MS": str(settings.kafka_request_timeout_ms),
    }


async def export(settings, *args: str, timeout: float = 120) -> tuple[int, bytes, str]:
    """Run `slatrack export ARGS` as a process: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(SLATRACK),
        "export",
        *args,
        env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err.decode()


def replay(path: Path) -> bytes:
    result = CliRunner().invoke(main, ["replay", "--events", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def lines_of(data: bytes) -> list[bytes]:
    return data.splitlines()


@pytest.fixture
async def history(kafka_settings, tmp_path):
    """A simulated helpdesk's history, in a file and in the log (keyed by customer, in file order)."""
    events = list(Helpdesk(seed=5, customers=12, days=30).history(120))
    lines = [orjson.dumps(e) for e in events]
    await produce(
        kafka_settings, [(e["customer_id"].encode(), line) for e, line in zip(events, lines, strict=True)]
    )
    return write_jsonl(tmp_path / "original.jsonl", lines), events, lines


@pytest.mark.timeout(120)
async def test_export_replays_to_the_same_document(kafka_settings, history, tmp_path):
    original, events, lines = history
    out = tmp_path / "export.jsonl"

    code, stdout, stderr = await export(kafka_settings, "--out", str(out))
    assert code == 0, stderr
    assert stdout == b""
    assert f"exported {len(events)} events" in stderr and "0 skipped by the filter, 0 invalid" in stderr
    exported = lines_of(out.read_bytes())
    assert Counter(exported) == Counter(lines)  # every event, once, byte for byte as recorded
    assert replay(out) == replay(original)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

    # The workers' recording order: offset, then partition. And the same bytes on stdout.
    records = await read_all(kafka_settings, kafka_settings.topic_events, len(events))
    position = {r.value: (r.offset, r.partition) for r in records}
    assert [position[line] for line in exported] == sorted(position.values())
    code, stdout, _ = await export(kafka_settings)
    assert code == 0
    assert stdout == out.read_bytes()


@pytest.mark.timeout(120)
async def test_customer_filter(kafka_settings, history, tmp_path):
    _, events, lines = history
    customer = Counter(e["customer_id"] for e in events).most_common(1)[0][0]
    mine = [line for e, line in zip(events, lines, strict=True) if e["customer_id"] == customer]
    assert any(b'"account.' in line for line in mine) and any(b'"ticket.' in line for line in mine)
    out = tmp_path / "customer.jsonl"

    code, _, stderr = await export(kafka_settings, "--customer", customer, "--out", str(out))
    assert code == 0, stderr
    assert f"exported {len(mine)} events" in stderr
    assert f"{len(events) - len(mine)} skipped by the filter" in stderr
    assert lines_of(out.read_bytes()) == mine  # one customer: one partition, in the log's order
    assert replay(out) == replay(write_jsonl(tmp_path / "mine.jsonl", mine))


@pytest.mark.timeout(120)
async def test_since_and_until_filter_on_occurred_at(kafka_settings, history, tmp_path):
    _, _, lines = history
    since, until = "2026-09-10T09:00:00-04:00", "2026-09-20T00:00:00Z"
    low, high = datetime(2026, 9, 10, 13, tzinfo=UTC), datetime(2026, 9, 20, tzinfo=UTC)

    def occurred(line: bytes) -> datetime:
        return whole_second(datetime.fromisoformat(orjson.loads(line)["occurred_at"]))

    expected = [line for line in lines if low <= occurred(line) <= high]
    assert 0 < len(expected) < len(lines)
    out = tmp_path / "window.jsonl"
    code, _, stderr = await export(kafka_settings, "--since", since, "--until", until, "--out", str(out))
    assert code == 0, stderr
    exported = lines_of(out.read_bytes())
    assert Counter(exported) == Counter(expected)
    assert f"exported {len(expected)} events" in stderr
    assert f"{len(lines) - len(expected)} skipped by the filter" in stderr

    code, _, stderr = await export(kafka_settings, "--since", "2026-09-10T09:00:00")
    assert code == 2 and "--since" in stderr and "Traceback" not in stderr
    code, _, stderr = await export(kafka_settings, "--since", until, "--until", since, "--out", str(out))
    assert code == 2 and "is after --until" in stderr
    assert lines_of(out.read_bytes()) == exported  # a refused export leaves the file as it was


@pytest.mark.timeout(120)
async def test_invalid_messages_are_reported_and_skipped(kafka_settings, tmp_path):
    good = [orjson.dumps(sample("ticket.opened", event_id=f"ok-{i}", customer_id="acme")) for i in range(5)]
    # Valid JSON may break lines between tokens: still the same event, written on one line.
    pretty = orjson.dumps(sample("ticket.responded", customer_id="acme"), option=orjson.OPT_INDENT_2)
    bad = [
        (b"acme", b'{"broken": '),
        (b"acme", b""),
        (b"someone-else", orjson.dumps(sample("ticket.reopened", event_id="wrong-key", customer_id="acme"))),
    ]
    await produce(
        kafka_settings, [(b"acme", good[0]), *bad, *[(b"acme", g) for g in good[1:]], (b"acme", pretty)]
    )
    records = await read_all(kafka_settings, kafka_settings.topic_events, 9)
    where = {r.value: f"partition {r.partition} offset {r.offset}" for r in records}
    out = tmp_path / "export.jsonl"

    code, _, stderr = await export(kafka_settings, "--out", str(out))
    assert code == 0, stderr
    topic = kafka_settings.topic_events
    assert f"{topic} {where[bad[0][1]]}: invalid_json" in stderr
    assert f"{topic} {where[b'']}: empty" in stderr
    assert f"{topic} {where[bad[2][1]]}: key_mismatch" in stderr
    assert "exported 6 events" in stderr and "3 invalid (not written)" in stderr
    exported = lines_of(out.read_bytes())
    assert exported[:5] == good
    assert orjson.loads(exported[5]) == orjson.loads(pretty) and len(exported[5]) == len(pretty)
    document = orjson.loads(replay(out))
    assert document["rejected"] == 0 and [t["ticket_id"] for t in document["tickets"]] == ["T-1"]


@pytest.mark.timeout(150)
async def test_export_ends_while_the_log_keeps_growing(kafka_settings, tmp_path):
    customers = [f"cust-{i}" for i in range(12)]
    sent: Counter[str] = Counter()
    producer = AIOKafkaProducer(**client_options(kafka_settings), acks="all", linger_ms=5)
    await producer.start()

    async def send(count: int) -> None:
        for _ in range(count):
            customer = customers[sum(sent.values()) % len(customers)]
            event = sample("ticket.opened", event_id=f"{customer}-{sent[customer]}", customer_id=customer)
            sent[customer] += 1
            await producer.send(kafka_settings.topic_events, orjson.dumps(event), key=customer.encode())

    async def keep_sending(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await send(50)
            await asyncio.sleep(0.01)

    try:
        await send(3000)
        await producer.flush()
        before = sum(sent.values())
        stop = asyncio.Event()
        appending = asyncio.create_task(keep_sending(stop))
        try:
            out = tmp_path / "export.jsonl"
            code, _, stderr = await export(kafka_settings, "--out", str(out), timeout=90)
            during = sum(sent.values()) - before
        finally:
            stop.set()
            await appending
            await producer.flush()
    finally:
        await producer.stop()
    assert code == 0, stderr
    assert during > 0  # the log grew while the export ran
    ids = [orjson.loads(line)["event_id"] for line in lines_of(out.read_bytes())]
    assert len(ids) >= before
    assert f"exported {len(ids)} events" in stderr
    # Each customer (one partition) exported up to some point of its log, nothing skipped in between.
    per_customer = Counter(i.rsplit("-", 1)[0] for i in ids)
    assert sorted(ids) == sorted(f"{c}-{n}" for c, count in per_customer.items() for n in range(count))


@pytest.mark.timeout(60)
async def test_read_log_merges_partitions_that_run_ahead(kafka_settings):
    """A partition far ahead of the others is paused, not buffered whole; the order holds."""
    producer = AIOKafkaProducer(**client_options(kafka_settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        sizes = {0: 400, 1: 7, 2: 0, 3: 60}
        for partition, size in sizes.items():
            for n in range(size):
                await producer.send(
                    kafka_settings.topic_events, b"%d/%d" % (partition, n), partition=partition
                )
        await producer.flush()
    finally:
        await producer.stop()
    bounds: list[LogBounds] = []
    records = [r async for r in read_log(kafka_settings, bounds.append, buffer_limit=10)]
    assert len(bounds) == 1 and bounds[0].total == sum(sizes.values())
    assert bounds[0].end == {p: sizes.get(p, 0) for p in range(kafka_settings.topic_partitions)}
    assert [(r.offset, r.partition) for r in records] == sorted(
        (n, p) for p, s in sizes.items() for n in range(s)
    )
    assert all(r.value == b"%d/%d" % (r.partition, r.offset) for r in records)
    assert all(r.event is None and r.reason.startswith("invalid_json") for r in records)


@pytest.mark.timeout(60)
async def test_unreachable_broker_and_missing_topic_are_clear_errors(kafka_settings, tmp_path):
    out = tmp_path / "export.jsonl"
    missing = kafka_settings.model_copy(update={"topic_events": "no-such-topic-here"})
    code, _, stderr = await export(missing, "--out", str(out))
    assert code == 1 and "no-such-topic-here" in stderr and "not found" in stderr
    assert "Traceback" not in stderr

    # Given up after the configured request timeout (5 s: the least it may be).
    unreachable = kafka_settings.model_copy(
        update={"kafka_bootstrap": "127.0.0.1:1", "kafka_request_timeout_ms": 5000}
    )
    code, _, stderr = await export(unreachable, "--out", str(out))
    assert code == 1
    assert "not reachable after 5 s" in stderr and "Traceback" not in stderr
    assert not list(tmp_path.iterdir())  # no file, not even a temporary one
