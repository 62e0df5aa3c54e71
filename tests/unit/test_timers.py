"""The scheduler (services.worker.timers) alone, driving a stand-in for the projector, and once
with the projector against a SQLite store: it sleeps until the next change, wakes at a commit,
runs what is due, follows a switch, and returns as soon as it is told to stop."""

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import orjson

from events import decode_event
from projections.policy import default_policy
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.ports import GenerationChanged
from services.worker.projector import Projector
from services.worker.timers import run_timers
from tests.feed import event

PROMPTLY_S = 0.5


class Stand:
    """What the scheduler drives, recording what it was asked."""

    def __init__(self, next_change: float | None = None, tick_raises: list[Exception] | None = None):
        self.committed = asyncio.Condition()
        self.next = next_change  # epoch seconds
        self.tick_raises = tick_raises or []
        self.ticks = 0
        self.followed = 0
        self.noticed = 0

    async def notice_switch(self) -> None:
        self.noticed += 1

    async def next_change(self) -> int | None:
        return None if self.next is None else int(self.next)

    async def tick(self) -> int:
        self.ticks += 1
        if self.tick_raises:
            raise self.tick_raises.pop(0)
        self.next = time.time() + 3600  # done: the next change is far
        return 1

    async def follow_switch(self) -> None:
        self.followed += 1

    async def commit(self) -> None:
        async with self.committed:
            self.committed.notify_all()


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - a counter, not an event
            await asyncio.sleep(0.01)


async def stop_it(task: asyncio.Task, stop: asyncio.Event, stand: Stand) -> None:
    """Set ``stop`` and wake the scheduler as a commit would (tests of other things than stopping)."""
    stop.set()
    await stand.commit()
    await asyncio.wait_for(task, 10)


async def stopped_promptly(task: asyncio.Task, stop: asyncio.Event) -> float:
    """Set ``stop``; how long the scheduler took to return (it must, within PROMPTLY_S)."""
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, PROMPTLY_S)
    return time.monotonic() - started


async def test_it_returns_promptly_once_stop_is_set_while_it_waits_for_a_far_next_change():
    stand, stop = Stand(next_change=time.time() + 3600), asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    await asyncio.sleep(0.2)  # asleep until the next change (at most 5 s at a time)
    assert not task.done() and stand.ticks == 0
    assert await stopped_promptly(task, stop) < PROMPTLY_S


async def test_it_returns_promptly_once_stop_is_set_while_it_waits_with_nothing_to_do():
    stand, stop = Stand(next_change=None), asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    await asyncio.sleep(0.2)
    await stopped_promptly(task, stop)


async def test_it_returns_promptly_once_stop_is_set_while_it_waits_after_a_failed_pass(caplog):
    caplog.set_level(logging.ERROR, logger="services.worker.timers")
    stand, stop = Stand(next_change=time.time() - 1, tick_raises=[RuntimeError("boom")]), asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    await until(lambda: stand.ticks == 1)
    await asyncio.sleep(0.1)  # waiting 1 s before trying again
    await stopped_promptly(task, stop)
    assert "timer pass failed" in caplog.text


async def test_a_due_change_is_run_and_a_commit_wakes_it_to_look_again():
    stand, stop = Stand(next_change=time.time() - 1), asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    try:
        await until(lambda: stand.ticks == 1)  # due already: run at once
        await asyncio.sleep(0.2)
        assert stand.ticks == 1  # then asleep: the next change is far
        stand.next = time.time() - 1  # a commit brought a change forward
        started = time.monotonic()
        await stand.commit()
        await until(lambda: stand.ticks == 2)
        assert time.monotonic() - started < PROMPTLY_S  # not after its 5 s sleep
    finally:
        await stop_it(task, stop, stand)


async def test_a_pass_refused_for_a_switched_generation_follows_the_switch():
    stand = Stand(next_change=time.time() - 1, tick_raises=[GenerationChanged("switched")])
    stop = asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    try:
        await until(lambda: stand.followed == 1 and stand.ticks == 2)  # followed, then ran again
    finally:
        await stop_it(task, stop, stand)
    assert stand.noticed >= 2  # a switch is looked for before every pass


async def test_a_failed_pass_is_tried_again_after_a_second(caplog):
    caplog.set_level(logging.ERROR, logger="services.worker.timers")
    stand, stop = Stand(next_change=time.time() - 1, tick_raises=[RuntimeError("boom")]), asyncio.Event()
    task = asyncio.create_task(run_timers(stand, stop))
    try:
        await until(lambda: stand.ticks == 1)
        started = time.monotonic()
        await until(lambda: stand.ticks == 2, timeout=3)
        assert time.monotonic() - started > 0.8
    finally:
        await stop_it(task, stop, stand)


async def test_a_worker_waiting_for_a_far_next_change_stops_promptly(tmp_path):
    """The projector's own timers against SQLite: an urgent ticket opened now (its response due
    in an hour), the scheduler asleep until then, stopped."""
    now = datetime.now(UTC).replace(microsecond=0)
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db"))
    try:
        projector = Projector(
            store, default_policy(), "ticket-events", clock=lambda: now, count_metrics=False
        )
        await projector.open()
        await projector.start_offsets({0})
        at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        raw = orjson.dumps(event("e-1", "ticket.opened", at, "c-1", "T-1", priority="urgent"))
        await projector.handle(ConsumedBatch([ConsumedEvent(decode_event(raw), 0, 0, raw)], {0: (0, 1)}))
        upcoming = await projector.next_change()
        assert upcoming is not None and upcoming - time.time() > 30 * 60
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run_timers(stop))
        await asyncio.sleep(0.3)
        assert not task.done()
        await stopped_promptly(task, stop)
        assert projector.generation is not None
        row = store.ticket(projector.generation, ("c-1", "T-1"))
        assert row is not None and not row.breached
        assert row.next_change_at is not None and row.next_change_at <= int(
            (now + timedelta(hours=1)).timestamp()
        )
    finally:
        store.close()
