"""The signal outbox relay: signals written with the read models go to Kafka.

Signals are recorded in the store in the same transaction as the rows that
assert them, then sent from here and marked sent. Each worker relays the
signals of the partitions it holds, so with several workers on one database
each signal has one sender, and a customer's signals go out in order. A
crash between sending and marking (or a rebalance in between) sends a signal
twice, with the same id: consumers deduplicate on ``signal_id``. Nothing is
ever lost.

What is recorded is a function of the log; what is sent adds one fact of its
own, ``late_by_seconds``: how long after its ``at`` the signal left, so that a
pager can skip a week-old breach found by a worker catching up (docs/signals.md).
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

import orjson

from services import metrics
from services.worker.ports import Signal, SignalOutbox, SignalSender

log = logging.getLogger(__name__)

BATCH = 500
IDLE_S = 0.5


Partitions = Callable[[], Sequence[int]]


async def relay_signals(
    store: SignalOutbox,
    publisher: SignalSender,
    stop: asyncio.Event,
    partitions: Partitions | None = None,
) -> None:
    """Relay until ``stop``; ``partitions``: those whose signals are ours (None: every signal)."""
    while not stop.is_set():
        try:
            sent = await relay_once(store, publisher, None if partitions is None else partitions())
        except Exception:
            log.exception("signal relay failed; trying again in 1 s")
            sent = 0
            await asyncio.sleep(1)
        if sent < BATCH:
            try:
                await asyncio.wait_for(stop.wait(), IDLE_S)
            except TimeoutError:
                pass


async def relay_once(
    store: SignalOutbox, publisher: SignalSender, partitions: Sequence[int] | None = None
) -> int:
    if partitions is not None and not partitions:
        return 0  # no partition held (yet): nothing is ours to send
    pending = await asyncio.to_thread(store.pending_signals, BATCH, partitions)
    if not pending:
        return 0
    now = time.time()
    await publisher.publish_signals([as_sent(signal, now) for signal in pending])
    await asyncio.to_thread(store.mark_signals_sent, [s.signal_id for s in pending])
    for signal in pending:
        metrics.SIGNALS_SENT.labels(type=orjson.loads(signal.body)["type"]).inc()
    return len(pending)


def as_sent(signal: Signal, now: float) -> Signal:
    """The signal as it goes out: its recorded body and ``late_by_seconds`` (whole seconds, >= 0)."""
    body = orjson.loads(signal.body)
    body["late_by_seconds"] = max(0, int(now - datetime.fromisoformat(body["at"]).timestamp()))
    return replace(signal, body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
