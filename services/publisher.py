"""Writing to Kafka: events to the log, rejected messages to the dead-letter topic.

faststream's KafkaBroker (over aiokafka) does the producing: its publishers
document both topics in the AsyncAPI schema. Every send waits for the
broker's acknowledgement from all in-sync replicas (acks=all) before we report
success to anyone.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from faststream.kafka import KafkaBroker

from events import Event, EventRejected, encode_event
from services.config import Settings
from services.kafka import security
from services.store.base import Signal

# Dead-letter headers: why the message was rejected and where it came from.
H_REASON = "slatrack-dlq-reason"
H_DETAIL = "slatrack-dlq-detail"
H_TOPIC = "slatrack-dlq-original-topic"
H_PARTITION = "slatrack-dlq-original-partition"
H_OFFSET = "slatrack-dlq-original-offset"
H_TIMESTAMP = "slatrack-dlq-original-timestamp-ms"
DLQ_HEADERS = (H_REASON, H_DETAIL, H_TOPIC, H_PARTITION, H_OFFSET, H_TIMESTAMP)


@dataclass(frozen=True)
class RawRecord:
    """A message as it was read from Kafka, before validation."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


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

    async def start(self) -> None:
        await self.broker.connect()

    async def stop(self) -> None:
        await self.broker.stop()

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
        """Send each rejected message, key and value untouched, with the reason in headers."""
        pending = [
            await self._dlq.publish(
                record.value,
                key=record.key,
                headers=dead_letter_headers(record, rejection),
                no_confirm=True,
            )
            for record, rejection in rejected
        ]
        await asyncio.gather(*pending)


def dead_letter_headers(record: RawRecord, rejection: EventRejected) -> dict[str, str]:
    headers = {}
    # The publisher's own headers travel along where they are text; ours win.
    for name, value in record.headers:
        try:
            headers[name] = value.decode()
        except UnicodeDecodeError:
            continue
    headers.update(
        {
            H_REASON: str(rejection.kind),
            H_DETAIL: rejection.detail,
            H_TOPIC: record.topic,
            H_PARTITION: str(record.partition),
            H_OFFSET: str(record.offset),
            H_TIMESTAMP: str(record.timestamp_ms),
        }
    )
    return headers
