"""The native-path decoder (issue 14) gives today's verdict on every message: the frozen
decoder in tests/old_decoder.py accepts the same events with the same values, and
rejects the same messages with the same kind, detail and errors.

The corpus: the invalid cases of the unit tests, the pipeline test's malformed
messages, hand-picked edges of the instant, date and schema_version rules, and
hypothesis-generated mutations of the valid samples.
"""

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import EVENT_TYPES, EventRejected, RejectKind, decode_event, encode_event
from tests import old_decoder
from tests.integration.test_pipeline import malformed_messages
from tests.samples import DATA, sample
from tests.unit.test_events import INVALID_DATA


def verdict(decode: Any, raw: bytes | None, **kwargs: Any) -> tuple[Any, ...]:
    """What a decoder makes of ``raw``, comparable across the two decoders' classes."""
    try:
        event = decode(raw, **kwargs)
    except EventRejected as exc:
        return ("rejected", exc.kind, exc.detail, exc.errors)
    try:
        encoded: bytes | str = encode_event(event)
    except TypeError as exc:  # today: an integer beyond 64 bits in an unknown key is accepted, not encodable
        encoded = f"{type(exc).__name__}: {exc}"
    return (
        "accepted",
        type(event).__name__,
        event.model_dump(),  # the values (aware datetimes compare as instants)...
        event.model_dump(mode="json"),  # ...and as text, with their offsets
        event.model_fields_set,
        event.data.model_extra,
        event.data.model_fields_set,
        encoded,
    )


def assert_same_verdict(raw: bytes | None, **kwargs: Any) -> tuple[Any, ...]:
    old = verdict(old_decoder.decode_event, raw, **kwargs)
    new = verdict(decode_event, raw, **kwargs)
    if old[0] == "accepted" and str(old[-1]).startswith("TypeError"):
        # The one change on purpose: an integer beyond 64 bits in an unknown key was accepted
        # and then could not be written back (every digest of its ticket raised); now rejected.
        assert new[:2] == ("rejected", RejectKind.INVALID_EVENT), (raw, new)
        assert "integers must fit in 64 bits" in new[2], new
        return new
    if new != old and old[0] == "rejected" and new[0] == "rejected":
        # Rejected for another fault too: the 64-bit error is one more among its errors.
        errors = [e for e in new[3] if "integers must fit in 64 bits" not in e["msg"]]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
        assert len(errors) < len(new[3]) and (new[1], detail, errors) == old[1:], raw
        return old
    assert new == old, raw
    return old


# --- a fixed corpus -------------------------------------------------------------------------------

NAN = 918273645  # a number no sample has: replaced in the bytes by a token JSON has no value for
TOKENS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e309", b"1.0", b"1e0", b"1E+0", b"10e-1"]
TOKENS += [b"true", b"false", b"null", b"0", b"-0", b"01", b"1", b"2", b"123456789012345678901234567890"]


def with_token(event: dict[str, Any], token: bytes) -> bytes:
    return orjson.dumps(event).replace(str(NAN).encode(), token)


