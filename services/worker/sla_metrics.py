"""The SLA counters in Prometheus: a worker publishes each committed batch's
:class:`projections.counting.Tally` here. What is counted, and when, is
documented in :mod:`projections.counting` and docs/metrics.md.
"""

from projections.counting import Tally, finalized_charge, stopped_cycles
from services import metrics

__all__ = ["Tally", "finalized_charge", "publish", "stopped_cycles"]


def publish(tally: Tally) -> None:
    """Move the Prometheus counters (call after the batch committed)."""
    for (clock, priority), n in tally.evaluated.items():
        metrics.SLA_TARGETS_EVALUATED.labels(clock=clock, priority=priority).inc(n)
    for (clock, priority), n in tally.met.items():
        metrics.SLA_TARGETS_MET.labels(clock=clock, priority=priority).inc(n)
    for clock, priority, seconds in tally.elapsed:
        metrics.SLA_ELAPSED.observe(clock, priority, seconds)
    for (clock, priority), n in tally.breaches.items():
        metrics.SLA_BREACHES.labels(clock=clock, priority=priority).inc(n)
    metrics.SLA_BREACH_REVOCATIONS.inc(tally.revocations)
    for level, n in tally.escalations.items():
        metrics.ESCALATIONS.labels(level=str(level)).inc(n)
    for level, n in tally.escalation_revocations.items():
        metrics.ESCALATION_REVOCATIONS.labels(level=str(level)).inc(n)
    for counter, values in (
        (metrics.BILLABLE_SECONDS, tally.billed_seconds),
        (metrics.BILLED_AMOUNT, tally.billed_cents),
        (metrics.BILLABLE_CREDITED_SECONDS, tally.credited_seconds),
        (metrics.BILLED_CREDITED, tally.credited_cents),
    ):
        for rule, n in values.items():
            counter.labels(rule=rule).inc(n)
    metrics.EVENTS_DUPLICATE.inc(tally.duplicates)
