"""docs/asyncapi.yaml against the real thing: what a worker reads, dead-letters and signals on
the real broker is what the document says, message by message (and a version published on the
policy topic).

A small history goes through a real worker (ValidatingConsumer, Projector, EventPublisher): an
urgent ticket breaches and is escalated, then its answer arrives late and takes both back; an
uncovered P1 settles its charge; two malformed messages and a conflicting copy of an event id
go to the dead-letter topic. The outbox relay sends the signals. Then, for every channel of the
document, every message on its topic must be valid against exactly one of the channel's
messages (payload schema resolved from its ``$ref`` to the JSON Schema file, headers from the
message and its traits), with the key the document names; a dead letter must carry the headers
the document lists and the original message's key and value byte for byte.
"""

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from events.policies import decode_policy_event
from projections.policy import default_policy
from services.kafka.consumer import ValidatingConsumer
from services.kafka.policies import publish_policy
from services.kafka.publisher import EventPublisher
from services.store import open_store
from services.worker.outbox import relay_once
from services.worker.projector import Projector
from tests.engine_helpers import Story, ny, utc
from tests.kafka_helpers import produce, read_all
from tests.samples import policy_sample
from tests.unit.test_signal_schema import AsyncApi

pytestmark = pytest.mark.broker

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the worker's clock
MON, SAT = "2026-11-02", "2026-11-07"


def history() -> tuple[list[tuple[bytes, bytes]], int, int]:
    """(key, value) messages in log order, how many are events to apply, how many are rejected."""
    story = Story("U-1", "acme")
    story.opened(utc(f"{MON} 14:00"), "urgent")  # response due 15:00, breached 15:00:01
    second = story.opened(utc(f"{MON} 16:00"), "low", ticket_id="U-2")  # acme's log time: 16:00
    b = Story("B-1", "globex")  # an uncovered P1 (Saturday night, urgent), billed at its fault
    b.opened(ny(f"{SAT} 02:00"), "urgent")
    b.responded(ny(f"{SAT} 02:20"))
    b.work(ny(f"{SAT} 02:30"), ny(f"{SAT} 05:00"))
    b.fault(ny(f"{SAT} 05:30"), "customer")
    b.closed(ny(f"{SAT} 06:00"))
    answer = story.responded(utc(f"{MON} 14:30"))  # given in time, read after the breach: late
    valid = [*story.dicts[:2], *b.dicts]
    messages = [(e["customer_id"].encode(), orjson.dumps(e)) for e in valid]
    conflict = {**second, "data": {"priority": "high"}}  # the id of U-2's opening, another body
    malformed = [
        (b"acme", b"\xff\xfe not JSON, not even UTF-8"),
        (b"acme", orjson.dumps({**second, "event_id": "bad-1", "data": {"priority": "p1"}})),
        (b"acme", orjson.dumps(conflict)),
    ]
    # The rejected ones before acme's last event: once it is applied, they have been handled.
    messages += [*malformed, (b"acme", orjson.dumps(answer))]
    return messages, len(valid) + 1, len(malformed)


async def run_worker(settings, messages, applied: int) -> int:
    """A worker until it has applied ``applied`` events; then the relay. Returns the signals sent."""
    store = open_store(settings)
    try:
        async with EventPublisher(settings) as publisher:
            projector = Projector(
                store,
                default_policy(),
                settings.topic_events,
                clock=lambda: AS_OF,
                dead_letter=publisher.dead_letter,
            )
            await projector.open()
            await produce(settings, messages)
            stop = asyncio.Event()
            task = asyncio.create_task(ValidatingConsumer(settings, publisher, projector).run(stop))
            try:
                async with asyncio.timeout(120):
                    while projector.applied_events < applied:  # noqa: ASYNC110 - a counter, not an event
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                await task
            sent = 0
            while batch := await relay_once(store, publisher):
                sent += batch
            return sent
    finally:
        store.close()


def headers_of(record) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def matching(api: AsyncApi, messages: dict[str, dict[str, Any]], value: Any) -> list[str]:
    """The channel's messages whose payload schema accepts ``value``."""
    return [key for key, m in messages.items() if api.payload_validator(m).is_valid(value)]


def check_headers(api: AsyncApi, message: dict[str, Any], record) -> dict[str, str]:
    headers = headers_of(record)
    assert list(api.headers_validator(message).iter_errors(headers)) == []
    listed = set(message.get("headers", {}).get("properties", {}))
    required = set(message.get("headers", {}).get("required", listed))  # the others are optional
    assert required <= set(headers), f"headers {sorted(required - set(headers))} missing"
    return headers


