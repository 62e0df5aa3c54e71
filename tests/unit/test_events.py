"""The event contract v1: every type valid and invalid, and the envelope rules."""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import EVENT_TYPES, EventRejected, RejectKind, decode_event, encode_event
from events.models import EVENT_ADAPTER
from tests.samples import DATA, sample


def decode(event: object, **kwargs) -> Any:  # the event, of the type the test sends
    return decode_event(orjson.dumps(event), **kwargs)


def rejected(event: object, **kwargs) -> EventRejected:
    with pytest.raises(EventRejected) as info:
        decode(event, **kwargs)
    return info.value


def test_every_type_has_a_sample():
    assert set(DATA) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_valid(event_type):
    event = decode(sample(event_type))
    assert event.type == event_type
    assert event.occurred_at == datetime(2026, 10, 30, 19, 30, tzinfo=UTC)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_round_trips(event_type):
    event = decode(sample(event_type))
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_keeps_unknown_data_keys(event_type):
    raw = sample(event_type)
    raw["data"]["added_in_a_later_version"] = {"nested": [1, 2]}
    event = decode(raw)
    assert event.data.model_extra == {"added_in_a_later_version": {"nested": [1, 2]}}
    assert orjson.loads(encode_event(event))["data"]["added_in_a_later_version"] == {"nested": [1, 2]}


INVALID_DATA: dict[str, list[Any]] = {  # data objects, and one that is not an object
    "ticket.opened": [
        {},
        {"priority": "p1"},
        {"priority": "low", "category": "hardware"},
        {"priority": "low", "after_hours_requested": "yes"},
        {"priority": "low", "priority_handling_requested": 1},
        {"priority": "low", "third_party_disconnect": None},
        {"priority": "low", "install_date": "2026-11-09"},  # only for new_install
        {"priority": "low", "category": "new_install", "install_date": "09/11/2026"},
        {"priority": "low", "category": "new_install", "install_date": "2026-11-09T00:00:00Z"},
    ],
    "ticket.priority_changed": [{}, {"priority": "URGENT"}, {"priority": "low", "reason": "x" * 1025}],
    "ticket.responded": [{"agent_id": ""}, {"agent_id": 7}, {"agent_id": "a" * 129}],
    "ticket.status_changed": [{}, {"status": ""}, {"status": 3}, {"status": "s" * 65}],
    "ticket.resolved": [{"workaround": "true"}],
    "ticket.reopened": ["not an object"],
    "ticket.closed": [{"auto": 0}],
    "ticket.work_logged": [
        {"started_at": "2026-10-30T18:00:00Z"},
        {"started_at": "2026-10-30T18:00:00Z", "ended_at": "2026-10-30T18:00:00Z"},
        {"started_at": "2026-10-30T19:00:00Z", "ended_at": "2026-10-30T18:00:00Z"},
        {"started_at": "2026-10-30T18:00:00Z", "ended_at": "2026-10-31T18:00:01Z"},
        {"started_at": "2026-10-30T18:00:00", "ended_at": "2026-10-30T19:00:00Z"},
    ],
    "ticket.fault_determined": [{}, {"party": "nobody"}],
    "ticket.escalation_requested": [
        {"level": 0, "requested_by": "agent"},
        {"level": 4, "requested_by": "agent"},
        {"level": "2", "requested_by": "agent"},
        {"level": True, "requested_by": "agent"},
        {"level": 2, "requested_by": "manager"},
    ],
    "account.invoice_due": [
        {"invoice_id": "INV-1"},
        {"invoice_id": "INV-1", "due_at": "2026-11-01"},
        {"invoice_id": "", "due_at": "2026-11-01T00:00:00Z"},
    ],
    "account.invoice_paid": [{}, {"invoice_id": 12}],
    "account.invoice_disputed": [{}, {"invoice_id": None}],
    "account.contract_changed": [
        {},
        {"contract": "premium"},
        {"contract": "", "effective_from": "2026-11-01T00:00:00Z"},
        {"contract": "two words", "effective_from": "2026-11-01T00:00:00Z"},
        {"contract": "premium", "effective_from": "2026-11-01"},
    ],
}


