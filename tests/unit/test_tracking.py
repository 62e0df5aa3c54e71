"""Where each partition stands (services.worker.tracking): gaps, batches read again, stale
batches and the rewinds of a generation switch or a new generation, with ``ConsumedBatch``
values, alone and through the projector against a SQLite store, without a broker."""

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson
import pytest

from events import decode_event
from projections.policy import default_policy, parse_policy
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent, Rewind
from services.worker.generations import policy_text
from services.worker.ports import BatchWrite, ReadModelStore
from services.worker.projector import Projector
from services.worker.tracking import OffsetTracker
from tests.feed import event

TOPIC = "ticket-events"
NOW = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)


def consumed(partition: int, offset: int) -> ConsumedEvent:
    """A ticket of its own opened at this position (customer c-<partition>)."""
    document = event(
        f"e-{partition}-{offset}",
        "ticket.opened",
        "2026-11-02T13:00:00Z",
        f"c-{partition}",
        f"T-{offset}",
        priority="medium",
    )
    raw = orjson.dumps(document)
    return ConsumedEvent(decode_event(raw), partition, offset, raw)


def batch(**ranges: tuple[int, int]) -> ConsumedBatch:
    """``batch(p0=(0, 3))``: offsets 0, 1, 2 of partition 0, one event each."""
    offsets = {int(name[1:]): span for name, span in ranges.items()}
    valid = [consumed(p, o) for p, (first, after) in offsets.items() for o in range(first, after)]
    return ConsumedBatch(valid, offsets)


def tickets(store: ReadModelStore, generation: int | None, partition: int = 0) -> list[str]:
    assert generation is not None
    rows = store.ticket_rows(generation, [(f"c-{partition}", f"T-{o}") for o in range(20)])
    return sorted(key[1] for key in rows)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/slatrack.db")


@pytest.fixture
def store(settings):
    store = open_store(settings)
    yield store
    store.close()


@pytest.fixture
def other(settings):
    """The same read models, as another worker (or a rebuild) sees them."""
    store = open_store(settings)
    yield store
    store.close()


async def worker(store: ReadModelStore, partitions: Iterable[int] = (0, 1)) -> Projector:
    projector = Projector(store, default_policy(), TOPIC, clock=lambda: NOW, count_metrics=False)
    await projector.open()
    await projector.start_offsets(set(partitions))
    return projector


def dearer_text() -> str:
    text = policy_text(default_policy())
    assert "rate_cents_per_hour = 12500" in text
    text = text.replace("rate_cents_per_hour = 12500", "rate_cents_per_hour = 20000")
    return text.replace(f'version = "{default_policy().version}"', 'version = "dearer"', 1)


# -- through the projector, against SQLite -----------------------------------------------


async def test_a_batch_that_starts_after_the_expected_offset_is_a_gap_rewound_to_it(store):
    projector = await worker(store)
    await projector.handle(batch(p0=(0, 2)))
    with pytest.raises(Rewind) as rewind:
        await projector.handle(batch(p0=(5, 7)))
    assert rewind.value.offsets == {0: 2}
    assert "gap in partition 0: 5 > 2" in str(rewind.value)  # decided before the store is asked
    assert store.stored_offsets(projector.generation, TOPIC) == {0: 2}
    assert tickets(store, projector.generation) == ["T-0", "T-1"]  # nothing over the gap
    await projector.handle(batch(p0=(2, 3)))  # read again from there: applied
    assert store.stored_offsets(projector.generation, TOPIC) == {0: 3}


async def test_a_batch_below_what_is_stored_is_ignored_and_one_overlapping_it_trimmed(store):
    first = await worker(store)
    await first.handle(batch(p0=(0, 3)))
    await first.handle(batch(p0=(0, 3)))  # read again after a rewind: nothing new
    assert first.applied_events == 3
    restarted = await worker(store)  # a worker starting at the stored offsets
    assert restarted.tracking.expected == {0: 3, 1: None}
    await restarted.handle(batch(p0=(1, 3)))
    await restarted.handle(batch(p0=(1, 5)))  # offsets 1 and 2 are held already
    assert restarted.applied_events == 2
    assert store.stored_offsets(restarted.generation, TOPIC) == {0: 5}
    assert tickets(store, restarted.generation) == ["T-0", "T-1", "T-2", "T-3", "T-4"]


async def test_a_stale_batch_rewinds_its_partitions_to_the_stored_offsets(store, other):
    projector = await worker(store)
    await projector.handle(batch(p0=(0, 2), p1=(0, 1)))
    gen = projector.generation
    # Another worker took partition 0 and committed first (this one has not noticed yet).
    other.commit_batch(gen, BatchWrite(TOPIC, {0: (2, 4)}))
    with pytest.raises(Rewind) as rewind:
        await projector.handle(batch(p0=(2, 3), p1=(1, 2)))
    assert rewind.value.offsets == {0: 4, 1: 1}
    assert "stale batch" in str(rewind.value)
    assert store.stored_offsets(gen, TOPIC) == {0: 4, 1: 1}  # the batch wrote nothing
    assert tickets(store, gen, 1) == ["T-0"]
    await projector.handle(batch(p0=(4, 5), p1=(1, 2)))  # from the stored offsets: applied
    assert store.stored_offsets(gen, TOPIC) == {0: 5, 1: 2}


