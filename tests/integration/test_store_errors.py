"""The stores translate their drivers' errors once (issue 12): an outage (a database locked past the
busy timeout, a PostgreSQL server that stopped) is StoreUnavailable, and the API answers 503; a bug
(a bad statement) propagates as the driver raised it, and the API answers 500, not a 503 that would
pass it off as the weather. Above services.store, only slatrack's own exceptions are caught."""

import asyncio
import contextlib
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest

from projections.policy import default_policy
from services.api.app import create_app
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from services.store import sql
from services.store.postgres import PostgresStore
from services.store.sqlite import SqliteStore
from services.worker.ports import BatchWrite, ReadModelStore, StoreUnavailable
from tests.integration.test_store_timeout import _as_postgres, private_cluster

# Every query the API answers from the store, and the probe.
QUERIES = ("/v1/tickets", "/v1/tickets/T-1", "/v1/customers/C-1", "/v1/customers/C-1/billing?month=2026-11")


@contextlib.asynccontextmanager
async def api_over(store: ReadModelStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ``store`` (no broker needed: nothing here publishes)."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    app = create_app(Services(settings, default_policy(), EventPublisher(settings), store))
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def stop(data: Path) -> None:
    stopping = ["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]
    subprocess.run(_as_postgres(stopping), check=True, capture_output=True)


S = TypeVar("S", bound=ReadModelStore)


def active(store: S) -> S:
    store.migrate()
    store.activate_generation(store.create_generation("test"))
    return store


async def test_a_bad_statement_is_a_500_not_a_503(any_store, monkeypatch, tmp_path):
    active(any_store)
    monkeypatch.setattr(sql, "ACTIVE", "SELECT generation FROM no_such_table WHERE id = 1")
    with pytest.raises((sqlite3.Error, psycopg.Error)) as raised:
        any_store.active_generation()
    assert not isinstance(raised.value, StoreUnavailable)  # as the driver raised it: a bug
    async with api_over(any_store, tmp_path) as client:
        for path in QUERIES:
            response = await client.get(path)
            assert response.status_code == 500, (path, response.text)
            assert response.json()["error"] == "internal_error"
        assert (await client.get("/readyz")).status_code == 500


async def test_a_sqlite_database_locked_past_the_busy_timeout_is_a_503(tmp_path, monkeypatch):
    path = tmp_path / "slatrack.db"
    store = active(SqliteStore(path))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        # Another process holds the database and does not let go; the store's connection gives
        # up after its busy timeout (0.2 s here, not 30).
        store._conn.close()
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        store._conn = sqlite3.connect(path, timeout=0.2, isolation_level=None, check_same_thread=False)
        with pytest.raises(StoreUnavailable, match="SQLite: database is locked"):
            store.active_generation()
        monkeypatch.setattr("services.store.sqlite.BUSY_TIMEOUT_S", 0.2)
        with pytest.raises(StoreUnavailable, match="SQLite: database is locked"):
            SqliteStore(path)  # opening it meanwhile, too
        async with api_over(store, tmp_path) as client:
            await assert_unavailable(client)

            holder.execute("ROLLBACK")
            holder.close()
            assert (await client.get("/v1/tickets")).status_code == 200
    finally:
        holder.close()
        store.close()


async def assert_unavailable(client: httpx.AsyncClient) -> None:
    """Every query is a 503 store_unavailable, and /readyz says why."""
    for query in QUERIES:
        response = await client.get(query)
        assert response.status_code == 503, (query, response.text)
        assert response.json()["error"] == "store_unavailable"
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert "the read models cannot be reached (StoreUnavailable)" in response.json()["reasons"]


@pytest.mark.postgres
async def test_a_stopped_postgresql_is_a_503(tmp_path):
    """On a private cluster of the test's own (never the shared server)."""
    with private_cluster() as (url, data):
        store = active(PostgresStore(url))
        try:
            async with api_over(store, tmp_path) as client:
                assert (await client.get("/v1/tickets")).status_code == 200
                await asyncio.to_thread(stop, data)
                await assert_unavailable(client)
            with pytest.raises(StoreUnavailable, match="PostgreSQL"):
                store.active_generation()
        finally:
            store.close()


@pytest.mark.postgres
def test_a_read_only_server_is_store_unavailable():
    """A server that went read-only (a primary demoted in a switchover, a standby behind the
    address; here the session's default) raises ReadOnlySqlTransaction, which psycopg makes an
    InternalError: still an outage (StoreUnavailable, retried), not a bug (a halt, a 500)."""
    with private_cluster() as (url, _data):
        store = PostgresStore(url)
        try:
            store.migrate()
            generation = store.create_generation("test")
            store.activate_generation(generation)
            assert store._conn is not None
            store._conn.execute("SET default_transaction_read_only = on")
            with pytest.raises(StoreUnavailable, match="read-only"):
                store.commit_batch(generation, BatchWrite("ticket-events", {0: (0, 1)}))
        finally:
            store.close()
