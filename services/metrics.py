"""Prometheus metrics of the service (served at /metrics).

Labels only ever take values from small fixed sets (event types, reject
kinds, HTTP status codes, priorities, clocks, billing rules, escalation
levels, partitions): never a ticket or customer id. Every known label
combination starts at 0, so that rates and alerts work from the first scrape.

Several workers: each exports what its own partitions did (counters) and hold
(gauges), so sums across instances are right: ``sum by (clock, priority)``.
A counter restarts at 0 with its process (Prometheus's ``rate`` and
``increase`` handle a reset); nothing is counted twice, because what the SLA
counters counted is committed with each ticket's row (see
:mod:`services.worker.sla_metrics`). The gauges of a worker cover only the partitions
it holds at the scrape, so a rebalance never shows one ticket twice.
"""

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

from events import EVENT_TYPES, RejectKind
from projections.policy import PRIORITIES, ClockName, Policy, default_policy

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

EVENTS_CONSUMED = Counter(
    "slatrack_events_consumed",
    "Valid events read from the log and handed to the projector, by event type.",
    ["type"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "slatrack_events_rejected",
    "Messages of the log that failed validation, by reason.",
    ["reason"],
    registry=REGISTRY,
)
DLQ_MESSAGES = Counter(
    "slatrack_dlq_messages",
    "Messages written to the dead-letter topic (acknowledged by the broker).",
    registry=REGISTRY,
)
EVENTS_MISROUTED = Counter(
    "slatrack_events_misrouted",
    "Valid events read from a partition other than the one murmur2 gives their key "
    "(a producer with another partitioner); projected anyway.",
    registry=REGISTRY,
)
INTAKE_REQUESTS = Counter(
    "slatrack_intake_requests",
    "HTTP intake requests by response status code.",
    ["code"],
    registry=REGISTRY,
)
INTAKE_EVENTS = Counter(
    "slatrack_intake_events",
    "Events accepted by the HTTP intake and acknowledged by the broker.",
    registry=REGISTRY,
)
# 499: the client disconnected before its body was complete (no answer was read).
INTAKE_CODES = ("202", "400", "408", "413", "415", "422", "499", "500", "503")

PROJECTOR_BATCH_SECONDS = Histogram(
    "slatrack_projector_batch_duration_seconds",
    "Time to project one batch into the read models, commit included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# Where a batch's time goes (services.worker.stages): the consumer's decoding and validation, the
# engine's fold, the store's reads and commit, and the rest of the batch's handling.
PROJECTOR_STAGES = ("decode", "engine", "store", "other")
PROJECTOR_STAGE_SECONDS = Histogram(
    "slatrack_projector_stage_duration_seconds",
    "Time one batch spent in each stage: decode (the consumer decoding and validating its messages), "
    "engine (the fold, the store's part taken out), store (reads and the commit), other (the rest of "
    "handling it: waiting for the lock, dead letters, bookkeeping).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PROJECTOR_LAST_EVENT = Gauge(
    "slatrack_projector_last_event_timestamp_seconds",
    "occurred_at of the latest event projected by this worker (unix seconds).",
    registry=REGISTRY,
)
SIGNALS_SENT = Counter(
    "slatrack_signals_sent",
    "SLA signals published to the signals topic, by type.",
    ["type"],
    registry=REGISTRY,
)
SIGNAL_TYPES = ("sla.warning", "sla.breached", "sla.breach_revoked", "escalation.raised", "billing.finalized")

for _type in EVENT_TYPES:
    EVENTS_CONSUMED.labels(type=_type)
for _kind in RejectKind:
    EVENTS_REJECTED.labels(reason=str(_kind))
for _code in INTAKE_CODES:
    INTAKE_REQUESTS.labels(code=_code)
for _signal in SIGNAL_TYPES:
    SIGNALS_SENT.labels(type=_signal)

ENGINE_FAULTS = Counter(
    "slatrack_engine_faults",
    "Evaluations of a ticket in which the engine raised (a bug, not bad input), by what failed: "
    "evaluate (the ticket becomes quarantined), count (its signals and counts for that state are left "
    "out) or schedule (its next change is not known: it is looked at again in 5 minutes).",
    ["stage"],
    registry=REGISTRY,
)
for _stage in ("evaluate", "count", "schedule"):
    ENGINE_FAULTS.labels(stage=_stage)

PARTITION_HALTED = Gauge(
    "slatrack_partition_halted",
    "1 while a partition this worker holds is halted at an offset it cannot get past (why: "
    "undecodable records, a dead letter that could not be written, a projector error, a partition "
    "beyond the 1024 slatrack can project); it is tried "
    "again by itself, and /readyz says why (README, Operations).",
    ["partition", "cause"],
    registry=REGISTRY,
)


HALT_CAUSES = ("undecodable", "dead_letter_failed", "handler_failed", "unsupported_partition")


def set_halted(partition: int, cause: str | None) -> None:
    """Mark ``partition`` halted for ``cause`` (None: going on again): one series per partition."""
    for other in HALT_CAUSES:
        PARTITION_HALTED.remove(str(partition), other)
    if cause is not None:
        PARTITION_HALTED.labels(partition=str(partition), cause=cause).set(1)


REBUILD_PROGRESS = Gauge(
    "slatrack_rebuild_progress_ratio",
    "Progress of the rebuild running in this process (0 to 1; 1 once done).",
    registry=REGISTRY,
)


# --- SLA outcomes (counted by the worker after each committed batch) ---------

CLOCKS: tuple[ClockName, ...] = ("response", "resolution")
BILLING_RULES = ("new_install", "uncovered_p1")
LEVELS = ("1", "2", "3")
CLOCK_STATUSES = ("running", "paused", "at_risk", "breached_open")

EVENTS_DUPLICATE = Counter(
    "slatrack_events_duplicate",
    "Valid events whose event_id the read models already held (applied once, counted here).",
    registry=REGISTRY,
)
SLA_TARGETS_EVALUATED = Counter(
    "slatrack_sla_targets_evaluated",
    "Clock cycles with a target, counted once when their clock first stops (a cycle ended "
    "by a priority change counts only if it had breached). Attainment = met / evaluated.",
    ["clock", "priority"],
    registry=REGISTRY,
)
SLA_TARGETS_MET = Counter(
    "slatrack_sla_targets_met",
    "Of slatrack_sla_targets_evaluated_total, the cycles that had not breached when they stopped.",
    ["clock", "priority"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "slatrack_sla_breaches",
    "Breaches as they happen (elapsed time passed the target), by clock and cycle priority.",
    ["clock", "priority"],
    registry=REGISTRY,
)
SLA_BREACH_REVOCATIONS = Counter(
    "slatrack_sla_breach_revocations",
    "Breaches counted earlier that a late event took back (sla.breach_revoked signals).",
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "slatrack_escalations",
    "Escalation levels raised (automatic or requested, entitled only), by level.",
    ["level"],
    registry=REGISTRY,
)
ESCALATION_REVOCATIONS = Counter(
    "slatrack_escalation_revocations",
    "Escalation levels counted earlier that a late event took back (escalation.revoked), by level.",
    ["level"],
    registry=REGISTRY,
)
BILLABLE_SECONDS = Counter(
    "slatrack_billable_seconds",
    "Billable seconds of finalized charges (closed or fault determined), by rule; an increase "
    "of a finalized charge adds the difference.",
    ["rule"],
    registry=REGISTRY,
)
BILLED_AMOUNT = Counter(
    "slatrack_billed_amount_cents",
    "Amounts of finalized charges in cents, by rule; an increase adds the difference.",
    ["rule"],
    registry=REGISTRY,
)
BILLABLE_CREDITED_SECONDS = Counter(
    "slatrack_billable_credited_seconds",
    "Billable seconds taken back from finalized charges (a later event lowered them), by rule.",
    ["rule"],
    registry=REGISTRY,
)
BILLED_CREDITED = Counter(
    "slatrack_billed_amount_credited_cents",
    "Cents taken back from finalized charges (a later event lowered them), by rule. "
    "Net billed = billed - credited.",
    ["rule"],
    registry=REGISTRY,
)

for _clock in CLOCKS:
    for _priority in PRIORITIES:
        for _counter in (SLA_TARGETS_EVALUATED, SLA_TARGETS_MET, SLA_BREACHES):
            _counter.labels(clock=_clock, priority=_priority)
for _level in LEVELS:
    ESCALATIONS.labels(level=_level)
    ESCALATION_REVOCATIONS.labels(level=_level)
for _rule in BILLING_RULES:
    for _counter in (BILLABLE_SECONDS, BILLED_AMOUNT, BILLABLE_CREDITED_SECONDS, BILLED_CREDITED):
        _counter.labels(rule=_rule)


def target_buckets(policy: Policy) -> tuple[float, ...]:
    """The policy's targets (seconds), so that ``le="<target>"`` counts exactly the cycles that met it."""
    targets = {policy.targets(priority).clock(clock).target for priority in PRIORITIES for clock in CLOCKS}
    return tuple(sorted(float(t) for t in targets if t is not None))


class _Elapsed:
    """``slatrack_sla_elapsed_seconds``: its buckets come from the policy the worker runs."""

    NAME = "slatrack_sla_elapsed_seconds"

    def __init__(self) -> None:
        self.histogram: Histogram | None = None
        self.buckets: tuple[float, ...] = ()

    def install(self, policy: Policy) -> None:
        buckets = target_buckets(policy)
        if self.histogram is not None and buckets == self.buckets:
            return
        if self.histogram is not None:
            REGISTRY.unregister(self.histogram)
        self.buckets = buckets
        self.histogram = Histogram(
            self.NAME,
            "Open seconds a clock cycle had counted when its clock first stopped; the bucket "
            "bounds are the policy's targets.",
            ["clock", "priority"],
            buckets=buckets,
            registry=REGISTRY,
        )
        for clock in CLOCKS:
            for priority in PRIORITIES:
                self.histogram.labels(clock=clock, priority=priority)

    def observe(self, clock: str, priority: str, seconds: int) -> None:
        assert self.histogram is not None
        self.histogram.labels(clock=clock, priority=priority).observe(seconds)


SLA_ELAPSED = _Elapsed()
SLA_ELAPSED.install(default_policy())


# --- what a worker holds now (read at each scrape) ---------------------------
