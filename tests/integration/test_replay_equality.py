"""Read model = replay, always (a property test on the real worker path).

Random histories (tickets of two customers, invoices, late and backdated events,
identical and conflicting copies of an event id, a ticket id reused under another
customer, work logged before it ends) are recorded into a log of three partitions in a random arrival order,
then fed to the projector the consumer drives (``Projector.handle``) against a
real store, cut into random batches. Checked against ``slatrack replay`` of the
same log (``projections.replay`` and ``projections.story``):

* every stored view is the replayed view as of the instant the row is evaluated at,
  and every ticket the replay knows has a row;
* the signals recorded in the outbox are the story's, body for body, and the
  signals the rows assert are those that stand at the end;
* the counter totals the worker published are the story's;
* a second run over the same log in other batches (a fresh rebuild) counts and
  asserts the same, and the rebuild's check against the live rows finds nothing.

``SLATRACK_TEST_PROPERTY_EXAMPLES`` sets how many histories (a few dozen in ``make test``).
"""

import asyncio
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from pydantic import SecretStr

from events import decode_event
from projections.contracts import Contracts, PolicySource
from projections.counting import Tally
from projections.policy import default_policy
from projections.replay import replay
from projections.signals import Ledger
from projections.story import story_of_log
from projections.timeline import Recorded
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.histories import seq_of
from services.worker.ports import ReadModelStore, TicketQuery
from services.worker.projector import Projector
from services.worker.rebuild import RebuildReport, _check
from tests.unit.test_engine_properties import BASE, DAY, POLICIES, SPAN, Drawn, histories
from tests.worker_helpers import ListPolicyLog, throwaway_database

EXAMPLES = int(os.environ.get("SLATRACK_TEST_PROPERTY_EXAMPLES", "30"))
TOPIC = "ticket-events"
PARTITIONS = 3


@st.composite
def logs(draw, contracts: bool = False) -> tuple[Drawn, list[list[dict]], datetime]:
    """A history, its events in the partitions of a log (arrival order), and the workers' clock.
    ``contracts``: with contract changes of the customers (to the contracts of CONTRACT_VERSIONS,
    and to one with no version), effective before, between or after their tickets' dispatches."""
    drawn: Drawn = draw(st.one_of(histories(), histories(orderly=False), histories(scale="seconds")))
    events = [dict(e) for e in drawn.dicts()]
    rnd = draw(st.randoms(use_true_random=False))
    if contracts:
        for n in range(draw(st.integers(1, 4))):
            occurred = BASE + timedelta(seconds=draw(st.integers(0, SPAN)))
            effective = occurred + timedelta(seconds=draw(st.integers(-SPAN, 3 * DAY)))
            events.append(
                {
                    "event_id": f"contract-{n}",
                    "type": "account.contract_changed",
                    "schema_version": 1,
                    "occurred_at": occurred.isoformat(),
                    "customer_id": draw(st.sampled_from(["cust-a", "cust-b"])),
                    "data": {
                        "contract": draw(st.sampled_from(["premium", "default", "gold"])),
                        "effective_from": effective.isoformat(),
                    },
                }
            )
    extra: list[dict] = []
    for event in events:
        if event["type"] == "ticket.work_logged" and rnd.random() < 0.25:  # logged before it ends
            event["data"] = {
                **event["data"],
                "ended_at": _shifted(event["occurred_at"], rnd.randint(1, 7200)),
            }
        roll = rnd.random()
        if roll < 0.08:  # the same event again, later
            extra.append(dict(event))
        elif roll < 0.14:  # the same event id with another body
            other = dict(event)
            other["occurred_at"] = _shifted(event["occurred_at"], rnd.randint(1, 7200))
            extra.append(other)
        elif roll < 0.18 and "ticket_id" in event:  # the ticket id reused by another customer
            intruder = dict(event)
            intruder["customer_id"] = "cust-x"
            intruder["event_id"] = event["event_id"] + "-x"
            extra.append(intruder)
    home = {c: rnd.randrange(PARTITIONS) for c in ("cust-a", "cust-b", "cust-x")}
    streams: dict[str, list[dict]] = {}
    for event in events:
        streams.setdefault(event["customer_id"], []).append(event)
    for stream in streams.values():
        rnd.shuffle(stream)  # arrival order: late and backdated events
    for event in extra:  # copies arrive after their original, at a random place
        stream = streams.setdefault(event["customer_id"], [])
        originals = [i for i, e in enumerate(stream) if e["event_id"] == event["event_id"]]
        stream.insert(rnd.randint(originals[0] + 1 if originals else 0, len(stream)), event)
    partitions: list[list[dict]] = [[] for _ in range(PARTITIONS)]
    for customer in sorted(streams):  # interleave the customers of a partition, each in its order
        target = partitions[home[customer]]
        for event in streams[customer]:
            target.insert(rnd.randint(_after_last(target, customer), len(target)), event)
    latest = max((decode_event(orjson.dumps(e)).occurred_at for e in events), default=drawn.as_of)
    clock = draw(st.sampled_from([latest + timedelta(days=2), drawn.as_of]))
    return drawn, partitions, clock.replace(microsecond=0)


