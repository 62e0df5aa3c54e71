"""The worker's following of the policy topic, where it can go wrong (issue 13; found by a review
that tried to break it): a partition moving to a worker that has not read a version yet, a
version read at the start with no batch after it, an application that fails and is tried again,
customer rows and contract changes in force later, a switch found while applying, a replaced
topic, a rebuild that cannot read it. Each checks the rows against replay with every version."""

import asyncio
import sqlite3
from datetime import UTC, datetime

import orjson
import pytest

from events import decode_event
from projections.contracts import Contracts
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.histories import seq_of
from services.worker.projector import Projector
from tests.contracts_helpers import amended_text, published
from tests.engine_helpers import ny
from tests.feed import appended, event
from tests.worker_helpers import ListPolicyLog

TOPIC = "ticket-events"
AMENDED_FROM = ny("2026-11-16 00:00")
CLOCK = ny("2026-11-20 12:00")


def ev(event_id, type_, at, customer, ticket=None, **data):
    return event(event_id, type_, at.isoformat(), customer, ticket, **data)


class Log:
    def __init__(self):
        self.partitions: dict[int, list[dict]] = {}

    def batch(self, partition, *events) -> ConsumedBatch:
        return appended(self.partitions, partition, events)

    def recorded(self):
        return [
            Recorded(seq_of(p, o), decode_event(orjson.dumps(e)))
            for p, events in sorted(self.partitions.items())
            for o, e in enumerate(events)
        ]


def stored_row(store, gen, key):
    row = store.ticket(gen, key)
    assert row is not None, key
    return row


def projector(store, policy_log):
    return Projector(
        store, default_policy(), TOPIC, clock=lambda: CLOCK, count_metrics=False, policy_log=policy_log
    )


def row_versions(store, gen):
    from tests.integration.test_replay_equality import rows

    return {r.ticket_id: (orjson.loads(r.view)["policy_version"], r.evaluated_at) for r in rows(store, gen)}


def replayed(log, versions, instant):
    doc = replay(log.recorded(), Contracts(default_policy(), versions), datetime.fromtimestamp(instant, UTC))
    return {v["ticket_id"]: v["policy_version"] for v in doc["tickets"]}


def test_a_partition_moved_to_a_worker_that_had_not_read_a_version_is_measured_with_it(tmp_path):
    """Worker A reads V and measures partition 0 with it; the partition moves to worker B, whose
    last read of the policy topic was before V. B takes V from the read models (where A stored it)
    at the assignment, before projecting anything of the partition: the ticket dispatched after
    V's instant is measured with V."""
    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(amended_text(), "default", AMENDED_FROM, 0)]
    log = Log()

    async def go():
        b_topic = ListPolicyLog([])  # B read the topic before V was published
        b = projector(store, b_topic)
        await b.open()
        a = projector(store, ListPolicyLog(versions))
        await a.open()
        await a.start_offsets({0})
        await a.handle(
            log.batch(
                0, ev("e1", "ticket.opened", ny("2026-11-13 09:00"), "acme", "BEFORE", priority="medium")
            )
        )
        gen = a.generations.current
        assert store.stored_offsets(gen, a.policy_topic) == {0: 1}
        await a.revoked({0})
        await b.start_offsets({0})  # the rebalance
        await b.handle(
            log.batch(
                0,
                ev("e2", "ticket.opened", ny("2026-11-16 09:00"), "acme", "AFTER", priority="medium"),
                ev("e3", "ticket.responded", ny("2026-11-16 12:00"), "acme", "AFTER"),
            )
        )
        # B's follow_policies: its next read finds V.
        b_topic.versions = versions
        await b.read_policies()  # nothing new: B took V from the read models at the assignment
        async with b.lock:
            await b.apply_policies()
        return gen

    gen = asyncio.run(go())
    live = row_versions(store, gen)
    expected = {t: replayed(log, versions, at)[t] for t, (_, at) in live.items()}
    assert {t: v for t, (v, _) in live.items()} == expected


