"""Stored histories read back (services.worker.histories: recording order, the one loader
``decoded``) and the projector's cache of them (services.worker.history_cache), with a stand-in
for the store's read and against a SQLite store."""

import orjson
import pytest

from events import decode_event
from projections.policy import default_policy
from projections.timeline import Recorded
from services.config import Settings
from services.store import open_store
from services.worker import history_cache
from services.worker.generations import policy_text
from services.worker.histories import decode_stored, decoded, partition_of, seq_of, stored_histories
from services.worker.history_cache import HistoryCache
from services.worker.ports import BatchWrite, StoredEvent
from tests.feed import event


def stored(customer: str, ticket: str | None, partition: int, offset: int) -> StoredEvent:
    type_ = "ticket.opened" if ticket is not None else "account.invoice_paid"
    data = {"priority": "low"} if ticket is not None else {"invoice_id": "i-1"}
    document = event(f"e-{partition}-{offset}", type_, "2026-11-02T13:00:00Z", customer, ticket, **data)
    return StoredEvent(document["event_id"], ticket, customer, partition, offset, 0, orjson.dumps(document))


class Reads:
    """The store's read of histories by key, counting what it is asked for."""

    def __init__(self, histories: dict[str, list[StoredEvent]]):
        self.histories = histories
        self.asked: list[list[str]] = []

    def __call__(self, generation: int, keys: list[str]) -> dict[str, list[StoredEvent]]:
        assert generation == 7
        self.asked.append(sorted(keys))
        return {key: self.histories[key] for key in keys if key in self.histories}


def test_recording_order_is_the_offset_then_the_partition():
    assert seq_of(3, 10) < seq_of(0, 11) and seq_of(0, 10) < seq_of(3, 10)
    for partition, offset in [(0, 0), (5, 1), (1023, 99)]:
        record = Recorded(seq_of(partition, offset), decode_event(stored("c", "t", partition, offset).body))
        assert partition_of(record) == partition


def test_decoded_histories_are_in_recording_order_and_empty_for_a_key_without_any():
    read = Reads({"c1": [stored("c1", "t1", 2, 0), stored("c1", "t1", 2, 5)]})
    histories = decoded(read, 7, ["c1", "c2"])
    assert [r.seq for r in histories["c1"]] == [seq_of(2, 0), seq_of(2, 5)]
    assert histories["c1"][1].event.event_id == "e-2-5"
    assert histories["c2"] == []


async def test_the_cache_reads_only_what_it_does_not_hold():
    read = Reads({"c1": [stored("c1", "t1", 0, 0)], "c2": [stored("c2", "t2", 0, 1)]})
    cache: HistoryCache[str] = HistoryCache(read)
    first = await cache.get(7, ["c1"])
    again = await cache.get(7, ["c1", "c2", "c3"])
    assert read.asked == [["c1"], ["c2", "c3"]]
    assert again["c1"] == first["c1"] and again["c3"] == []
    cache["c3"] = first["c1"]  # a batch's new records
    assert (await cache.get(7, ["c3"]))["c3"] == first["c1"] and len(read.asked) == 2
    cache.clear()  # after a failed write
    await cache.get(7, ["c3"])
    assert read.asked[-1] == ["c3"]


async def test_the_cache_drops_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(history_cache, "CACHE_TICKETS", 2)
    read = Reads({})
    cache: HistoryCache[str] = HistoryCache(read)
    for key in ["a", "b", "a", "c"]:  # b is the least recently used when c comes
        await cache.get(7, [key])
    assert len(cache) == 2 and "a" in cache and "c" in cache and "b" not in cache
    whole = await cache.get(7, ["a", "b", "c"])  # more than it holds: all given, then bounded
    assert set(whole) == {"a", "b", "c"} and len(cache) == 2


@pytest.fixture
def store(tmp_path):
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db"))
    yield store
    store.close()


def test_explain_and_the_projector_read_the_same_histories(store):
    generation = store.create_generation("test", policy_text(default_policy()))
    events = [stored("c1", "t1", 0, 0), stored("c1", None, 0, 1), stored("c1", "t1", 0, 2)]
    write = BatchWrite("ticket-events", {0: (0, 3)})
    write.events += events
    store.commit_batch(generation, write, must_be_active=False)
    mine, account = stored_histories(store, generation, ("c1", "t1"))
    assert mine == decoded(store.events_of_tickets, generation, [("c1", "t1")])[("c1", "t1")]
    assert mine == decode_stored([events[0], events[2]])
    assert account == decoded(store.account_events_of, generation, ["c1"])["c1"] == decode_stored(events[1:2])
