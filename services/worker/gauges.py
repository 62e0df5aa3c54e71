"""Gauges read at scrape time from the worker of this process: open clocks, quarantined
tickets and lag, restricted to the partitions it holds (registered in services.metrics.REGISTRY)."""

import logging
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from projections.policy import PRIORITIES
from services.metrics import CLOCK_STATUSES, CLOCKS, REGISTRY
from services.worker.batches import Lag
from services.worker.ports import QueryStore, StoreUnavailable

log = logging.getLogger(__name__)


Held = Callable[[], tuple[int | None, tuple[int, ...]]]  # (generation, partitions) of the worker


class _WorkerCollector(Collector):
    """Gauges read at scrape time from the worker of this process, if any.

    ``slatrack_sla_clocks`` counts from the read models, restricted to the
    partitions this worker holds; ``slatrack_projector_lag_events`` has one
    series per held partition. A process without a worker exports the clock
    gauge at 0 and no lag.

    :meth:`prepare` takes the worker's partitions and lag on the event loop
    (where they change); :meth:`collect` may then run in a thread, so that
    the store query does not hold up the loop.
    """

    def __init__(self) -> None:
        self.store: QueryStore | None = None
        self.held: Held | None = None
        self.lag: Lag | None = None
        self._snapshot: tuple[int | None, tuple[int, ...], dict[int, int | None]] = (None, (), {})

    def attach(self, store: QueryStore, held: Held, lag: Lag) -> None:
        self.store, self.held, self.lag = store, held, lag

    def detach(self) -> None:
        self.store = self.held = self.lag = None
        self._snapshot = (None, (), {})

    def prepare(self) -> None:
        if self.held is not None and self.lag is not None:
            generation, partitions = self.held()
            self._snapshot = (generation, partitions, self.lag())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        generation, partitions, lag_now = self._snapshot
        clocks = GaugeMetricFamily(
            "slatrack_sla_clocks",
            "Clocks of tickets not closed in this worker's partitions: running or paused (not stopped), "
            "at_risk (past the warning threshold), breached_open (breached, ticket not closed). "
            "at_risk and breached_open overlap the first two.",
            labels=["clock", "priority", "status"],
        )
        counts: dict[tuple[str, str, str], int] = dict.fromkeys(
            ((c, p, s) for c in CLOCKS for p in PRIORITIES for s in CLOCK_STATUSES), 0
        )
        counted = True
        if self.store is not None and generation is not None and partitions:
            try:
                for clock, priority, status, count in self.store.clock_counts(generation, partitions):
                    counts[clock, priority, status] = count
            except StoreUnavailable as exc:
                # The scrape goes on without this gauge: a 0 would look like "no open clocks".
                log.warning("/metrics: no open clocks counted: %s", exc)
                counted = False
            except Exception:
                log.exception("could not count open clocks for /metrics")
                counted = False
        if counted:
            for labels, count in sorted(counts.items()):
                clocks.add_metric(list(labels), count)
            yield clocks

        quarantined = GaugeMetricFamily(
            "slatrack_tickets_quarantined",
            "Tickets of this worker's partitions the engine could not evaluate (it raised: a bug, not "
            "bad input); each row says the error and the event (README, Operations).",
        )
        if not (self.store is not None and generation is not None and partitions):
            quarantined.add_metric([], 0)
            yield quarantined
        elif counted:  # a store that did not answer the first count is not asked a second time
            try:
                quarantined.add_metric([], self.store.quarantined_count(generation, partitions))
                yield quarantined
            except StoreUnavailable as exc:
                log.warning("/metrics: no quarantined tickets counted: %s", exc)
            except Exception:
                log.exception("could not count quarantined tickets for /metrics")

        lag = GaugeMetricFamily(
            "slatrack_projector_lag_events",
            "Records of the log not yet projected, per partition this worker holds "
            "(from the latest fetch's high watermark).",
            labels=["partition"],
        )
        for partition, behind in sorted(lag_now.items()):
            if behind is not None:
                lag.add_metric([str(partition)], behind)
        yield lag


WORKER = _WorkerCollector()
REGISTRY.register(WORKER)