def test_a_failed_application_is_tried_again(tmp_path):
    """follow_policies reads V, and applying it fails once (a store error): the next pass tries
    again, and the tickets V changes are recomputed."""
    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(amended_text(), "default", AMENDED_FROM, 0, retroactive=True)]
    topic = ListPolicyLog([])
    log = Log()

    async def go():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0,
                ev("e2", "ticket.opened", ny("2026-11-16 09:00"), "acme", "AFTER", priority="medium"),
                ev("e3", "ticket.responded", ny("2026-11-16 12:00"), "acme", "AFTER"),
            )
        )
        topic.versions = versions  # published, retroactive
        commit = store.commit_batch
        failures = [1]

        def flaky(*a, **kw):
            if failures:
                failures.pop()
                raise sqlite3.OperationalError("database is locked")
            return commit(*a, **kw)

        store.commit_batch = flaky  # type: ignore[method-assign]
        stop = asyncio.Event()
        follower = asyncio.create_task(w.follow_policies(stop, every_s=0.05))
        await asyncio.sleep(0.5)  # ~10 polls
        stop.set()
        await follower
        # And the partition goes on: another customer's ticket, on the same partition.
        await w.handle(
            log.batch(0, ev("e4", "ticket.opened", ny("2026-11-17 09:00"), "bolt", "OTHER", priority="low"))
        )
        return w.generations.current, w

    gen, w = asyncio.run(go())
    live = row_versions(store, gen)
    expected = {t: replayed(log, versions, at)[t] for t, (_, at) in live.items()}
    assert {t: v for t, (v, _) in live.items()} == expected, store.stored_offsets(gen, w.policy_topic)


def lenient_text() -> str:
    """The default contract, amended: delinquent after 30 days (not 10), dashboard at 40."""
    from tests.contracts_helpers import default_text

    text = default_text().replace('version = "default-2026.1"', 'version = "default-2026.9"', 1)
    text = text.replace("delinquent_after_days = 10", "delinquent_after_days = 30", 1)
    text = text.replace("dashboard_suspended_at_days = 15", "dashboard_suspended_at_days = 40", 1)
    return text


def test_a_retroactive_version_recomputes_the_customer_rows(tmp_path):
    """A retroactive version of the default contract with other suspension rules: the
    partition's customers are evaluated again too (their standing follows the new rules)."""
    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(lenient_text(), "default", ny("2026-10-01 00:00"), 0, retroactive=True)]
    topic = ListPolicyLog([])
    log = Log()

    async def go():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0,
                ev(
                    "i1",
                    "account.invoice_due",
                    ny("2026-11-01 00:00"),
                    "acme",
                    invoice_id="INV-1",
                    due_at=ny("2026-11-01 00:00").isoformat(),
                ),
                ev(
                    "e2",
                    "ticket.opened",
                    ny("2026-11-18 09:00"),
                    "acme",
                    "T",
                    priority="low",
                    category="non_service",
                ),
            )
        )
        topic.versions = versions
        assert await w.read_policies() == 1
        async with w.lock:
            await w.apply_policies()
        return w.generations.current

    gen = asyncio.run(go())
    row = store.customer(gen, "acme")
    assert row is not None
    live = orjson.loads(row.view)
    doc = replay(
        log.recorded(), Contracts(default_policy(), versions), datetime.fromtimestamp(row.evaluated_at, UTC)
    )
    again = next(c for c in doc["customers"] if c["customer_id"] == "acme")
    ticket = orjson.loads(stored_row(store, gen, ("acme", "T")).view)
    assert ticket["policy_version"] == "default-2026.9"  # the ticket was recomputed
    assert (live["delinquent"], live["dashboard_suspended"]) == (
        again["delinquent"],
        again["dashboard_suspended"],
    )