def test_every_type_has_invalid_cases():
    assert set(INVALID_DATA) == set(EVENT_TYPES)


@pytest.mark.parametrize(("event_type", "data"), [(t, d) for t, cases in INVALID_DATA.items() for d in cases])
def test_each_type_invalid(event_type, data):
    assert rejected(sample(event_type, data=data)).kind == RejectKind.INVALID_EVENT


def test_work_log_of_exactly_24_hours_is_valid():
    data = {"started_at": "2026-10-30T18:00:00Z", "ended_at": "2026-10-31T18:00:00Z"}
    assert decode(sample("ticket.work_logged", data=data)).data.ended_at == datetime(
        2026, 10, 31, 18, tzinfo=UTC
    )


def test_new_install_with_install_date():
    event = decode(
        sample(
            "ticket.opened", data={"priority": "low", "category": "new_install", "install_date": "2026-11-09"}
        )
    )
    assert event.data.install_date == date(2026, 11, 9)


def test_data_defaults():
    event = decode(sample("ticket.opened"))
    assert event.data.category == "service"
    assert not (
        event.data.after_hours_requested
        or event.data.priority_handling_requested
        or event.data.third_party_disconnect
    )
    raw = sample("ticket.reopened")
    del raw["data"]
    assert decode(raw).type == "ticket.reopened"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-10-30T15:30:00-04:00", datetime(2026, 10, 30, 19, 30, tzinfo=UTC)),
        ("2026-10-30T19:30:00Z", datetime(2026, 10, 30, 19, 30, tzinfo=UTC)),
        ("2026-10-30T19:30:00+00:00", datetime(2026, 10, 30, 19, 30, tzinfo=UTC)),
        ("2026-10-31T01:00:00+05:30", datetime(2026, 10, 30, 19, 30, tzinfo=UTC)),
        ("2026-10-30T19:30:00.250Z", datetime(2026, 10, 30, 19, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_occurred_at_with_offsets(text, expected):
    event = decode(sample("ticket.opened", occurred_at=text))
    assert event.occurred_at == expected
    assert event.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-10-30T15:30:00",  # naive
        "2026-10-30 15:30:00Z",  # not RFC 3339's T
        "2026-10-30T15:30Z",  # no seconds
        "2026-10-30",  # a date
        "2026-10-30T25:30:00Z",  # no such hour
        "2026-02-30T10:00:00Z",  # no such day
        "1761852600",  # a unix time in a string
        "",
    ],
)
def test_occurred_at_must_be_rfc3339_with_offset(text):
    assert rejected(sample("ticket.opened", occurred_at=text)).kind == RejectKind.INVALID_EVENT


def test_occurred_at_must_not_be_a_number():
    assert rejected(sample("ticket.opened", occurred_at=1761852600)).kind == RejectKind.INVALID_EVENT


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1970-01-01T00:00:00Z", True),
        ("2999-12-31T23:59:59Z", True),
        ("1969-12-31T23:59:59Z", False),
        ("2999-12-31T23:00:00-05:00", False),  # 3000-01-01 in UTC
        # Near the ends of Python's calendar, arithmetic overflows: never let one reach a worker.
        ("9999-12-31T23:59:59-10:00", False),
        ("0001-01-01T00:00:00+10:00", False),
    ],
)
def test_instants_lie_between_1970_and_3000(text, ok):
    event = sample("ticket.opened", occurred_at=text)
    if ok:
        decode(event)
    else:
        assert "between 1970" in rejected(event).detail


def test_install_dates_lie_between_1970_and_3000():
    data = {"priority": "medium", "category": "new_install"}
    assert decode(sample("ticket.opened", data={**data, "install_date": "2999-12-31"}))
    for bad in ("9999-12-31", "0001-01-01", "1969-12-31"):
        event = sample("ticket.opened", data={**data, "install_date": bad})
        assert "between 1970" in rejected(event).detail


