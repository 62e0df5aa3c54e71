"""``slatrack demo``: a simulated helpdesk publishing realistic traffic.

The simulator (:mod:`services.simulator`) writes a history that starts
``days`` ago: a few hundred customers, the priority mix real desks see,
responses, pending stretches, resolutions and reopenings, after-hours urgent
tickets with fault reviews, new installs with work logs, overdue and disputed
invoices. Events are published in ``occurred_at`` order while a simulated
clock runs ``speedup`` times faster than the real one, until it reaches the
present; from then on events are published when their time comes. So the
read models fill with days of history in minutes, and then clocks run, warn
and breach live.

While the history is compressed its events arrive late: a worker that is
caught up evaluates as of now, so a ticket opened two simulated days ago
shows breached until its answer (a few real seconds later) arrives and the
breach is revoked (``sla.breach_revoked``, and
``slatrack_sla_breach_revocations_total``). That is what a real late event
does; once the demo is live, breaches are the real ones.
"""

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import orjson

from events import decode_event
from services.config import Settings
from services.publisher import EventPublisher
from services.simulator import Helpdesk

log = logging.getLogger(__name__)


def demo_history(customers: int, tickets: int, days: int, seed: int, now: datetime) -> list[bytes]:
    """The demo's events, oldest first, as JSON lines."""
    desk = Helpdesk(seed=seed, customers=customers, start=now - timedelta(days=days), days=days)
    events = sorted(desk.history(tickets), key=lambda e: (e["occurred_at"], e["event_id"]))
    return [orjson.dumps(e) for e in events]


async def run_demo(
    settings: Settings,
    *,
    customers: int = 300,
    tickets: int = 2000,
    days: int = 3,
    speedup: float = 1440.0,
    rate: float = 500.0,
    seed: int = 1,
    live: bool = True,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish the demo history; return how many events were sent.

    With ``live`` the events after the present are sent when their time comes
    (the demo goes on for days unless stopped); without, it stops at the present.
    """
    stop = stop or asyncio.Event()
    real_start = time.monotonic()
    now = datetime.now(UTC).replace(microsecond=0)
    simulated_start = now - timedelta(days=days)
    lines = demo_history(customers, tickets, days, seed, now)
    log.info("demo: %d events from %s, %gx faster until now, then live", len(lines), simulated_start, speedup)
    sent = 0
    async with EventPublisher(settings) as publisher:
        for line in lines:
            if stop.is_set():
                break
            event = decode_event(line)
            if not live and event.occurred_at > now:
                break
            wait = _until(event.occurred_at, simulated_start, now, real_start, speedup)
            # Never faster than ``rate`` events a second.
            wait = max(wait, sent / rate - (time.monotonic() - real_start))
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    break
                except TimeoutError:
                    pass
            await publisher.publish([event])
            sent += 1
            if sent % 1000 == 0:
                log.info("demo: %d events sent (simulated time %s)", sent, event.occurred_at)
    return sent


def _until(
    at: datetime, simulated_start: datetime, now: datetime, real_start: float, speedup: float
) -> float:
    """Real seconds to wait before publishing an event that occurred ``at``."""
    elapsed = time.monotonic() - real_start
    history = (now - simulated_start).total_seconds()
    if at <= now:  # history: compressed
        return (at - simulated_start).total_seconds() / speedup - elapsed
    # The future: real time, once the history is through.
    return history / speedup + (at - now).total_seconds() - elapsed
