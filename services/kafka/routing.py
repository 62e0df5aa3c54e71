"""Is a record on the partition its key hashes to? (A producer with another partitioner.)

slatrack relies on one customer's events sharing one partition, the one
Kafka's default partitioner (murmur2: Java, aiokafka, slatrack's own
publisher) gives the key. librdkafka clients (confluent-kafka, kcat, ...)
hash with CRC32 unless configured with ``partitioner=murmur2_random``, so a
customer's events can land on two partitions. Such a record is still
projected (refusing it would lose it; docs/events.md says what is lost);
this module finds it so that an operator can find the producer.

:func:`expected_partition` and :func:`misrouted` are pure; :class:`MisroutedReporter`
counts and logs, at most one warning per interval.
"""

import functools
import logging
import time
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner

from events import quoted
from services import metrics

log = logging.getLogger(__name__)

WARNING_INTERVAL_S = 60.0


@functools.lru_cache(maxsize=65_536)
def expected_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) gives ``key`` among ``partitions``.

    Cached: aiokafka's murmur2 is pure Python (7 us a key here, half the cost of validating an
    event), and a log has far fewer customers (keys) than events.
    """
    everyone = list(range(partitions))
    return DefaultPartitioner()(key, everyone, everyone)


def misrouted(key: bytes | None, partition: int, partitions: int) -> int | None:
    """The partition a keyed record should be on, if it is not on it; else None.

    A record without a key, or a topic of unknown size (``partitions`` < 1), is never misrouted.
    """
    if key is None or partitions < 1:
        return None
    expected = expected_partition(key, partitions)
    return None if expected == partition else expected


class MisroutedReporter:
    """Counts misrouted records (``slatrack_events_misrouted_total``) and logs a warning for the
    first of each interval, with how many were found since the last warning: a misconfigured
    producer sends many, and one line a minute finds it without flooding the log."""

    def __init__(self, interval_s: float = WARNING_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._last_warning: float | None = None
        self._unreported = 0

    def check(self, topic: str, partition: int, key: bytes | None, partitions: int) -> None:
        expected = misrouted(key, partition, partitions)
        if expected is None:
            return
        metrics.EVENTS_MISROUTED.inc()
        self._unreported += 1
        now = self.clock()
        if self._last_warning is not None and now - self._last_warning < self.interval_s:
            return
        log.warning(
            "a record of %s on partition %d has the key %s, which Kafka's default partitioner (murmur2) "
            "puts on partition %d: its producer partitions otherwise (librdkafka clients: set "
            "partitioner=murmur2_random); projected anyway; %d misrouted since the last warning",
            topic,
            partition,
            quoted(key or b""),
            expected,
            self._unreported,
        )
        self._last_warning = now
        self._unreported = 0


REPORTER = MisroutedReporter()