INSTANT_TEXTS = (
    [
        "2026-10-30T15:30:00-04:00",
        "2026-10-30T19:30:00Z",
        "2026-10-30T19:30:00z",
        "2026-10-30t19:30:00Z",
        "2026-10-30 19:30:00Z",
        "2026-10-30T19:30:00+00:00",
        "2026-10-30T19:30:00-00:00",
        "2026-10-30T19:30:00+0000",
        "2026-10-30T19:30:00+24:00",
        "2026-10-30T19:30:00+23:59",
        "2026-10-30T19:30:00+23:60",
        "2026-10-30T19:30:00+99:99",
        "2026-10-30T19:30:00+5:30",
        "2026-10-30T19:30:00",
        "2026-10-30T19:30Z",
        "2026-10-30T19:30:00.Z",
        "2026-10-30T23:59:60Z",
        "2026-12-31T23:59:60Z",
        "2026-10-30T24:00:00Z",
        "2026-10-30T19:60:00Z",
        "2026-02-30T10:00:00Z",
        "2024-02-29T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "2026-00-01T10:00:00Z",
        "2026-10-00T10:00:00Z",
        "2026-10-30T19:30:00Z\n",
        "2026-10-30T19:30:00Z ",
        " 2026-10-30T19:30:00Z",
        "2026-10-30T19:30:00ZZ",
        "+2026-10-30T19:30:00Z",
        "20261030T193000Z",
        "٢٠٢٦-10-30T19:30:00Z",  # Arabic-Indic digits: \\d matches them, the parser does not
        "1761852600",
        "1761852600.5",
        "2026-10-30",
        "",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00.000001Z",
        "1970-01-01T00:59:59.999999+01:00",
        "1970-01-01T01:00:00+01:00",
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.999999Z",
        "1969-12-31T19:00:00-05:00",
        "1969-12-31T18:59:59.999999-05:00",
        "2999-12-31T23:59:59Z",
        "2999-12-31T23:59:59.999999Z",
        "2999-12-31T18:59:59.999999-05:00",
        "2999-12-31T19:00:00-05:00",
        "3000-01-01T00:00:00Z",
        "3000-01-01T04:59:59+05:00",
        "3000-01-01T05:00:00+05:00",
        "0001-01-01T00:00:00+10:00",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-10:00",
        "9999-12-31T23:59:59Z",
    ]
    + [f"2026-10-30T19:30:00.{'1234567'[:n]}Z" for n in range(1, 8)]
)

DATE_TEXTS = [
    "2026-11-09",
    "2026-02-30",
    "2024-02-29",
    "2026-13-01",
    "2026-1-09",
    "2026-11-09\n",
    "2026-11-09T00:00:00Z",
    "2026-11-09T00:00:00",
    "09/11/2026",
    "1969-12-31",
    "1970-01-01",
    "2999-12-31",
    "3000-01-01",
    "0001-01-01",
    "9999-12-31",
    "20261109",
    "",
]

OTHER_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    1.5,
    1761852600,
    "1",
    "x",
    [],
    {},
    ["2026-11-09"],
]


def fixed_corpus() -> list[bytes | None]:
    corpus: list[bytes | None] = [None, b"", b"{not json", b"\xff\xfe\x00", b"[]", b"null", b"42", b'"x"']
    for event_type, cases in INVALID_DATA.items():
        corpus += [orjson.dumps(sample(event_type, data=data)) for data in cases]
    corpus += [raw for _, raw, _ in malformed_messages()]
    for event_type in EVENT_TYPES:
        corpus.append(orjson.dumps(sample(event_type)))
        for token in TOKENS:
            corpus.append(with_token(sample(event_type, schema_version=NAN), token))
            corpus.append(with_token(sample(event_type, occurred_at=NAN), token))
            corpus.append(with_token(sample(event_type, data={**DATA[event_type], "x": NAN}), token))
            nested = {"a": [1, {"b": NAN}], "c": NAN}
            corpus.append(with_token(sample(event_type, data={**DATA[event_type], "x": nested}), token))
            # A non-finite number and another fault: the envelope's, or the payload's.
            corpus.append(
                with_token(sample(event_type, event_id="", data={**DATA[event_type], "x": NAN}), token)
            )
            corpus.append(with_token(sample(event_type, data={"x": NAN, "y": [NAN]}), token))
    for text in INSTANT_TEXTS + OTHER_VALUES:
        corpus.append(orjson.dumps(sample("ticket.opened", occurred_at=text)))
        for field in ("started_at", "ended_at"):
            data = {**DATA["ticket.work_logged"], field: text}
            corpus.append(orjson.dumps(sample("ticket.work_logged", data=data)))
        corpus.append(orjson.dumps(sample("account.invoice_due", data={"invoice_id": "I", "due_at": text})))
        corpus.append(orjson.dumps(sample("ticket.opened", schema_version=text)))
    for text in DATE_TEXTS + OTHER_VALUES + INSTANT_TEXTS[:3]:
        for category in ("new_install", "service"):
            data = {"priority": "low", "category": category, "install_date": text}
            corpus.append(orjson.dumps(sample("ticket.opened", data=data)))
    return corpus