def test_a_contract_change_in_force_later_reevaluates_the_customer_row_then(tmp_path):
    """acme moves to a lenient contract effective 20 Nov (known on the 1st): the customer row's
    next change is the 20th, and a timer pass after it evaluates the row with the new rules."""
    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(lenient_text(), "lenient", ny("2026-10-01 00:00"), 0)]
    topic = ListPolicyLog(versions)
    log = Log()
    clock = [ny("2026-11-14 12:00")]

    async def go():
        w = Projector(
            store, default_policy(), TOPIC, clock=lambda: clock[0], count_metrics=False, policy_log=topic
        )
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0,
                ev(
                    "i1",
                    "account.invoice_due",
                    ny("2026-11-01 00:00"),
                    "acme",
                    invoice_id="INV-1",
                    due_at=ny("2026-11-01 00:00").isoformat(),
                ),
                ev(
                    "c1",
                    "account.contract_changed",
                    ny("2026-11-01 00:00"),
                    "acme",
                    contract="lenient",
                    effective_from=ny("2026-11-20 00:00").isoformat(),
                ),
                ev("e2", "ticket.opened", ny("2026-11-14 09:00"), "acme", "T", priority="low"),
            )
        )
        for day in ("2026-11-17 12:00", "2026-11-21 12:00", "2026-11-25 12:00"):
            clock[0] = ny(day)
            await w.tick()
        return w.generations.current

    gen = asyncio.run(go())
    row = store.customer(gen, "acme")
    assert row is not None
    live = orjson.loads(row.view)
    at = ny("2026-11-25 12:00")
    doc = replay(log.recorded(), Contracts(default_policy(), versions), at)
    again = next(c for c in doc["customers"] if c["customer_id"] == "acme")
    # Evaluated again by the first timer pass after the 20th, with the lenient rules.
    assert row.evaluated_at == int(ny("2026-11-21 12:00").timestamp())
    assert (live["delinquent"], live["dashboard_suspended"]) == (
        again["delinquent"],
        again["dashboard_suspended"],
    )


def test_a_switch_found_applying_versions_is_followed(tmp_path):
    """Versions pending when a rebuild has switched generations: the batch's application finds
    the switch, and the worker follows it (a Rewind), as for a batch's own commit."""
    from services.worker.batches import Rewind

    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(amended_text(), "default", AMENDED_FROM, 0)]
    log = Log()

    async def go():
        w = projector(store, ListPolicyLog(versions))
        await w.open()
        await w.start_offsets({0})  # versions pending
        gen = store.create_generation("rebuild", default_policy().text)
        store.activate_generation(gen)  # a rebuild switched
        try:
            await w.handle(
                log.batch(
                    0, ev("e1", "ticket.opened", ny("2026-11-13 09:00"), "acme", "X", priority="medium")
                )
            )
        except Rewind:
            return "rewind"
        except Exception as exc:
            return repr(exc)
        return "handled"

    assert asyncio.run(go()) == "rewind"


def test_a_version_read_at_the_start_is_applied_to_a_partition_with_no_batch(tmp_path):
    """A retroactive version published while the worker was down: the restarted worker reads it
    at the start, and follow_policies applies it to a quiet partition (no batch comes)."""
    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(amended_text(), "default", AMENDED_FROM, 0, retroactive=True)]
    topic = ListPolicyLog([])
    log = Log()

    async def first():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0,
                ev("e2", "ticket.opened", ny("2026-11-16 09:00"), "acme", "AFTER", priority="medium"),
                ev("e3", "ticket.responded", ny("2026-11-16 12:00"), "acme", "AFTER"),
                ev("e4", "ticket.closed", ny("2026-11-16 12:30"), "acme", "AFTER"),
            )
        )

    asyncio.run(first())
    topic.versions = versions  # published while the worker is down

    async def restarted():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        stop = asyncio.Event()
        follower = asyncio.create_task(w.follow_policies(stop, every_s=0.05))
        for _ in range(5):
            await w.tick()
            await asyncio.sleep(0.05)
        stop.set()
        await follower
        return w.generations.current

    gen = asyncio.run(restarted())
    live = row_versions(store, gen)
    expected = {t: replayed(log, versions, at)[t] for t, (_, at) in live.items()}
    assert {t: v for t, (v, _) in live.items()} == expected


