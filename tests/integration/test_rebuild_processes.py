"""A rebuild in several processes (SLATRACK_REBUILD_PROCESSES) writes the rows one process
writes, byte for byte, on both backends; a child that fails fails the rebuild and drops its
generation (issue 14)."""

import sqlite3
from datetime import UTC, datetime

import orjson
import psycopg
import pytest
from pydantic import SecretStr

from projections.policy import default_policy
from services.dev.simulator import Helpdesk
from services.kafka.log_reader import WholeLogReader
from services.store import open_store, sqlite_path
from services.worker.batches import ConsumedBatch
from services.worker.ports import TicketQuery
from services.worker.rebuild import RebuildChildFailed, rebuild
from tests.contracts_helpers import amended_text, published
from tests.integration.test_projector import keyed, project
from tests.kafka_helpers import produce
from tests.worker_helpers import ListPolicyLog, throwaway_database

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

# A history well before now: a rebuild tells each customer's story up to its log time, never past
# the wall clock (a customer's rows would then be as of the instant its batch was projected).
START = datetime(2026, 7, 1, tzinfo=UTC)
# The default contract amended from the middle of the history on: the children measure with it.
AMENDED = published(amended_text(), "default", datetime(2026, 7, 12, tzinfo=UTC), 0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request, kafka_settings, tmp_path):
    if request.param == "sqlite":
        yield kafka_settings.model_copy(update={"data_dir": tmp_path})
        return
    with throwaway_database(request.getfixturevalue("postgres_dsn")) as url:
        yield kafka_settings.model_copy(update={"database_url": SecretStr(url), "data_dir": tmp_path})


def rows_of(settings, generation: int) -> dict[str, list[tuple]]:
    """Every row of ``generation`` in every table that has generations, without that column,
    sorted: what two generations must hold alike."""
    path = sqlite_path(settings)
    if path is not None:
        with sqlite3.connect(path) as conn:
            tables = [
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if "generation" in [c[1] for c in conn.execute(f"PRAGMA table_info({name})")]
            ]
            return {
                t: _rows(conn, t, [c[1] for c in conn.execute(f"PRAGMA table_info({t})")], generation)
                for t in tables
            }
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ):
            columns.setdefault(table, []).append(column)
        return {t: _rows(conn, t, cs, generation) for t, cs in columns.items() if "generation" in cs}


def _rows(conn, table: str, columns: list[str], generation: int) -> list[tuple]:
    if table in ("generations", "active_generation"):
        return []
    kept = [c for c in columns if c != "generation"]
    mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
    sql = f"SELECT {', '.join(kept)} FROM {table} WHERE generation = {mark}"
    return sorted(
        (
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in conn.execute(sql, (generation,))
        ),
        key=repr,
    )


def _diff(got: list[tuple], expected: list[tuple]) -> str:
    if len(got) != len(expected):
        return f"{len(got)} rows, not {len(expected)}"
    for a, b in zip(got, expected, strict=True):
        if a != b:
            differ = [f"{x!r} != {y!r}" for x, y in zip(a, b, strict=True) if x != y]
            return f"row {a[:2]}: " + "; ".join(differ)
    return "?"


async def test_a_rebuild_in_two_processes_writes_the_rows_of_one(store_settings):
    # One record a batch: where a fetch ends decides which of its customer's later events a
    # batch holds, hence the log time a ticket touched there is evaluated at (its evaluated_at),
    # with one process as with several; so two one-process rebuilds agree byte for byte only
    # with batches of one record. (The views they give are the same with any batches.)
    settings = store_settings.model_copy(update={"consumer_max_records": 1, "rebuild_batch_records": 1})
    desk = Helpdesk(seed=21, customers=24, start=START, days=25)
    events = list(desk.history(60))
    await project(settings, keyed(events), len(events))
    store = open_store(settings)
    try:
        reports = {}
        for processes in (1, 2, 3):
            reports[processes] = await rebuild(
                settings,
                store,
                default_policy(),
                switch=False,
                log_source=WholeLogReader(settings),
                policy_log=ListPolicyLog([AMENDED]),
                processes=processes,
                open_store=open_store,
            )
        one = reports[1]
        assert one.processes == 1 and {r.processes for r in reports.values()} == {1, 2, 3}
        assert len(store.stored_offsets(one.generation, settings.topic_events)) > 1  # partitions
        expected = rows_of(settings, one.generation)
        assert expected["tickets"] and expected["events"] and expected["policy_versions"]
        for processes in (2, 3):
            report = reports[processes]
            assert report.mismatches == [] and not report.switched
            assert (report.events, report.invalid, report.tickets, report.customers) == (
                one.events,
                one.invalid,
                one.tickets,
                one.customers,
            )
            assert (report.checked_partitions, report.checked_tickets) == (
                one.checked_partitions,
                one.checked_tickets,
            )
            assert report.live_rows_wrong == one.live_rows_wrong
            assert set(report.phases) == {"policies", "project", "check", "switch", "finish"}
            got = rows_of(settings, report.generation)
            for table in expected:
                assert got[table] == expected[table], f"{processes} processes, table {table}: " + _diff(
                    got[table], expected[table]
                )
        # The amendment measured the tickets of its time: the children had it too.
        rows = store.list_tickets(reports[2].generation, TicketQuery(limit=500))
        assert "default-2026.2" in {orjson.loads(row.view).get("policy_version") for row in rows}
    finally:
        store.close()


