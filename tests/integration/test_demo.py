"""`make demo` shows what really happens (issue 11, item 7).

Before: the compressed history trickled in and was evaluated against the wall clock, so 806
of 1,035 demo breaches were revoked; Ctrl-C left the feed printing connection errors for 45 s
and ending in a traceback."""

import os
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import httpx
import orjson
import psutil
import pytest

from events import decode_event
from projections.policy import default_policy
from projections.story import story_of_log
from projections.timeline import Recorded
from services.dev.demo import live_tickets, run_demo
from services.kafka.embedded import free_port
from services.store import open_store
from services.worker.histories import seq_of
from services.worker.projector import Projector
from tests.integration.test_projector import project
from tests.integration.test_serve import SLATRACK
from tests.kafka_helpers import read_all

pytestmark = pytest.mark.broker


async def test_the_history_gives_only_the_breaches_its_story_holds(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    fed = await run_demo(settings, default_policy(), customers=40, tickets=300, days=2, live=False)
    records = await read_all(settings, settings.topic_events, fed.history)
    now = datetime.now(UTC).replace(microsecond=0)
    await project(settings, [], fed.history, clock=lambda: now)

    store = open_store(settings)
    try:
        # Caught up, the worker's timers bring every ticket to now, as the story does at its end.
        timers = Projector(store, default_policy(), settings.topic_events, clock=lambda: now)
        await timers.open()
        await timers.start_offsets(set(range(settings.topic_partitions)))
        await timers.tick()
        sent = Counter(orjson.loads(s.body)["type"] for s in store.pending_signals(limit=100_000))
    finally:
        store.close()
    log = [Recorded(seq_of(r.partition, r.offset), decode_event(r.value)) for r in records]
    story = Counter(s["type"] for s in story_of_log(log, default_policy(), now).signals)
    assert sent["sla.breached"] > 10  # a demo with something to show
    assert sent == story  # what the worker says is what the log holds, no more
    assert sent["sla.breach_revoked"] <= sent["sla.breached"] // 20


def test_the_live_phase_has_something_at_any_hour():
    policy = default_policy()
    office = policy.calendar(policy.billing.after_hours_calendar)
    night = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 22:00 in New York
    assert not office.is_open(night)
    opened = []
    for _, document in live_tickets(policy, 1, night, every=timedelta(minutes=1), first=0):
        if document["type"] == "ticket.opened":
            opened.append(document)
        if len(opened) == 20:
            break
    assert all(d["data"]["priority"] == "urgent" for d in opened)  # clocks that run 24x7


def test_demo_serve_stops_at_ctrl_c_and_when_serve_dies(tmp_path):
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATRACK_")} | {
        "SLATRACK_HTTP_PORT": str(http_port),
        "SLATRACK_EMBEDDED_PORT": str(free_port()),
        "SLATRACK_DATA_DIR": str(tmp_path / "data"),
        "SLATRACK_KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    args = [str(SLATRACK), "demo", "--serve", "--tickets", "200", "--days", "1", "--live-every", "1"]

    def start(name: str) -> tuple[subprocess.Popen, BinaryIO]:
        out = open(tmp_path / f"{name}.log", "wb")
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT), out

    def wait_for_pointer(process, name: str) -> str:
        deadline = time.monotonic() + 90
        while "why one breached" not in (text := (tmp_path / f"{name}.log").read_text()):
            assert process.poll() is None and time.monotonic() < deadline, text[-3000:]
            time.sleep(0.5)
        return text

    demo, out = start("ctrl-c")
    try:
        text = wait_for_pointer(demo, "ctrl-c")
        assert f"http://127.0.0.1:{http_port}/docs" in text
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200
        # The worker read the history as a backlog: its breaches stand (before: 806 of 1,035 revoked).
        exposition = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        breaches = sum(
            float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines()
            if line.startswith("slatrack_sla_breaches_total{")
        )
        revoked = next(
            float(line.rsplit(" ", 1)[1])
            for line in exposition.splitlines()
            if line.startswith("slatrack_sla_breach_revocations_total ")
        )
        assert breaches > 0 and revoked <= breaches / 20, (breaches, revoked)
        children = psutil.Process(demo.pid).children(recursive=True)  # serve and its broker
        assert len(children) == 2
        began = time.monotonic()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0
        assert time.monotonic() - began < 20
        text = (tmp_path / "ctrl-c.log").read_text()
        assert "Traceback" not in text and "demo: stopped" in text
        assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if demo.poll() is None:
            demo.kill()
        out.close()

    demo, out = start("serve-dies")
    try:
        wait_for_pointer(demo, "serve-dies")
        (serve,) = [c for c in psutil.Process(demo.pid).children() if "serve" in " ".join(c.cmdline())]
        serve.kill()
        assert demo.wait(30) == 1
        text = (tmp_path / "serve-dies.log").read_text()
        assert "demo: slatrack serve exited (status -9); the feed stops" in text
        assert "Traceback" not in text
    finally:
        if demo.poll() is None:
            demo.kill()
        out.close()
