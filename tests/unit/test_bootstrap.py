"""The typed bootstrap (issue 12): one place makes a process's services from the settings
(services.bootstrap.wire), the policy is never None, and the HTTP app reads a typed object
(services.api.state) instead of loose attributes of app.state."""

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from projections.policy import default_policy, load_policy
from services.api.app import create_app
from services.api.state import ApiState, api_state, read_models, services
from services.bootstrap import Services, configured_policy, policy_from, wire
from services.config import Settings
from services.kafka.client import BrokerWatch
from services.kafka.consumer import ValidatingConsumer
from services.kafka.publisher import EventPublisher
from services.store.sqlite import SqliteStore
from services.worker.projector import Projector
from services.worker.stages import TimedStore

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "projections" / "default_policy.toml"


def settings(tmp_path: Path, **values) -> Settings:
    return Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, **values)


def test_the_policy_is_the_configured_file_or_the_packaged_one(tmp_path):
    assert configured_policy(settings(tmp_path)) is default_policy()
    custom = tmp_path / "policy.toml"
    custom.write_text(POLICY.read_text().replace('version = "', 'version = "custom-', 1))
    assert configured_policy(settings(tmp_path, policy_file=custom)) == load_policy(custom)
    assert policy_from(None) is default_policy() and policy_from(custom) == load_policy(custom)


def test_the_packaged_default_is_taken_in_one_place():
    """No `x if policy is not None else default_policy()` anywhere: the policy is never None."""
    takers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "services").rglob("*.py")
        if re.search(r"\bdefault_policy\(\)", path.read_text())
    )
    # metrics: the histogram's buckets before serve installs the configured policy's.
    assert takers == ["services/bootstrap.py", "services/metrics.py"]


async def test_wire_makes_a_worker_s_services(tmp_path):
    store = SqliteStore(tmp_path / "slatrack.db")
    try:
        wired = wire(settings(tmp_path), store, worker=True)
        assert wired.policy is default_policy() and wired.store is store
        assert isinstance(wired.publisher, EventPublisher) and isinstance(wired.broker, BrokerWatch)
        assert wired.worker is not None
        assert isinstance(wired.worker.projector, Projector)
        timed = wired.worker.projector.store  # the store, its calls timed per batch (services.worker.stages)
        assert isinstance(timed, TimedStore) and timed._store is store
        assert isinstance(wired.worker.consumer, ValidatingConsumer)
        assert wired.worker.consumer.handler is wired.worker.projector
        assert wired.lag == wired.worker.consumer.lag and wired.problems == wired.worker.consumer.problems

        api_only = wire(settings(tmp_path), store, worker=False, policy=wired.policy)
        assert api_only.worker is None and api_only.lag is None and api_only.problems is None
        await wired.worker.consumer.consumer.stop()  # made, never started: closed all the same
    finally:
        store.close()


async def test_the_app_reads_typed_services(tmp_path):
    store = SqliteStore(tmp_path / "slatrack.db")
    try:
        config = settings(tmp_path)
        wired = Services(config, default_policy(), EventPublisher(config), store)
        app = create_app(wired)
        assert services(app) is wired and read_models(app) is store
        state = api_state(app)
        assert isinstance(state, ApiState) and not state.worker_assigned and state.rebuild.status == "idle"
        assert state.auth.open  # no token configured

        intake_only = create_app(Services(config, default_policy(), EventPublisher(config)))
        assert not any(getattr(r, "path", "").startswith("/v1/tickets") for r in intake_only.routes)
        with pytest.raises(RuntimeError, match="no read models"):
            read_models(intake_only)
    finally:
        store.close()


def test_an_app_not_made_by_create_app_is_refused():
    with pytest.raises(TypeError, match="holds Services"):
        services(FastAPI())
    with pytest.raises(TypeError, match="holds ApiState"):
        api_state(FastAPI())