def test_a_replaced_policy_topic_is_an_error_line(tmp_path, caplog):
    """The generation has read V0 at position 0; the policy topic is replaced, another version
    at position 0. A worker taking the generation reads the topic from its beginning, sees the
    difference and says so in an error line (the read models keep their versions)."""
    from events.policies import encode_policy_event
    from tests.contracts_helpers import premium_text
    from tests.worker_helpers import MemoryPolicyLog

    store = open_store(Settings(data_dir=tmp_path))
    old = published(premium_text(), "premium", ny("2026-10-01 00:00"), 0)
    new = published(amended_text(), "default", AMENDED_FROM, 0)
    log = Log()

    async def first():
        w = projector(store, MemoryPolicyLog([encode_policy_event(old.event)]))
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0, ev("e1", "ticket.opened", ny("2026-11-13 09:00"), "acme", "BEFORE", priority="medium")
            )
        )

    asyncio.run(first())

    async def restarted():
        w = projector(store, MemoryPolicyLog([encode_policy_event(new.event)]))
        await w.open()
        await w.start_offsets({0})
        await w.handle(
            log.batch(
                0,
                ev("e2", "ticket.opened", ny("2026-11-16 09:00"), "acme", "AFTER", priority="medium"),
                ev("e3", "ticket.responded", ny("2026-11-16 12:00"), "acme", "AFTER"),
            )
        )
        return w.generations.current, w

    gen, w = asyncio.run(restarted())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("holds other versions at positions [0]" in e and "it was replaced" in e for e in errors), (
        errors
    )
    # The read models keep measuring with what they hold (and say which): the old version.
    assert [(v.position, v.policy.version) for v in w.contracts.versions] == [(0, "premium-2026.1")]
    live = row_versions(store, gen)
    assert {t: v for t, (v, _) in live.items()} == {
        t: replayed(log, [old], at)[t] for t, (_, at) in live.items()
    }


def test_every_write_stores_the_versions_its_rows_are_measured_with(tmp_path):
    """The version's application failed (in memory only), and a batch is measured with it: the
    batch stores it, so the API's recomputations (generation_contracts) give the stored view."""
    from projections.quarantine import view_at
    from services.worker.histories import generation_contracts, stored_histories

    store = open_store(Settings(data_dir=tmp_path))
    versions = [published(amended_text(), "default", AMENDED_FROM, 0, retroactive=True)]
    topic = ListPolicyLog([])
    log = Log()

    async def go():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        topic.versions = versions
        commit = store.commit_batch
        failures = [1]

        def flaky(*a, **kw):
            if failures:
                failures.pop()
                raise sqlite3.OperationalError("database is locked")
            return commit(*a, **kw)

        store.commit_batch = flaky  # type: ignore[method-assign]
        stop = asyncio.Event()
        follower = asyncio.create_task(w.follow_policies(stop, every_s=0.05))
        await asyncio.sleep(0.2)
        stop.set()
        await follower
        await w.handle(
            log.batch(0, ev("e2", "ticket.opened", ny("2026-11-17 09:00"), "acme", "NEW", priority="medium"))
        )
        return w.generations.current

    gen = asyncio.run(go())
    row = store.ticket(gen, ("acme", "NEW"))
    assert row is not None
    stored = orjson.loads(row.view)
    records, account = stored_histories(store, gen, ("acme", "NEW"))
    api = view_at(
        ("acme", "NEW"),
        records,
        account,
        generation_contracts(store, gen, default_policy()),
        datetime.fromtimestamp(row.evaluated_at, UTC),
    )
    assert [p for p, _ in store.policy_versions(gen)] == [0]
    assert api == stored and stored["policy_version"] == "default-2026.2"


class OneLog:
    """The whole log of a rebuild: one batch of one partition."""

    def __init__(self, events):
        self.partitions = [0]
        self.events = events
        self.done = False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def read_to_end(self, handle, progress=lambda d, t: None):
        if self.done:
            return
        self.done = True
        valid = [
            ConsumedEvent(decode_event(orjson.dumps(e)), 0, i, orjson.dumps(e))
            for i, e in enumerate(self.events)
        ]
        await handle(ConsumedBatch(valid, {0: (0, len(valid))}, 0, set()))


class BrokenPolicyLog:
    async def read(self, start):
        raise ConnectionError("the broker did not answer")


