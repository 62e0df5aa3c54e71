"""A record on another partition than murmur2 gives its key (a librdkafka producer with its default
partitioner) is found, counted and named in a rate-limited warning, and still projected; and the
key check's dead-letter detail reads as prose (issue 11, item 6)."""

import logging
import zlib

import orjson
from aiokafka import ConsumerRecord, TopicPartition

from events import RejectKind
from services import metrics
from services.kafka.consumer import validate_records
from services.kafka.routing import MisroutedReporter, expected_partition, misrouted
from tests.samples import sample


def test_expected_partition_is_murmur2_as_java_and_aiokafka():
    # The brief's case: ours (murmur2) puts "ck-cust" on partition 0 of 6, librdkafka's default
    # (CRC32) on partition 2.
    assert expected_partition(b"ck-cust", 6) == 0
    assert zlib.crc32(b"ck-cust") % 6 == 2
    assert misrouted(b"ck-cust", 2, 6) == 0
    assert misrouted(b"ck-cust", 0, 6) is None


def test_keyless_records_and_unknown_topics_are_never_misrouted():
    assert misrouted(None, 3, 6) is None
    assert misrouted(b"ck-cust", 2, 0) is None
    assert misrouted(b"", expected_partition(b"", 6), 6) is None


def misrouted_total() -> float:
    return metrics.EVENTS_MISROUTED._value.get()


def test_the_reporter_counts_each_and_warns_once_an_interval(caplog):
    now = [100.0]
    reporter = MisroutedReporter(interval_s=60, clock=lambda: now[0])
    before = misrouted_total()
    with caplog.at_level(logging.WARNING, logger="services.kafka.routing"):
        reporter.check("ticket-events", 2, b"ck-cust", 6)
        reporter.check("ticket-events", 2, b"ck-cust", 6)
        reporter.check("ticket-events", 0, b"ck-cust", 6)  # where it belongs: not counted
        now[0] += 59
        reporter.check("ticket-events", 2, b"ck-cust", 6)
        now[0] += 2
        reporter.check("ticket-events", 5, b"ck-cust", 6)
    assert misrouted_total() - before == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    first, second = warnings
    assert 'of ticket-events on partition 2 has the key "ck-cust"' in first
    assert "puts on partition 0" in first and "partitioner=murmur2_random" in first
    assert "projected anyway; 1 misrouted since the last warning" in first
    assert "on partition 5" in second and "; 3 misrouted since the last warning" in second


def record(partition: int, key: bytes | None, value: bytes, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic="ticket-events",
        partition=partition,
        offset=offset,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=-1 if key is None else len(key),
        serialized_value_size=len(value),
        headers=[],
    )


def test_validate_records_reports_a_misrouted_event_and_keeps_it(caplog):
    value = orjson.dumps(sample("ticket.opened", customer_id="ck-cust"))
    batch = {TopicPartition("ticket-events", 2): [record(2, b"ck-cust", value)]}
    before = misrouted_total()
    with caplog.at_level(logging.WARNING, logger="services.kafka.routing"):
        valid, rejected = validate_records(batch, 65536, 6)
    assert [v.event.customer_id for v in valid] == ["ck-cust"] and rejected == []
    assert misrouted_total() - before == 1
    # Without a partition count (export, rebuild) nothing is checked.
    validate_records(batch, 65536)
    assert misrouted_total() - before == 1


def test_a_key_mismatch_detail_is_prose():
    value = orjson.dumps(sample("ticket.opened", customer_id="cust-1"))
    details = {}
    for key in (b"someone-else", b"", None, b"\xff\xfe"):
        _, rejected = validate_records({TopicPartition("ticket-events", 0): [record(0, key, value)]}, 65536)
        ((_, rejection),) = rejected
        assert rejection.kind == RejectKind.KEY_MISMATCH
        details[key] = rejection.detail
    for detail in details.values():
        assert "b'" not in detail and "'cust-1'" not in detail and "'someone-else'" not in detail, detail
        assert 'the event\'s customer_id "cust-1"' in detail
    assert details[b"someone-else"].startswith('the message key is "someone-else", not the event')
    assert details[b""].startswith("the message key is empty")
    assert details[None].startswith("the message has no key")
    assert details[b"\xff\xfe"].startswith("the message key is 2 bytes that are not UTF-8")
