"""`slatrack serve` with the embedded default (no SLATRACK_KAFKA_BOOTSTRAP), as `make run`
starts it: a taken port is refused before anything starts, a broker that dies stops
`serve`, and a restart brings back every ticket that was projected before the stop."""

import asyncio
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from services.config import Settings
from services.kafka.embedded import EmbeddedBroker, free_port
from services.store import SQLITE_FILE
from tests.kafka_helpers import produce
from tests.samples import sample
from tests.worker_helpers import SLATRACK, applied

pytestmark = pytest.mark.broker


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text()

    def broker(self) -> psutil.Process:
        (child,) = psutil.Process(self.process.pid).children()
        return child


def serve_env(data: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")}
    return env | {
        "SLATRACK_DATA_DIR": str(data),
        "SLATRACK_EMBEDDED_PORT": "0",
        "SLATRACK_HTTP_PORT": str(free_port()),
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
        **overrides,
    }


def start(data: Path, log: Path, **overrides: str) -> Served:
    env = serve_env(data, **overrides)
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SLATRACK), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(process, f"http://127.0.0.1:{env['SLATRACK_HTTP_PORT']}", log)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"serve exited: {served.text()}"
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve did not answer: {served.text()}"
        time.sleep(0.1)


def refused(data: Path, **overrides: str) -> subprocess.CompletedProcess:
    """A `serve` expected to refuse at once (killed if it does not)."""
    try:
        return subprocess.run(
            [str(SLATRACK), "serve"],
            env=serve_env(data, **overrides),
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"serve did not refuse; it ran: {exc.stdout!r} {exc.stderr!r}") from None


def only_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stdout + done.stderr).decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_kafka_already_on_the_embedded_port_is_not_adopted(tmp_path):
    """A developer's own broker (here: another embedded one) on the port: refuse, start nothing."""
    theirs = EmbeddedBroker()
    theirs.spawn()
    try:
        await theirs.wait_ready(Settings(topic_partitions=1))
        done = await asyncio.to_thread(refused, tmp_path / "data", SLATRACK_EMBEDDED_PORT=str(theirs.port))
    finally:
        theirs.stop()
    assert done.returncode == 2
    assert only_line(done) == (
        f"slatrack serve: the embedded broker's port 127.0.0.1:{theirs.port} is taken (Address already in "
        "use): another `slatrack serve` or a Kafka broker listens there. Stop it, set "
        "SLATRACK_EMBEDDED_PORT to a free port (0: any), or set "
        f"SLATRACK_KAFKA_BOOTSTRAP=127.0.0.1:{theirs.port} to use that broker"
    )
    assert not (tmp_path / "data" / SQLITE_FILE).exists()


def test_a_taken_http_port_is_refused_before_a_broker_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = refused(tmp_path / "data", SLATRACK_HTTP_PORT=str(port))
    assert done.returncode == 2
    assert only_line(done).startswith(
        f"slatrack serve: cannot listen on 127.0.0.1:{port} (Address already in use): another process "
    )
    assert not (tmp_path / "data").exists()  # neither a broker log nor read models


# Urgent tickets opened a minute ago (24x7 response clock of 1 h: its warning is 45 minutes
# away), a closed one and an invoice due in a month: no timer changes a view during the test.
AT = (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)).isoformat()
DUE = (datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)).isoformat()


def events() -> list[dict]:
    def ticket(event_type: str, event_id: str, customer: str, ticket: str, **fields) -> dict:
        return sample(event_type, event_id, customer_id=customer, ticket_id=ticket, occurred_at=AT, **fields)

    return [
        ticket("ticket.opened", "a1", "cust-a", "T-1", data={"priority": "urgent"}),
        ticket("ticket.responded", "a2", "cust-a", "T-1"),
        ticket("ticket.opened", "a3", "cust-a", "T-2", data={"priority": "urgent"}),
        ticket("ticket.opened", "b1", "cust-b", "T-1", data={"priority": "urgent"}),
        sample(
            "account.invoice_due",
            "b2",
            customer_id="cust-b",
            occurred_at=AT,
            data={"invoice_id": "INV-9", "due_at": DUE},
        ),
        ticket("ticket.opened", "c1", "cust-c", "T-7", data={"priority": "high"}),
        ticket("ticket.resolved", "c2", "cust-c", "T-7"),
        ticket("ticket.closed", "c3", "cust-c", "T-7"),
    ]