def _after_last(target: list[dict], customer: str) -> int:
    positions = [i for i, e in enumerate(target) if e["customer_id"] == customer]
    return positions[-1] + 1 if positions else 0


def _shifted(instant: str, seconds: int) -> str:
    return (datetime.fromisoformat(instant) + timedelta(seconds=seconds)).isoformat()


def batches(partitions: list[list[dict]], rnd) -> Iterator[ConsumedBatch]:
    """The log in random batches, each spanning one or more partitions, as the consumer hands them over."""
    cuts = [0] * PARTITIONS
    while any(cuts[p] < len(partitions[p]) for p in range(PARTITIONS)):
        valid, offsets, lagging = [], {}, set()
        for p in range(PARTITIONS):
            if cuts[p] >= len(partitions[p]) or rnd.random() < 0.3:
                continue
            end = min(len(partitions[p]), cuts[p] + rnd.randint(1, 12))
            for offset in range(cuts[p], end):
                raw = orjson.dumps(partitions[p][offset])
                valid.append(ConsumedEvent(decode_event(raw), p, offset, raw))
            offsets[p] = (cuts[p], end)
            cuts[p] = end
            if end < len(partitions[p]):
                lagging.add(p)
        if offsets:
            yield ConsumedBatch(valid, offsets, 0, lagging)


def recorded(partitions: list[list[dict]]) -> list[Recorded]:
    """The log as `slatrack export` writes it for `replay`: the recording order of the workers."""
    return [
        Recorded(seq_of(p, offset), decode_event(orjson.dumps(event)))
        for p, events in enumerate(partitions)
        for offset, event in enumerate(events)
    ]


async def run(
    store: ReadModelStore, policy, clock: datetime, partitions, rnd, **options
) -> tuple[Projector, Tally]:
    """A worker reading the whole log, then one timer pass at its clock; what it counted."""
    counted = Tally()
    projector = Projector(store, policy, TOPIC, clock=lambda: clock, count_metrics=False, **options)
    # What Prometheus would get (a test's patch of a method: see tests/feed.py).
    projector._publish = counted.add  # type: ignore[method-assign,assignment]
    await projector.open()
    await projector.start_offsets(set(range(PARTITIONS)))
    for batch in batches(partitions, rnd):
        await projector.handle(batch)
    await projector.tick()
    return projector, counted


def rows(store: ReadModelStore, generation: int):
    found, after = [], None
    while page := store.list_tickets(generation, TicketQuery(after=after, limit=500)):
        found += page
        after = page[-1].key
    return found


def check_rows_equal_replay(store, generation, records, policy, clock) -> None:
    by_instant: dict[int, list] = {}
    for row in rows(store, generation):
        by_instant.setdefault(row.evaluated_at, []).append(row)
    for instant, group in by_instant.items():
        document = replay(records, policy, datetime.fromtimestamp(instant, clock.tzinfo))
        views = {(v["customer_id"], v["ticket_id"]): v for v in document["tickets"]}
        for row in group:
            if row.state == "pending":
                assert row.key not in views, (row.key, "pending, but replay has it opened")
            else:
                assert orjson.loads(row.view) == views.get(row.key), row.key
    final = replay(records, policy, clock)
    stored = {row.key for row in rows(store, generation) if row.state != "pending"}
    assert {(v["customer_id"], v["ticket_id"]) for v in final["tickets"]} <= stored


def ledgers(store, generation) -> dict:
    return {row.key: Ledger.decode(row.signals) for row in rows(store, generation) if row.state != "pending"}


def contract_versions() -> list:
    """premium (24x7, Berlin) from the middle of the histories, and an amendment of the default."""
    from tests.contracts_helpers import amended_text, premium_text, published

    return [
        published(premium_text(), "premium", BASE + timedelta(days=3), 0),
        published(amended_text(), "default", BASE + timedelta(days=10), 1),
    ]


