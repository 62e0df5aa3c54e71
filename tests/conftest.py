"""Shared fixtures: the broker (one embedded broker for the whole session) and PostgreSQL.

In CI (CI=true) a test that needs the broker or PostgreSQL fails when they are
missing; elsewhere it is skipped with a message that says how to provide them.
"""

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from services.config import Settings
from services.kafka.client import ensure_topics, topic_specs

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

# aiokafka logs errors every 100 ms while a broker is down; tests that stop
# brokers on purpose would drown the output.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def unavailable(what: str, how: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI: {how}")
    pytest.skip(f"{what} not available: {how}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running broker: SLATRACK_TEST_KAFKA_BOOTSTRAP if set, else one embedded broker per session."""
    external = os.environ.get("SLATRACK_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from services.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError

    broker = EmbeddedBroker()
    try:
        broker.start()
    except EmbeddedBrokerError as exc:
        unavailable("the embedded broker", f"{exc} (pip install -e '.[test]')")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str) -> AsyncIterator[Settings]:
    """Settings pointed at the session broker, with topics and a group of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_events=f"ticket-events-{suffix}",
        topic_dlq=f"ticket-events-{suffix}.dlq",
        topic_signals=f"sla-signals-{suffix}",
        topic_policies=f"policy-versions-{suffix}",
        kafka_group_id=f"slatrack-{suffix}",
        kafka_session_timeout_ms=6000,
    )
    await ensure_topics(settings, topic_specs(settings))
    yield settings


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = os.environ.get("SLATRACK_TEST_DATABASE_URL", DEFAULT_TEST_DSN)
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        unavailable(
            "PostgreSQL",
            f"cannot connect to {dsn} ({exc}); start PostgreSQL or set SLATRACK_TEST_DATABASE_URL",
        )
    return dsn


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request, tmp_path):
    """A fresh read-model store of each kind: SQLite, and a PostgreSQL database of its own."""
    from tests.feed import a_store

    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    with a_store(request.param, tmp_path, dsn) as store:
        yield store


@pytest.fixture
def postgres_settings(kafka_settings, postgres_dsn, tmp_path):
    """Broker settings of the test with a PostgreSQL database of their own (dropped afterwards)."""
    from tests.worker_helpers import postgres_database

    with postgres_database(kafka_settings, postgres_dsn, tmp_path) as settings:
        yield settings
