"""The read-model store contract: one abstract test class, run against SQLite
and against PostgreSQL. A backend passes only if it passes every test here.

Each concrete class provides ``new_store``: a factory of store objects (not yet
migrated) on a database of the test's own — a file in ``tmp_path`` for SQLite,
a fresh schema for PostgreSQL, dropped afterwards.
"""

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.config import Settings
from services.store import (
    SQLITE_FILE,
    BatchWrite,
    CustomerRow,
    GenerationBehind,
    GenerationChanged,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    StoreError,
    StoreUnavailable,
    TicketQuery,
    TicketRow,
    migrations,
    open_store,
)
from services.store.migrations import latest_version
from services.store.postgres import PostgresStore
from services.store.sqlite import SqliteStore
from services.worker.ports import FOREVER, NEVER, EventKey, TicketKey

TOPIC = "ticket-events"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z

StoreFactory = Callable[[], ReadModelStore]

# The columns of schema version 3 (migrations 1-3), as the previous release wrote them.
V3_EVENT_COLUMNS = (
    "generation",
    "event_id",
    "ticket_id",
    "customer_id",
    "log_partition",
    "log_offset",
    "occurred_at",
    "body",
)
V3_TICKET_COLUMNS = (
    "generation", "ticket_id", "customer_id", "log_partition", "priority", "category", "state", "status",
    "escalation_level", "response_status", "resolution_status", "breached", "at_risk", "response_due_at",
    "resolution_due_at", "next_due_at", "next_change_at", "billing_rule", "billing_status", "billing_month",
    "amount_cents", "billable_seconds", "opened_at", "evaluated_at", "view", "signals", "response_at_risk",
    "response_breached", "resolution_at_risk", "resolution_breached", "marks",
)  # fmt: skip
V3_CUSTOMER_COLUMNS = (
    "generation", "customer_id", "log_partition", "delinquent", "dashboard_suspended", "next_change_at",
    "evaluated_at", "view",
)  # fmt: skip
_FIELD_OF = {"log_partition": "partition", "log_offset": "offset"}


def v3_values(generation: int, row: object, columns: tuple[str, ...]) -> tuple:
    return (generation, *(getattr(row, _FIELD_OF.get(c, c)) for c in columns[1:]))


# -- builders ----------------------------------------------------------------


def event(
    event_id: str,
    ticket_id: str | None = "t1",
    customer_id: str = "c1",
    partition: int = 0,
    offset: int = 0,
    body: bytes | None = None,
) -> StoredEvent:
    return StoredEvent(
        event_id=event_id,
        ticket_id=ticket_id,
        customer_id=customer_id,
        partition=partition,
        offset=offset,
        occurred_at=T0 + offset,
        body=body if body is not None else f'{{"event_id":"{event_id}"}}'.encode(),
    )


def ticket(ticket_id: str, **changes: Any) -> TicketRow:
    row = TicketRow(
        ticket_id=ticket_id,
        customer_id="c1",
        partition=0,
        priority="P2",
        category="incident",
        state="open",
        status="new",
        escalation_level=0,
        response_status="running",
        resolution_status="running",
        breached=False,
        at_risk=False,
        response_due_at=T0 + 3600,
        resolution_due_at=T0 + 86400,
        next_due_at=T0 + 3600,
        queue_due_at=T0 + 3600,
        next_change_at=T0 + 2880,
        billing_rule="standard",
        billing_status="pending",
        billing_month=None,
        amount_cents=0,
        billable_seconds=0,
        opened_at=T0,
        evaluated_at=T0,
        view=f'{{"ticket_id":"{ticket_id}"}}'.encode(),
        signals=b'["sig-1"]',
    )
    row = replace(row, **changes)
    if "queue_due_at" not in changes:  # as the row mapping has it, and migration 6 fills it in
        clocks = ((row.response_status, row.response_due_at), (row.resolution_status, row.resolution_due_at))
        running = [due for status, due in clocks if status == "running" and due is not None]
        row = replace(row, queue_due_at=min(running, default=None))
    return row


def customer(customer_id: str, **changes: Any) -> CustomerRow:
    row = CustomerRow(
        customer_id=customer_id,
        partition=0,
        delinquent=False,
        dashboard_suspended=False,
        next_change_at=None,
        evaluated_at=T0,
        view=f'{{"customer_id":"{customer_id}"}}'.encode(),
    )
    return replace(row, **changes)


def signal(signal_id: str, key: str = "c1", body: bytes | None = None) -> Signal:
    return Signal(signal_id, key, body if body is not None else f'{{"id":"{signal_id}"}}'.encode())


def batch(
    offsets: dict[int, tuple[int, int]], events=(), tickets=(), customers=(), signals=(), topic: str = TOPIC
) -> BatchWrite:
    return BatchWrite(topic, dict(offsets), list(events), list(tickets), list(customers), list(signals))


def ids(rows) -> list[str]:
    return [r.ticket_id for r in rows]


def keys(rows) -> list[TicketKey]:
    return [r.key for r in rows]


def event_key(e: StoredEvent) -> EventKey:
    return (e.customer_id, e.event_id)


def pages_of(store: ReadModelStore, generation: int, query: TicketQuery) -> list[TicketKey]:
    """Every ticket ``query`` matches, read page by page (keyset pagination from each page's last key)."""
    pages: list[list[TicketKey]] = []
    after: TicketKey | None = None
    while True:
        page = keys(store.list_tickets(generation, replace(query, after=after)))
        assert len(page) <= query.limit
        if not page:
            break
        # Each page strictly after the last one, in (ticket_id, customer_id) order: it always advances.
        order = [(t, c) for c, t in ([after] if after else []) + page]
        assert order == sorted(set(order)), f"page {page} after {after}"
        pages.append(page)
        after = page[-1]
    assert all(len(page) == query.limit for page in pages[:-1])
    return [key for page in pages for key in page]


def snapshot(store: ReadModelStore, generation: int) -> tuple:
    """Everything a batch could have changed, to show that a refused one changed nothing."""
    tickets = store.list_tickets(generation, TicketQuery(limit=10_000))
    customers = [store.customer(generation, c) for c in ("c1", "c2", "c3")]
    events = store.events_of_tickets(
        generation, [t.key for t in tickets] + [("c1", "t1"), ("c1", "t2"), ("c1", "t9"), ("c2", "t1")]
    )
    account = store.account_events_of(generation, ["c1", "c2"])
    rows = store.customer_rows(generation, ["c1", "c2", "c3"])
    return (
        store.counts(generation),
        store.stored_offsets(generation, TOPIC),
        tickets,
        customers,
        events,
        account,
        rows,
        store.signal_ids(),
        store.pending_signals(),
    )


