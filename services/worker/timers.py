"""Time passing: one scheduler per worker sleeps until the earliest next change of the rows of
its caught-up partitions (a warning, due, breach or escalation instant, a suspension boundary),
then has what is due re-evaluated as of the wall clock (within 1 s). It wakes early after every
commit (the next change may be sooner now) and as soon as it is told to stop.

The scheduler drives a :class:`Timed` (the projector): it knows nothing of rows or stores.
"""

import asyncio
import logging
import time
from typing import Protocol

from services.worker.ports import GenerationChanged

log = logging.getLogger(__name__)

LONGEST_SLEEP_S = 5.0  # look again at least this often (a switch, a partition caught up)
RETRY_S = 1.0  # after a failed pass


class Timed(Protocol):
    """What the scheduler drives."""

    committed: asyncio.Condition  # notified after every commit

    async def notice_switch(self) -> None:
        """Follow a generation switch at once, not only at the next write."""

    async def next_change(self) -> int | None:
        """The earliest next change (epoch seconds) of the rows of the caught-up partitions."""

    async def tick(self) -> int:
        """Re-evaluate what is due now; how many tickets changed."""

    async def follow_switch(self) -> None:
        """A pass was refused: the generation changed. Follow it."""


async def run_timers(timed: Timed, stop: asyncio.Event) -> None:
    """Re-evaluate tickets and customers when their next change is due (within 1 s), until ``stop``."""
    while not stop.is_set():
        try:
            await timed.notice_switch()
            async with timed.committed:
                upcoming = await timed.next_change()
                delay = LONGEST_SLEEP_S if upcoming is None else min(LONGEST_SLEEP_S, upcoming - time.time())
                if delay > 0:
                    await _wait(timed.committed, stop, delay)
                    continue
            await timed.tick()
        except GenerationChanged:
            await timed.follow_switch()
        except Exception:
            log.exception("timer pass failed; trying again in 1 s")
            await _sleep(stop, RETRY_S)


async def _wait(condition: asyncio.Condition, stop: asyncio.Event, timeout: float) -> None:
    """Wait (holding ``condition``) until notified, stopped, or ``timeout`` seconds passed."""
    if stop.is_set():
        return

    async def wake_at_stop() -> None:
        await stop.wait()
        async with condition:  # free while the wait below waits
            condition.notify_all()

    watcher = asyncio.create_task(wake_at_stop())
    try:
        await asyncio.wait_for(condition.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])  # gone before the condition's lock is given back


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or until ``stop``."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