async def test_a_child_that_fails_fails_the_rebuild_and_drops_its_generation(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    desk = Helpdesk(seed=3, customers=20, start=datetime(2026, 10, 20, tzinfo=UTC), days=10)
    events = list(desk.history(60))
    await project(settings, keyed(events), len(events))
    store = open_store(settings)
    try:
        live = store.active_generation()
        before = [g["generation"] for g in store.generations()]

        class Gone(WholeLogReader):
            """Each child is given partitions the topic does not have: its reader raises."""

            def part(self, partitions):
                return WholeLogReader(self.settings, [p + 100 for p in partitions])

        with pytest.raises(
            RebuildChildFailed, match=r"the rebuild process for partitions \[1\d\d.*LogNotFound"
        ):
            await rebuild(
                settings,
                store,
                default_policy(),
                log_source=Gone(settings),
                processes=2,
                open_store=open_store,
            )
        assert store.active_generation() == live
        assert [g["generation"] for g in store.generations()] == before  # the attempt is gone
    finally:
        store.close()


async def test_children_given_another_store_than_the_rebuilds_fail_it(kafka_settings, tmp_path):
    """The children open the store their settings name: if that is not the store the rebuild
    created its generation in, they refuse (their rows would go elsewhere, and the parent switch
    to an empty generation; found by review)."""
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path / "named"})
    other = kafka_settings.model_copy(update={"data_dir": tmp_path / "given"})
    desk = Helpdesk(seed=4, customers=20, start=datetime(2026, 10, 20, tzinfo=UTC), days=10)
    events = list(desk.history(30))
    await project(settings, keyed(events), len(events))
    store = open_store(other)  # not the store of ``settings``
    try:
        store.migrate()
        with pytest.raises(RebuildChildFailed, match="is not the new rebuild generation"):
            await rebuild(
                settings,
                store,
                default_policy(),
                log_source=WholeLogReader(settings),
                processes=2,
                open_store=open_store,
            )
        assert store.generations() == []  # the attempt is dropped
    finally:
        store.close()


async def test_a_rebuild_reads_the_log_in_batches_of_its_own_size(kafka_settings, tmp_path):
    """A rebuild's batches are SLATRACK_REBUILD_BATCH_RECORDS records, fetch after fetch, not a
    worker's SLATRACK_CONSUMER_MAX_RECORDS: each batch tells the story of every ticket it touches."""
    settings = kafka_settings.model_copy(
        update={"data_dir": tmp_path, "consumer_max_records": 100, "rebuild_batch_records": 700}
    )
    events = list(Helpdesk(seed=5, customers=12, start=START, days=20).history(160))
    assert len(events) > 1400
    await produce(settings, keyed(events))
    sizes: list[int] = []
    seen: dict[int, list[int]] = {}

    async def handle(batch: ConsumedBatch) -> None:
        sizes.append(len(batch.valid) + batch.rejected)
        for item in batch.valid:
            seen.setdefault(item.partition, []).append(item.offset)
        for partition, (first, end) in batch.offsets.items():
            assert [o for o in seen[partition] if o >= first] == list(range(first, end))

    async with WholeLogReader(settings) as reader:
        await reader.read_to_end(handle)
    assert sum(sizes) == len(events)
    assert max(sizes) == 700 and all(size <= 700 for size in sizes)
    assert all(offsets == list(range(len(offsets))) for offsets in seen.values())  # each once, in order