def commit_concurrently(
    stores: list[ReadModelStore], generation: int, write: BatchWrite, before: Callable[[], None] | None = None
) -> list[str]:
    """Each store commits ``write`` from its own thread; returns the outcomes, sorted."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def commit(store: ReadModelStore) -> None:
        barrier.wait()
        try:
            store.commit_batch(generation, write)
            outcomes.append("committed")
        except StaleBatch:
            outcomes.append("stale")
        except Exception as exc:  # reported below, not lost in the thread
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=commit, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    if before is not None:
        before()
    for t in threads:
        t.join(timeout=30)
    return sorted(outcomes)


# -- the contract --------------------------------------------------------------


class StoreContract:
    """Every test of the store interface. Subclasses provide ``new_store``."""

    @pytest.fixture
    def new_store(self) -> StoreFactory:
        raise NotImplementedError("a backend's test class provides new_store")

    @pytest.fixture
    def store(self, new_store: StoreFactory) -> ReadModelStore:
        store = new_store()
        store.migrate()
        return store

    @pytest.fixture
    def gen(self, store: ReadModelStore) -> int:
        """An active generation."""
        generation = store.create_generation("test")
        store.activate_generation(generation)
        return generation

    # -- migrations ------------------------------------------------------------

    def test_migrate_twice_is_harmless(self, store, new_store):
        generation = store.create_generation("before")
        store.migrate()
        again = new_store()
        again.migrate()
        assert store.schema_versions() == list(range(1, latest_version() + 1))
        assert [g["generation"] for g in again.generations()] == [generation]

    def test_concurrent_migrations_apply_each_version_once(self, new_store):
        stores = [new_store(), new_store()]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def migrate(store: ReadModelStore) -> None:
            barrier.wait()
            try:
                store.migrate()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert stores[0].schema_versions() == list(range(1, latest_version() + 1))

    def test_migration_4_keeps_the_rows_of_schema_3(self, new_store, monkeypatch):
        """A database of the previous release (schema 3): every row survives the change of identity."""
        old = new_store()
        with monkeypatch.context() as m:
            m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
            old.migrate()
            assert old.schema_versions() == [1, 2, 3]

        live_events = [
            event("e1", "t1", "c1", offset=0),
            event("e2", "t1", "c1", offset=1, body=bytes(range(256))),
            event("a1", None, "c1", offset=2),
            event("e3", "t2", "c2", partition=1, offset=0),
        ]
        live_tickets = [
            ticket(
                "t1",
                response_at_risk=True,
                resolution_breached=True,
                breached=True,
                billing_month="2026-01",
                marks=b'{"level":2}',
                signals=b'{"s1":"breach"}',
            ),
            ticket("t2", customer_id="c2", partition=1, state="closed", next_change_at=None, view=b"\x00\\N"),
        ]
        live_customers = [
            customer("c1", next_change_at=T0 + 60),
            customer("c2", partition=1, delinquent=True, dashboard_suspended=True),
        ]
        rebuilt_events = [event("e1", "t1", "c1", offset=0)]
        rebuilt_tickets = [ticket("t1", marks=b"{}", signals=b'{"s1":"breach","s9":"at_risk"}')]
        signals = [replace(signal("s1"), partition=0), signal("s2", "c2"), replace(signal("s3"), partition=1)]

        def fill(tx) -> tuple[int, int]:
            generations = []
            for reason in ("initial", "rebuild"):
                row = tx.one(
                    "INSERT INTO generations (reason, created_at) VALUES (?, ?) RETURNING generation",
                    (reason, T0),
                )
                generations.append(row[0])
            live, rebuilt = generations
            tx.run("INSERT INTO active_generation (id, generation) VALUES (1, ?)", (live,))
            tx.run("UPDATE generations SET activated_at = ? WHERE generation = ?", (T0, live))
            for generation, events, tickets, customers, offsets in [
                (live, live_events, live_tickets, live_customers, {0: 3, 1: 1}),
                (rebuilt, rebuilt_events, rebuilt_tickets, [], {0: 1}),
            ]:
                tx.many(
                    f"INSERT INTO events ({', '.join(V3_EVENT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(V3_EVENT_COLUMNS))})",
                    [v3_values(generation, e, V3_EVENT_COLUMNS) for e in events],
                )
                tx.many(
                    f"INSERT INTO tickets ({', '.join(V3_TICKET_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(V3_TICKET_COLUMNS))})",
                    [v3_values(generation, t, V3_TICKET_COLUMNS) for t in tickets],
                )
                tx.many(
                    f"INSERT INTO customers ({', '.join(V3_CUSTOMER_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(V3_CUSTOMER_COLUMNS))})",
                    [v3_values(generation, c, V3_CUSTOMER_COLUMNS) for c in customers],
                )
                tx.many(
                    "INSERT INTO offsets (generation, topic, log_partition, next_offset) VALUES (?, ?, ?, ?)",
                    [(generation, TOPIC, p, o) for p, o in offsets.items()],
                )
            tx.many(old._insert_signal, [(s.signal_id, s.key, s.body, T0, s.partition) for s in signals])
            tx.run("UPDATE signals SET sent = TRUE WHERE signal_id = ?", ("s3",))
            return live, rebuilt

        live, rebuilt = old._write(fill)
        generations = old.generations()
        old.close()

        store = new_store()  # the next release starts on that database
        store.migrate()
        assert store.schema_versions() == list(range(1, latest_version() + 1))
        assert store.generations() == generations
        assert store.active_generation() == live
        assert store.counts(live) == {"events": 4, "tickets": 2, "customers": 2}
        assert store.counts(rebuilt) == {"events": 1, "tickets": 1, "customers": 0}
        assert store.stored_offsets(live, TOPIC) == {0: 3, 1: 1}
        assert store.stored_offsets(rebuilt, TOPIC) == {0: 1}

        # Every row reads back as it was, with account_until FOREVER and no log time (and, from
        # migration 6, its due instant standing in for the breach instant it has no column for).
        live_tickets = [replace(t, queue_breach_at=t.queue_due_at) for t in live_tickets]
        rebuilt_tickets = [replace(t, queue_breach_at=t.queue_due_at) for t in rebuilt_tickets]
        assert all(t.account_until == FOREVER for t in live_tickets + rebuilt_tickets)
        assert all(c.log_time is None for c in live_customers)
        for t in live_tickets:
            assert store.ticket(live, t.key) == t
        assert store.ticket(rebuilt, ("c1", "t1")) == rebuilt_tickets[0]
        assert store.ticket_rows(live, [t.key for t in live_tickets]) == {t.key: t for t in live_tickets}
        assert store.list_tickets(live, TicketQuery()) == live_tickets
        assert store.list_tickets(live, TicketQuery(breached=True)) == live_tickets[:1]
        assert store.billing(live, "c1", "2026-01") == live_tickets[:1]
        assert store.customer_rows(live, ["c1", "c2"]) == {c.customer_id: c for c in live_customers}
        assert store.customer(live, "c2") == live_customers[1]
        assert store.events_of_tickets(live, [("c1", "t1"), ("c2", "t2")]) == {
            ("c1", "t1"): live_events[:2],
            ("c2", "t2"): live_events[3:],
        }
        assert store.account_events_of(live, ["c1"]) == {"c1": [live_events[2]]}
        assert store.first_copies(live, [event_key(e) for e in live_events]) == {
            event_key(e): e for e in live_events
        }
        assert store.events_of_tickets(rebuilt, [("c1", "t1")]) == {("c1", "t1"): rebuilt_events}
        assert store.event_positions(live, 0, 10) == [(0, "e1"), (1, "e2"), (2, "a1")]
        assert store.pending_signals() == signals[:2]
        assert store.signal_ids() == ["s1", "s2", "s3"]
        # The queries the new columns serve work on the migrated rows.
        assert store.tickets_reached(live, {"c1": T0, "c2": FOREVER}) == [("c1", "t1"), ("c2", "t2")]
        assert store.tickets_changing_by(live, T0 + 2880, [0, 1]) == [("c1", "t1")]
        assert store.customer_tickets_changing_by(live, {"c1": T0 + 2880, "c2": FOREVER}) == [("c1", "t1")]
        assert store.tickets_missing_from(live, rebuilt) == [("c2", "t2")]
        # Generations of the previous release are unbound until a process binds them.
        assert store.generation_policy(live) is None
        assert store.generation_policy(rebuilt) is None
        assert store.bind_policy(live, 'version = "1"') == 'version = "1"'
        assert store.create_generation("next", 'version = "2"') > rebuilt

        # The new identity holds on the migrated tables: another customer's t1 and e1 are their own.
        store.commit_batch(
            live, batch({0: (3, 4)}, [event("e1", "t1", "c2", offset=3)], [ticket("t1", customer_id="c2")])
        )
        assert store.counts(live) == {"events": 5, "tickets": 3, "customers": 2}
        assert store.ticket(live, ("c1", "t1")) == live_tickets[0]
        assert keys(store.list_tickets(live, TicketQuery(ticket_id="t1"))) == [("c1", "t1"), ("c2", "t1")]
        assert store.events_of_tickets(live, [("c1", "t1")]) == {("c1", "t1"): live_events[:2]}
        # A switch from the migrated generation carries its marks and ledgers.
        store.activate_generation(rebuilt)
        switched = store.ticket(rebuilt, ("c1", "t1"))
        assert (switched.marks, switched.signals) == (b'{"level":2}', b'{"s1":"breach"}')
        store.migrate()  # and again: nothing to do
        assert store.schema_versions() == list(range(1, latest_version() + 1))

    # -- generations -------------------------------------------------------------

    def test_generations_lifecycle(self, store):
        assert store.active_generation() is None
        assert store.generations() == []
        before = int(time.time())
        first = store.create_generation("initial")
        second = store.create_generation("rebuild")
        assert second > first
        assert store.active_generation() is None  # created, not active

        store.activate_generation(first)
        assert store.active_generation() == first
        listed = store.generations()
        assert [(g["generation"], g["reason"], g["active"]) for g in listed] == [
            (first, "initial", True),
            (second, "rebuild", False),
        ]
        assert all(before <= g["created_at"] <= time.time() + 1 for g in listed)

        store.activate_generation(second)
        assert store.active_generation() == second
        assert [g["active"] for g in store.generations()] == [False, True]

        with pytest.raises(StoreError):
            store.drop_generation(second)  # the active one
        store.drop_generation(first)
        assert [g["generation"] for g in store.generations()] == [second]
        with pytest.raises(StoreError):
            store.activate_generation(first)  # gone
        assert store.create_generation("next") > second  # numbers are never reused

    def test_drop_generation_deletes_its_rows_only(self, store, gen):
        store.commit_batch(
            gen, batch({0: (0, 1)}, [event("e1")], [ticket("t1")], [customer("c1")], [signal("s1")])
        )
        building = store.create_generation("rebuild")
        store.commit_batch(
            building,
            batch(
                {0: (0, 2)},
                [event("e1"), event("e2", None, offset=1)],
                [ticket("t1")],
                [customer("c1")],
                [signal("s1"), signal("s2")],
            ),
            must_be_active=False,
        )
        kept = snapshot(store, gen)

        store.drop_generation(building)
        assert store.counts(building) == {"events": 0, "tickets": 0, "customers": 0}
        assert store.stored_offsets(building, TOPIC) == {}
        assert store.ticket(building, ("c1", "t1")) is None
        assert snapshot(store, gen) == kept
        assert store.signal_ids() == ["s1", "s2"]  # the outbox belongs to no generation
        with pytest.raises(GenerationChanged):
            store.commit_batch(building, batch({0: (2, 3)}), must_be_active=False)

    def test_generation_policy_and_bind_policy(self, store):
        unbound = store.create_generation("before migration 4")
        assert store.generation_policy(unbound) is None
        policy = 'version = "2026-01"\n[priorities.P1]\nresponse = "1h"  # it\'s "quoted"\n'
        assert store.bind_policy(unbound, policy) == policy
        assert store.generation_policy(unbound) == policy
        # Another process binding it later finds it bound: the first binding stays.
        assert store.bind_policy(unbound, 'version = "other"') == policy
        assert store.generation_policy(unbound) == policy

        bound = store.create_generation("rebuild", policy='version = "2026-02"')
        assert store.generation_policy(bound) == 'version = "2026-02"'
        assert store.bind_policy(bound, policy) == 'version = "2026-02"'
        assert store.generation_policy(unbound) == policy  # each generation its own

        store.activate_generation(bound)
        store.drop_generation(unbound)
        with pytest.raises(GenerationChanged):
            store.generation_policy(unbound)
        with pytest.raises(GenerationChanged):
            store.bind_policy(unbound, policy)
        with pytest.raises(GenerationChanged):
            store.generation_policy(bound + 100)

    def test_a_switch_makes_tickets_whose_ledger_differs_due_now(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1), 1: (0, 1)},
                tickets=[
                    ticket("same", signals=b'{"s1":"breach"}', marks=b'{"m":1}'),
                    ticket("other", signals=b'{"s1":"breach"}', marks=b'{"m":2}'),
                    ticket("closed", state="closed", signals=b"{}", next_change_at=None),
                    ticket("t1", customer_id="c2", partition=1, signals=b'{"s2":"at_risk"}'),
                ],
            ),
        )
        rebuilt = store.create_generation("rebuild", policy='version = "new"')
        later = int(time.time()) + 86_400  # a timer not due yet
        new_rows = [
            ticket("same", signals=b'{"s1":"breach"}', marks=b"{}", next_change_at=later),
            # Another policy: the view asserts something else than what the live workers sent.
            ticket("other", signals=b'{"s1":"breach","s3":"at_risk"}', next_change_at=later),
            ticket("closed", state="closed", signals=b'{"s4":"breach"}', next_change_at=None),
            ticket("t1", customer_id="c2", partition=1, signals=b'{"s2":"at_risk"}', next_change_at=None),
        ]
        store.commit_batch(rebuilt, batch({0: (0, 1), 1: (0, 1)}, tickets=new_rows), must_be_active=False)
        before = int(time.time())
        store.activate_generation(rebuilt)
        after = int(time.time())
        rows = store.ticket_rows(rebuilt, [r.key for r in new_rows])

        assert rows["c1", "same"].next_change_at == later  # the same ledger: not due
        assert rows["c2", "t1"].next_change_at is None
        for key in [("c1", "other"), ("c1", "closed")]:
            assert before <= rows[key].next_change_at <= after  # due now: a timer pass settles it
        # The ledgers and marks are the live generation's, whether they differed or not.
        assert rows["c1", "same"].signals == b'{"s1":"breach"}'
        assert rows["c1", "same"].marks == b'{"m":1}'
        assert rows["c1", "other"].signals == b'{"s1":"breach"}'
        assert rows["c1", "other"].marks == b'{"m":2}'
        assert rows["c1", "closed"].signals == b"{}"
        assert rows["c2", "t1"].signals == b'{"s2":"at_risk"}'
        # Nothing else of the rows changes.
        for row in new_rows:
            assert replace(rows[row.key], next_change_at=None, signals=b"", marks=b"") == replace(
                row, next_change_at=None, signals=b"", marks=b""
            )
        assert store.tickets_changing_by(rebuilt, after, [0, 1]) == [("c1", "closed"), ("c1", "other")]
        assert store.customer_tickets_changing_by(rebuilt, {"c1": after, "c2": after}) == [
            ("c1", "closed"),
            ("c1", "other"),
        ]
        assert store.next_change(rebuilt, [0]) <= after

    def test_tickets_missing_from(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1)},
                tickets=[
                    ticket("t2"),
                    ticket("t1"),
                    ticket("t1", customer_id="c2"),
                    ticket("t3", customer_id="c3"),
                ],
            ),
        )
        rebuilt = store.create_generation("rebuild")
        store.commit_batch(
            rebuilt,
            batch({0: (0, 1)}, tickets=[ticket("t1"), ticket("t4"), ticket("t2", customer_id="c2")]),
            must_be_active=False,
        )
        assert store.tickets_missing_from(gen, rebuilt) == [("c1", "t2"), ("c2", "t1"), ("c3", "t3")]
        assert store.tickets_missing_from(rebuilt, gen) == [("c1", "t4"), ("c2", "t2")]
        assert store.tickets_missing_from(gen, gen) == []
        empty = store.create_generation("empty")
        assert store.tickets_missing_from(empty, gen) == []
        assert store.tickets_missing_from(rebuilt, empty) == [("c1", "t1"), ("c1", "t4"), ("c2", "t2")]

    # -- commit_batch ------------------------------------------------------------

    def test_commit_batch_writes_everything(self, store, gen):
        events = [
            event("e1", offset=10),
            event("e2", offset=11),
            event("a1", None, offset=12),
            event("e3", "t2", "c2", partition=1, offset=7),
        ]
        tickets = [
            ticket("t1", breached=True, billing_month="2026-01", response_due_at=None, signals=b"[]"),
            ticket("t2", customer_id="c2", partition=1, at_risk=True, next_due_at=None, next_change_at=None),
        ]
        customers = [
            customer("c1", delinquent=True, next_change_at=T0 + 60),
            customer("c2", partition=1, dashboard_suspended=True),
        ]
        signals = [signal("s1"), signal("s2", "c2")]
        store.commit_batch(gen, batch({0: (10, 13), 1: (7, 8)}, events, tickets, customers, signals))

        assert store.stored_offsets(gen, TOPIC) == {0: 13, 1: 8}
        assert store.events_of_tickets(gen, [("c1", "t1"), ("c2", "t2")]) == {
            ("c1", "t1"): events[:2],
            ("c2", "t2"): [events[3]],
        }
        assert store.account_events_of(gen, ["c1"]) == {"c1": [events[2]]}
        assert store.ticket(gen, ("c1", "t1")) == tickets[0]
        assert store.ticket(gen, ("c2", "t2")) == tickets[1]
        assert store.ticket_rows(gen, [("c1", "t1"), ("c2", "t2")]) == {
            ("c1", "t1"): tickets[0],
            ("c2", "t2"): tickets[1],
        }
        assert store.customer(gen, "c1") == customers[0]
        assert store.customer(gen, "c2") == customers[1]
        assert store.customer(gen, "c3") is None
        assert store.customer_rows(gen, ["c1", "c2"]) == {"c1": customers[0], "c2": customers[1]}
        assert store.pending_signals() == signals
        assert store.counts(gen) == {"events": 4, "tickets": 2, "customers": 2}

    def test_rows_are_replaced_offsets_advance(self, store, gen):
        store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")], [ticket("t1")], [customer("c1")]))
        newer_ticket = ticket(
            "t1",
            state="resolved",
            status="resolved",
            escalation_level=2,
            amount_cents=1234,
            next_change_at=None,
            view=b'{"v":2}',
        )
        newer_customer = customer("c1", delinquent=True, view=b'{"v":2}')
        store.commit_batch(gen, batch({0: (1, 2)}, [event("e2", offset=1)], [newer_ticket], [newer_customer]))
        assert store.ticket(gen, ("c1", "t1")) == newer_ticket
        assert store.customer(gen, "c1") == newer_customer
        assert store.stored_offsets(gen, TOPIC) == {0: 2}
        assert store.counts(gen) == {"events": 2, "tickets": 1, "customers": 1}

    def row_versions(self, store: Any, gen: int) -> dict[str, object]:
        """An opaque version of each ticket and customer row of ``gen`` ("c1/t1", "c1"), which
        every write of the row changes, also one that stores the same values again."""
        raise NotImplementedError

    def test_a_row_equal_to_the_stored_one_is_not_rewritten(self, store, gen):
        rows = [ticket("t1"), ticket("t2"), ticket("t3")]
        customers = [customer("c1"), customer("c2")]
        store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")], rows, customers))
        before = self.row_versions(store, gen)
        # t1 and c1 as stored; t2 and c2 told as of a later instant, nothing else differs (a change
        # too); t3 once as stored, then changed, in the same batch (the last one wins, as ever).
        later_ticket, later_customer = (
            ticket("t2", evaluated_at=T0 + 60),
            customer("c2", evaluated_at=T0 + 60),
        )
        changed = ticket("t3", billing_rule=None, view=b'{"v":2}')
        store.commit_batch(
            gen,
            batch(
                {0: (1, 2)},
                [event("e1"), event("e2", offset=1)],
                [ticket("t1"), later_ticket, ticket("t3"), changed],
                [customer("c1"), later_customer],
            ),
        )
        after = self.row_versions(store, gen)
        assert {key for key in before if after[key] != before[key]} == {"c1/t2", "c1/t3", "c2"}
        assert store.ticket_rows(gen, [("c1", "t1"), ("c1", "t2"), ("c1", "t3")]) == {
            ("c1", "t1"): rows[0],
            ("c1", "t2"): later_ticket,
            ("c1", "t3"): changed,
        }
        assert store.customer_rows(gen, ["c1", "c2"]) == {"c1": customers[0], "c2": later_customer}
        assert store.stored_offsets(gen, TOPIC) == {0: 2}
        assert store.counts(gen) == {"events": 2, "tickets": 3, "customers": 2}

    def test_equal_rows_in_a_large_batch(self, store, gen):
        """The bulk path (PostgreSQL: COPY) leaves equal rows as they are too, and writes NULLs
        that replace values and values that replace NULLs."""
        rows = [ticket(f"t{i:03d}", billing_rule=None if i % 2 else "standard") for i in range(120)]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        before = self.row_versions(store, gen)
        again = [
            replace(row, billing_rule="standard" if row.billing_rule is None else None) if i % 3 == 0 else row
            for i, row in enumerate(rows)
        ]
        store.commit_batch(gen, batch({0: (1, 2)}, tickets=again))
        after = self.row_versions(store, gen)
        assert {key for key in before if after[key] != before[key]} == {
            f"c1/t{i:03d}" for i in range(0, 120, 3)
        }
        stored = store.ticket_rows(gen, [row.key for row in rows])
        assert stored == {row.key: row for row in again}

    def test_replayed_batch_is_stale_and_writes_nothing(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 2)},
                [event("e1"), event("e2", offset=1)],
                [ticket("t1")],
                [customer("c1")],
                [signal("s1")],
            ),
        )
        before = snapshot(store, gen)
        replay = batch(
            {0: (0, 2)},
            [event("e1", body=b"other"), event("e9", offset=1)],
            [ticket("t1", state="closed"), ticket("t9")],
            [customer("c1", delinquent=True)],
            [signal("s9")],
        )
        with pytest.raises(StaleBatch):
            store.commit_batch(gen, replay)
        assert snapshot(store, gen) == before

    def test_batch_after_a_gap_is_stale_and_writes_nothing(self, store, gen):
        store.commit_batch(gen, batch({0: (0, 3), 1: (0, 1)}, [event("e1")]))
        before = snapshot(store, gen)
        with pytest.raises(StaleBatch):
            store.commit_batch(gen, batch({0: (5, 8)}, [event("e5", offset=5)], [ticket("t1")]))
        # One stale partition spoils the batch: the good partition does not advance either.
        with pytest.raises(StaleBatch):
            store.commit_batch(
                gen,
                batch(
                    {0: (3, 4), 1: (2, 3)}, [event("e3", offset=3)], [ticket("t1")], signals=[signal("s3")]
                ),
            )
        assert snapshot(store, gen) == before
        store.commit_batch(gen, batch({0: (3, 4), 1: (1, 2)}, [event("e3", offset=3)]))
        assert store.stored_offsets(gen, TOPIC) == {0: 4, 1: 2}

    def test_an_unseen_partition_starts_anywhere_and_topics_are_apart(self, store, gen):
        store.commit_batch(gen, batch({2: (42, 50)}))
        store.commit_batch(gen, batch({2: (0, 5)}, topic="other-topic"))
        assert store.stored_offsets(gen, TOPIC) == {2: 50}
        assert store.stored_offsets(gen, "other-topic") == {2: 5}
        assert store.stored_offsets(gen, "unknown") == {}

    def test_generation_changed_after_a_switch(self, store, gen):
        store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")], [ticket("t1")]))
        rebuilt = store.create_generation("rebuild")
        # A rebuild writes to its generation before it is active ...
        store.commit_batch(rebuilt, batch({0: (0, 1)}, [event("e1")], [ticket("t1")]), must_be_active=False)
        # ... but a worker may not.
        with pytest.raises(GenerationChanged):
            store.commit_batch(rebuilt, batch({0: (1, 2)}, [event("e2", offset=1)]))
        store.activate_generation(rebuilt)
        before = snapshot(store, gen)
        with pytest.raises(GenerationChanged):
            store.commit_batch(
                gen, batch({0: (1, 2)}, [event("e2", offset=1)], [ticket("t2")], signals=[signal("s2")])
            )
        assert snapshot(store, gen) == before
        store.commit_batch(rebuilt, batch({0: (1, 2)}, [event("e2", offset=1)]))
        assert store.stored_offsets(rebuilt, TOPIC) == {0: 2}
        assert store.counts(rebuilt) == {"events": 2, "tickets": 1, "customers": 0}

    def test_no_active_generation_means_generation_changed(self, store):
        building = store.create_generation("first")
        with pytest.raises(GenerationChanged):
            store.commit_batch(building, batch({0: (0, 1)}))
        with pytest.raises(GenerationChanged):
            store.commit_batch(building + 100, batch({0: (0, 1)}), must_be_active=False)

    def test_a_batch_ending_before_it_starts_is_refused(self, store, gen):
        with pytest.raises(ValueError):
            store.commit_batch(gen, batch({0: (5, 4)}))
        assert store.stored_offsets(gen, TOPIC) == {}

    def test_duplicate_event_ids_keep_the_first(self, store, gen):
        first, repeat = event("e1", body=b"first"), event("e1", offset=1, body=b"repeat")
        store.commit_batch(gen, batch({0: (0, 2)}, [first, repeat]))
        store.commit_batch(gen, batch({0: (2, 3)}, [event("e1", offset=2, body=b"later")]))
        assert store.events_of_tickets(gen, [("c1", "t1")]) == {("c1", "t1"): [first]}
        assert store.first_copies(gen, [("c1", "e1")]) == {("c1", "e1"): first}
        assert store.counts(gen)["events"] == 1

    def test_a_large_batch_with_repeats_and_awkward_values(self, store, gen):
        """Large enough for a backend's bulk path (PostgreSQL: COPY), with what could trip it."""
        awkward = "tab\there, newline\nhere, back\\slash, quote' \" and é"
        body = bytes(range(256)) + b"\\N\t\n"  # every byte, and COPY's own escapes
        events = [
            event(f"e{i:03d}", f"t{i % 40:02d}", offset=i, body=body + bytes([i % 256])) for i in range(300)
        ]
        repeats = [event(f"e{i:03d}", "t00", offset=300 + i, body=b"repeat") for i in range(0, 300, 7)]
        tickets = [
            ticket(f"t{i % 40:02d}", category=awkward, evaluated_at=T0 + i, billing_rule=None, view=body)
            for i in range(120)
        ]
        store.commit_batch(gen, batch({0: (0, 343)}, events + repeats, tickets))
        assert store.counts(gen) == {"events": 300, "tickets": 40, "customers": 0}
        stored = store.events_of_tickets(gen, [("c1", f"t{i:02d}") for i in range(40)])
        assert sorted((e for es in stored.values() for e in es), key=lambda e: e.offset) == events
        rows = store.ticket_rows(gen, [("c1", f"t{i:02d}") for i in range(40)])
        assert rows == {t.key: t for t in tickets[80:]}  # the last of each ticket wins

    def test_duplicate_signal_ids_keep_the_first_across_generations(self, store, gen):
        store.commit_batch(
            gen, batch({0: (0, 1)}, signals=[signal("s1", body=b"first"), signal("s1", body=b"repeat")])
        )
        store.commit_batch(gen, batch({0: (1, 2)}, signals=[signal("s1", body=b"later"), signal("s2")]))
        assert store.pending_signals() == [signal("s1", body=b"first"), signal("s2")]
        store.mark_signals_sent(["s1", "s2"])
        # A rebuild meets the same causes again: nothing new to send.
        rebuilt = store.create_generation("rebuild")
        store.commit_batch(
            rebuilt, batch({0: (0, 2)}, signals=[signal("s1"), signal("s2")]), must_be_active=False
        )
        assert store.pending_signals() == []
        assert store.signal_ids() == ["s1", "s2"]

    # -- identity: (customer_id, ticket_id) and (customer_id, event_id) --------------

    def test_the_same_ticket_id_under_two_customers_is_two_tickets(self, store, gen):
        mine = ticket("t1", priority="P1", billing_month="2026-01", amount_cents=100)
        theirs = ticket("t1", customer_id="c2", partition=1, state="closed", billing_month="2026-01")
        store.commit_batch(gen, batch({0: (0, 1), 1: (0, 1)}, tickets=[theirs, mine, ticket("t2")]))
        assert mine.key == ("c1", "t1") and theirs.key == ("c2", "t1")
        assert store.counts(gen)["tickets"] == 3
        assert store.ticket(gen, ("c1", "t1")) == mine
        assert store.ticket(gen, ("c2", "t1")) == theirs
        assert store.ticket(gen, ("c3", "t1")) is None
        assert store.ticket_rows(gen, [("c1", "t1"), ("c2", "t1")]) == {
            ("c1", "t1"): mine,
            ("c2", "t1"): theirs,
        }
        assert store.ticket_rows(gen, [("c2", "t1"), ("c2", "t2")]) == {("c2", "t1"): theirs}
        # Only the pairs asked for: ("c1", "t1") is stored, and not asked for here.
        assert store.ticket_rows(gen, [("c1", "t2"), ("c2", "t1")]) == {
            ("c1", "t2"): ticket("t2"),
            ("c2", "t1"): theirs,
        }
        assert store.list_tickets(gen, TicketQuery(ticket_id="t1")) == [mine, theirs]
        assert store.list_tickets(gen, TicketQuery(ticket_id="t1", customer_id="c2")) == [theirs]
        assert store.list_tickets(gen, TicketQuery(ticket_id="t1", state="open")) == [mine]
        assert store.list_tickets(gen, TicketQuery(ticket_id="t9")) == []
        assert [t.key for t in store.billing(gen, "c2", "2026-01")] == [("c2", "t1")]
        # Replacing one customer's ticket leaves the other's as it was.
        newer = replace(theirs, state="open", escalation_level=2)
        store.commit_batch(gen, batch({1: (1, 2)}, tickets=[newer]))
        assert store.ticket(gen, ("c2", "t1")) == newer
        assert store.ticket(gen, ("c1", "t1")) == mine
        assert store.counts(gen)["tickets"] == 3

    def test_keyset_pagination_across_customers_of_one_ticket_id(self, store, gen):
        rows = [
            ticket(tid, customer_id=cid, priority="P1" if cid != "c2" else "P2")
            for tid in ("t1", "t2", "t3")
            for cid in ("c3", "c1", "c2")
        ]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        in_order = sorted((r.key for r in rows), key=lambda k: (k[1], k[0]))  # (ticket_id, customer_id)
        assert keys(store.list_tickets(gen, TicketQuery())) == in_order
        for limit in (1, 2, 4):  # pages that end in the middle of one ticket id's customers, and not
            assert pages_of(store, gen, TicketQuery(limit=limit)) == in_order
        assert pages_of(store, gen, TicketQuery(priority="P1", limit=2)) == [
            k for k in in_order if k[0] != "c2"
        ]
        assert pages_of(store, gen, TicketQuery(ticket_id="t2", limit=2)) == [
            ("c1", "t2"),
            ("c2", "t2"),
            ("c3", "t2"),
        ]
        # After a key: later customers of the same ticket id first, then the next ids.
        assert keys(store.list_tickets(gen, TicketQuery(after=("c2", "t1"), limit=3))) == [
            ("c3", "t1"),
            ("c1", "t2"),
            ("c2", "t2"),
        ]
        # A key that is not stored still places the page: ("c0", "t2") sorts before ("c1", "t2").
        assert keys(store.list_tickets(gen, TicketQuery(after=("c0", "t2"), limit=1))) == [("c1", "t2")]
        assert keys(store.list_tickets(gen, TicketQuery(after=("c3", "t3")))) == []

    def test_list_tickets_among_a_set_of_customers(self, store, gen):
        """The filter the API applies for a token limited to customers: in the query itself, so
        that pages, their keys and every other filter see only those customers' tickets."""
        rows = [
            ticket(tid, customer_id=cid, priority="P1" if tid != "t2" else "P2")
            for tid in ("t1", "t2", "t3", "t4")
            for cid in ("ACME", "GLOBEX", "INITECH")
        ]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        acme = frozenset({"ACME"})
        two = frozenset({"ACME", "INITECH"})
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=acme))) == [
            ("ACME", "t1"),
            ("ACME", "t2"),
            ("ACME", "t3"),
            ("ACME", "t4"),
        ]
        among_two = [(c, t) for t in ("t1", "t2", "t3", "t4") for c in ("ACME", "INITECH")]
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=two))) == among_two
        for limit in (1, 2, 3):  # every page holds only those customers, and the walk all of theirs
            assert pages_of(store, gen, TicketQuery(customer_ids=two, limit=limit)) == among_two
        # A key of another customer's ticket only places the page: what follows is still theirs only.
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=acme, after=("GLOBEX", "t2")))) == [
            ("ACME", "t3"),
            ("ACME", "t4"),
        ]
        # With the other filters (AND): a ticket id of several customers, one customer, a priority.
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=acme, ticket_id="t3"))) == [
            ("ACME", "t3")
        ]
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=two, ticket_id="t3"))) == [
            ("ACME", "t3"),
            ("INITECH", "t3"),
        ]
        assert store.list_tickets(gen, TicketQuery(customer_ids=acme, customer_id="GLOBEX")) == []
        assert keys(
            store.list_tickets(gen, TicketQuery(customer_ids=two, customer_id="INITECH", limit=1))
        ) == [("INITECH", "t1")]
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=acme, priority="P2"))) == [
            ("ACME", "t2")
        ]
        # No customer, and customers that have no ticket: nothing.
        assert store.list_tickets(gen, TicketQuery(customer_ids=frozenset())) == []
        assert store.list_tickets(gen, TicketQuery(customer_ids=frozenset({"NOBODY", "acme"}))) == []
        # Ids a store must take as they are: quotes, a comma, braces, non-ASCII (an array parameter).
        odd = ['a"b', "c,d", "{e}", "ünï 💡", "x'); --"]
        store.commit_batch(gen, batch({0: (1, 2)}, tickets=[ticket("t9", customer_id=c) for c in odd]))
        for customer in odd:
            assert keys(store.list_tickets(gen, TicketQuery(customer_ids=frozenset({customer})))) == [
                (customer, "t9")
            ]
        assert len(store.list_tickets(gen, TicketQuery(customer_ids=frozenset(odd)))) == len(odd)
        # Many customers at once (one parameter, not one each).
        many = frozenset({f"c{i}" for i in range(3000)} | {"GLOBEX"})
        assert keys(store.list_tickets(gen, TicketQuery(customer_ids=many, limit=2))) == [
            ("GLOBEX", "t1"),
            ("GLOBEX", "t2"),
        ]

    def test_the_same_event_id_under_two_customers_is_two_events(self, store, gen):
        mine = event("e1", "t1", "c1", offset=0, body=b"mine")
        theirs = event("e1", "t1", "c2", offset=1, body=b"theirs")
        account_mine = event("a1", None, "c1", offset=2, body=b"account mine")
        account_theirs = event("a1", None, "c2", offset=3, body=b"account theirs")
        repeat = event("e1", "t1", "c1", offset=4, body=b"repeat")  # the same event again: ignored
        store.commit_batch(gen, batch({0: (0, 5)}, [mine, theirs, account_mine, account_theirs, repeat]))
        store.commit_batch(gen, batch({0: (5, 6)}, [event("e1", "t1", "c2", offset=5, body=b"later")]))
        assert store.counts(gen)["events"] == 4
        assert store.events_of_tickets(gen, [("c1", "t1"), ("c2", "t1")]) == {
            ("c1", "t1"): [mine],
            ("c2", "t1"): [theirs],
        }
        assert store.account_events_of(gen, ["c1", "c2"]) == {"c1": [account_mine], "c2": [account_theirs]}
        assert store.events_of_tickets(gen, [("c2", "t1"), ("c1", "t9")]) == {
            ("c2", "t1"): [theirs],
            ("c1", "t9"): [],
        }
        assert store.event_positions(gen, 0, 100) == [(0, "e1"), (1, "e1"), (2, "a1"), (3, "a1")]

    def test_a_large_batch_with_the_same_ids_under_two_customers(self, store, gen):
        """Enough rows for a backend's bulk path (PostgreSQL: COPY), keyed by customer as well."""
        events = [
            event(f"e{i:03d}", f"t{i % 30:02d}", customer_id=f"c{i % 2 + 1}", offset=i) for i in range(200)
        ]
        same_ids = [
            event(f"e{i:03d}", f"t{i % 30:02d}", customer_id=f"c{i % 2 + 2}", offset=200 + i)
            for i in range(100)
        ]
        repeats = [replace(e, offset=300 + i, body=b"repeat") for i, e in enumerate(events[:60])]
        tickets = [
            ticket(f"t{i % 30:02d}", customer_id=f"c{i // 30 % 3 + 1}", evaluated_at=T0 + i)
            for i in range(180)
        ]
        tickets[-1] = replace(tickets[-1], account_until=NEVER)
        tickets[-2] = replace(tickets[-2], state="closed", account_until=T0 + 7)
        customers = [
            customer(f"c{i % 70:02d}", log_time=None if i % 3 else T0 + i, evaluated_at=T0 + i)
            for i in range(140)
        ]
        store.commit_batch(gen, batch({0: (0, 360)}, events + same_ids + repeats, tickets, customers))
        assert store.counts(gen) == {"events": 300, "tickets": 90, "customers": 70}
        assert store.customer_rows(gen, [c.customer_id for c in customers]) == {
            c.customer_id: c for c in customers[70:]
        }
        wanted = {(e.customer_id, e.event_id): e for e in events + same_ids}
        assert len(wanted) == 300
        assert store.first_copies(gen, wanted) == wanted
        last = {t.key: t for t in tickets}  # the last of each ticket wins
        assert len(last) == 90
        assert store.ticket_rows(gen, last) == last
        stored = store.events_of_tickets(gen, {(e.customer_id, e.ticket_id) for e in wanted.values()})
        assert sorted((e for es in stored.values() for e in es), key=event_key) == sorted(
            wanted.values(), key=event_key
        )

    def test_first_copies(self, store, gen):
        first = event("e1", "t1", "c1", offset=0, body=b"first")
        theirs = event("e1", "t7", "c2", offset=1, body=b"theirs")
        account = event("a1", None, "c1", offset=2)
        store.commit_batch(
            gen,
            batch({0: (0, 4)}, [first, theirs, account, event("e1", "t2", "c1", offset=3, body=b"again")]),
        )
        store.commit_batch(gen, batch({0: (4, 5)}, [event("e1", "t1", "c1", offset=4, body=b"later")]))
        asked = [("c1", "e1"), ("c2", "e1"), ("c1", "a1"), ("c2", "a1"), ("c3", "e1"), ("c1", "e9")]
        assert store.first_copies(gen, asked) == {
            ("c1", "e1"): first,
            ("c2", "e1"): theirs,
            ("c1", "a1"): account,
        }
        assert store.first_copies(gen, iter([("c1", "e1"), ("c1", "e1")])) == {("c1", "e1"): first}
        # Only the pairs asked for: ("c1", "e1") is stored, and not asked for here.
        assert store.first_copies(gen, [("c1", "a1"), ("c2", "e1")]) == {
            ("c1", "a1"): account,
            ("c2", "e1"): theirs,
        }
        assert store.first_copies(gen, []) == {}
        assert store.first_copies(gen, [("c9", "e9")]) == {}
        assert store.first_copies(store.create_generation("other"), [("c1", "e1")]) == {}

    # -- projector reads -------------------------------------------------------

    def test_events_of_tickets_in_partition_offset_order(self, store, gen):
        # Committed out of order, across batches and partitions.
        store.commit_batch(
            gen,
            batch(
                {0: (5, 9)},
                [
                    event("e8", offset=8),
                    event("e5", offset=5),
                    event("x6", "t2", offset=6),
                    event("a7", None, offset=7),
                ],
            ),
        )
        store.commit_batch(
            gen, batch({1: (0, 2)}, [event("e1", partition=1, offset=1), event("e0", partition=1, offset=0)])
        )
        store.commit_batch(gen, batch({0: (9, 10)}, [event("e9", offset=9)]))
        found = store.events_of_tickets(gen, [("c1", "t1"), ("c1", "t2"), ("c1", "t3")])
        assert [e.event_id for e in found["c1", "t1"]] == ["e5", "e8", "e9", "e0", "e1"]
        assert [e.event_id for e in found["c1", "t2"]] == ["x6"]
        assert found["c1", "t3"] == []  # asked for, none stored
        assert list(found) == [("c1", "t1"), ("c1", "t2"), ("c1", "t3")]  # only what was asked for
        assert store.events_of_tickets(gen, []) == {}
        other = store.create_generation("other")
        assert store.events_of_tickets(other, [("c1", "t1")]) == {("c1", "t1"): []}

    def test_event_positions_of_a_partition_below_an_offset(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 4), 1: (0, 1)},
                [
                    event("e3", offset=3),
                    event("a1", None, offset=1),
                    event("e0", "t2", offset=0),
                    event("p1", partition=1, offset=0),
                    event("e2", offset=2),
                ],
            ),
        )
        assert store.event_positions(gen, 0, 3) == [(0, "e0"), (1, "a1"), (2, "e2")]
        assert store.event_positions(gen, 0, 100) == [(0, "e0"), (1, "a1"), (2, "e2"), (3, "e3")]
        assert store.event_positions(gen, 1, 1) == [(0, "p1")]
        assert store.event_positions(gen, 0, 0) == []
        assert store.event_positions(gen, 2, 10) == []

    def test_events_from_pages_a_partition_in_offset_order(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 5), 1: (0, 1)},
                [
                    event("e4", offset=4),
                    event("a1", None, offset=1),
                    event("e0", "t2", offset=0),
                    event("p0", partition=1, offset=0),
                    event("e3", offset=3),
                ],
            ),
        )
        page = store.events_from(gen, 0, 0, 2)
        assert [(e.offset, e.event_id, e.ticket_id) for e in page] == [(0, "e0", "t2"), (1, "a1", None)]
        assert [(e.offset, e.event_id) for e in store.events_from(gen, 0, 2, 2)] == [(3, "e3"), (4, "e4")]
        assert store.events_from(gen, 0, 5, 2) == []
        assert [e.event_id for e in store.events_from(gen, 1, 0, 10)] == ["p0"]
        assert store.events_from(gen, 2, 0, 10) == []
        assert store.events_from(store.create_generation("other"), 0, 0, 10) == []

    def test_account_events_of_in_offset_order(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 6)},
                [
                    event("a3", None, "c1", offset=3),
                    event("a1", None, "c1", offset=1),
                    event("t-ev", "t1", "c1", offset=2),
                    event("b4", None, "c2", offset=4),
                    event("a5", None, "c1", offset=5),
                ],
            ),
        )
        found = store.account_events_of(gen, ["c1", "c2", "c3"])
        assert [e.event_id for e in found["c1"]] == ["a1", "a3", "a5"]
        assert [e.event_id for e in found["c2"]] == ["b4"]
        assert found["c3"] == []
        assert all(e.ticket_id is None for e in found["c1"])

    def test_tickets_reached(self, store, gen):
        closed_at = T0 + 100
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1)},
                tickets=[
                    ticket("t3", state="open"),  # account_until FOREVER
                    ticket("t1", state="resolved", account_until=FOREVER),
                    ticket("t2", state="closed", account_until=closed_at),
                    ticket("t6", category="security", account_until=NEVER),  # no account change reaches
                    ticket("t4", customer_id="c2"),
                    ticket("t5", customer_id="c3"),
                ],
            ),
        )
        after_close = {"c1": closed_at + 1, "c2": closed_at + 1}
        assert store.tickets_reached(gen, after_close) == [("c1", "t1"), ("c1", "t3"), ("c2", "t4")]
        # The instant it closed still reaches it (at or after), and so does any earlier one.
        assert store.tickets_reached(gen, {"c1": closed_at}) == [("c1", "t1"), ("c1", "t2"), ("c1", "t3")]
        assert store.tickets_reached(gen, {"c1": 0}) == [("c1", "t1"), ("c1", "t2"), ("c1", "t3")]
        # FOREVER is reached by every instant the event contract accepts, FOREVER itself too.
        assert store.tickets_reached(gen, {"c1": FOREVER}) == [("c1", "t1"), ("c1", "t3")]
        assert store.tickets_reached(gen, {"c1": FOREVER + 1}) == []
        # Several customers, each from its own instant; only the asked customers' tickets.
        assert store.tickets_reached(gen, {"c2": T0, "c3": FOREVER, "c1": T0}) == [
            ("c1", "t1"),
            ("c1", "t2"),
            ("c1", "t3"),
            ("c2", "t4"),
            ("c3", "t5"),
        ]
        assert store.tickets_reached(gen, {"c3": T0}) == [("c3", "t5")]
        assert store.tickets_reached(gen, {}) == []
        assert store.tickets_reached(gen, {"nobody": T0}) == []
        assert store.tickets_reached(store.create_generation("other"), {"c1": T0}) == []

    def test_changes_due_are_restricted_to_partitions(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1), 1: (0, 1), 2: (0, 1)},
                tickets=[
                    ticket("t0a", partition=0, next_change_at=T0 + 10),
                    ticket("t0b", partition=0, next_change_at=T0 + 50),
                    ticket("t0c", partition=0, next_change_at=None),
                    ticket("t1a", partition=1, next_change_at=T0 + 5),
                    ticket("t2a", partition=2, next_change_at=T0 + 1),
                ],
                customers=[
                    customer("c0", partition=0, next_change_at=T0 + 7),
                    customer("c1", partition=1, next_change_at=T0 + 3),
                    customer("c2", partition=2, next_change_at=None),
                ],
            ),
        )
        assert store.tickets_changing_by(gen, T0 + 10, [0]) == [("c1", "t0a")]
        assert store.tickets_changing_by(gen, T0 + 9, [0]) == []
        assert store.tickets_changing_by(gen, T0 + 60, [0, 1]) == [
            ("c1", "t1a"),
            ("c1", "t0a"),
            ("c1", "t0b"),
        ]
        assert store.tickets_changing_by(gen, T0 + 60, []) == []
        assert store.customers_changing_by(gen, T0 + 7, [0, 1]) == ["c1", "c0"]
        assert store.customers_changing_by(gen, T0 + 7, [2]) == []
        assert store.next_change(gen, [0]) == T0 + 7  # a customer's change comes first
        assert store.next_change(gen, [0, 1]) == T0 + 3
        assert store.next_change(gen, [2]) == T0 + 1
        assert store.next_change(gen, [3]) is None
        assert store.next_change(gen, []) is None

    def test_ticket_rows_leave_out_missing_ids(self, store, gen):
        rows = [ticket("t1"), ticket("t2", state="closed")]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        asked = [("c1", "t2"), ("c1", "t1"), ("c1", "t9"), ("c2", "t1")]  # c2 has no t1
        assert store.ticket_rows(gen, asked) == {("c1", "t1"): rows[0], ("c1", "t2"): rows[1]}
        assert store.ticket_rows(gen, []) == {}
        assert store.ticket(gen, ("c1", "t9")) is None
        assert store.ticket(gen, ("c2", "t1")) is None

    def test_tickets_changing_by_orders_ties_by_key(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1), 1: (0, 1)},
                tickets=[
                    ticket("t2", customer_id="c1", next_change_at=T0 + 5),
                    ticket("t1", customer_id="c2", partition=1, next_change_at=T0 + 5),
                    ticket("t1", customer_id="c1", next_change_at=T0 + 5),
                    ticket("t9", customer_id="c9", next_change_at=T0 + 4),
                ],
            ),
        )
        assert store.tickets_changing_by(gen, T0 + 5, [0, 1]) == [
            ("c9", "t9"),
            ("c1", "t1"),
            ("c1", "t2"),
            ("c2", "t1"),
        ]
        assert store.tickets_changing_by(gen, T0 + 5, [1]) == [("c2", "t1")]

    def test_customer_tickets_changing_by(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1), 1: (0, 1)},
                tickets=[
                    ticket("t3", next_change_at=T0 + 30),
                    ticket("t1", next_change_at=T0 + 10),
                    ticket("t2", next_change_at=None),
                    ticket("t1", customer_id="c2", partition=1, next_change_at=T0 + 20),
                    ticket("t4", customer_id="c2", partition=1, next_change_at=T0 + 5),
                    ticket("t5", customer_id="c3", next_change_at=T0),
                ],
            ),
        )
        assert store.customer_tickets_changing_by(gen, {"c1": T0 + 10}) == [("c1", "t1")]
        assert store.customer_tickets_changing_by(gen, {"c1": T0 + 9}) == []
        assert store.customer_tickets_changing_by(gen, {"c1": FOREVER}) == [("c1", "t1"), ("c1", "t3")]
        # Each customer up to its own instant, whatever the partitions; only the asked customers.
        assert store.customer_tickets_changing_by(gen, {"c2": T0 + 20, "c1": T0 + 30}) == [
            ("c1", "t1"),
            ("c1", "t3"),
            ("c2", "t1"),
            ("c2", "t4"),
        ]
        assert store.customer_tickets_changing_by(gen, {"c2": T0 + 5, "c1": T0}) == [("c2", "t4")]
        assert store.customer_tickets_changing_by(gen, {}) == []
        assert store.customer_tickets_changing_by(gen, {"nobody": FOREVER}) == []

    def test_customer_rows_and_log_time(self, store, gen):
        rows = [
            customer("c1", log_time=T0 + 42, next_change_at=T0 + 60),
            customer("c2", partition=1, log_time=None, delinquent=True),
            customer("c3", log_time=T0),
        ]
        store.commit_batch(gen, batch({0: (0, 1), 1: (0, 1)}, customers=rows))
        assert store.customer_rows(gen, ["c2", "c1", "c9", "c1"]) == {"c1": rows[0], "c2": rows[1]}
        assert store.customer_rows(gen, iter(["c3"])) == {"c3": rows[2]}
        assert store.customer_rows(gen, []) == {}
        assert store.customer(gen, "c1").log_time == T0 + 42
        assert store.customer(gen, "c2").log_time is None
        later = replace(rows[0], log_time=T0 + 99)
        store.commit_batch(gen, batch({0: (1, 2)}, customers=[later]))
        assert store.customer_rows(gen, ["c1"]) == {"c1": later}
        assert store.customer_rows(store.create_generation("other"), ["c1"]) == {}

    def test_account_until_round_trips(self, store, gen):
        rows = [
            ticket("t1"),
            ticket("t2", state="closed", account_until=T0 + 100),
            ticket("t3", account_until=NEVER),
        ]
        assert rows[0].account_until == FOREVER
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        assert [store.ticket(gen, r.key) for r in rows] == rows
        assert store.list_tickets(gen, TicketQuery()) == rows

    # -- queries -----------------------------------------------------------------

    @pytest.fixture
    def desk(self, store, gen) -> int:
        """Tickets with every filtered column varied; returns the generation."""
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1)},
                tickets=[
                    ticket("a1", priority="P1", at_risk=True, next_due_at=T0 + 100, queue_due_at=T0 + 100),
                    ticket(
                        "a2",
                        customer_id="c2",
                        response_status="stopped",
                        resolution_status="paused",
                        breached=True,
                        next_due_at=None,
                        escalation_level=1,
                    ),
                    ticket(
                        "a3",
                        priority="P1",
                        state="resolved",
                        response_status="stopped",
                        resolution_status="stopped",
                        breached=True,
                        next_due_at=None,
                        escalation_level=2,
                        billing_status="pending_review",
                    ),
                    ticket(
                        "a4",
                        customer_id="c2",
                        priority="P3",
                        state="closed",
                        response_status="stopped",
                        resolution_status="stopped",
                        next_due_at=None,
                    ),
                    ticket(
                        "a5",
                        customer_id="c3",
                        priority="P1",
                        resolution_status="paused",
                        next_due_at=T0 + 300,
                        queue_due_at=T0 + 300,
                    ),
                    ticket(
                        "a6",
                        priority="P1",
                        response_status="paused",
                        at_risk=True,
                        next_due_at=None,  # reached already (overdue): only queue_due_at has it
                        queue_due_at=T0 + 200,
                        escalation_level=3,
                        billing_status="pending_review",
                    ),
                ],
            ),
        )
        other = store.create_generation("other")  # rows elsewhere must never show
        store.commit_batch(
            other,
            batch({0: (0, 1)}, tickets=[ticket("a0"), ticket("a7", priority="P1")]),
            must_be_active=False,
        )
        return gen

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (TicketQuery(), ["a1", "a2", "a3", "a4", "a5", "a6"]),
            (TicketQuery(state="open"), ["a1", "a2", "a5", "a6"]),
            (TicketQuery(priority="P1"), ["a1", "a3", "a5", "a6"]),
            (TicketQuery(state="open", priority="P1"), ["a1", "a5", "a6"]),
            (TicketQuery(clock_status="paused"), ["a2", "a5", "a6"]),
            (TicketQuery(clock_status="stopped"), ["a2", "a3", "a4"]),
            (TicketQuery(clock_status="running", state="open", priority="P1"), ["a1", "a5", "a6"]),
            (TicketQuery(breached=True), ["a2", "a3"]),
            (TicketQuery(breached=False), ["a1", "a4", "a5", "a6"]),
            (TicketQuery(at_risk=True), ["a1", "a6"]),
            (TicketQuery(at_risk=False, breached=False), ["a4", "a5"]),
            (TicketQuery(due_before=T0 + 200), ["a1", "a6"]),
            (TicketQuery(due_before=T0 + 99), []),
            (TicketQuery(customer_id="c2"), ["a2", "a4"]),
            (TicketQuery(escalation_level=1), ["a2", "a3", "a6"]),
            (TicketQuery(escalation_level=3), ["a6"]),
            (TicketQuery(escalation_level=0), ["a1", "a2", "a3", "a4", "a5", "a6"]),
            (TicketQuery(ticket_id="a2"), ["a2"]),
            (TicketQuery(ticket_id="a2", customer_id="c1"), []),
            (TicketQuery(ticket_id="a0"), []),  # only in another generation
            (TicketQuery(after=("c1", "a3")), ["a4", "a5", "a6"]),
            (TicketQuery(priority="P1", after=("c1", "a3")), ["a5", "a6"]),
            (TicketQuery(limit=2), ["a1", "a2"]),
            (TicketQuery(limit=0), []),
            (TicketQuery(state="closed", breached=True), []),
            # The queue (issue 15): due_before and overdue compare queue_due_at, reached or not.
            (TicketQuery(overdue=T0 + 200), ["a1", "a6"]),
            (TicketQuery(overdue=T0 + 99), []),
            (TicketQuery(not_overdue=T0 + 200), ["a2", "a3", "a4", "a5"]),
            (TicketQuery(overdue=T0 + 1000, state="open", priority="P1"), ["a1", "a5", "a6"]),
            (TicketQuery(billing_status="pending_review"), ["a3", "a6"]),
            (TicketQuery(billing_status="pending"), ["a1", "a2", "a4", "a5"]),
            (TicketQuery(billing_status="waived"), []),
            (TicketQuery(sort="due"), ["a1", "a6", "a5", "a2", "a3", "a4"]),
            (TicketQuery(sort="due", state="open"), ["a1", "a6", "a5", "a2"]),
            (TicketQuery(sort="due", limit=2), ["a1", "a6"]),
            (TicketQuery(sort="due", limit=4), ["a1", "a6", "a5", "a2"]),
            (TicketQuery(sort="due", after_due=(T0 + 200, "a6", "c1")), ["a5", "a2", "a3", "a4"]),
            (TicketQuery(sort="due", after_due=(T0 + 300, "a5", "c3")), ["a2", "a3", "a4"]),
            (TicketQuery(sort="due", after_due=(None, "a2", "c2")), ["a3", "a4"]),
            (TicketQuery(sort="due", after_due=(None, "a4", "c2")), []),
            (TicketQuery(sort="due", customer_ids=frozenset({"c1", "c3"})), ["a1", "a6", "a5", "a3"]),
            (TicketQuery(sort="due", customer_ids=frozenset()), []),
            (TicketQuery(sort="due", billing_status="pending_review", state="open"), ["a6"]),
            (TicketQuery(sort="due", overdue=T0 + 250, state="open"), ["a1", "a6"]),
        ],
    )
    def test_list_tickets_filters(self, store, desk, query, expected):
        assert ids(store.list_tickets(desk, query)) == expected

    def test_list_tickets_returns_whole_rows(self, store, desk):
        [row] = store.list_tickets(desk, TicketQuery(escalation_level=3))
        assert row == store.ticket(desk, ("c1", "a6"))

    def test_list_tickets_pages_by_keyset(self, store, gen):
        tickets = [ticket(f"p{i:02d}", priority="P1" if i % 2 else "P2") for i in range(11)]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=list(reversed(tickets))))
        for query, expected in [
            (TicketQuery(limit=3), [t.key for t in tickets]),
            (TicketQuery(priority="P1", limit=2), [t.key for t in tickets if t.priority == "P1"]),
        ]:
            assert pages_of(store, gen, query) == expected

    @pytest.mark.parametrize("sort", ["due", "breach"])
    def test_the_queue_order_pages_by_keyset(self, store, gen, sort):
        """sort="due": (queue_due_at, ticket_id, customer_id), ties and one ticket id under two
        customers included, then the tickets with no running clock by (ticket_id, customer_id);
        every page from the last row's key, nothing skipped or repeated, on both backends.
        sort="breach": the same with queue_breach_at (here in another order than the dues)."""
        tickets = []
        for i in range(23):
            paused = i % 5 == 0
            tickets.append(
                ticket(
                    f"q{i % 9:02d}",
                    customer_id=f"c{i % 3}",
                    response_status="paused" if paused else "running",
                    resolution_status="paused" if paused else "running",
                    queue_due_at=None if paused else T0 + (i % 4) * 60,
                    queue_breach_at=None if paused else T0 + (3 - i % 4) * 60 + 1,
                    state="open" if i % 7 else "resolved",
                )
            )
        tickets = list({t.key: t for t in tickets}.values())
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=tickets))
        column = "queue_due_at" if sort == "due" else "queue_breach_at"

        def order(t: TicketRow) -> tuple:
            instant = getattr(t, column)
            return (instant is None, instant or 0, t.ticket_id, t.customer_id)

        for query in (
            TicketQuery(sort=sort, limit=3),
            TicketQuery(sort=sort, limit=1, state="open"),
            TicketQuery(sort=sort, limit=4, customer_ids=frozenset({"c0", "c2"})),
        ):
            expected = [
                t.key
                for t in sorted(tickets, key=order)
                if (query.state is None or t.state == query.state)
                and (query.customer_ids is None or t.customer_id in query.customer_ids)
            ]
            seen: list[TicketKey] = []
            after = None
            while True:
                page = store.list_tickets(gen, replace(query, after_due=after))
                assert len(page) <= query.limit
                if not page:
                    break
                seen += keys(page)
                last = page[-1]
                after = (getattr(last, column), last.ticket_id, last.customer_id)
            assert seen == expected, query
        with pytest.raises(TypeError):
            store.list_tickets(gen, TicketQuery(sort=sort, after=("c1", "q01")))

    def test_migration_6_fills_in_the_queue_due_instant(self, new_store, monkeypatch):
        """Rows of schema 5 get queue_due_at from their clocks' columns: the earliest due
        instant of a running clock, reached or not, as the row mapping computes it."""
        old = new_store()
        with monkeypatch.context() as m:
            m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
            old.migrate()
            assert old.schema_versions() == [1, 2, 3, 4, 5]
        rows = [
            ticket("m1", response_due_at=T0 + 10, resolution_due_at=T0 + 5),
            ticket("m2", response_due_at=None, resolution_due_at=T0 + 7),
            ticket("m3", response_status="paused", response_due_at=T0 + 1, resolution_due_at=T0 + 9),
            ticket("m4", response_status="stopped", resolution_status="stopped", state="closed"),
            ticket("m5", response_due_at=T0 + 3, resolution_status="paused", resolution_due_at=T0 + 2),
            ticket(
                "m6", state="pending", response_status="", resolution_status="", response_due_at=None,
                resolution_due_at=None, next_due_at=None,
            ),
            ticket("m7", response_due_at=T0 - 50, next_due_at=None),  # overdue: reached, still running
        ]  # fmt: skip
        assert [r.queue_due_at for r in rows] == [T0 + 5, T0 + 7, T0 + 9, None, T0 + 3, None, T0 - 50]
        columns = [*V3_TICKET_COLUMNS, "account_until"]

        def fill(tx) -> int:
            (generation,) = tx.one(
                "INSERT INTO generations (reason, created_at) VALUES (?, ?) RETURNING generation", ("g", T0)
            )
            tx.run("INSERT INTO active_generation (id, generation) VALUES (1, ?)", (generation,))
            tx.many(
                f"INSERT INTO tickets ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [v3_values(generation, r, tuple(columns)) for r in rows],
            )
            return generation

        generation = old._write(fill)
        old.close()
        store = new_store()
        store.migrate()
        assert store.schema_versions() == list(range(1, latest_version() + 1))
        # The breach instant has no column to come from: the due instant stands in for it (at or
        # before it) until the row is written again.
        assert store.list_tickets(generation, TicketQuery()) == [
            replace(r, queue_breach_at=r.queue_due_at) for r in rows
        ]
        for sort in ("due", "breach"):
            assert ids(store.list_tickets(generation, TicketQuery(sort=sort))) == [
                "m7", "m5", "m1", "m2", "m3", "m4", "m6",
            ]  # fmt: skip
        assert ids(store.list_tickets(generation, TicketQuery(due_before=T0 + 5))) == ["m1", "m5", "m7"]

    def test_billing_by_customer_and_month(self, store, gen):
        store.commit_batch(
            gen,
            batch(
                {0: (0, 1)},
                tickets=[
                    ticket("b2", billing_month="2026-01", amount_cents=500),
                    ticket("b1", billing_month="2026-01", amount_cents=700),
                    ticket("b3", billing_month="2026-02", amount_cents=100),
                    ticket("b4", customer_id="c2", billing_month="2026-01"),
                    ticket("b5", billing_month=None),
                ],
            ),
        )
        january = store.billing(gen, "c1", "2026-01")
        assert [(t.ticket_id, t.amount_cents) for t in january] == [("b1", 700), ("b2", 500)]
        assert ids(store.billing(gen, "c1", "2026-02")) == ["b3"]
        assert store.billing(gen, "c1", "2026-03") == []
        assert ids(store.billing(gen, "c2", "2026-01")) == ["b4"]

    def test_counts_per_generation(self, store, gen):
        assert store.counts(gen) == {"events": 0, "tickets": 0, "customers": 0}
        store.commit_batch(
            gen,
            batch(
                {0: (0, 3)},
                [event("e1"), event("e2", offset=1), event("a", None, offset=2)],
                [ticket("t1"), ticket("t2")],
                [customer("c1")],
            ),
        )
        assert store.counts(gen) == {"events": 3, "tickets": 2, "customers": 1}
        assert store.counts(store.create_generation("empty")) == {"events": 0, "tickets": 0, "customers": 0}

    def test_clock_counts_of_open_tickets_in_given_partitions(self, store, gen):
        rows = [
            ticket("o1", priority="urgent"),  # both clocks running
            ticket(
                "o2",
                priority="urgent",
                response_status="stopped",
                response_breached=True,
                resolution_status="paused",
                resolution_at_risk=True,
            ),
            ticket("o3", priority="low", partition=1, resolution_status="paused", resolution_breached=True),
            ticket("c1", priority="urgent", state="closed", response_breached=True),  # closed: not counted
            # Resolved, not closed: its response clock still runs (no answer yet), so it counts.
            ticket("r1", priority="urgent", state="resolved", resolution_status="stopped"),
            ticket("q1", priority="urgent", state="pending", response_status="", resolution_status=""),
            ticket("p9", priority="high", partition=2),  # a partition not asked for
        ]
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=rows))
        assert store.clock_counts(gen, [0, 1]) == [
            ("resolution", "low", "breached_open", 1),
            ("resolution", "low", "paused", 1),
            ("resolution", "urgent", "at_risk", 1),
            ("resolution", "urgent", "paused", 1),
            ("resolution", "urgent", "running", 1),
            ("response", "low", "running", 1),
            ("response", "urgent", "breached_open", 1),
            ("response", "urgent", "running", 2),
        ]
        assert store.clock_counts(gen, [2]) == [
            ("resolution", "high", "running", 1),
            ("response", "high", "running", 1),
        ]
        assert store.clock_counts(gen, []) == []

    def test_a_switch_covering_a_topic_waits_until_the_new_generation_has_read_as_far(self, store, gen):
        store.commit_batch(gen, batch({0: (0, 5), 1: (0, 2)}))
        rebuilt = store.create_generation("rebuild")
        store.commit_batch(rebuilt, batch({0: (0, 3), 1: (0, 2)}), must_be_active=False)
        with pytest.raises(GenerationBehind) as behind:
            store.activate_generation(rebuilt, covering=TOPIC)
        assert behind.value.behind == {0: (3, 5)}
        assert store.active_generation() == gen  # nothing changed
        store.commit_batch(rebuilt, batch({0: (3, 6)}), must_be_active=False)  # read further than live
        store.activate_generation(rebuilt, covering=TOPIC)
        assert store.active_generation() == rebuilt
        other = store.create_generation("empty")
        store.activate_generation(other)  # without covering: whatever it has read (a replaced log)
        assert store.active_generation() == other

    def test_a_switch_carries_the_marks_and_ledgers_of_the_generation_it_replaces(self, store, gen):
        live = {
            "t1": ticket("t1", marks=b'{"level":2}', signals=b'{"s-t1":"breach"}'),
            "t2": ticket("t2", marks=b'{"level":1}', signals=b'{"s-t2":"at_risk"}'),
        }
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=live.values()))
        rebuilt = store.create_generation("rebuild")
        store.commit_batch(
            rebuilt,
            batch(
                {0: (0, 1)},
                tickets=[
                    ticket("t1", marks=b'{"level":3}', signals=b'{"s-t1":"breach"}'),
                    ticket("t3", marks=b'{"level":3}', signals=b'{"s-t3":"breach"}'),
                    # The same ticket id under another customer is another ticket: nothing to take over.
                    ticket("t2", customer_id="c2", marks=b'{"level":3}', signals=b'{"s-c2":"breach"}'),
                ],
            ),
            must_be_active=False,
        )
        before = int(time.time())
        store.activate_generation(rebuilt)
        t1 = store.ticket(rebuilt, ("c1", "t1"))
        assert t1.next_change_at == ticket("t1").next_change_at  # the same ledger: not due
        for key in [("c1", "t3"), ("c2", "t2")]:  # asserting what no live worker sent: due now
            assert before <= store.ticket(rebuilt, key).next_change_at <= int(time.time())
        assert t1.marks == b'{"level":2}'  # what the live counters counted
        assert t1.signals == b'{"s-t1":"breach"}'  # what the live workers sent
        for key in [("c1", "t3"), ("c2", "t2")]:
            # Never counted live: counts when it next changes; never sent live: nothing to take back.
            assert store.ticket(rebuilt, key).marks == b"{}"
            assert store.ticket(rebuilt, key).signals == b"{}"
        assert store.ticket(gen, ("c1", "t2")) == live["t2"]  # the old generation is left as it was
        assert store.ticket(gen, ("c1", "t1")) == live["t1"]
        switched = store.list_tickets(rebuilt, TicketQuery())
        store.activate_generation(rebuilt)  # activating the active one again changes nothing
        assert store.list_tickets(rebuilt, TicketQuery()) == switched

    def test_per_clock_flags_and_marks_round_trip(self, store, gen):
        row = ticket(
            "t1", response_at_risk=True, resolution_breached=True, marks=b'{"cycles":["response:1"]}'
        )
        store.commit_batch(gen, batch({0: (0, 1)}, tickets=[row]))
        assert store.ticket(gen, ("c1", "t1")) == row
        assert store.ticket_rows(gen, [("c1", "t1")]) == {("c1", "t1"): row}

    # -- the outbox ----------------------------------------------------------------

    def test_outbox_oldest_first_until_sent(self, store, gen):
        store.commit_batch(gen, batch({0: (0, 1)}, signals=[signal("z-first"), signal("a-second", "c2")]))
        store.commit_batch(gen, batch({0: (1, 2)}, signals=[signal("m-third")]))
        assert [s.signal_id for s in store.pending_signals()] == ["z-first", "a-second", "m-third"]
        assert store.pending_signals()[1] == signal("a-second", "c2")
        assert [s.signal_id for s in store.pending_signals(limit=2)] == ["z-first", "a-second"]
        store.mark_signals_sent(["z-first", "m-third", "unknown"])
        assert [s.signal_id for s in store.pending_signals()] == ["a-second"]
        store.mark_signals_sent([])
        store.mark_signals_sent(["a-second"])
        assert store.pending_signals() == []
        assert store.signal_ids() == ["z-first", "a-second", "m-third"]

    def test_each_worker_relays_the_signals_of_its_partitions(self, store, gen):
        signals = [replace(signal("p0"), partition=0), replace(signal("p1"), partition=1), signal("any")]
        store.commit_batch(gen, batch({0: (0, 1)}, signals=signals))
        assert store.pending_signals() == signals
        assert [s.signal_id for s in store.pending_signals(partitions=[1])] == ["p1", "any"]
        assert [s.signal_id for s in store.pending_signals(partitions=[0, 1])] == ["p0", "p1", "any"]
        assert [s.signal_id for s in store.pending_signals(partitions=[])] == ["any"]

    # -- concurrency -------------------------------------------------------------

    @pytest.mark.parametrize("first_for_partition", [True, False], ids=["first-batch", "later-batch"])
    def test_two_stores_commit_the_same_batch_once(self, store, gen, new_store, first_for_partition):
        other = new_store()
        start = 0
        if not first_for_partition:
            store.commit_batch(gen, batch({0: (0, 10)}))
            start = 10
        for round_ in range(5):
            write = batch(
                {0: (start, start + 2)},
                [event(f"e{round_}-a", offset=start), event(f"e{round_}-b", offset=start + 1)],
                [ticket("t1", evaluated_at=T0 + round_)],
                signals=[signal(f"s{round_}")],
            )
            assert commit_concurrently([store, other], gen, write) == ["committed", "stale"]
            start += 2
            assert store.stored_offsets(gen, TOPIC) == {0: start}
        assert store.counts(gen)["events"] == 10
        assert len(store.signal_ids()) == 5


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def new_store(self, tmp_path) -> Iterator[StoreFactory]:
        opened: list[ReadModelStore] = []

        def make() -> ReadModelStore:
            opened.append(SqliteStore(tmp_path / SQLITE_FILE))
            return opened[-1]

        yield make
        for store in opened:
            store.close()

    def row_versions(self, store: Any, gen: int) -> dict[str, object]:
        # SQLite keeps no row versions: temporary triggers (of this connection only) count the
        # writes of each row from the first call on.
        conn = store._conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS writes (what TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        for table, key in (
            ("tickets", "new.customer_id || '/' || new.ticket_id"),
            ("customers", "new.customer_id"),
        ):
            conn.execute(
                f"CREATE TEMP TRIGGER IF NOT EXISTS count_{table} AFTER UPDATE ON main.{table} BEGIN "
                f"INSERT INTO writes (what, n) VALUES ({key}, 1) "
                "ON CONFLICT (what) DO UPDATE SET n = n + 1; END"
            )
        written = dict(conn.execute("SELECT what, n FROM writes").fetchall())
        rows = conn.execute(
            "SELECT customer_id || '/' || ticket_id FROM tickets WHERE generation = ? "
            "UNION ALL SELECT customer_id FROM customers WHERE generation = ?",
            (gen, gen),
        ).fetchall()
        return {what: written.get(what, 0) for (what,) in rows}

    def test_wal_mode(self, store):
        assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL

    def test_a_database_locked_too_long_is_unavailable_and_nothing_is_written(self, store, gen, monkeypatch):
        monkeypatch.setattr("services.store.sqlite.BUSY_TIMEOUT_S", 0.2)
        other = SqliteStore(store.path)
        holder = sqlite3.connect(store.path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
            with pytest.raises(StoreUnavailable, match="locked"):
                other.commit_batch(gen, batch({0: (0, 1)}, [event("e1")]))
            holder.execute("ROLLBACK")
            other.commit_batch(gen, batch({0: (0, 1)}, [event("e1")]))  # the same batch, once it can
            assert store.stored_offsets(gen, TOPIC) == {0: 1}
        finally:
            holder.close()
            other.close()

    def test_a_missing_table_is_not_mistaken_for_unavailability(self, store):
        with pytest.raises(sqlite3.OperationalError):
            store._read(lambda tx: tx.all("SELECT * FROM no_such_table"))


# -- PostgreSQL ------------------------------------------------------------------


@contextmanager
def fresh_schema(dsn: str, **extra: str) -> Iterator[str]:
    """A conninfo whose search_path is a new schema of its own, dropped afterwards."""
    schema = f"slatrack_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield make_conninfo(dsn, options=f"-csearch_path={schema}", **extra)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def conninfo(self, postgres_dsn) -> Iterator[str]:
        with fresh_schema(postgres_dsn) as conninfo:
            yield conninfo

    @pytest.fixture
    def new_store(self, conninfo) -> Iterator[StoreFactory]:
        opened: list[ReadModelStore] = []

        def make() -> ReadModelStore:
            opened.append(PostgresStore(conninfo))
            return opened[-1]

        yield make
        for store in opened:
            store.close()

    def row_versions(self, store: Any, gen: int) -> dict[str, object]:
        # xmin: the transaction that wrote the row version (an UPDATE makes a new one).
        rows = store._read(
            lambda tx: tx.all(
                "SELECT customer_id || '/' || ticket_id, xmin::text FROM tickets WHERE generation = ? "
                "UNION ALL SELECT customer_id, xmin::text FROM customers WHERE generation = ?",
                (gen, gen),
            )
        )
        return dict(rows)

    @pytest.mark.parametrize("first_for_partition", [True, False], ids=["first-batch", "later-batch"])
    def test_commits_racing_on_one_partition(self, store, gen, new_store, conninfo, first_for_partition):
        """Both commits are held at the offsets table, then let go together: one wins."""
        other = new_store()
        start = 0
        if not first_for_partition:
            store.commit_batch(gen, batch({0: (0, 10)}))
            start = 10
        write = batch(
            {0: (start, start + 1)}, [event("e", offset=start)], [ticket("t1")], signals=[signal("s")]
        )
        with psycopg.connect(conninfo) as locker, psycopg.connect(conninfo, autocommit=True) as watcher:
            locker.execute("LOCK TABLE offsets IN EXCLUSIVE MODE")

            def release_when_both_wait() -> None:
                def waiting() -> int:
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'offsets'::regclass"
                    ).fetchone()
                    return row[0] if row else 0

                wait_for(lambda: waiting() == 2)
                locker.commit()

            outcomes = commit_concurrently([store, other], gen, write, before=release_when_both_wait)
        assert outcomes == ["committed", "stale"]
        assert store.stored_offsets(gen, TOPIC) == {0: start + 1}
        assert store.counts(gen)["events"] == 1

    def test_a_statement_held_past_its_timeout_is_unavailable(self, gen, conninfo):
        store = PostgresStore(conninfo, statement_timeout_s=0.5)
        try:
            with psycopg.connect(conninfo, autocommit=False) as holder:
                holder.execute("LOCK TABLE offsets IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(StoreUnavailable, match="PostgreSQL"):
                    store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")]))
                holder.rollback()
            store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")]))
            assert store.stored_offsets(gen, TOPIC) == {0: 1}
        finally:
            store.close()

    def test_reconnects_after_the_connection_broke(self, store, gen, postgres_dsn):
        def kill_connection() -> None:
            pid = store._conn.info.backend_pid
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
                wait_for(
                    lambda: (
                        admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
                        ).fetchone()
                        == (0,)
                    )
                )

        kill_connection()
        assert store.active_generation() == gen  # a read is repeated on a new connection
        kill_connection()
        store.commit_batch(gen, batch({0: (0, 1)}, [event("e1")]))  # a write that had not begun, too
        assert store.stored_offsets(gen, TOPIC) == {0: 1}

    def test_a_switch_waits_for_a_batch_in_flight(self, store, gen, new_store):
        """activate_generation cannot slip between a batch's generation check and its commit."""
        rebuilt = store.create_generation("rebuild")
        switcher = new_store()
        entered, release = threading.Event(), threading.Event()
        real_write = store._write

        def slow_write(fn):
            def held(tx):
                result = fn(tx)
                entered.set()
                assert release.wait(10)
                return result

            return real_write(held)

        store._write = slow_write
        committer = threading.Thread(target=store.commit_batch, args=(gen, batch({0: (0, 1)}, [event("e1")])))
        committer.start()
        assert entered.wait(10)
        switched = threading.Thread(target=switcher.activate_generation, args=(rebuilt,))
        switched.start()
        time.sleep(0.3)
        assert switched.is_alive()  # waiting for the batch's transaction
        release.set()
        committer.join(10)
        switched.join(10)
        assert switcher.active_generation() == rebuilt
        assert store.counts(gen)["events"] == 1


# -- open_store ----------------------------------------------------------------


def test_open_store_defaults_to_sqlite_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "nested" / "data")
    store = open_store(settings)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "nested" / "data" / SQLITE_FILE
        assert store.path.exists()
        assert store.generations() == []  # migrated
    finally:
        store.close()


@pytest.mark.postgres
def as_url(conninfo: str) -> str:
    """The same connection as a postgresql:// URL (the only form SLATRACK_DATABASE_URL takes)."""
    params = conninfo_to_dict(conninfo)
    user, host = quote(str(params.pop("user", "")), safe=""), params.pop("host", "localhost")
    port, database = params.pop("port", 5432), params.pop("dbname", "postgres")
    return f"postgresql://{user}@{host}:{port}/{database}?{urlencode(params)}"


def test_open_store_uses_the_database_url_and_never_logs_it(postgres_dsn, caplog):
    password = conninfo_to_dict(postgres_dsn).get("password")
    extra = {} if password else {"password": "never-logged-s3cret"}  # trust auth ignores it
    secret = password or extra["password"]
    with fresh_schema(postgres_dsn, **extra) as conninfo:
        caplog.set_level("DEBUG")
        store = open_store(Settings(database_url=as_url(conninfo)))
        try:
            assert isinstance(store, PostgresStore)
            assert store.generations() == []  # migrated
        finally:
            store.close()
    assert "read models: PostgreSQL at" in caplog.text
    assert str(secret) not in caplog.text
