"""The projector through the real broker into real stores (SQLite and PostgreSQL):
the read models equal `slatrack replay` on the same events, whatever the
order and however many copies; a rebuild equals the live generation."""

import asyncio
import logging
import random
import sqlite3
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import SecretStr

from events import decode_event
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.dev.simulator import Helpdesk
from services.kafka.consumer import ValidatingConsumer
from services.kafka.log_reader import WholeLogReader
from services.kafka.publisher import EventPublisher
from services.store import open_store
from services.worker.ports import TicketQuery
from services.worker.projector import Projector
from services.worker.rebuild import rebuild
from tests.kafka_helpers import produce
from tests.worker_helpers import throwaway_database

pytestmark = pytest.mark.broker

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the projector's clock, fixed for comparison


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request, kafka_settings, tmp_path):
    if request.param == "sqlite":
        settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
        yield settings
        return
    with throwaway_database(request.getfixturevalue("postgres_dsn")) as url:
        yield kafka_settings.model_copy(update={"database_url": SecretStr(url)})


def simulated(tickets: int = 400, seed: int = 5) -> list[dict]:
    desk = Helpdesk(seed=seed, customers=40, start=datetime(2026, 10, 20, tzinfo=UTC), days=25)
    return list(desk.history(tickets))


async def project(settings, messages: list[tuple[bytes, bytes]], expected: int, clock=lambda: AS_OF) -> None:
    """Run a worker until it has applied ``expected`` events, then stop it."""
    store = open_store(settings)
    projector = Projector(store, default_policy(), settings.topic_events, clock=clock)
    await projector.open()
    await produce(settings, messages)
    stop = asyncio.Event()
    async with EventPublisher(settings) as publisher:
        task = asyncio.create_task(ValidatingConsumer(settings, publisher, projector).run(stop))
        async with asyncio.timeout(120):
            while projector.applied_events < expected:  # noqa: ASYNC110 - a counter, not an event
                await asyncio.sleep(0.1)
        stop.set()
        await task
    store.close()


def read_model(settings) -> dict[str, tuple[int, dict]]:
    """ticket id -> (evaluated_at, view) of the active generation."""
    store = open_store(settings)
    try:
        generation = store.active_generation()
        assert generation is not None
        rows, after = [], None
        while page := store.list_tickets(generation, TicketQuery(after=after, limit=500)):
            rows += page
            after = page[-1].key
        return {row.ticket_id: (row.evaluated_at, orjson.loads(row.view)) for row in rows}
    finally:
        store.close()


def assert_equals_replay(model: dict[str, tuple[int, dict]], events: list[dict]) -> None:
    """Each stored view is what `slatrack replay` gives as of the instant it was evaluated at."""
    records = [Recorded(i, decode_event(orjson.dumps(e))) for i, e in enumerate(events)]
    instants = {evaluated_at for evaluated_at, _ in model.values()}
    expected: dict[str, dict] = {}
    for instant in instants:
        document = replay(records, default_policy(), datetime.fromtimestamp(instant, UTC))
        wanted = {t for t, (at, _) in model.items() if at == instant}
        expected |= {v["ticket_id"]: v for v in document["tickets"] if v["ticket_id"] in wanted}
    assert {t: view for t, (_, view) in model.items()} == expected
    # Every opened ticket is there.
    final = replay(records, default_policy(), AS_OF)
    assert set(model) == {v["ticket_id"] for v in final["tickets"]}


def keyed(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["customer_id"].encode(), orjson.dumps(e)) for e in events]


async def test_read_model_equals_replay(store_settings):
    events = simulated()
    await project(store_settings, keyed(events), len(events))
    assert_equals_replay(read_model(store_settings), events)


async def test_a_small_history_cache_changes_nothing(kafka_settings, tmp_path, monkeypatch):
    """More tickets than the cache holds: it empties itself now and then, mid-batch included."""
    monkeypatch.setattr("services.worker.history_cache.CACHE_TICKETS", 7)
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path, "consumer_max_records": 50})
    events = simulated(tickets=150, seed=13)
    await project(settings, keyed(events), len(events))
    assert_equals_replay(read_model(settings), events)


