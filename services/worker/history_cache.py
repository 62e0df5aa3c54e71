"""The projector's cache of decoded histories: a ticket (or a customer's account) touched by
consecutive batches is not read back from the store and decoded each time.

One :class:`HistoryCache` per kind of history (tickets, accounts), each reading through the one
loader :func:`services.worker.histories.decoded`. Least recently used first, at most
:data:`CACHE_TICKETS` entries. The projector clears it after a failed write (it may then hold
what was never committed) and whenever what it reads changes (assignment, a rewind, a switch).
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from projections.timeline import Recorded
from services.worker.histories import decoded
from services.worker.ports import StoredEvent

CACHE_TICKETS = 20_000  # decoded histories kept: about 100 MB

K = TypeVar("K")


class HistoryCache(Generic[K]):
    """Decoded histories by key, read from the store by ``read`` when missing."""

    def __init__(self, read: Callable[[int, list[K]], dict[K, list[StoredEvent]]]):
        self._read = read
        self._histories: OrderedDict[K, list[Recorded]] = OrderedDict()

    async def get(self, generation: int, keys: Iterable[K]) -> dict[K, list[Recorded]]:
        """The histories of ``keys`` in ``generation`` (an empty one for a key with none)."""
        wanted = set(keys)
        missing = [key for key in wanted if key not in self._histories]
        if missing:  # read and decoded off the loop (CPU work, as the fold)
            self._histories.update(await asyncio.to_thread(decoded, self._read, generation, missing))
        histories = {}
        for key in wanted:
            self._histories.move_to_end(key)
            histories[key] = self._histories[key]
        bound(self._histories, CACHE_TICKETS)  # after taking them: bounding may drop some
        return histories

    def __setitem__(self, key: K, records: list[Recorded]) -> None:
        """A history grown by a batch's new records."""
        self._histories[key] = records

    def __contains__(self, key: object) -> bool:
        return key in self._histories

    def __len__(self) -> int:
        return len(self._histories)

    def clear(self) -> None:
        self._histories.clear()


def bound(cache: OrderedDict, limit: int) -> None:
    """Drop the least recently used entries of ``cache`` beyond ``limit``."""
    while len(cache) > limit:
        cache.popitem(last=False)