async def test_real_messages_match_the_asyncapi_document(kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"data_dir": tmp_path})
    messages, applied, rejected = history()
    sent = await run_worker(settings, messages, applied)
    versions = [policy_sample(), policy_sample(event_id="pol-2", contract="gold", retroactive=True)]
    for version in versions:
        await publish_policy(settings, decode_policy_event(orjson.dumps(version)))

    api = AsyncApi()
    topics = {
        "ticket-events": settings.topic_events,
        "ticket-events.dlq": settings.topic_dlq,
        "sla-signals": settings.topic_signals,
        "policy-versions": settings.topic_policies,
    }
    assert {c["address"] for c in api.document["channels"].values()} == set(topics)
    read = {
        "ticket-events": await read_all(settings, settings.topic_events, len(messages)),
        "ticket-events.dlq": await read_all(settings, settings.topic_dlq, rejected),
        "sla-signals": await read_all(settings, settings.topic_signals, sent),
        "policy-versions": await read_all(settings, settings.topic_policies, len(versions)),
    }
    assert [len(read[a]) for a in topics] == [len(messages), rejected, sent, len(versions)]

    # policy-versions: each version is the channel's one message, keyed by its contract.
    channel_id, _ = api.channel("policy-versions")
    (published,) = api.messages(channel_id).values()
    for record in read["policy-versions"]:
        value = orjson.loads(record.value)
        assert api.payload_validator(published).is_valid(value)
        assert record.key == value["contract"].encode() and record.partition == 0
        check_headers(api, published, record)
    assert [orjson.loads(r.value)["event_id"] for r in read["policy-versions"]] == ["pol-1", "pol-2"]

    # ticket-events: each valid event is exactly one of the channel's messages, keyed by customer.
    channel_id, _ = api.channel("ticket-events")
    events = api.messages(channel_id)
    invalid = []
    for record in read["ticket-events"]:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            invalid.append(record)
            continue
        found = matching(api, events, value)
        if not found:
            invalid.append(record)
            continue
        assert len(found) == 1, f"{value['event_id']} matches {found}"
        assert events[found[0]]["name"] == value["type"]
        assert record.key == value["customer_id"].encode()
        check_headers(api, events[found[0]], record)
    assert len(invalid) == 2  # the two malformed ones; the conflicting copy is a valid-looking event

    # ticket-events.dlq: the headers the document lists; the original key and value, byte for byte.
    channel_id, _ = api.channel("ticket-events.dlq")
    (dead_letter,) = api.messages(channel_id).values()
    originals = {(r.topic, r.partition, r.offset): r for r in read["ticket-events"]}
    reasons: Counter[str] = Counter()
    for record in read["ticket-events.dlq"]:
        headers = check_headers(api, dead_letter, record)
        where = (
            headers["slatrack-dlq-original-topic"],
            int(headers["slatrack-dlq-original-partition"]),
            int(headers["slatrack-dlq-original-offset"]),
        )
        original = originals[where]
        assert record.value == original.value and record.key == original.key
        assert int(headers["slatrack-dlq-original-timestamp-ms"]) == original.timestamp
        assert api.payload_validator(dead_letter).is_valid(record.value.decode("latin-1"))
        reasons[headers["slatrack-dlq-reason"]] += 1
    assert reasons == {"invalid_json": 1, "invalid_event": 1, "duplicate_event_id_conflict": 1}
    assert {r.value for r in invalid} < {r.value for r in read["ticket-events.dlq"]}

    # sla-signals: each signal is exactly one of the channel's messages, with its headers and key.
    channel_id, _ = api.channel("sla-signals")
    signals = api.messages(channel_id)
    types = []
    for record in read["sla-signals"]:
        value = orjson.loads(record.value)
        found = matching(api, signals, value)
        assert len(found) == 1, f"{value} matches {found}"
        message = signals[found[0]]
        assert message["name"] == value["type"]
        assert record.key == value["customer_id"].encode()
        headers = check_headers(api, message, record)
        assert headers["slatrack-signal-id"] == value["signal_id"]
        types.append((value["ticket_id"], value["type"]))
    assert [t for ticket, t in types if ticket == "U-1"] == [
        "sla.warning",
        "sla.breached",
        "escalation.raised",
        "sla.breach_revoked",
        "escalation.revoked",
    ]
    assert ("B-1", "billing.finalized") in types
