"""The API's cache of decoded stored events (services.api.queries.cached_records): the records
decode_stored gives, each decoded once while kept, at most CACHED_RECORDS kept."""

import orjson

from services.api import queries
from services.worker.histories import decode_stored
from services.worker.ports import StoredEvent
from tests.samples import sample


def stored(n: int, offset: int = 0) -> list[StoredEvent]:
    events = []
    for i in range(n):
        document = sample("ticket.opened", event_id=f"e-{offset + i}", ticket_id=f"T-{offset + i}")
        events.append(
            StoredEvent(
                document["event_id"], document["ticket_id"], document["customer_id"], 1, offset + i, 0,
                orjson.dumps(document),
            )
        )  # fmt: skip
    return events


def test_the_same_records_as_decoding(monkeypatch):
    monkeypatch.setattr(queries, "_records", type(queries._records)())
    events = stored(5)
    first = queries.cached_records(events)
    assert first == decode_stored(events)
    again = queries.cached_records(list(reversed(events)))
    assert again == list(reversed(first))
    assert all(a is b for a, b in zip(again, reversed(first), strict=True))  # not decoded again
    # Another body at a position is another record.
    other = stored(1, offset=100)[0]
    moved = StoredEvent(other.event_id, other.ticket_id, other.customer_id, 1, 0, 0, other.body)
    assert queries.cached_records([moved])[0].event.event_id == "e-100"
    assert queries.cached_records([]) == []


def test_bounded(monkeypatch):
    monkeypatch.setattr(queries, "_records", type(queries._records)())
    monkeypatch.setattr(queries, "CACHED_RECORDS", 3)
    events = stored(5)
    assert queries.cached_records(events) == decode_stored(events)
    assert len(queries._records) == 3
    assert queries.cached_records(events[:2]) == decode_stored(events[:2])
