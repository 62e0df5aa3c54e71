"""Prometheus metrics of the service (served at /metrics).

Labels only ever take values from small fixed sets (event types, reject
kinds, HTTP status codes): never a ticket or customer id. Every known label
combination starts at 0, so that rates and alerts work from the first scrape.
"""

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
INTAKE_CODES = ("202", "400", "413", "415", "422", "503")

PROJECTOR_BATCH_SECONDS = Histogram(
    "slatrack_projector_batch_duration_seconds",
    "Time to project one batch into the read models, commit included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
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

REBUILD_PROGRESS = Gauge(
    "slatrack_rebuild_progress_ratio",
    "Progress of the rebuild running in this process (0 to 1; 1 once done).",
    registry=REGISTRY,
)