@pytest.mark.parametrize("field", ["event_id", "customer_id", "ticket_id"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", False),
        ("x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        (5, False),
        ("ünïcode 工単-1", True),
        # Control characters: NUL cannot even be stored in PostgreSQL text.
        ("a\x00b", False),
        ("line\nbreak", False),
        ("del\x7f", False),
    ],
)
def test_id_bounds(field, value, ok):
    event = sample("ticket.opened", **{field: value})
    if ok:
        assert getattr(decode(event), field) == value
    else:
        assert rejected(event).kind == RejectKind.INVALID_EVENT


@pytest.mark.parametrize(
    "field", ["event_id", "type", "schema_version", "occurred_at", "customer_id", "ticket_id"]
)
def test_required_envelope_fields(field):
    event = sample("ticket.opened")
    del event[field]
    assert rejected(event).kind in {RejectKind.INVALID_EVENT, RejectKind.UNKNOWN_TYPE}


def test_missing_type_is_invalid_not_unknown():
    event = sample("ticket.opened")
    del event["type"]
    assert rejected(event).kind == RejectKind.INVALID_EVENT


def test_unknown_envelope_key_rejected():
    error = rejected(sample("ticket.opened", priority="high"))
    assert error.kind == RejectKind.INVALID_EVENT
    assert error.errors[0]["loc"] == "priority"


def test_ticket_id_absent_for_account_events():
    error = rejected(sample("account.invoice_paid", ticket_id="T-1"))
    assert error.kind == RejectKind.INVALID_EVENT
    assert "ticket_id" in error.detail


def test_unknown_type():
    assert rejected(sample("ticket.opened", type="ticket.merged")).kind == RejectKind.UNKNOWN_TYPE


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_schema_version(version):
    assert rejected(sample("ticket.opened", schema_version=version)).kind == (
        RejectKind.UNSUPPORTED_SCHEMA_VERSION
    )


@pytest.mark.parametrize("version", [b"true", b"1.0", b"1e0", b"1E+0", b"10e-1"])
def test_schema_version_is_the_json_integer_1(version):
    # Each equals 1 in Python; pydantic's Literal[1] alone took them.
    raw = orjson.dumps(sample("ticket.opened", schema_version=0)).replace(
        b'"schema_version":0', b'"schema_version":' + version
    )
    with pytest.raises(EventRejected) as info:
        decode_event(raw)
    assert info.value.kind == RejectKind.UNSUPPORTED_SCHEMA_VERSION
    assert info.value.detail == "schema_version: Value error, must be the JSON integer 1"


@pytest.mark.parametrize(
    ("number", "where"),
    [
        (b"NaN", "x"),
        (b"Infinity", "x"),
        (b"-Infinity", "x"),
        (b"1e400", "x"),
        (b"-1e309", "x"),
        (b'{"a": [1, 2, {"b": NaN}]}', "x.a[2].b"),
    ],
)
def test_numbers_must_be_finite(number, where):
    raw = orjson.dumps(sample("ticket.opened", data={"priority": "low", "x": 0})).replace(
        b'"x":0', b'"x":' + number
    )
    with pytest.raises(EventRejected) as info:
        decode_event(raw)
    # Not JSON numbers (RFC 8259; 1e400 is no double): a strict parser would say invalid JSON too.
    assert info.value.kind == RejectKind.INVALID_JSON
    assert info.value.detail == f"data: numbers must be finite: {where} is NaN, Infinity or beyond ±1.8e308"


@pytest.mark.parametrize("field", ["schema_version", "event_id", "occurred_at", "ticket_id"])
def test_a_non_finite_number_anywhere_is_not_json(field):
    # Rejected for another reason by the model too, but a strict parser stops at the NaN first.
    zero: dict[str, Any] = {field: 0}
    raw = orjson.dumps(sample("ticket.opened", **zero)).replace(
        f'"{field}":0'.encode(), f'"{field}":NaN'.encode()
    )
    with pytest.raises(EventRejected) as info:
        decode_event(raw)
    assert info.value.kind == RejectKind.INVALID_JSON
    assert "numbers must be finite" in info.value.detail


def test_source_is_optional_and_bounded():
    assert decode(sample("ticket.opened", source="zendesk")).source == "zendesk"
    assert rejected(sample("ticket.opened", source="s" * 129)).kind == RejectKind.INVALID_EVENT


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", RejectKind.EMPTY),
        (None, RejectKind.EMPTY),
        (b"{not json", RejectKind.INVALID_JSON),
        (b"\xff\xfe\x00", RejectKind.INVALID_JSON),
        (b'{"event_id": "a",}', RejectKind.INVALID_JSON),
        (b"[]", RejectKind.INVALID_EVENT),
        (b"null", RejectKind.INVALID_EVENT),
        (b"42", RejectKind.INVALID_EVENT),
    ],
)
def test_not_an_event(raw, kind):
    with pytest.raises(EventRejected) as info:
        decode_event(raw)
    assert info.value.kind == kind