async def test_a_generation_switch_rewinds_to_the_new_generations_offsets(store, other):
    projector = await worker(store)
    await projector.handle(batch(p0=(0, 3)))
    live = projector.generation
    dearer = parse_policy(dearer_text(), "dearer.toml")
    rebuilt = other.create_generation("rebuild", policy_text(dearer))
    other.commit_batch(rebuilt, BatchWrite(TOPIC, {0: (0, 2)}), must_be_active=False)  # read so far
    other.activate_generation(rebuilt)
    with pytest.raises(Rewind) as rewind:
        await projector.handle(batch(p0=(3, 4)))
    assert rewind.value.offsets == {0: 2, 1: None}
    assert (projector.generation, projector.policy.digest) == (rebuilt, dearer.digest)
    assert store.stored_offsets(live, TOPIC) == {0: 3}  # not written to the old one
    await projector.handle(batch(p0=(2, 4)))
    assert store.stored_offsets(rebuilt, TOPIC) == {0: 4}
    assert tickets(store, rebuilt) == ["T-2", "T-3"]


async def test_a_switch_the_timers_notice_is_a_rewind_for_the_consumer(store, other):
    projector = await worker(store)
    await projector.handle(batch(p0=(0, 3)))
    rebuilt = other.create_generation("rebuild", policy_text(default_policy()))
    other.commit_batch(rebuilt, BatchWrite(TOPIC, {1: (0, 7)}), must_be_active=False)
    other.activate_generation(rebuilt)
    assert projector.take_rewind() is None
    await projector.notice_switch()
    rewind = projector.take_rewind()
    assert rewind is not None and rewind.offsets == {0: None, 1: 7}
    assert projector.generation == rebuilt and projector.take_rewind() is None


async def test_a_log_that_ends_before_the_stored_offsets_starts_a_new_generation_from_its_beginning(
    store,
):
    older = store.create_generation("older", policy_text(default_policy()))
    projector = await worker(store)
    await projector.handle(batch(p0=(0, 3)))
    before = projector.generation
    with pytest.raises(Rewind) as rewind:
        await projector.log_ended_before({0: (3, 0)})
    assert rewind.value.offsets == {0: None, 1: None}
    new = projector.generation
    assert new != before and store.active_generation() == new
    assert store.generation_policy(new) == policy_text(projector.policy)
    kept = [g["generation"] for g in store.generations()]
    assert older not in kept and before in kept  # the previous one kept for a look back
    assert store.stored_offsets(before, TOPIC) == {0: 3}
    await projector.handle(batch(p0=(0, 2)))  # the new log, from its beginning
    assert store.stored_offsets(new, TOPIC) == {0: 2}
    assert tickets(store, new) == ["T-0", "T-1"]


# -- the tracker alone -------------------------------------------------------------------


def tracker(expected: dict[int, int | None]) -> OffsetTracker:
    tracking = OffsetTracker()
    tracking.assign(set(expected), {p: o for p, o in expected.items() if o is not None})
    return tracking


def test_a_partition_with_no_offset_yet_takes_any_batch():
    offsets, valid = tracker({0: None}).trim(batch(p0=(4, 6)))
    assert offsets == {0: (4, 6)} and [v.offset for v in valid] == [4, 5]


def test_trimming_leaves_out_what_is_held_partition_by_partition():
    tracking = tracker({0: 3, 1: 1, 2: 5})
    offsets, valid = tracking.trim(batch(p0=(1, 5), p1=(1, 2), p2=(2, 4)))
    assert offsets == {0: (3, 5), 1: (1, 2)}  # partition 2: wholly held
    assert [(v.partition, v.offset) for v in valid] == [(0, 3), (0, 4), (1, 1)]


def test_a_gap_in_one_partition_rewinds_that_partition_only():
    with pytest.raises(Rewind) as rewind:
        tracker({0: 3, 1: 1}).trim(batch(p0=(3, 4), p1=(2, 3)))
    assert rewind.value.offsets == {1: 1}


def test_rewinds_set_what_each_partition_wants_next():
    tracking = tracker({0: 3, 1: 1})
    tracking.applied({0: (3, 6)})
    assert tracking.expected == {0: 6, 1: 1}
    assert tracking.stale({0: (6, 7)}, {0: 9, 1: 1}, "moved on").offsets == {0: 9}
    assert tracking.expected == {0: 9, 1: 1}
    assert tracking.restart({1: 4}, "switched").offsets == {0: None, 1: 4}
    assert tracking.expected == {0: None, 1: 4}
    assert tracking.from_beginning("new").offsets == {0: None, 1: None}
    assert tracking.expected == {0: None, 1: None}


def test_lagging_partitions_have_no_timers_and_revoked_ones_are_forgotten():
    tracking = tracker({0: 3, 1: 1, 2: 2})
    tracking.saw(ConsumedBatch([], {0: (3, 3), 1: (1, 1)}, lagging={1}))
    assert tracking.caught_up() == [0, 2]
    assert tracking.held([0, 2]) == {0: (3, 3), 2: (2, 2)}
    tracking.saw(ConsumedBatch([], {1: (1, 1)}))  # caught up now
    assert tracking.caught_up() == [0, 1, 2]
    tracking.revoke({1, 2})
    assert (tracking.partitions, tracking.expected, tracking.lagging) == ({0}, {0: 3}, set())
