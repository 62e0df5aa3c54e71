"""The event contract: what upstream helpdesks publish to ``ticket-events``.

Pure data definitions and (de)serialisation. No I/O lives here; services read
bytes from Kafka or HTTP and hand them to :func:`decode_event`.
"""

from events.codec import EventRejected, RejectKind, decode_event, encode_event, quoted
from events.models import (
    ACCOUNT_EVENT_TYPES,
    EVENT_MODELS,
    EVENT_TYPES,
    SCHEMA_VERSION,
    TICKET_EVENT_TYPES,
    AccountEvent,
    Event,
    TicketEvent,
)

__all__ = [
    "ACCOUNT_EVENT_TYPES",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "TICKET_EVENT_TYPES",
    "AccountEvent",
    "Event",
    "EventRejected",
    "RejectKind",
    "TicketEvent",
    "decode_event",
    "encode_event",
    "quoted",
]
