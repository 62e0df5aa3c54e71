"""Health tells the truth (issue 11, item 4), with `slatrack serve` as a user runs it against a
broker of its own that we freeze and kill.

Before: a frozen broker left /readyz at 200 and intake requests hanging; a killed one gave
~10,300 ERROR lines in 3 minutes; one SIGTERM while the broker was down did not stop the
process in 200 s."""

import os
import signal
import subprocess
import time

import httpx
import pytest

from services.kafka.embedded import EmbeddedBroker, free_port
from tests.integration.test_serve import SLATRACK
from tests.samples import sample

pytestmark = pytest.mark.broker


def wait_until(check, timeout: float, what: str, log) -> float:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"timed out waiting for {what}: {log.read_text()[-3000:]}"
        time.sleep(0.2)
    return time.monotonic() - began


def readyz(url: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2)
    except httpx.TransportError:
        return None


def ready_status(url: str) -> int | None:
    """/readyz's status, None while it does not answer (a probe that times out is retried)."""
    response = readyz(url)
    return None if response is None else response.status_code


def test_readyz_follows_the_broker_and_sigterm_always_stops_serve(tmp_path):
    broker = EmbeddedBroker()
    broker.start()
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")} | {
        "SLATRACK_KAFKA_BOOTSTRAP": broker.bootstrap,
        "SLATRACK_HTTP_PORT": str(http_port),
        "SLATRACK_DATA_DIR": str(tmp_path / "data"),
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SLATRACK_STOP_TIMEOUT_S": "5",
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen([str(SLATRACK), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready_status(url) == 200, 60, "ready", log)
        assert broker.pid is not None

        # Frozen: connections stay open, nothing answers.
        os.kill(broker.pid, signal.SIGSTOP)
        wait_until(lambda: ready_status(url) == 503, 15, "/readyz to notice the frozen broker", log)
        frozen = readyz(url)
        assert frozen is not None and f"the broker at {broker.bootstrap} has not answered" in frozen.text
        began = time.monotonic()
        answer = httpx.post(f"{url}/v1/events", json=sample("ticket.opened"), timeout=30)
        assert answer.status_code == 503 and answer.json()["error"] == "broker_unavailable"
        assert time.monotonic() - began < 3, "the intake held the client although the broker is known away"

        os.kill(broker.pid, signal.SIGCONT)
        wait_until(lambda: ready_status(url) == 200, 30, "/readyz to see the broker back", log)

        # Killed: the log says so, and not ten times a second.
        os.kill(broker.pid, signal.SIGKILL)
        wait_until(lambda: ready_status(url) == 503, 15, "/readyz to notice the dead broker", log)
        time.sleep(10)
        lines = log.read_text().splitlines()
        aiokafka = [line for line in lines if " aiokafka" in line]
        assert len(aiokafka) < 40, "\n".join(aiokafka[-40:])

        # One SIGTERM with the broker down ends serve within the stop timeout (and a margin).
        began = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert time.monotonic() - began < 20
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        broker.stop()