async def test_a_store_that_is_unavailable_for_a_while_stops_nothing(
    kafka_settings, tmp_path, monkeypatch, caplog
):
    """The worker waits for its store (here: another process holding the write lock) and goes on."""
    caplog.set_level(logging.INFO, logger="services")
    monkeypatch.setattr("services.store.sqlite.BUSY_TIMEOUT_S", 0.2)
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    events = simulated(tickets=60, seed=17)
    store = open_store(settings)
    projector = Projector(store, default_policy(), settings.topic_events, clock=lambda: AS_OF)
    await projector.open()
    await produce(settings, keyed(events))
    holder = sqlite3.connect(tmp_path / "slatrack.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # before the worker starts: its first commit must wait
    stop = asyncio.Event()
    try:
        async with EventPublisher(settings) as publisher:
            task = asyncio.create_task(ValidatingConsumer(settings, publisher, projector).run(stop))
            async with asyncio.timeout(60):  # the worker tries, fails, keeps the batch and waits
                while "batch not processed" not in caplog.text:  # noqa: ASYNC110 - a log
                    await asyncio.sleep(0.1)
            await asyncio.sleep(3.5)  # tries again every second, and says so once (not every time)
            assert caplog.text.count("batch not processed") == 1
            assert projector.applied_events == 0 and not task.done()
            holder.execute("ROLLBACK")
            async with asyncio.timeout(60):
                while projector.applied_events < len(events):  # noqa: ASYNC110 - a counter
                    await asyncio.sleep(0.1)
            stop.set()
            await task
    finally:
        holder.close()
        store.close()
    assert "StoreUnavailable: SQLite: database is locked" in caplog.text
    assert_equals_replay(read_model(settings), events)


async def test_shuffled_and_duplicated_input_gives_the_same_read_model(store_settings):
    events = simulated(seed=9)
    # Per customer the log keeps the publishing order; across customers any
    # order goes. Shuffle within each customer's stream too, and add copies.
    rng = random.Random(3)
    mixed = events[:]
    rng.shuffle(mixed)
    mixed += rng.sample(events, len(events) // 3)
    await project(store_settings, keyed(mixed), len(mixed))
    assert_equals_replay(read_model(store_settings), events)


async def test_rebuild_equals_the_live_generation(store_settings):
    events = simulated(tickets=200, seed=11)
    await project(store_settings, keyed(events), len(events))
    before = read_model(store_settings)
    store = open_store(store_settings)
    try:
        live = store.active_generation()
        report = await rebuild(
            store_settings, store, default_policy(), log_source=WholeLogReader(store_settings)
        )
        assert report.mismatches == []
        assert report.switched and report.previous == live and store.active_generation() == report.generation
        assert report.events == len(events)
        assert report.checked_tickets > 0
    finally:
        store.close()
    after = read_model(store_settings)
    assert set(after) == set(before)


async def test_offsets_beyond_the_end_of_the_log_start_a_new_generation(tmp_path, caplog):
    """A fresh, empty embedded broker behind a store that has read further: say so, start over."""
    from services.kafka.embedded import EmbeddedBroker

    events = simulated(tickets=50, seed=13)
    for attempt, count in (("first broker", len(events)), ("empty broker", 20), ("another empty one", 10)):
        broker = EmbeddedBroker()
        broker.spawn()
        try:
            await broker.wait_ready()
            settings = broker.settings().model_copy(
                update={
                    "data_dir": tmp_path,
                    "kafka_group_id": f"g-{attempt.split()[0]}",
                    "kafka_session_timeout_ms": 6000,
                }
            )
            await project(settings, keyed(events[:count]), count)
            store = open_store(settings)
            generation = store.active_generation()
            assert generation is not None
            offsets = sum(store.stored_offsets(generation, settings.topic_events).values())
            generations = store.generations()
            store.close()
        finally:
            broker.stop()
        assert offsets == count, attempt
    # Each time a new generation; the one before it is kept, older ones go.
    assert [g["generation"] for g in generations] == [2, 3]
    assert generations[1]["active"] and "log ended before stored offsets" in generations[1]["reason"]
    assert "THE LOG ENDS BEFORE THE STORED OFFSETS" in caplog.text


async def test_demo_feed_publishes_the_simulated_history(kafka_settings):
    from services.dev.demo import demo_history, run_demo
    from tests.kafka_helpers import read_all

    now = datetime.now(UTC)
    fed = await run_demo(kafka_settings, default_policy(), customers=5, tickets=20, days=1, live=False)
    sent = fed.history
    everything = [orjson.loads(line) for line in demo_history(5, 20, 1, 1, now)]
    past = [e for e in everything if decode_event(orjson.dumps(e)).occurred_at <= now]
    assert len(past) <= sent < len(everything)  # the history, not the future (the demo's now is a bit later)
    records = await read_all(kafka_settings, kafka_settings.topic_events, sent)
    assert len(records) == sent
    assert all(r.key == orjson.loads(r.value)["customer_id"].encode() for r in records)
