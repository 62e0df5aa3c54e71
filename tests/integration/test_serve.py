"""`slatrack serve` as a user runs it (what `make run` starts): its own embedded
broker, real HTTP, stopped by a signal with nothing left behind."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from services.config import Settings
from services.kafka.embedded import free_port
from tests.kafka_helpers import read_all
from tests.samples import sample

pytestmark = pytest.mark.broker

SLATRACK = Path(sys.executable).parent / "slatrack"


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    settings: Settings  # pointing at the broker it started
    log: Path

    def broker_process(self) -> psutil.Process:
        children = [c for c in psutil.Process(self.process.pid).children() if "tansu" in c.name()]
        assert len(children) == 1, children
        return children[0]


def start_serve(tmp_path: Path) -> Served:
    http_port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    env |= {
        "SLATRACK_HTTP_PORT": str(http_port),
        "SLATRACK_EMBEDDED_PORT": str(broker_port),
        "SLATRACK_DATA_DIR": str(tmp_path / "data"),
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SLATRACK), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"serve exited: {log.read_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve did not answer: {log.read_text()}"
        time.sleep(0.1)
    return Served(process, url, Settings(kafka_bootstrap=f"127.0.0.1:{broker_port}"), log)


def stop_serve(served: Served, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if served.process.poll() is None:
        served.process.send_signal(sig)
    return served.process.wait(timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    served = start_serve(tmp_path_factory.mktemp("serve"))
    yield served
    stop_serve(served)


def post(served: Served, body: object, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        f"{served.url}/v1/events",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
        **kwargs,
    )


async def logged_events(served: Served, expected: int) -> dict[str, tuple[bytes, bytes]]:
    records = await read_all(served.settings, served.settings.topic_events, expected)
    return {orjson.loads(r.value)["event_id"]: (r.key, r.value) for r in records}


def test_serve_logs_address_and_broker(served):
    text = served.log.read_text()
    assert f"slatrack listening on {served.url}" in text
    assert f"broker: embedded at {served.settings.bootstrap()} (memory only" in text


async def test_intake_round_trip(served):
    one = sample("ticket.opened", event_id="http-1", customer_id="cust-a", ticket_id="T-a")
    response = post(served, one)
    assert response.status_code == 202
    assert response.json() == {"accepted": ["http-1"]}

    many = [
        sample("ticket.opened", event_id="http-2", customer_id="cust-b", ticket_id="T-b"),
        sample("ticket.responded", event_id="http-3", customer_id="cust-b", ticket_id="T-b"),
        sample("account.invoice_due", event_id="http-4", customer_id="cust-c"),
    ]
    response = post(served, many)
    assert response.status_code == 202
    assert response.json() == {"accepted": ["http-2", "http-3", "http-4"]}

    logged = await logged_events(served, 4)
    assert sorted(logged) == ["http-1", "http-2", "http-3", "http-4"]
    for event in [one, *many]:
        key, value = logged[event["event_id"]]
        assert key == event["customer_id"].encode()
        assert value == orjson.dumps(event)  # the bytes sent, not a re-encoding


async def test_invalid_requests_send_nothing(served):
    good = sample("ticket.opened", event_id="never-1", customer_id="cust-x")
    bad = sample("ticket.opened", event_id="never-2", customer_id="cust-x", occurred_at="2026-10-30T15:30:00")
    response = post(served, [good, bad, {"type": "nope"}])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_events"
    assert body["detail"] == "2 of 3 events are invalid; nothing was sent"
    assert [(e["index"], e["event_id"], e["kind"]) for e in body["errors"]] == [
        (1, "never-2", "invalid_event"),
        (2, None, "unknown_type"),
    ]
    assert "occurred_at" in body["errors"][0]["detail"]

    assert post(served, b"{not json").json()["error"] == "invalid_json"
    assert post(served, []).status_code == 422
    too_many = [sample("ticket.reopened", event_id=f"m-{i}") for i in range(1001)]
    response = post(served, too_many)
    assert response.status_code == 422 and response.json()["error"] == "bad_batch"

    huge_event = sample("ticket.opened", event_id="never-3", data={"priority": "low", "pad": "x" * 70_000})
    response = post(served, [huge_event])
    assert response.status_code == 422
    assert response.json()["errors"][0]["kind"] == "too_large"

    over_a_mib = [
        sample("ticket.opened", event_id=f"never-big-{i}", data={"priority": "low", "pad": "y" * 60_000})
        for i in range(18)
    ]
    assert post(served, over_a_mib).status_code == 413

    # A positive control: once this one is in the log, the rejected ones would be too.
    assert post(served, sample("ticket.opened", event_id="control", customer_id="cust-x")).status_code == 202
    logged = await logged_events(served, 1)
    assert "control" in logged
    assert not [event_id for event_id in logged if event_id.startswith("never")]


def test_health_metrics_and_openapi(served):
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    post(served, sample("ticket.closed", event_id="metrics-1"))
    metrics = httpx.get(f"{served.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert any(line.startswith('slatrack_intake_requests_total{code="202"}') for line in lines)
    assert 'slatrack_events_rejected_total{reason="too_large"} 0.0' in lines
    spec = httpx.get(f"{served.url}/openapi.json").json()
    assert "Event" in spec["components"]["schemas"]
    assert "requestBody" in spec["paths"]["/v1/events"]["post"]


def test_the_consumer_dead_letters_what_bypasses_the_intake(served):
    """serve's consumer validates the log itself: a bad message produced directly goes to the DLQ."""
    import asyncio

    from tests.kafka_helpers import produce

    asyncio.run(produce(served.settings, [(b"cust-z", b"{bad json from a rogue producer")]))
    dead = asyncio.run(read_all(served.settings, served.settings.topic_dlq, 1, timeout=60))
    assert [r.value for r in dead] == [b"{bad json from a rogue producer"]
    deadline = time.monotonic() + 10
    while "slatrack_dlq_messages_total 1.0" not in httpx.get(f"{served.url}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_sigterm_stops_everything(tmp_path):
    served = start_serve(tmp_path)
    broker = served.broker_process()
    assert stop_serve(served, signal.SIGTERM) == 0
    broker.wait(timeout=5)
    assert not broker.is_running()
    text = served.log.read_text()
    assert "left consumer group" in text and "embedded broker stopped" in text


def test_sigint_stops_everything(tmp_path):
    served = start_serve(tmp_path)
    broker = served.broker_process()
    assert stop_serve(served, signal.SIGINT) == 0
    broker.wait(timeout=5)
    assert not broker.is_running()


def test_broker_dies_with_a_killed_serve(tmp_path):
    served = start_serve(tmp_path)
    broker = served.broker_process()
    stop_serve(served, signal.SIGKILL)
    broker.wait(timeout=10)  # the kernel's parent-death signal
    assert not broker.is_running()
