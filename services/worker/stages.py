"""Where a worker's batches spend their time: ``slatrack_projector_stage_duration_seconds``.

Four stages per batch (:data:`services.metrics.PROJECTOR_STAGES`): ``decode`` (the consumer
decoding and validating the batch's messages, timed there), ``store`` (every call of the
projector's store while the batch is handled: the reads and the commit), ``engine`` (the fold,
the store's calls within it taken out) and ``other`` (the rest of :meth:`Projector.handle`:
waiting for the lock, dead letters, bookkeeping). Time in the consumer outside these (fetching,
committing to Kafka) is in none of them.

The store's calls are timed by :class:`TimedStore` around the projector's store, and counted
for the batch whose :class:`BatchStages` is current in the calling context: ``asyncio.to_thread``
copies the context into its thread, so the calls a batch makes in threads count for it, while
the timers', the outbox's and the API's (other tasks) count for none. A few ``perf_counter``
calls per store call and one histogram observation per stage and batch: nothing per event.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import Any, cast

from services import metrics
from services.worker.ports import ReadModelStore

STAGE_SECONDS = {
    stage: metrics.PROJECTOR_STAGE_SECONDS.labels(stage=stage) for stage in metrics.PROJECTOR_STAGES
}

_current: ContextVar["BatchStages | None"] = ContextVar("slatrack_batch_stages", default=None)


class BatchStages:
    """One batch's time: started when created (and current from then on in this context)."""

    __slots__ = ("_token", "engine", "started", "store")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.store = 0.0
        self.engine = 0.0
        self._token: Token[BatchStages | None] | None = _current.set(self)

    def close(self) -> None:
        """No longer current (a batch that ended early or failed: nothing observed). Idempotent."""
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    @contextlib.contextmanager
    def fold(self) -> Iterator[None]:
        """Time spent inside is the engine's, but for the store's calls made meanwhile."""
        started, store = time.perf_counter(), self.store
        try:
            yield
        finally:
            self.engine += time.perf_counter() - started - (self.store - store)

    def observe(self) -> float:
        """Record the batch's stages; return its whole duration. No longer current."""
        self.close()
        total = time.perf_counter() - self.started
        STAGE_SECONDS["engine"].observe(self.engine)
        STAGE_SECONDS["store"].observe(self.store)
        STAGE_SECONDS["other"].observe(max(total - self.engine - self.store, 0.0))
        return total


def observe_decode(seconds: float) -> None:
    STAGE_SECONDS["decode"].observe(seconds)


class TimedStore:
    """``store`` with the duration of each method call added to the current batch's store stage
    (no batch current: not timed). Each call looks the method up on ``store`` anew, so that what
    is set on the store later (a test's fault) is what is called."""

    def __init__(self, store: ReadModelStore):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name.startswith("_") or not callable(value):
            return value
        return _timed(self._store, name)


def _timed(store: ReadModelStore, name: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        method = getattr(store, name)
        stages = _current.get()
        if stages is None:
            return method(*args, **kwargs)
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            stages.store += time.perf_counter() - started

    return timed


def timed_store(store: ReadModelStore) -> ReadModelStore:
    """``store`` for a projector: its calls timed as the store stage of the batch handled."""
    return cast(ReadModelStore, TimedStore(store))
