"""Writing to Kafka: events to the log, rejected messages to the dead-letter topic.

faststream's KafkaBroker (over aiokafka) does the producing: its publishers
document both topics in the AsyncAPI schema. Every send waits for the
broker's acknowledgement from all in-sync replicas (acks=all) before we report
success to anyone.
"""

import asyncio
import hashlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from events import Event, EventRejected, encode_event
from services.config import Settings
from services.kafka.client import raw_producer, security
from services.worker.batches import DeadLetterNotWritten, RawRecord, said
from services.worker.ports import Signal

# Dead-letter headers: why the message was rejected and where it came from.
H_REASON = "slatrack-dlq-reason"
H_DETAIL = "slatrack-dlq-detail"
H_TOPIC = "slatrack-dlq-original-topic"
H_PARTITION = "slatrack-dlq-original-partition"
H_OFFSET = "slatrack-dlq-original-offset"
H_TIMESTAMP = "slatrack-dlq-original-timestamp-ms"
DLQ_HEADERS = (H_REASON, H_DETAIL, H_TOPIC, H_PARTITION, H_OFFSET, H_TIMESTAMP)
DLQ_PREFIX = "slatrack-dlq-"
# Only on a dead letter cut to fit (see fit_dead_letter).
H_TRUNCATED = "slatrack-dlq-truncated"
H_ORIGINAL_SIZE = "slatrack-dlq-original-size"
H_ORIGINAL_SHA256 = "slatrack-dlq-original-sha256"
# What a record costs beyond its key, value and headers (Kafka's record and batch framing,
# generously): a dead letter is sized to stay this far below the limit.
RECORD_OVERHEAD = 1024
HEADER_OVERHEAD = 10  # a header's two length varints, at most