def test_size_limit_is_checked_before_parsing():
    big = orjson.dumps(sample("ticket.opened", data={"priority": "low", "notes": "x" * 70_000}))
    with pytest.raises(EventRejected) as info:
        decode_event(big)
    assert info.value.kind == RejectKind.TOO_LARGE
    # Not parsed: invalid JSON of the same size is "too large", not "invalid JSON".
    with pytest.raises(EventRejected) as info:
        decode_event(b"{" * len(big))
    assert info.value.kind == RejectKind.TOO_LARGE
    assert (decode_event(big, max_bytes=len(big)).data.model_extra or {})["notes"] == "x" * 70_000


def test_rejection_detail_names_the_field():
    error = rejected(sample("ticket.opened", data={"priority": "p1"}))
    assert error.errors == [{"loc": "data.priority", "msg": error.errors[0]["msg"]}]
    assert error.detail.startswith("data.priority: ")


def test_python_and_json_validation_agree():
    # The intake validates parsed JSON; Kafka messages are validated as text.
    for event_type in EVENT_TYPES:
        raw = sample(event_type)
        assert EVENT_ADAPTER.validate_python(raw) == decode(raw)


def test_encoding_is_canonical():
    a = decode(sample("ticket.opened"))
    b = decode(dict(reversed(list(sample("ticket.opened").items()))))
    assert encode_event(a) == encode_event(b)
    assert encode_event(a).startswith(b'{"customer_id":"cust-1","data":{"priority":"medium"}')


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=128)


@given(
    event_id=ids,
    customer_id=ids,
    ticket_id=ids,
    occurred_at=instants,
    priority=st.sampled_from(["urgent", "high", "medium", "low"]),
)
def test_round_trip_property(event_id, customer_id, ticket_id, occurred_at, priority):
    raw = sample(
        "ticket.opened",
        event_id=event_id,
        customer_id=customer_id,
        ticket_id=ticket_id,
        occurred_at=occurred_at.isoformat(),
        data={"priority": priority},
    )
    event = decode(raw)
    assert event.occurred_at == occurred_at
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 123456789012345678901234567890])
def test_an_integer_beyond_64_bits_in_an_unknown_key_is_rejected(number):
    """Accepted, it could not be written back as JSON (orjson writes 64-bit integers only), and
    every digest of its ticket (explain, the report) would raise: rejected, with where it is."""
    event = sample("ticket.opened")
    event["data"]["extra"] = {"list": [1, number]}
    with pytest.raises(EventRejected) as caught:
        decode_event(json.dumps(event).encode())  # (orjson writes no such integer)
    assert caught.value.kind == RejectKind.INVALID_EVENT
    assert "integers must fit in 64 bits: extra.list[1]" in caught.value.detail


@pytest.mark.parametrize("number", [2**64 - 1, -(2**63)])
def test_an_integer_of_64_bits_in_an_unknown_key_is_kept(number):
    event = sample("ticket.opened")
    event["data"]["extra"] = number
    decoded = decode_event(json.dumps(event).encode())
    assert decoded.data.model_extra == {"extra": number}
    assert orjson.loads(encode_event(decoded))["data"]["extra"] == number
