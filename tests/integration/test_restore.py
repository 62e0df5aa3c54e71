"""A lost log written back from the read models (services/kafka/restore.py, `slatrack restore`):
every stored event at its partition and offset, placeholders where the log held a message
that was not an event, so that a worker goes on from its stored offsets (as
tests/integration/test_embedded_default.py shows `serve` does)."""

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from events import decode_event
from projections.policy import default_policy
from services.config import Settings
from services.kafka.embedded import EmbeddedBroker
from services.kafka.log_reader import read_log
from services.kafka.restore import RestoreRefused, log_bounds, restore_log
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.ports import ReadModelStore, TicketQuery
from services.worker.projector import Projector
from tests.feed import TOPIC, event
from tests.integration.test_projector import project
from tests.kafka_helpers import read_all
from tests.worker_helpers import SLATRACK, applied

pytestmark = pytest.mark.broker

# Urgent tickets opened a minute ago: their next change (the response warning) is 45
# minutes away, so no timer changes a row while the test runs.
NOW = datetime.now(UTC).replace(microsecond=0)
AT = (NOW - timedelta(minutes=1)).isoformat()


def opened(event_id: str, customer: str, ticket: str) -> dict:
    return event(event_id, "ticket.opened", AT, customer, ticket, priority="urgent")


def consumed(document: dict, partition: int, offset: int) -> ConsumedEvent:
    raw = orjson.dumps(document)
    return ConsumedEvent(decode_event(raw), partition, offset, raw)


async def stock(store: ReadModelStore) -> dict[int, dict[int, bytes]]:
    """Read models as a worker leaves them, gaps included: partition -> offset -> stored body.

    Each customer is in the partition the default partitioner gives its id (murmur2).

    Partition 0: offset 2 was rejected (dead-lettered), offset 4 repeats offset 0.
    Partition 3: two events. Partition 5: its last message (offset 2) was rejected.
    """
    projector = Projector(store, default_policy(), TOPIC, count_metrics=False)
    await projector.open()
    await projector.start_offsets({0, 3, 5})
    batches = {
        0: [
            (0, opened("e1", "cust-c", "T-1")),
            (1, event("e2", "ticket.responded", AT, "cust-c", "T-1", agent_id="ag-1")),
            (3, opened("e3", "cust-c", "T-2")),
            (4, opened("e1", "cust-c", "T-1")),
        ],
        3: [(0, opened("f1", "cust-e", "T-1")), (1, opened("f2", "cust-e", "T-9"))],
        5: [(0, opened("g1", "cust-a", "T-5")), (1, event("g2", "ticket.closed", AT, "cust-a", "T-5"))],
    }
    ends = {0: 5, 3: 2, 5: 3}
    for partition, items in batches.items():
        valid = [consumed(document, partition, offset) for offset, document in items]
        rejected = ends[partition] - len(items)
        await projector.handle(ConsumedBatch(valid, {partition: (0, ends[partition])}, rejected))
    stored = {0: {0: "e1", 1: "e2", 3: "e3"}, 3: {0: "f1", 1: "f2"}, 5: {0: "g1", 1: "g2"}}
    generation = store.active_generation()
    assert generation is not None
    assert store.stored_offsets(generation, TOPIC) == ends
    return {
        p: {e.offset: e.body for e in store.events_from(generation, p, 0, 100) if e.offset in stored[p]}
        for p in stored
    }


@contextlib.asynccontextmanager
async def new_broker(base: Settings) -> AsyncIterator[Settings]:
    """A new, empty embedded broker with the topics of ``base``: the old log is gone."""
    broker = EmbeddedBroker()
    broker.spawn()
    try:
        await broker.wait_ready(base)
        yield broker.settings(base)
    finally:
        broker.stop()


def rows(store: ReadModelStore) -> dict:
    generation = store.active_generation()
    assert generation is not None
    tickets = store.list_tickets(generation, TicketQuery(limit=500))
    customers = [store.customer(generation, c) for c in ("cust-c", "cust-e", "cust-a")]
    return {"tickets": {t.key: t for t in tickets}, "customers": customers}


async def logged(settings: Settings) -> dict[tuple[int, int], tuple[bytes | None, str]]:
    """(partition, offset) -> (value, "event" or why it is not one) of the whole log."""
    return {
        (r.partition, r.offset): (r.value, "event" if r.event is not None else r.reason)
        async for r in read_log(settings)
    }


async def test_the_log_comes_back_at_its_offsets(tmp_path):
    store = open_store(Settings(data_dir=tmp_path))
    try:
        bodies = await stock(store)
        before = rows(store)
        async with new_broker(Settings(data_dir=tmp_path, kafka_session_timeout_ms=6000)) as settings:
            restored = await restore_log(settings, store)
            assert restored is not None
            assert (restored.generation, restored.events, restored.placeholders) == (1, 7, 3)
            assert "restored 7 events of read-model generation 1 into ticket-events" in restored.summary()

            log = await logged(settings)
            expected = {
                (p, o): (bodies[p][o], "event")
                if o in bodies[p]
                else (b"", "empty: the message has no value")
                for p, end in {0: 5, 3: 2, 5: 3}.items()
                for o in range(end)
            }
            assert log == expected
            bounds = await log_bounds(settings)
            assert bounds.end == {0: 5, 1: 0, 2: 0, 3: 2, 4: 0, 5: 3}

            # A worker reading the restored log from its beginning (a new store) projects the
            # events and takes the placeholders for what they are: not dead letters again.
            fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
            await project(fresh, [], 7)
            assert await read_all(fresh, fresh.topic_dlq, 0) == []

            # Nothing is written into a log that is not empty.
            with pytest.raises(RestoreRefused, match="ticket-events is not empty"):
                await restore_log(settings, store)
            assert (await log_bounds(settings)).end == bounds.end
        assert rows(store) == before  # the read models are untouched
    finally:
        store.close()


