"""Dead letters as data: their headers (the original ones byte for byte, ours as prose, nothing empty
or random), the names `slatrack dlq` takes, what a replay sends (issue 11, item 6)."""

import orjson
import pytest

from events import EventRejected, RejectKind, decode_event
from services.kafka.dead_letters import H_REPLAY_OF, DeadLetter, parse_name, preview
from services.kafka.publisher import DLQ_HEADERS, dead_letter_headers
from services.worker.batches import ConsumedEvent, RawRecord
from services.worker.projector import accepted
from tests.samples import sample


def test_the_original_headers_travel_byte_for_byte_and_ours_follow():
    own = (("trace", b"\xff\x00binary"), ("empty", b""), ("dup", b"1"), ("dup", b"2"))
    stale = (("slatrack-dlq-reason", b"too_large"),)  # from an earlier dead-lettering
    record = RawRecord("ticket-events", 3, 17, 1_700_000_000_123, b"", b"{", own + stale)
    headers = dead_letter_headers(record, EventRejected(RejectKind.INVALID_JSON, "Invalid JSON: EOF"))
    assert headers[: len(own)] == list(own)
    ours = dict(headers[len(own) :])
    assert list(ours) == list(DLQ_HEADERS)
    assert ours == {
        "slatrack-dlq-reason": b"invalid_json",
        "slatrack-dlq-detail": b"Invalid JSON: EOF",
        "slatrack-dlq-original-topic": b"ticket-events",
        "slatrack-dlq-original-partition": b"3",
        "slatrack-dlq-original-offset": b"17",
        "slatrack-dlq-original-timestamp-ms": b"1700000000123",
    }


def consumed(body: dict, offset: int) -> ConsumedEvent:
    raw = orjson.dumps(body)
    return ConsumedEvent(decode_event(raw), 0, offset, raw)


def test_a_duplicate_conflict_detail_is_prose():
    first = consumed(sample("ticket.opened", event_id="e-1", customer_id="c-1"), 5)
    other = consumed(sample("ticket.opened", event_id="e-1", customer_id="c-1", data={"priority": "low"}), 9)
    ((_, rejection),) = accepted([first, other], {}).conflicts
    assert rejection.detail == (
        'event_id "e-1" of customer "c-1" was recorded before (at 0@5) with another body; '
        "the first copy is the event"
    )


def test_names_are_partition_at_offset():
    assert parse_name("3@17") == (3, 17)
    for bad in ("3", "@17", "3@", "a@1", "3@-1", "3@17@2"):
        with pytest.raises(ValueError, match="is not PARTITION@OFFSET"):
            parse_name(bad)


def test_a_preview_is_one_line_of_text():
    assert preview(None) == "(no value)"
    assert preview(b"") == "(empty)"
    assert preview(b'{"a":\n1}') == '{"a": 1}'
    assert preview(b"\xff" + b"x" * 50, limit=5) == "\ufffdxxxx…"


def test_a_replay_carries_the_publishers_headers_and_names_its_dead_letter():
    letter = DeadLetter(
        2,
        40,
        1_700_000_000_000,
        b"",
        b"v",
        (
            ("trace", b"\xff"),
            ("slatrack-dlq-reason", b"too_large"),
            ("slatrack-dlq-detail", b"..."),
            (H_REPLAY_OF, b"ticket-events.dlq:1@1"),  # it was a replay that failed again
        ),
    )
    assert letter.replay_headers("ticket-events.dlq") == [
        ("trace", b"\xff"),
        (H_REPLAY_OF, b"ticket-events.dlq:2@40"),
    ]
    assert letter.reason == "too_large"
