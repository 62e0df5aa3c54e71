"""Logging set-up: one format, and no floods.

aiokafka logs an error for every failed connection attempt, about ten a
second while a broker is away (~10,000 lines in 3 minutes were seen): the
one line that says what is wrong drowns. :class:`RateLimited` lets the first
record of each kind through, then at most one per ``every`` seconds, saying
how many like it were left out.
"""

import logging
import sys
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_EVERY_S = 30.0
NOISY = ("aiokafka",)  # loggers whose repeated records are rate-limited


class RateLimited(logging.Filter):
    """At most one record per (logger, message template) every ``every`` seconds."""

    def __init__(self, every: float = QUIET_EVERY_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every = every
        self.clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._left_out: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(NOISY):
            return True
        kind = (record.name, record.msg)
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        if len(self._last) > 1000:  # templates are few; bound the memory anyway
            self._last.clear()
            self._left_out.clear()
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like this in the last {self.every:.0f} s left out)"
        return True


def configure(level: str) -> None:
    """Log to stderr; the noisy libraries' repeats rate-limited (a filter on the handler: a
    logger's own filters do not see its children's records, aiokafka.conn's say)."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RateLimited) for f in handler.filters):
            handler.addFilter(RateLimited())