async def check_live_equals_replay(store: ReadModelStore, drawn_logs, policy_name: str, seed: int) -> None:

    _, partitions, clock = drawn_logs
    options: dict = {}
    policy: PolicySource
    if policy_name == "contracts":
        versions = contract_versions()
        policy = Contracts(default_policy(), versions)
        options = {"policy_log": ListPolicyLog(versions)}
    else:
        policy = POLICIES[policy_name]
    rnd = random.Random(seed)
    records = recorded(partitions)
    story = story_of_log(records, policy, clock)
    kinds = {s["type"] for s in story.signals}
    for kind in sorted(kinds):
        note(f"signal {kind}")
    note(f"conflicts: {bool(story.rejected)}")

    base = policy.base if isinstance(policy, Contracts) else policy
    live, counted = await run(store, base, clock, partitions, rnd, dead_letter=_no_dead_letters, **options)
    assert live.generation is not None
    check_rows_equal_replay(store, live.generation, records, policy, clock)
    outbox = {s.signal_id: orjson.loads(s.body) for s in store.pending_signals(limit=100_000)}
    assert outbox == {s["signal_id"]: s for s in story.signals}
    assert len(outbox) == len(story.signals)  # each signal once
    live_ledgers = ledgers(store, live.generation)
    standing = {sid for ledger in live_ledgers.values() for sid in ledger.asserted}
    assert standing == set(story.standing())
    assert counted.totals() == story.tally.totals()

    # A fresh rebuild of the same log, in other batches: the same story, and a clean check.
    generation = store.create_generation("test rebuild", base.text)
    _, recounted = await run(
        store,
        base,
        clock,
        partitions,
        rnd,
        generation=generation,
        must_be_active=False,
        record_signals=False,
        **options,
    )
    assert recounted.totals() == counted.totals()
    assert ledgers(store, generation) == live_ledgers
    check_rows_equal_replay(store, generation, records, policy, clock)
    report = RebuildReport(generation, live.generation)
    _check(store, policy, live.generation, generation, TOPIC, report)
    assert report.mismatches == [] and report.live_rows_wrong == []


async def _no_dead_letters(items) -> None:
    return None


PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("policy_name", ["default", "custom"])
@PROPERTY
@given(drawn_logs=logs(), seed=st.integers(0, 2**16))
def test_live_read_models_signals_and_counters_equal_replay_sqlite(policy_name, drawn_logs, seed):
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(Settings(data_dir=directory))
        try:
            asyncio.run(check_live_equals_replay(store, drawn_logs, policy_name, seed))
        finally:
            store.close()


@settings(parent=PROPERTY, max_examples=max(20, EXAMPLES * 3))
@given(drawn_logs=logs(contracts=True), seed=st.integers(0, 2**16))
def test_with_contracts_live_read_models_signals_and_counters_equal_replay(drawn_logs, seed):
    """Contract changes late, backdated and early, to contracts with and without versions."""
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(Settings(data_dir=directory))
        try:
            asyncio.run(check_live_equals_replay(store, drawn_logs, "contracts", seed))
        finally:
            store.close()


@pytest.fixture(scope="module")
def postgres_url(request):
    with throwaway_database(request.getfixturevalue("postgres_dsn"), "slatrack_prop") as url:
        yield url


@contextmanager
def fresh_postgres(url: str) -> Iterator[ReadModelStore]:
    """The module's database, emptied: one history at a time."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    store = open_store(Settings(database_url=SecretStr(url)))
    try:
        yield store
    finally:
        store.close()


@pytest.mark.postgres
@settings(parent=PROPERTY, max_examples=max(5, EXAMPLES // 3))
@given(drawn_logs=logs(), seed=st.integers(0, 2**16))
def test_live_read_models_signals_and_counters_equal_replay_postgres(postgres_url, drawn_logs, seed):
    with fresh_postgres(postgres_url) as store:
        asyncio.run(check_live_equals_replay(store, drawn_logs, "default", seed))


async def versions_read_mid_stream(store: ReadModelStore, drawn_logs, seed: int, cut: int) -> None:
    _, partitions, clock = drawn_logs
    versions = contract_versions()
    topic = ListPolicyLog([])
    projector = Projector(
        store, default_policy(), TOPIC, clock=lambda: clock, count_metrics=False, policy_log=topic
    )
    await projector.open()
    await projector.start_offsets(set(range(PARTITIONS)))
    for n, batch in enumerate(batches(partitions, random.Random(seed))):
        if n == cut:  # published now: read between two batches, as follow_policies does
            topic.versions = versions
            await projector.read_policies()
            async with projector.lock:
                await projector.apply_policies()
        await projector.handle(batch)
    if not topic.versions:
        topic.versions = versions
        await projector.read_policies()
        async with projector.lock:
            await projector.apply_policies()
    await projector.tick()
    generation = projector.generations.current
    check_rows_equal_replay(
        store, generation, recorded(partitions), Contracts(default_policy(), versions), clock
    )


@settings(parent=PROPERTY, max_examples=max(20, EXAMPLES))
@given(drawn_logs=logs(contracts=True), seed=st.integers(0, 2**16), cut=st.integers(0, 6))
def test_versions_read_mid_stream_recompute_to_replay(drawn_logs, seed, cut):
    """The versions published while the log is being read (at a random batch): the tickets and
    customers they change are recomputed, and the rows equal replay with every version."""
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(Settings(data_dir=directory))
        try:
            asyncio.run(versions_read_mid_stream(store, drawn_logs, seed, cut))
        finally:
            store.close()