def post(served: Served, body: object) -> None:
    response = httpx.post(
        f"{served.url}/v1/events",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 202, response.text


def views(served: Served) -> dict:
    """Every ticket and customer view the API serves, with the instant each is as of."""
    listing = httpx.get(f"{served.url}/v1/tickets", params={"limit": 500}).json()
    for item in listing["items"]:
        del item["remaining_seconds"]  # from the request's now, which moves on between two listings
    seen: dict = {"list": listing}
    for item in listing["items"]:
        customer, ticket = item["view"]["customer_id"], item["view"]["ticket_id"]
        response = httpx.get(f"{served.url}/v1/tickets/{ticket}", params={"customer_id": customer})
        seen[customer, ticket] = (
            response.json(),
            response.headers["x-slatrack-evaluated-at"],
        )
    for customer in ("cust-a", "cust-b", "cust-c"):
        seen[customer] = httpx.get(f"{served.url}/v1/customers/{customer}").json()
    return seen


async def wait_applied(settings: Settings, offsets: int, served: Served) -> None:
    deadline = time.monotonic() + 60
    while applied(settings) < offsets:
        assert served.process.poll() is None and time.monotonic() < deadline, served.text()
        await asyncio.sleep(0.2)


async def test_a_restart_brings_back_every_projected_ticket(tmp_path):
    """...and then the broker dies: `serve` says so in one line and stops within seconds."""
    data = tmp_path / "data"
    store = Settings(data_dir=data)  # the read models `serve` writes, read directly
    first = start(data, tmp_path / "first.log")
    try:
        post(first, events())
        post(first, events()[0])  # a repeated copy: counted, not stored
        port = first.text().split("embedded broker ready on 127.0.0.1:", 1)[1].split()[0]
        rogue = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
        await produce(rogue, [(b"cust-b", b"{a rogue producer's message")])  # dead-lettered
        await wait_applied(store, 10, first)
        before = views(first)
    finally:
        first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(30) == 0
    assert len(before["list"]["items"]) == 4

    second = start(data, tmp_path / "second.log")
    try:
        text = second.text()
        assert (
            "embedded broker: restored 8 events of read-model generation 1 into ticket-events "
            "(3 partitions, 2 placeholders where the log held a rejected or repeated message)"
        ) in text
        assert "read models generation 1" in text
        assert views(second) == before
        # The worker goes on after the restored log: a new event is projected, in generation 1.
        post(second, sample("ticket.opened", "a4", customer_id="cust-a", ticket_id="T-3", occurred_at=AT))
        await wait_applied(store, 11, second)
        after = views(second)
        assert after.pop(("cust-a", "T-3"))[0]["ticket_id"] == "T-3"
        assert {k: v for k, v in after.items() if k not in ("list", "cust-a")} == {
            k: v for k, v in before.items() if k not in ("list", "cust-a")
        }
        assert "THE LOG ENDS BEFORE" not in second.text()
        # Last (one start of `serve` fewer): its broker dies under it.
        assert_stops_when_its_broker_dies(second, data)
    finally:
        if second.process.poll() is None:
            second.process.kill()


def assert_stops_when_its_broker_dies(served: Served, data: Path) -> None:
    served.broker().kill()
    killed = time.monotonic()
    code = served.process.wait(timeout=10)
    took = time.monotonic() - killed
    assert code == 1 and took < 5, (code, took)
    text = served.text()
    errors = [line for line in text.splitlines() if " ERROR services." in line]
    assert len(errors) == 1, errors
    assert errors[0].endswith(
        "ERROR services.serve: the embedded broker exited (killed by SIGKILL) while slatrack was running; "
        f"its log: {data / 'embedded-broker.log'}; stopping"
    )
    assert "Traceback" not in text