async def test_a_topic_partitioned_otherwise_is_refused(tmp_path):
    """Another partition count than before: murmur2 would send a customer's new events to another
    partition than its restored history."""
    store = open_store(Settings(data_dir=tmp_path))
    try:
        await stock(store)
        async with new_broker(Settings(topic_partitions=7)) as settings:  # all three customers move
            with pytest.raises(RestoreRefused, match=r"has 7 partitions, but 7 of 7 stored events checked"):
                await restore_log(settings, store)
            assert not any((await log_bounds(settings)).end.values())
    finally:
        store.close()


async def test_a_topic_with_fewer_partitions_is_refused(tmp_path):
    store = open_store(Settings(data_dir=tmp_path))
    try:
        await stock(store)
        async with new_broker(Settings(topic_partitions=2)) as settings:
            with pytest.raises(RestoreRefused, match=r"partitions up to 5, but the topic has 2 partitions"):
                await restore_log(settings, store)
            assert (await log_bounds(settings)).end == {0: 0, 1: 0}
    finally:
        store.close()


def restore_cli(settings: Settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {"SLATRACK_KAFKA_BOOTSTRAP": settings.bootstrap(), "SLATRACK_DATA_DIR": str(settings.data_dir)}
    return subprocess.run(
        [str(SLATRACK), "restore", "--wait", "10"], env=env, capture_output=True, timeout=60, check=False
    )


async def test_the_restore_command(tmp_path):
    store = open_store(Settings(data_dir=tmp_path))
    try:
        await stock(store)
    finally:
        store.close()
    async with new_broker(Settings(data_dir=tmp_path)) as settings:
        done = await asyncio.to_thread(restore_cli, settings)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout) == {
            "topic": "ticket-events",
            "generation": 1,
            "events": 7,
            "placeholders": 3,
            "partitions": 3,
        }
        assert applied(settings) == 10  # the store is untouched
        again = await asyncio.to_thread(restore_cli, settings)
        assert again.returncode == 2
        refusal = again.stderr.decode().strip().splitlines()[-1]  # after the INFO lines of the log
        assert refusal == (
            "slatrack restore: ticket-events is not empty (partition: end offset {0: 5, 3: 2, 5: 3}): "
            "restore writes only into an empty log, so that every event gets its original offset back"
        )
        assert "Traceback" not in again.stderr.decode()
        assert (await log_bounds(settings)).end == {0: 5, 1: 0, 2: 0, 3: 2, 4: 0, 5: 3}


async def test_the_policy_versions_come_back_at_their_positions(tmp_path):
    """The embedded broker forgets the policy topic too: the versions the read models have read
    go back at their positions (a placeholder where the topic held a record that was none), so a
    worker's position in the topic stays true and the next version published comes after them."""
    from events.policies import encode_policy_event
    from services.kafka.policies import publish_policy, read_policies
    from services.kafka.restore import restore_policies
    from services.worker.ports import BatchWrite
    from tests.contracts_helpers import amended_text, policy_event, premium_text

    store = open_store(Settings(data_dir=tmp_path))
    try:
        projector = Projector(store, default_policy(), TOPIC)
        generation = await projector.open()
        premium = policy_event(premium_text(), "premium", datetime(2026, 11, 1, tzinfo=UTC))
        amended = policy_event(amended_text(), "default", datetime(2026, 11, 16, 5, tzinfo=UTC))
        # The workers have read the topic up to position 5: records 3 and 4 were no version.
        write = BatchWrite(
            TOPIC,
            {},
            policies=[(0, encode_policy_event(premium)), (2, encode_policy_event(amended))],
            policy_topic="policy-versions",
            policy_offsets={0: (0, 5), 1: (0, 5)},
        )
        store.commit_batch(generation, write)
        async with new_broker(Settings(data_dir=tmp_path, kafka_session_timeout_ms=6000)) as settings:
            assert await restore_policies(settings, store) == 2
            read = await read_policies(settings)
            assert [(v.position, v.policy.version) for v in read.versions] == [
                (0, "premium-2026.1"),
                (2, "default-2026.2"),
            ]
            assert [(p, why.split(":")[0]) for p, why in read.rejected] == [
                (1, "empty"),
                (3, "empty"),
                (4, "empty"),
            ]
            assert read.end == 5  # where the workers' stored positions say they have read it
            assert await restore_policies(settings, store) is None  # there already: nothing to do
            later = policy_event(
                premium_text().replace("premium-2026.1", "premium-2027.1"),
                "premium",
                datetime(2027, 1, 1, tzinfo=UTC),
            )
            assert await publish_policy(settings, later) == 5  # after what the workers have read
    finally:
        store.close()
