"""``slatrack demo``: a simulated helpdesk feeding slatrack, so that there is something to see.

Two phases:

1. **History.** The simulator (:mod:`services.simulator`) writes ``days`` of a
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
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from aiokafka.errors import KafkaError

from events import Event, decode_event
from projections.policy import Policy
from services.config import Settings
from services.publisher import EventPublisher
from services.simulator import Helpdesk

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
    history_sent: asyncio.Event | None = None,
) -> Fed:
    """Publish the history at once, then (with ``live``) new tickets in real time until ``stop``."""
    stop = stop or asyncio.Event()
    now = datetime.now(UTC).replace(microsecond=0)
    lines = demo_history(customers, tickets, days, seed, now)
    past = [event for line in lines if (event := decode_event(line)).occurred_at <= now]
    fed = Fed()
    async with EventPublisher(settings) as publisher:
        log.info("demo: publishing %d events of %d days of history at once", len(past), days)
        for start in range(0, len(past), BURST):
            await _send(publisher, past[start : start + BURST])
            fed.history += len(past[start : start + BURST])
        log.info("demo: history sent")
        if history_sent is not None:
            history_sent.set()
        if not live:
            return fed
        # The history's own future (tickets still open) goes on in real time, beside new tickets.
        future = (
            (event.occurred_at, orjson.loads(line))
            for line in lines
            if (event := decode_event(line)).occurred_at > now
        )
        new = live_tickets(policy, seed, now, timedelta(seconds=live_every), first=tickets)
        for at, document in heapq.merge(future, new, key=lambda item: item[0]):
            wait = (at - datetime.now(UTC)).total_seconds()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except TimeoutError:
                    pass
            if stop.is_set():
                break
            await _send(publisher, [decode_event(orjson.dumps(document))])
            fed.live += 1
            if fed.live % 100 == 0:
                log.info("demo: %d live events sent", fed.live)
    return fed


async def _send(publisher: EventPublisher, events: list[Event]) -> None:
    try:
        await publisher.publish(events)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise FeedStopped(f"the broker did not acknowledge the demo's events: {exc}") from None


def where_to_look(base: str, timeout: float = 5.0) -> str:
    """What to open once the history is in: the API's docs, a breach, the metrics, an audit."""
    lines = [
        "slatrack is running with the demo's history:",
        f"  API and its docs       {base}/docs",
        f"  breached tickets       {base}/v1/tickets?breached=true",
        f"  Prometheus metrics     {base}/metrics",
    ]
    try:
        page = httpx.get(f"{base}/v1/tickets", params={"breached": "true", "limit": 1}, timeout=timeout)
        items = page.json()["items"] if page.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError):
        items = []
    if items:
        view = items[0]["view"]
        lines.append(
            f"  why one breached       slatrack explain {view['ticket_id']} --customer {view['customer_id']}"
        )
    lines.append("New tickets open every few seconds from now on; Ctrl-C stops the feed and the service.")
    return "\n".join(lines)


# -- slatrack demo --serve: the service and the feed, started and stopped together ----------

SERVE_READY_S = 120.0  # a first start: the broker, the store, joining the group
CATCH_UP_S = 300.0  # how long to wait for the worker to read the history before pointing at it


async def demo_with_serve(settings: Settings, policy: Policy, **feed: object) -> int:
    """Start ``slatrack serve``, feed it, print where to look; stop both at SIGINT or SIGTERM.

    Returns the exit status: 0 after a signal, 1 if ``serve`` or the feed failed.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness poll
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    base = f"http://{settings.http_host}:{settings.http_port}"
    # Its own session: a Ctrl-C in the terminal reaches us only, and we stop serve in order.
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", start_new_session=True
    )
    died = asyncio.create_task(serve.wait())
    status = 0
    try:
        if not await _ready(base, died, stop):
            return _serve_died(serve) if died.done() else 0
        history_sent = asyncio.Event()
        feeding = asyncio.create_task(
            run_demo(settings, policy, stop=stop, history_sent=history_sent, **feed)  # type: ignore[arg-type]
        )
        pointing = asyncio.create_task(_point_when_caught_up(base, history_sent, stop))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([died, feeding, stopped], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        pointing.cancel()
        if died.done():
            status = _serve_died(serve)
        try:
            await feeding
        except FeedStopped as exc:
            if not died.done():
                log.error("demo: %s", exc)
                status = 1
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(died, 40)
            except TimeoutError:
                serve.kill()
                await died
    log.info("demo: stopped")
    return status


def _serve_died(serve: asyncio.subprocess.Process) -> int:
    log.error("demo: slatrack serve exited (status %s); the feed stops", serve.returncode)
    return 1


async def _ready(base: str, died: asyncio.Task, stop: asyncio.Event) -> bool:
    """Wait until serve answers /readyz (False if it died or we were stopped first)."""
    deadline = time.monotonic() + SERVE_READY_S
    async with httpx.AsyncClient(timeout=2) as client:
        while not died.done() and not stop.is_set():
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


async def _point_when_caught_up(base: str, history_sent: asyncio.Event, stop: asyncio.Event) -> None:
    """Once the worker has read the history (/readyz again), print where to look."""
    await history_sent.wait()
    await asyncio.sleep(2)  # let the worker see the new backlog before asking whether it is ready
    deadline = time.monotonic() + CATCH_UP_S
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
    if not stop.is_set():
        print(await asyncio.to_thread(where_to_look, base), flush=True)