def test_a_rebuild_that_cannot_read_the_policy_topic_fails_and_switches_nothing(tmp_path):
    """A worker that cannot read the policy topic reads it later and recomputes; a rebuild cannot:
    it fails, and the live generation (measured with premium) stays active."""
    from services.worker.rebuild import rebuild
    from tests.contracts_helpers import premium_text

    premium = published(premium_text(), "premium", ny("2026-10-01 00:00"), 0)
    events = [
        ev(
            "c1",
            "account.contract_changed",
            ny("2026-10-01 00:00"),
            "bolt",
            contract="premium",
            effective_from=ny("2026-10-01 00:00").isoformat(),
        ),
        ev("e1", "ticket.opened", ny("2026-11-07 10:00"), "bolt", "SAT", priority="medium"),
    ]
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)

    async def live():
        w = projector(store, ListPolicyLog([premium]))
        await w.open()
        await w.start_offsets({0})
        raw = [
            ConsumedEvent(decode_event(orjson.dumps(e)), 0, i, orjson.dumps(e)) for i, e in enumerate(events)
        ]
        await w.handle(ConsumedBatch(raw, {0: (0, 2)}, 0, set()))
        return w.generations.current

    before = asyncio.run(live())
    with pytest.raises(ConnectionError):
        asyncio.run(
            rebuild(
                settings, store, default_policy(), log_source=OneLog(events), policy_log=BrokenPolicyLog()
            )
        )
    assert store.active_generation() == before
    assert [g["generation"] for g in store.generations()] == [before]  # the failed one dropped
    assert orjson.loads(stored_row(store, before, ("bolt", "SAT")).view)["contract"] == "premium"


def test_a_version_read_while_a_batch_folds_is_not_half_used(tmp_path):
    """follow_policies reads the topic without the projector's lock: a version taken while a
    batch is between its store reads must not measure that batch's rows without the write
    storing it. The write uses one set of versions throughout (the one it started with), and
    stores exactly those; the next write takes the new one."""
    import threading

    from events.policies import encode_policy_event
    from services.worker.histories import stored_versions
    from tests.contracts_helpers import policy_event
    from tests.worker_helpers import MemoryPolicyLog

    amended = policy_event(amended_text(), "default", AMENDED_FROM, retroactive=True)
    store = open_store(Settings(data_dir=tmp_path))
    log = Log()
    topic = MemoryPolicyLog([])
    release, entered = threading.Event(), threading.Event()
    original = store.tickets_reached

    def slow(*args, **kwargs):  # a store read the batch awaits after it took its versions
        entered.set()
        release.wait(5)
        return original(*args, **kwargs)

    async def go():
        w = projector(store, topic)
        await w.open()
        await w.start_offsets({0})
        store.tickets_reached = slow  # type: ignore[method-assign]
        opened = ev("e1", "ticket.opened", ny("2026-11-16 09:00"), "acme", "AFTER", priority="medium")
        answered = ev("e2", "ticket.responded", ny("2026-11-16 12:00"), "acme", "AFTER")
        batch = asyncio.create_task(w.handle(log.batch(0, opened, answered)))
        await asyncio.to_thread(entered.wait, 5)
        topic.append(encode_policy_event(amended))
        assert await w.read_policies() == 1  # follow_policies' read, mid-batch
        release.set()
        await batch
        store.tickets_reached = original  # type: ignore[method-assign]
        gen = w.generations.current
        first = orjson.loads(stored_row(store, gen, ("acme", "AFTER")).view)["policy_version"]
        stored_then = [v.policy.version for v in stored_versions(store, gen)]
        async with w.lock:  # what follow_policies does next
            await w._apply_pending()
        return gen, first, stored_then

    gen, first, stored_then = asyncio.run(go())
    assert (first, stored_then) == ("default-2026.1", [])  # the batch: the versions it started with
    live = row_versions(store, gen)
    versions = [v for v in stored_versions(store, gen)]
    assert [v.policy.version for v in versions] == ["default-2026.2"]
    assert {t: v for t, (v, _) in live.items()} == {
        t: replayed(log, versions, at)[t] for t, (_, at) in live.items()
    }
