"""``slatrack demo``: a simulated helpdesk feeding slatrack, so that there is something to see.

Two phases:

1. **History.** The simulator (:mod:`services.dev.simulator`) writes ``days`` of a
   desk's past: a few hundred customers, the priority mix real desks see,
   pending stretches, reopenings, after-hours urgent tickets, new installs,
   overdue and disputed invoices. It is published in one burst, so the worker
   reads it as a backlog and evaluates each ticket as of its customer's log
   time (docs/sla-semantics.md): the breaches it records are the ones the
   history holds, none taken back when a "late" answer arrives.
2. **Live.** From then on a new ticket opens every ``live_every`` seconds and
   its life goes on in real time: answers, pending stretches, some late enough
   to warn and breach while you watch. Outside business hours the new tickets
   are urgent (the ones an after-hours desk takes), whose clocks run 24x7, so
   something happens at any hour.

``slatrack demo --serve`` (what ``make demo`` runs) starts ``slatrack serve``
beside the feed, waits until it is ready, prints where to look, and stops both
at Ctrl-C; if ``serve`` dies, the feed stops and says why.
"""

import asyncio
import heapq
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict, Unpack

import httpx
import orjson
from aiokafka.errors import KafkaError

from events import Event, decode_event
from projections.policy import Policy
from services.config import Settings
from services.dev.simulator import Helpdesk
from services.kafka.client import ensure_topics
from services.kafka.embedded import EmbeddedBroker, EmbeddedBrokerError, PortTaken
from services.kafka.publisher import EventPublisher

log = logging.getLogger(__name__)

BURST = 1000  # events per pipelined send of the history
LIVE_CUSTOMERS = 50


class FeedStopped(RuntimeError):
    """The feed cannot go on (the broker does not acknowledge): one line says why."""


def demo_history(customers: int, tickets: int, days: int, seed: int, now: datetime) -> list[bytes]:
    """The demo's events, oldest first, as JSON lines (the part after ``now`` included)."""
    desk = Helpdesk(seed=seed, customers=customers, start=now - timedelta(days=days), days=days)
    events = sorted(desk.history(tickets), key=lambda e: (e["occurred_at"], e["event_id"]))
    return [orjson.dumps(e) for e in events]


def live_tickets(
    policy: Policy, seed: int, start: datetime, every: timedelta, first: int
) -> Iterator[tuple[datetime, dict]]:
    """New tickets from ``start``, one every ``every``, with their lives, in occurred_at order.

    Outside the policy's business hours each new ticket is urgent. Endless: the caller
    stops reading."""
    desk = Helpdesk(seed=seed + 1, customers=LIVE_CUSTOMERS, start=start, days=1, id_prefix="live")
    business = policy.calendar(policy.billing.after_hours_calendar)  # the desk's office hours
    pending: list[tuple[datetime, int, dict]] = []
    order = 0
    number = first
    opened = start
    while True:
        while not pending or pending[0][0] > opened:
            priority = None if business.is_open(opened) else "urgent"
            for document in desk.ticket(number, opened=opened, priority=priority):
                order += 1
                heapq.heappush(pending, (_instant(document), order, document))
            number += 1
            opened += every
        at, _, document = heapq.heappop(pending)
        yield at, document


def _instant(document: dict) -> datetime:
    return datetime.fromisoformat(document["occurred_at"].replace("Z", "+00:00"))


@dataclass
class Fed:
    history: int = 0
    live: int = 0


class Feed(TypedDict, total=False):
    """What ``slatrack demo`` simulates (see :func:`run_demo`)."""

    customers: int
    tickets: int
    days: int
    seed: int
    live_every: float


async def run_demo(
    settings: Settings,
    policy: Policy,
    *,
    customers: int = 300,
    tickets: int = 2000,
    days: int = 3,
    seed: int = 1,
    live: bool = True,
    live_every: float = 30.0,
    stop: asyncio.Event | None = None,
    before_live: Callable[[], Awaitable[None]] | None = None,
) -> Fed:
    """Publish the history at once, then (with ``live``) new tickets in real time until ``stop``."""
    stop = stop or asyncio.Event()
    now = datetime.now(UTC).replace(microsecond=0)
    events = [decode_event(line) for line in demo_history(customers, tickets, days, seed, now)]
    past = [event for event in events if event.occurred_at <= now]
    fed = Fed()
    async with EventPublisher(settings) as publisher:
        log.info("demo: publishing %d events of %d days of history at once", len(past), days)
        for start in range(0, len(past), BURST):
            if stop.is_set():
                return fed
            await _send(publisher, past[start : start + BURST])
            fed.history += len(past[start : start + BURST])
        log.info("demo: history sent")
        if before_live is not None:
            await before_live()
        if not live or stop.is_set():
            return fed
        # The history's own future (tickets still open) goes on in real time, beside new tickets.
        future = ((event.occurred_at, event) for event in events if event.occurred_at > now)
        new = (
            (at, decode_event(orjson.dumps(document)))
            for at, document in live_tickets(policy, seed, now, timedelta(seconds=live_every), first=tickets)
        )
        for at, event in heapq.merge(future, new, key=lambda item: item[0]):
            wait = (at - datetime.now(UTC)).total_seconds()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except TimeoutError:
                    pass
            if stop.is_set():
                break
            await _send(publisher, [event])
            fed.live += 1
            if fed.live % 100 == 0:
                log.info("demo: %d live events sent", fed.live)
    return fed