class EventPublisher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.broker = KafkaBroker(
            settings.bootstrap(),
            security=security(settings),
            client_id=settings.kafka_client_id,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            acks="all",
            enable_idempotence=settings.kafka_enable_idempotence,
            linger_ms=5,
            allow_auto_create_topics=False,
            logger=None,  # we log what matters ourselves; faststream would log every publish
        )
        self._events = self.broker.publisher(
            settings.topic_events,
            title="ticket-events",
            description="The event log (contract v1, docs/events.md); key = customer_id.",
            schema=Event,
        )
        # Documents the topic in the AsyncAPI schema; dead letters go out through ``_raw``.
        self._dlq = self.broker.publisher(
            settings.topic_dlq,
            title="ticket-events.dlq",
            description="Messages of ticket-events that failed validation, byte for byte, "
            "with the reason and origin in slatrack-dlq-* headers.",
        )

        self._signals = self.broker.publisher(
            settings.topic_signals,
            title="sla-signals",
            description="SLA signals (sla.warning, sla.breached, sla.breach_revoked, escalation.raised, "
            "escalation.revoked, billing.finalized), JSON, key = customer_id; signal_id is derived from "
            "the cause: deduplicate on it (docs/signals.md).",
        )
        self._raw: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await self.broker.connect()
        self._raw = raw_producer(self.settings)
        await self._raw.start()

    async def stop(self) -> None:
        await self.broker.stop()
        if self._raw is not None:
            await self._raw.stop()
            self._raw = None

    async def __aenter__(self) -> "EventPublisher":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def publish(self, events: Sequence[Event]) -> None:
        """Send events keyed by customer_id; return once the broker acknowledged every one.

        The sends are pipelined and awaited together. If any fails, this
        raises: some events may be in the log already, and sending them again
        is harmless, because a repeated event_id counts once.
        """
        pending = [
            await self._events.publish(encode_event(e), key=e.customer_id.encode(), no_confirm=True)
            for e in events
        ]
        await asyncio.gather(*pending)

    async def publish_raw(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Send ``(customer_id, value)`` messages as they are, keyed by customer_id, as :meth:`publish`."""
        pending = [
            await self._events.publish(value, key=customer_id.encode(), no_confirm=True)
            for customer_id, value in messages
        ]
        await asyncio.gather(*pending)

    async def publish_signals(self, signals: Sequence[Signal]) -> None:
        """Send signals from the outbox; return once the broker acknowledged every one."""
        pending = [
            await self._signals.publish(
                s.body, key=s.key.encode(), headers={"slatrack-signal-id": s.signal_id}, no_confirm=True
            )
            for s in signals
        ]
        await asyncio.gather(*pending)

    async def dead_letter(self, rejected: Sequence[tuple[RawRecord, EventRejected]]) -> None:
        """Send each rejected message, key, value and headers untouched, with the reason in headers
        (cut to fit ``SLATRACK_DLQ_MAX_MESSAGE_BYTES`` if it must be: :func:`fit_dead_letter`)."""
        assert self._raw is not None, "start() the publisher first"
        limit = self.settings.dlq_max_message_bytes
        pending = []
        try:
            for record, rejection in rejected:
                key, value, headers = fit_dead_letter(record, dead_letter_headers(record, rejection), limit)
                pending.append(await self._raw.send(self.settings.topic_dlq, value, key=key, headers=headers))
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise DeadLetterNotWritten(said(exc)) from exc


Headers = list[tuple[str, bytes | None]]


def fit_dead_letter(
    record: RawRecord, headers: Headers, limit: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter of ``record`` within ``limit`` bytes: as it came if it fits.

    A message the source topic took can be too large for the dead-letter topic once our
    headers are added (a value just under Kafka's 1 MiB default). Then the publisher's own
    headers are left out first, and if that is not enough the value is cut, saying so in
    headers (its size and SHA-256). Nothing is lost: the whole message stays in the source
    topic at the partition and offset the headers name.
    """
    budget = limit - RECORD_OVERHEAD
    key, value = record.key, record.value

    def size(headers: Headers) -> int:
        # A header's value may be null (None); each header costs a few bytes of framing too.
        framing = HEADER_OVERHEAD * len(headers)
        names = sum(len(n.encode()) for n, _ in headers)
        return len(key or b"") + len(value or b"") + framing + names + sum(len(v or b"") for _, v in headers)

    if size(headers) <= budget:
        return key, value, headers
    ours = [(name, text) for name, text in headers if name.startswith(DLQ_PREFIX)]
    if size(ours) <= budget:
        return key, value, [*ours, (H_TRUNCATED, b"the publisher's headers were left out to fit")]
    original = value or b""
    where = f"the whole message is in {record.topic} at partition {record.partition}, offset {record.offset}"
    cut = [
        (H_TRUNCATED, f"the value was cut to fit: {where}".encode()),
        (H_ORIGINAL_SIZE, str(len(original)).encode()),
        (H_ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
    ]
    value = b""  # size() now counts the key and headers only: what is left is the room for the value
    room = budget - size([*ours, *cut])
    if room < 0:  # the key alone is too large: keep its start too
        cut[0] = (H_TRUNCATED, f"the key and the value were cut to fit: {where}".encode())
        room = budget - size([*ours, *cut])  # the longer note counted
        key = (key or b"")[: max(len(key or b"") + room, 0)]
        room = 0
    return key, original[:room] if record.value is not None else None, [*ours, *cut]


def dead_letter_headers(record: RawRecord, rejection: EventRejected) -> Headers:
    """The message's own headers byte for byte, in order, then ours (UTF-8 text, none empty).

    A ``slatrack-dlq-*`` header the message brought (it was a dead letter once, sent again)
    is left out: ours say why it is here now.
    """
    own = [(name, value) for name, value in record.headers if not name.startswith(DLQ_PREFIX)]
    ours = [
        (H_REASON, str(rejection.kind)),
        (H_DETAIL, rejection.detail),
        (H_TOPIC, record.topic),
        (H_PARTITION, str(record.partition)),
        (H_OFFSET, str(record.offset)),
        (H_TIMESTAMP, str(record.timestamp_ms)),
    ]
    return own + [(name, value.encode()) for name, value in ours]
