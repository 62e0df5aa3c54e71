"""Worker processes as they run in production (`slatrack serve --role worker`):
killed with SIGKILL mid-stream and restarted, two of them sharing the
partitions through PostgreSQL, and deadlines passing with no event."""

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import orjson
import pytest

from projections.policy import default_policy, load_policy
from projections.signals import Ledger
from services.dev.simulator import Helpdesk
from services.kafka.log_reader import WholeLogReader
from services.store import open_store
from services.worker.ports import TicketQuery
from services.worker.rebuild import rebuild
from tests.kafka_helpers import produce, read_all
from tests.worker_helpers import (
    applied,
    assignments,
    pending_signals,
    wait_for,
    worker,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def simulated(tickets: int, seed: int) -> list[tuple[bytes, bytes]]:
    desk = Helpdesk(seed=seed, customers=60, start=datetime(2026, 10, 20, tzinfo=UTC), days=25)
    return [(e["customer_id"].encode(), orjson.dumps(e)) for e in desk.history(tickets)]


async def check_against_rebuild(settings, total: int) -> dict:
    store = open_store(settings)
    try:
        live = store.active_generation()
        assert live is not None
        live_counts = store.counts(live)
        sent = set(store.signal_ids())
        report = await rebuild(
            settings, store, default_policy(), switch=False, log_source=WholeLogReader(settings)
        )
        assert report.mismatches == []
        assert report.events == total
        assert store.counts(report.generation) == live_counts
        # Every signal the final state asserts was recorded (and sent) by the crashed workers.
        asserted: set[str] = set()
        after = None
        while rows := store.list_tickets(report.generation, TicketQuery(after=after, limit=500)):
            for row in rows:
                asserted |= set(Ledger.decode(row.signals).asserted)
            after = rows[-1].key
        assert asserted <= sent
        return {"report": report, "sent": sent}
    finally:
        store.close()


@pytest.fixture
def sqlite_settings(kafka_settings, tmp_path):
    return kafka_settings.model_copy(update={"data_dir": tmp_path / "data"})


async def test_sigkill_at_random_points_ends_like_a_clean_rebuild(sqlite_settings, tmp_path):
    settings = sqlite_settings
    messages = simulated(tickets=1500, seed=21)
    log = tmp_path / "worker.log"

    async def feed() -> None:  # the stream keeps flowing while workers die
        for start in range(0, len(messages), 400):
            await produce(settings, messages[start : start + 400])
            await asyncio.sleep(0.4)

    feeding = asyncio.create_task(feed())
    rng = random.Random(42)
    kills = 0
    while kills < 3:
        seen = _assigned_lines(log)
        process = worker(settings, log)
        # At a random point while it consumes: not before it has partitions (a loaded machine can
        # take seconds to start a worker, and a kill then would test nothing).
        await wait_for(lambda seen=seen: _assigned_lines(log) > seen, 60, "the worker to get partitions")
        await asyncio.sleep(rng.uniform(0.5, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    await feeding
    final = worker(settings, log)
    await wait_for(lambda: applied(settings) == len(messages), 120, "the last worker to catch up")
    await wait_for(lambda: pending_signals(settings) == 0, 30, "the outbox to drain")
    final.send_signal(signal.SIGTERM)
    assert final.wait(30) == 0
    text = log.read_text()
    assert text.count("assigned partitions [") >= 2, "the kills hit workers that were consuming"

    result = await check_against_rebuild(settings, len(messages))
    published = await read_all(settings, settings.topic_signals, len(result["sent"]), timeout=60)
    ids = [orjson.loads(r.value)["signal_id"] for r in published]
    assert set(ids) == result["sent"], "every recorded signal reached the topic"


def _assigned_lines(log: Path) -> int:
    return log.read_text().count("assigned partitions [") if log.exists() else 0


@pytest.mark.postgres
async def test_two_workers_share_the_partitions_and_one_carries_on(postgres_settings, tmp_path):
    settings = postgres_settings
    first, second = simulated(tickets=600, seed=31), simulated(tickets=600, seed=32)
    # Distinct ids for the second half (the simulator numbers from 1).
    second = [(k, v.replace(b'"sim-', b'"sim2-').replace(b'"T-', b'"T2-')) for k, v in second]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [worker(settings, logs[0]), worker(settings, logs[1])]
    await wait_for(
        lambda: (
            assignments(logs[0])
            and assignments(logs[1])
            and assignments(logs[0]) | assignments(logs[1]) == set(range(6))
        ),
        60,
        "both workers to get partitions",
    )
    assert not assignments(logs[0]) & assignments(logs[1]), "each partition has one owner"
    await produce(settings, first)
    await wait_for(lambda: applied(settings) == len(first), 60, "the first half")

    workers[1].send_signal(signal.SIGTERM)
    assert workers[1].wait(30) == 0
    await produce(settings, second)
    await wait_for(lambda: applied(settings) == len(first) + len(second), 90, "the survivor to take over")
    assert assignments(logs[0]) == set(range(6))
    workers[0].send_signal(signal.SIGTERM)
    assert workers[0].wait(30) == 0
    await check_against_rebuild(settings, len(first) + len(second))


def fast_policy(tmp_path: Path) -> Path:
    """The default policy with an urgent response target of 3 s (24x7)."""
    text = resources.files("projections").joinpath("default_policy.toml").read_text()
    text = text.replace(
        'response = { target = "1h", calendar = "24x7" }', 'response = { target = 3, calendar = "24x7" }'
    )
    text = text.replace('version = "default-2026.1"', 'version = "test-fast"')
    path = tmp_path / "fast.toml"
    path.write_text(text)
    assert load_policy(path).priorities.urgent.response.target == 3
    return path


async def test_a_deadline_passing_with_no_event_breaches_within_a_second(sqlite_settings, tmp_path):
    settings = sqlite_settings.model_copy(update={"policy_file": fast_policy(tmp_path)})
    process = worker(settings, tmp_path / "worker.log")
    try:
        await wait_for(lambda: assignments(tmp_path / "worker.log") == set(range(6)), 60, "the assignment")
        opened = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        event = {
            "event_id": "fast-1",
            "type": "ticket.opened",
            "schema_version": 1,
            "customer_id": "c-fast",
            "ticket_id": "T-fast",
            "occurred_at": opened.isoformat(),
            "data": {"priority": "urgent"},
        }
        await produce(settings, [(b"c-fast", orjson.dumps(event))])
        breach = opened + timedelta(seconds=4)  # elapsed 4 s > target 3 s

        def breached() -> bool:
            store = open_store(settings)
            try:
                generation = store.active_generation()
                row = None if generation is None else store.ticket(generation, ("c-fast", "T-fast"))
                return row is not None and row.breached
            finally:
                store.close()

        await wait_for(breached, 30, "the breach", interval=0.05)
        noticed = datetime.now(UTC)
        assert noticed >= breach
        assert (noticed - breach).total_seconds() <= 1.0, f"noticed {noticed - breach} after the breach"
        await asyncio.sleep(3)  # a second signal for the same breach would come now
        published = await read_all(settings, settings.topic_signals, 1, timeout=30)
        kinds = [orjson.loads(r.value)["type"] for r in published]
        assert kinds.count("sla.breached") == 1
        assert kinds.count("escalation.raised") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