async def _send(publisher: EventPublisher, events: list[Event]) -> None:
    try:
        await publisher.publish(events)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise FeedStopped(f"the broker did not acknowledge the demo's events: {exc}") from None


def where_to_look(base: str, settings: Settings, explain_env: str = "", timeout: float = 5.0) -> str:
    """What to open once the history is in: the API's docs, a breach, the metrics, an audit."""
    lines = [
        "slatrack is running with the demo's history:",
        f"  API and its docs       {base}/docs",
        f"  breached tickets       {base}/v1/tickets?breached=true",
        f"  Prometheus metrics     {base}/metrics",
    ]
    try:
        readers = [t for t in settings.tokens if "reader" in t.roles]
        auth = {"Authorization": f"Bearer {readers[0].token.get_secret_value()}"} if readers else {}
        page = httpx.get(
            f"{base}/v1/tickets", params={"breached": "true", "limit": 1}, headers=auth, timeout=timeout
        )
        items = page.json()["items"] if page.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):
        items = []
    if items:
        view = items[0]["view"]
        lines.append(
            f"  why one breached       {explain_env}slatrack explain {view['ticket_id']} "
            f"--customer {view['customer_id']}"
        )
    lines.append("New tickets open every few seconds from now on; Ctrl-C stops the feed and the service.")
    return "\n".join(lines)


# -- slatrack demo --serve: the service and the feed, started and stopped together ----------

SERVE_READY_S = 600.0  # a first start: the store, joining the group, and projecting the history


class _Serve:
    """The ``slatrack serve`` the demo started: a process, and whether it is still there."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.died = asyncio.Event()

    async def start(self) -> None:
        # Its own session: a Ctrl-C in the terminal reaches the demo only, which stops serve in order.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.commands", "serve", env=self.env, start_new_session=True
        )
        asyncio.create_task(self._watch())  # noqa: RUF006 - ends with the process

    async def _watch(self) -> None:
        assert self.process is not None
        await self.process.wait()
        self.died.set()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 40)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def demo_with_serve(settings: Settings, policy: Policy, **feed: Unpack[Feed]) -> int:
    """Feed the history, start ``slatrack serve`` on it, print where to look, feed live; stop both
    at SIGINT or SIGTERM. Returns the exit status: 0 after a signal, 1 if serve or the feed failed.

    The history is in the log before the worker starts: it reads it as a backlog, as of the log's
    own time. (A worker already running would be caught up between two bursts of it, and evaluate
    the tickets of the history as of now before their answers are in the log.) So with the
    embedded default the demo runs the broker itself, and serve uses it as an external one, with
    read models of its own in SLATRACK_DATA_DIR/demo (a new log each time, so new read models).
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness poll
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    data_dir = settings.data_dir
    try:
        if settings.uses_embedded_broker:
            data_dir = settings.data_dir / "demo"
            data_dir.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(settings.embedded_port, log_path=data_dir / "embedded-broker.log")
            broker.spawn()  # its port checked first: a demo already running keeps its read models
            await broker.wait_ready(settings, 30)
            settings = broker.settings(settings)
            for old in data_dir.glob("slatrack.db*"):  # the demo's own read models, of the last demo's log
                old.unlink()
            # serve's read models are the demo's own SQLite file, whatever SLATRACK_DATABASE_URL says:
            # the log is new, and read models of another log must not meet it.
            env.pop("SLATRACK_DATABASE_URL", None)
            env |= {"SLATRACK_KAFKA_BOOTSTRAP": broker.bootstrap, "SLATRACK_DATA_DIR": str(data_dir)}
        else:
            await ensure_topics(settings)
    except (EmbeddedBrokerError, KafkaError, OSError, TimeoutError) as exc:
        log.error("demo: %s", exc)
        if broker is not None:
            broker.stop()
        return 2 if isinstance(exc, PortTaken) else 1
    serve = _Serve(env)
    base = f"http://{settings.http_host}:{settings.http_port}"

    status = 0

    async def start_serve() -> None:
        nonlocal status
        if stop.is_set():  # stopped while the history was sent: nothing to start
            return
        await serve.start()
        if await _ready(base, serve.died, stop):
            hint = f"SLATRACK_DATA_DIR={data_dir} " if broker is not None else ""
            print(await asyncio.to_thread(where_to_look, base, settings, hint), flush=True)
        elif not stop.is_set() and not serve.died.is_set():  # not ready in time
            status = 1
            stop.set()

    try:
        demo = run_demo(settings, policy, stop=stop, before_live=start_serve, **feed)
        feeding = asyncio.create_task(demo)
        ended = [feeding, asyncio.create_task(stop.wait()), asyncio.create_task(serve.died.wait())]
        await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if serve.died.is_set():
            assert serve.process is not None
            log.error("demo: slatrack serve exited (status %s); the feed stops", serve.process.returncode)
            status = 1
        try:
            await feeding
        except FeedStopped as exc:
            if not serve.died.is_set():
                log.error("demo: %s", exc)
                status = 1
    finally:
        await serve.stop()
        if broker is not None:
            broker.stop()
    log.info("demo: stopped")
    return status


async def _ready(base: str, died: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until serve answers /readyz (False if it died, we were stopped, or it took too long)."""
    deadline = time.monotonic() + SERVE_READY_S
    async with httpx.AsyncClient(timeout=2) as client:
        while not died.is_set() and not stop.is_set():
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                log.error("demo: slatrack serve is not ready after %.0f s", SERVE_READY_S)
                return False
            await asyncio.sleep(0.5)
    return False