def test_the_fixed_corpus():
    verdicts = [assert_same_verdict(raw) for raw in fixed_corpus()]
    # The corpus has both verdicts, and most of it is rejected.
    assert 100 < sum(v[0] == "accepted" for v in verdicts) < sum(v[0] == "rejected" for v in verdicts)


def test_without_a_size_limit():
    big = orjson.dumps(sample("ticket.opened", data={"priority": "low", "notes": "x" * 70_000}))
    assert assert_same_verdict(big)[0] == "rejected"
    assert assert_same_verdict(big, max_bytes=None)[0] == "accepted"


# --- mutations of the valid samples --------------------------------------------------------------


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


years = st.sampled_from(["1969", "1970", "2026", "2999", "3000", "0001", "9999", "0000", "2024"])
fractions = st.one_of(
    st.just(""),
    st.integers(1, 7).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n).map(lambda d: "." + d)),
)
offsets = st.one_of(
    st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+24:00", "+05:30", "-14:00", "+0530", "+5:30"]),
    st.tuples(st.sampled_from("+-"), _two(0, 25), _two(0, 61)).map(lambda t: f"{t[0]}{t[1]}:{t[2]}"),
)
instant_texts = st.one_of(
    st.sampled_from(INSTANT_TEXTS),
    st.builds(
        lambda y, mo, d, sep, h, mi, s, f, o, end: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{f}{o}{end}",
        years,
        _two(0, 13),
        _two(0, 32),
        st.sampled_from(["T", "T", "T", "t", " "]),
        _two(0, 25),
        _two(0, 60),
        st.sampled_from(["00", "30", "59", "60", "61"]),
        fractions,
        offsets,
        st.sampled_from(["", "", "", "\n", " "]),
    ),
)
date_texts = st.one_of(
    st.sampled_from(DATE_TEXTS),
    st.builds(
        lambda y, mo, d, end: f"{y}-{mo}-{d}{end}",
        years,
        _two(0, 13),
        _two(0, 32),
        st.sampled_from(["", "\n"]),
    ),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.just(NAN),  # becomes a token below
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
values = st.one_of(instant_texts, date_texts, json_values, st.sampled_from(OTHER_VALUES))
ENVELOPE_KEYS = [
    "event_id",
    "type",
    "schema_version",
    "occurred_at",
    "customer_id",
    "ticket_id",
    "source",
    "data",
]
DATA_KEYS = sorted({key for data in DATA.values() for key in data} | {"install_date", "category", "x", "y"})
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("envelope"), st.sampled_from(ENVELOPE_KEYS), values),
        st.tuples(st.just("data"), st.sampled_from(DATA_KEYS), values),
        st.tuples(st.just("delete"), st.sampled_from(ENVELOPE_KEYS + DATA_KEYS), st.none()),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    changes=mutations,
    token=st.sampled_from(TOKENS),
    category=st.sampled_from([None, "new_install"]),
)
@example(event_type="ticket.opened", changes=[("data", "x", NAN)], token=b"NaN", category=None)
@example(
    event_type="ticket.opened",
    changes=[("data", "install_date", "2026-02-30")],
    token=b"1",
    category="new_install",
)
@example(
    event_type="ticket.opened",
    changes=[("envelope", "occurred_at", "2026-10-30T23:59:60Z")],
    token=b"1",
    category=None,
)
def test_mutations_of_valid_samples(event_type, changes, token, category):
    event = sample(event_type)
    if category and event_type == "ticket.opened":
        event["data"]["category"] = category
    for where, key, value in changes:
        target = event if where == "envelope" else event.get("data")
        if where == "delete":
            event.pop(key, None)
            if isinstance(event.get("data"), dict):
                event["data"].pop(key, None)
        elif isinstance(target, dict):
            # A copy: a value drawn twice may be one object (OTHER_VALUES, or a dict set as the
            # data and then given a key), and setting it into itself would make a cycle.
            target[key] = copy.deepcopy(value)
    assert_same_verdict(with_token(event, token))
