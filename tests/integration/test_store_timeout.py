"""A frozen PostgreSQL (SIGSTOP: it accepts connections, answers nothing) makes the API answer a
quick 503, not hang. On a private cluster of this test's own (initdb into a temporary directory,
a free port), never the shared server."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import SecretStr

from services.kafka.embedded import free_port
from services.worker import gauges
from tests.integration.live_api import LiveApi, auth, fresh_settings

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

LIMIT_S = 1.0
READER = auth("reader")


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def private_cluster() -> Iterator[tuple[str, Path]]:
    """The URL and data directory of a PostgreSQL cluster of its own, stopped and removed afterwards."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("initdb and pg_ctl are needed for a private PostgreSQL cluster")
    root = Path(tempfile.mkdtemp(prefix="slatrack-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data
    finally:
        thaw(data)
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def server_processes(data: Path) -> list[psutil.Process]:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return []
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster, *postmaster.children()]


def freeze(data: Path) -> None:
    for process in server_processes(data):
        process.send_signal(signal.SIGSTOP)


def thaw(data: Path) -> None:
    for process in server_processes(data):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGCONT)


def timed_get(client: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(path, headers=READER, timeout=8)  # Prometheus' scrape gives up about then
    return response, time.monotonic() - started


def test_a_frozen_postgresql_is_a_quick_503_and_metrics_still_answer(kafka_bootstrap, tmp_path):
    with private_cluster() as (url, data):
        settings = fresh_settings(
            kafka_bootstrap, database_url=SecretStr(url), data_dir=tmp_path, api_store_timeout_s=LIMIT_S
        )
        api = LiveApi(settings, worker=False)
        try:
            generation = api.store.create_generation("test")
            api.store.activate_generation(generation)
            # /metrics counts this process's open clocks from the store, as a worker's does.
            gauges.WORKER.attach(api.store, lambda: (generation, (0,)), lambda: {0: 0})
            assert api.client.get("/v1/tickets", headers=READER).status_code == 200
            assert "slatrack_sla_clocks{" in api.client.get("/metrics").text

            freeze(data)
            for _ in range(2):  # the connection cut by the first; the second cannot even connect
                response, elapsed = timed_get(api.client, "/v1/tickets")
                assert response.status_code == 503, response.text
                assert response.json() == {
                    "error": "store_timeout",
                    "detail": f"the read models did not answer within {LIMIT_S:g} s "
                    "(SLATRACK_API_STORE_TIMEOUT_S); retry",
                }
                assert elapsed < LIMIT_S + 3
            response, elapsed = timed_get(api.client, "/metrics")
            assert response.status_code == 200 and elapsed < LIMIT_S + 3
            assert (
                "slatrack_sla_clocks{" not in response.text
                and "slatrack_intake_requests_total" in response.text
            )

            thaw(data)
            deadline = time.monotonic() + 15
            while api.client.get("/v1/tickets", headers=READER).status_code != 200:
                assert time.monotonic() < deadline, "the API did not recover once PostgreSQL answered"
                time.sleep(0.2)
        finally:
            thaw(data)
            gauges.WORKER.detach()
            api.close()
