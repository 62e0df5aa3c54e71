"""The SQL both backends share, and :class:`SqlStore`, which implements the
store interface on top of a few dialect hooks.

Statements are written with ``?`` placeholders (sqlite3's style); the
PostgreSQL backend rewrites them to ``%s`` once per statement. A backend
supplies:

* ``_read(fn)`` / ``_write(fn)``: run ``fn(tx)`` on its connection, the second
  inside one write transaction that is committed, or rolled back on any error;
* ``_in(column, values)``: a ``column IN <list>`` fragment taking one parameter;
* ``_pairs(pairs)``: a relation ``keys (a, b)`` of (customer, id) pairs and the join
  that follows it (``FROM <it> table ON ...``): two IN lists would make the planners
  probe every combination of the two;
* ``_for_share`` / ``_for_update``: row-lock suffixes (empty on SQLite, where
  ``BEGIN IMMEDIATE`` already serializes writers);
* ``_insert_signal``: the outbox insert (the sequence column differs);
* ``_migration_lock`` / ``_no_timeout``: statements for PostgreSQL only;
* ``dialect``: the key of its scripts in :mod:`services.store.migrations`.
"""

import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, get_args

from projections.quarantine import QUARANTINED
from services.store import migrations
from services.worker.ports import (
    BatchWrite,
    CustomerListing,
    CustomerQuery,
    CustomerRow,
    EventKey,
    GenerationBehind,
    GenerationChanged,
    GenerationInfo,
    ReadModelStore,
    Signal,
    StaleBatch,
    StoredEvent,
    StoreError,
    TicketKey,
    TicketQuery,
    TicketRow,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = TypeVar("Row", bound="DataclassInstance")

# Dataclass field -> column, where the column name differs (see migrations.py).
_RENAMED = {"partition": "log_partition", "offset": "log_offset"}


def _columns(cls: type) -> list[str]:
    return [_RENAMED.get(f.name, f.name) for f in fields(cls)]


def _kinds(cls: type) -> tuple[type, ...]:
    """The Python type of each field's values, in column order (``int | None``: int)."""
    kinds = []
    for f in fields(cls):
        options = [t for t in get_args(f.type) if t is not type(None)] or [f.type]
        (kind,) = options
        kinds.append(kind)
    return tuple(kinds)


def _getter(cls: type) -> Callable[[Any], tuple]:
    """Row object -> tuple of its fields in column order (attrgetter is C-fast)."""
    return attrgetter(*(f.name for f in fields(cls)))


@dataclass(frozen=True)
class Bulk:
    """A many-row write of one table, keyed: what a batch inserts or replaces.

    ``keep`` says which of two rows with one key in the same batch wins:
    "first" (events: a repeat is ignored) or "last" (rows: the newer replaces).
    Backends run ``insert`` once per row (SQLite: executemany) or load the
    rows another way with the same outcome (PostgreSQL: COPY, then one INSERT).

    A "last" row replaces the stored one only where some column differs
    (``evaluated_at`` too, so a row told as of a later instant is always
    written): an equal row is left as it is, which stores the same content
    without rewriting the row and every index over it (on PostgreSQL, without
    a new row version, its WAL and, later, its vacuum). ``distinct`` is the
    dialect's null-safe "differs" for row values: SQLite ``IS NOT``,
    PostgreSQL ``IS DISTINCT FROM``.
    """

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    keep: str  # "first" | "last"
    kinds: tuple[type, ...]  # the Python type of each column's values (int, str, bool, bytes)

    def on_conflict(self, distinct: str) -> str:
        if self.keep == "first":
            return f"ON CONFLICT ({', '.join(self.key)}) DO NOTHING"
        values = [c for c in self.columns if c not in self.key]
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        stored = ", ".join(f"{self.table}.{c}" for c in values)
        new = ", ".join(f"excluded.{c}" for c in values)
        return (
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates} WHERE ({stored}) {distinct} ({new})"
        )

    def insert(self, distinct: str) -> str:
        marks = ", ".join("?" * len(self.columns))
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({marks}) "  # noqa: S608
            f"{self.on_conflict(distinct)}"
        )


EVENT_COLUMNS = _columns(StoredEvent)
TICKET_COLUMNS = _columns(TicketRow)
CUSTOMER_COLUMNS = _columns(CustomerRow)
_event_values = _getter(StoredEvent)
_ticket_values = _getter(TicketRow)
_customer_values = _getter(CustomerRow)

EVENTS = ", ".join(EVENT_COLUMNS)
TICKETS = ", ".join(TICKET_COLUMNS)
CUSTOMERS = ", ".join(CUSTOMER_COLUMNS)

EVENT_ROWS = Bulk(
    "events",
    ("generation", *EVENT_COLUMNS),
    ("generation", "customer_id", "event_id"),
    keep="first",
    kinds=(int, *_kinds(StoredEvent)),
)
TICKET_ROWS = Bulk(
    "tickets",
    ("generation", *TICKET_COLUMNS),
    ("generation", "customer_id", "ticket_id"),
    keep="last",
    kinds=(int, *_kinds(TicketRow)),
)
CUSTOMER_ROWS = Bulk(
    "customers",
    ("generation", *CUSTOMER_COLUMNS),
    ("generation", "customer_id"),
    keep="last",
    kinds=(int, *_kinds(CustomerRow)),
)

ACTIVE = "SELECT generation FROM active_generation WHERE id = 1"
GENERATION_EXISTS = "SELECT 1 FROM generations WHERE generation = ?"

# Claims a partition's offset range: inserts the first row of a partition, or
# advances the stored offset only if it is exactly where the batch starts. No
# row comes back when it is not, and the batch is stale. One statement both
# checks and row-locks, so two workers committing the same range serialize on
# the row (PostgreSQL also waits on a concurrent first insert, then re-checks
# the committed row) and exactly one of them wins.
INSERT_POLICY_VERSION = (
    "INSERT INTO policy_versions (generation, position, body) VALUES (?, ?, ?) "
    "ON CONFLICT (generation, position) DO NOTHING"
)
CLAIM_OFFSETS = (
    "INSERT INTO offsets (generation, topic, log_partition, next_offset) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (generation, topic, log_partition) DO UPDATE SET next_offset = excluded.next_offset "
    "WHERE offsets.next_offset = ? "
    "RETURNING next_offset"
)


def _reader(cls: type[Row]) -> Callable[[Sequence], Row]:
    """A database row (columns in field order) -> ``cls``.

    SQLite keeps booleans as 0/1, and a driver may hand blobs back as
    memoryview: both are normalized here, so both backends give equal rows.
    """
    kinds = [f.type for f in fields(cls)]  # the class, or its name under postponed annotations
    bools = [i for i, kind in enumerate(kinds) if kind in (bool, "bool")]
    blobs = [i for i, kind in enumerate(kinds) if kind in (bytes, "bytes")]

    def read(row: Sequence) -> Row:
        values = list(row)
        for i in bools:
            values[i] = bool(values[i])
        for i in blobs:
            values[i] = bytes(values[i])
        return cls(*values)

    return read


ticket_row = _reader(TicketRow)
customer_row = _reader(CustomerRow)
stored_event = _reader(StoredEvent)


class Tx(Protocol):
    """What a backend hands to ``fn`` in ``_read``/``_write``."""

    def all(self, sql: str, params: Sequence = ()) -> list[tuple]: ...

    def one(self, sql: str, params: Sequence = ()) -> tuple | None: ...

    def run(self, sql: str, params: Sequence = ()) -> None:
        """A statement that returns no rows."""

    def many(self, sql: str, rows: list[tuple]) -> None: ...

    def bulk(self, bulk: Bulk, rows: list[tuple]) -> None: ...

    def script(self, sql: str) -> None: ...


class SqlStore(ReadModelStore):
    dialect: str
    _for_share = ""
    _for_update = ""
    _insert_signal: str
    # Taken first in each migration transaction (PostgreSQL: an advisory lock).
    _migration_lock: str | None = None
    # Lifts the statement timeout for the rest of a transaction (PostgreSQL):
    # dropping a generation or migrating a big table may take minutes.
    _no_timeout: str | None = None

    # -- dialect hooks -----------------------------------------------------

    @abstractmethod
    def _read(self, fn: Callable[[Tx], T]) -> T: ...

    @abstractmethod
    def _write(self, fn: Callable[[Tx], T]) -> T: ...

    @abstractmethod
    def _in(self, column: str, values: Iterable) -> tuple[str, object]: ...

    @abstractmethod
    def _pairs(self, pairs: Iterable[tuple[str, str]]) -> tuple[str, tuple]: ...

    # -- lifecycle ---------------------------------------------------------

    def migrate(self) -> None:
        # One transaction per migration, each re-reading what is applied under
        # the lock: two processes migrating at once apply each version once.
        while self._write(self._apply_next_migration):
            pass

    def _apply_next_migration(self, tx: Tx) -> bool:
        if self._no_timeout:
            tx.run(self._no_timeout)
        if self._migration_lock:
            tx.one(self._migration_lock)
        tx.script(migrations.CREATE_VERSIONS_TABLE)
        applied = {v for (v,) in tx.all("SELECT version FROM schema_migrations")}
        newer = {v for v in applied if v > migrations.latest_version()}
        if newer:
            # A newer release migrated already (a rolling upgrade): carry on with
            # the schema we know, which migrations only ever extend.
            log.warning("schema has versions %s this slatrack does not know", sorted(newer))
        migration = migrations.next_pending(applied)
        if migration is None:
            return False
        log.info("applying schema migration %d: %s", migration.version, migration.name)
        tx.script(migration.script(self.dialect))
        tx.run(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, int(time.time())),
        )
        return True

    def schema_versions(self) -> list[int]:
        """Applied migration versions, ascending (for tests and operators)."""
        return [
            v for (v,) in self._read(lambda tx: tx.all("SELECT version FROM schema_migrations ORDER BY 1"))
        ]

    # -- generations -------------------------------------------------------

    def active_generation(self) -> int | None:
        row = self._read(lambda tx: tx.one(ACTIVE))
        return None if row is None else row[0]

    def create_generation(self, reason: str, policy: str | None = None) -> int:
        row = self._write(
            lambda tx: tx.one(
                "INSERT INTO generations (reason, created_at, policy) VALUES (?, ?, ?) RETURNING generation",
                (reason, int(time.time()), policy),
            )
        )
        assert row is not None
        return row[0]

    def generation_policy(self, generation: int) -> str | None:
        row = self._read(
            lambda tx: tx.one("SELECT policy FROM generations WHERE generation = ?", (generation,))
        )
        if row is None:
            raise GenerationChanged(f"generation {generation} does not exist (dropped?)")
        return row[0]

    def bind_policy(self, generation: int, policy: str) -> str:
        def bind(tx: Tx) -> str:
            tx.run(
                "UPDATE generations SET policy = ? WHERE generation = ? AND policy IS NULL",
                (policy, generation),
            )
            row = tx.one("SELECT policy FROM generations WHERE generation = ?", (generation,))
            if row is None:
                raise GenerationChanged(f"generation {generation} does not exist (dropped?)")
            return row[0]

        return self._write(bind)

    def activate_generation(self, generation: int, *, covering: str | None = None) -> None:
        now = int(time.time())

        def activate(tx: Tx) -> None:
            if tx.one(GENERATION_EXISTS, (generation,)) is None:
                raise StoreError(f"no generation {generation}")
            previous = tx.one(ACTIVE + self._for_update)
            if covering is not None and previous is not None and previous[0] != generation:
                self._check_covers(tx, generation, previous[0], covering)
            # Waits on PostgreSQL for batches in flight (they hold the row FOR SHARE).
            tx.run(
                "INSERT INTO active_generation (id, generation) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET generation = excluded.generation",
                (generation,),
            )
            if previous is not None and previous[0] != generation:
                # The metric marks and the signal ledgers are the live workers' memory of what
                # they counted and sent: they follow the switch. Where the ledger is not what the
                # new generation asserts (another policy), the row is due now: the next timer
                # pass settles the difference (sends what changed, revokes what no longer holds).
                # A ticket the live generation has no row of differs from nothing sent: due too.
                tx.run(
                    "UPDATE tickets SET next_change_at = ? WHERE generation = ? AND signals <> COALESCE(("
                    "SELECT old.signals FROM tickets AS old WHERE old.generation = ? "
                    "AND old.customer_id = tickets.customer_id AND old.ticket_id = tickets.ticket_id), ?)",
                    (now, generation, previous[0], b"{}"),
                )
                for column in ("marks", "signals"):
                    tx.run(
                        f"UPDATE tickets SET {column} = COALESCE((SELECT old.{column} FROM tickets AS old "  # noqa: S608
                        "WHERE old.generation = ? AND old.customer_id = tickets.customer_id "
                        "AND old.ticket_id = tickets.ticket_id), ?) "
                        "WHERE generation = ?",
                        (previous[0], b"{}", generation),
                    )
            tx.run(
                "UPDATE generations SET activated_at = ? WHERE generation = ?",
                (int(time.time()), generation),
            )

        self._write(activate)

    def _check_covers(self, tx: Tx, generation: int, active: int, topic: str) -> None:
        rows = tx.all(
            "SELECT a.log_partition, a.next_offset, n.next_offset FROM offsets AS a "
            "LEFT JOIN offsets AS n ON n.generation = ? AND n.topic = a.topic "
            "AND n.log_partition = a.log_partition WHERE a.generation = ? AND a.topic = ?",
            (generation, active, topic),
        )
        behind = {p: (ours or 0, theirs) for p, theirs, ours in rows if (ours or 0) < theirs}
        if behind:
            raise GenerationBehind(behind)

    def tickets_missing_from(self, generation: int, other: int) -> list[TicketKey]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT customer_id, ticket_id FROM tickets AS a WHERE generation = ? AND NOT EXISTS ("
                "SELECT 1 FROM tickets AS b WHERE b.generation = ? AND b.customer_id = a.customer_id "
                "AND b.ticket_id = a.ticket_id)",
                (generation, other),
            )
        )
        return sorted((c, t) for c, t in rows)

    def ticket_keys(self, generation: int) -> list[TicketKey]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT customer_id, ticket_id FROM tickets WHERE generation = ? "
                "ORDER BY ticket_id, customer_id",
                (generation,),
            )
        )
        return [(c, t) for c, t in rows]

    def drop_generation(self, generation: int) -> None:
        def drop(tx: Tx) -> None:
            if self._no_timeout:
                tx.run(self._no_timeout)
            active = tx.one(ACTIVE + self._for_update)
            if active is not None and active[0] == generation:
                raise StoreError(f"generation {generation} is active; activate another before dropping it")
            # The generations row goes first: deleting it waits for batches in
            # flight to it (they hold it FOR SHARE) and makes later ones fail
            # with GenerationChanged, so nothing lands after the data is gone.
            tx.run("DELETE FROM generations WHERE generation = ?", (generation,))
            for table in ("events", "tickets", "customers", "offsets", "policy_versions"):
                tx.run(f"DELETE FROM {table} WHERE generation = ?", (generation,))  # noqa: S608

        self._write(drop)

    def generations(self) -> list[GenerationInfo]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT g.generation, g.reason, g.created_at, a.generation IS NOT NULL "
                "FROM generations g LEFT JOIN active_generation a ON a.generation = g.generation "
                "ORDER BY g.generation"
            )
        )
        return [
            {"generation": g, "reason": reason, "created_at": created, "active": bool(active)}
            for g, reason, created, active in rows
        ]

    # -- the projector -----------------------------------------------------

    def stored_offsets(self, generation: int, topic: str) -> dict[int, int]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT log_partition, next_offset FROM offsets WHERE generation = ? AND topic = ?",
                (generation, topic),
            )
        )
        return dict(rows)

    def commit_batch(self, generation: int, batch: BatchWrite, *, must_be_active: bool = True) -> None:
        for partition, (start, end) in batch.offsets.items():
            if end < start:
                raise ValueError(f"partition {partition}: batch ends ({end}) before it starts ({start})")
        events = [(generation, *_event_values(e)) for e in batch.events]
        tickets = [(generation, *_ticket_values(t)) for t in batch.tickets]
        customers = [(generation, *_customer_values(c)) for c in batch.customers]
        now = int(time.time())
        signals = [(s.signal_id, s.key, s.body, now, s.partition) for s in batch.signals]

        def commit(tx: Tx) -> None:
            self._check_generation(tx, generation, must_be_active)
            # Offsets first, in partition order: a stale batch fails before any
            # bulk write, and two writers lock partitions in the same order.
            claims = [(batch.topic, batch.offsets)]
            if batch.policy_topic is not None:
                claims.append((batch.policy_topic, batch.policy_offsets))
            for topic, offsets in claims:
                for partition, (start, end) in sorted(offsets.items()):
                    claimed = tx.one(CLAIM_OFFSETS, (generation, topic, partition, end, start))
                    if claimed is None:
                        raise StaleBatch(
                            f"{topic}[{partition}] in generation {generation}: "
                            f"stored offset is not {start}, where the batch starts"
                        )
            tx.many(
                INSERT_POLICY_VERSION, [(generation, position, body) for position, body in batch.policies]
            )
            tx.bulk(EVENT_ROWS, events)
            tx.bulk(TICKET_ROWS, tickets)
            tx.bulk(CUSTOMER_ROWS, customers)
            tx.many(self._insert_signal, signals)  # few, and their order is the outbox order

        self._write(commit)

    def _check_generation(self, tx: Tx, generation: int, must_be_active: bool) -> None:
        # The lock (PostgreSQL) holds off a switch or a drop until this commits.
        if must_be_active:
            row = tx.one(ACTIVE + self._for_share)
            if row is None or row[0] != generation:
                raise GenerationChanged(f"generation {generation} is not active (active: {row and row[0]})")
        elif tx.one(GENERATION_EXISTS + self._for_share, (generation,)) is None:
            raise GenerationChanged(f"generation {generation} does not exist (dropped?)")

    def events_of_tickets(
        self, generation: int, tickets: Iterable[TicketKey]
    ) -> dict[TicketKey, list[StoredEvent]]:
        keys = list(dict.fromkeys(tickets))
        found: dict[TicketKey, list[StoredEvent]] = {key: [] for key in keys}
        order = "ORDER BY r.customer_id, r.ticket_id, r.log_partition, r.log_offset"
        for row in self._by_pairs("events", EVENT_COLUMNS, "ticket_id", generation, keys, order):
            found[row[2], row[1]].append(stored_event(row))
        return found

    def first_copies(self, generation: int, events: Iterable[EventKey]) -> dict[EventKey, StoredEvent]:
        stored = (
            stored_event(row)
            for row in self._by_pairs("events", EVENT_COLUMNS, "event_id", generation, events)
        )
        return {(e.customer_id, e.event_id): e for e in stored}

    def _by_pairs(
        self,
        table: str,
        columns: list[str],
        second: str,
        generation: int,
        keys: Iterable[tuple[str, str]],
        order: str = "",
    ) -> list[tuple]:
        """The rows of ``table`` whose (customer_id, ``second``) is one of ``keys``: one index
        probe per key (two IN lists would make the planners probe every combination)."""
        pairs = sorted(set(keys))
        if not pairs:
            return []
        relation, params = self._pairs(pairs)
        selected = ", ".join(f"r.{c}" for c in columns)
        return self._read(
            lambda tx: tx.all(
                f"SELECT {selected} FROM {relation} {table} AS r ON r.generation = ? "  # noqa: S608
                f"AND r.customer_id = keys.a AND r.{second} = keys.b {order}",
                (*params, generation),
            )
        )

    def event_positions(self, generation: int, partition: int, below: int) -> list[tuple[int, str]]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT log_offset, event_id FROM events "
                "WHERE generation = ? AND log_partition = ? AND log_offset < ? ORDER BY log_offset, event_id",
                (generation, partition, below),
            )
        )
        return [(offset, event_id) for offset, event_id in rows]

    def events_from(self, generation: int, partition: int, start: int, limit: int) -> list[StoredEvent]:
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {EVENTS} FROM events "  # noqa: S608
                "WHERE generation = ? AND log_partition = ? AND log_offset >= ? "
                "ORDER BY log_offset, event_id LIMIT ?",
                (generation, partition, start, limit),
            )
        )
        return [stored_event(row) for row in rows]

    def account_events_of(self, generation: int, customer_ids: Iterable[str]) -> dict[str, list[StoredEvent]]:
        ids = list(dict.fromkeys(customer_ids))
        found: dict[str, list[StoredEvent]] = {cid: [] for cid in ids}
        if not ids:
            return found
        where, param = self._in("customer_id", ids)
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {EVENTS} FROM events "  # noqa: S608
                f"WHERE generation = ? AND ticket_id IS NULL AND {where} "
                "ORDER BY customer_id, log_partition, log_offset",
                (generation, param),
            )
        )
        for row in rows:
            found[row[2]].append(stored_event(row))
        return found

    def tickets_reached(self, generation: int, since: dict[str, int]) -> list[TicketKey]:
        # tickets_by_account: only the tickets whose life reaches the instant are read,
        # however many closed ones a customer has.
        found = self._per_customer("account_until", ">=", generation, since)
        return [(c, t) for c, t, until in found if until >= since[c]]

    def tickets_opened_since(self, generation: int, since: dict[str, int]) -> list[TicketKey]:
        found = self._per_customer("opened_at", ">=", generation, since)
        return [(c, t) for c, t, at in found if at >= since[c]]

    def tickets_opened_from(
        self, generation: int, instant: int, partitions: Sequence[int]
    ) -> list[TicketKey]:
        if not partitions:
            return []
        where, param = self._in("log_partition", sorted(set(partitions)))
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT customer_id, ticket_id FROM tickets WHERE generation = ? AND {where} "  # noqa: S608
                "AND opened_at >= ?",
                (generation, param, instant),
            )
        )
        return sorted((c, t) for c, t in rows)

    def customers_in(self, generation: int, partitions: Sequence[int]) -> list[str]:
        if not partitions:
            return []
        where, param = self._in("log_partition", sorted(set(partitions)))
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT customer_id FROM customers WHERE generation = ? AND {where}",  # noqa: S608
                (generation, param),
            )
        )
        return sorted(c for (c,) in rows)

    def policy_versions(self, generation: int) -> list[tuple[int, bytes]]:
        rows = self._read(
            lambda tx: tx.all(
                "SELECT position, body FROM policy_versions WHERE generation = ? ORDER BY position",
                (generation,),
            )
        )
        return [(position, bytes(body)) for position, body in rows]

    def customer_tickets_changing_by(self, generation: int, instants: dict[str, int]) -> list[TicketKey]:
        found = self._per_customer("next_change_at", "<=", generation, instants)
        return [(c, t) for c, t, at in found if at <= instants[c]]

    def _per_customer(
        self, column: str, compare: str, generation: int, instants: dict[str, int]
    ) -> list[tuple[str, str, int]]:
        """(customer, ticket, column) of these customers' tickets whose column compares to the
        widest of their instants: one statement, one index range per customer (the callers
        keep each customer's own)."""
        if not instants:
            return []
        widest = min(instants.values()) if compare == ">=" else max(instants.values())
        where, param = self._in("customer_id", sorted(instants))
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT customer_id, ticket_id, {column} FROM tickets "  # noqa: S608
                f"WHERE generation = ? AND {where} AND {column} {compare} ?",
                (generation, param, widest),
            )
        )
        # Sorted here: an ORDER BY tempts SQLite into walking the whole
        # generation in key order instead of probing the index.
        return sorted((c, t, v) for c, t, v in rows)

    def tickets_changing_by(
        self, generation: int, instant: int, partitions: Sequence[int]
    ) -> list[TicketKey]:
        rows = self._changing_by("tickets", "customer_id, ticket_id", generation, instant, partitions)
        return [(c, t) for c, t in rows]

    def customers_changing_by(self, generation: int, instant: int, partitions: Sequence[int]) -> list[str]:
        return [c for (c,) in self._changing_by("customers", "customer_id", generation, instant, partitions)]

    def _changing_by(
        self, table: str, key: str, generation: int, instant: int, partitions: Sequence[int]
    ) -> list[tuple]:
        if not partitions:
            return []
        where, param = self._in("log_partition", sorted(set(partitions)))
        return self._read(
            lambda tx: tx.all(
                f"SELECT {key} FROM {table} WHERE generation = ? AND {where} "  # noqa: S608
                "AND next_change_at <= ? ORDER BY next_change_at, " + key,
                (generation, param, instant),
            )
        )

    def next_change(self, generation: int, partitions: Sequence[int]) -> int | None:
        parts = sorted(set(partitions))
        if not parts:
            return None
        # One min() per (table, partition): each is a single index probe,
        # where a min() over "partition IN (...)" would scan those partitions.
        probe = (
            "SELECT (SELECT min(next_change_at) FROM {table} WHERE generation = ? "
            "AND log_partition = ? AND next_change_at IS NOT NULL) AS t"
        )
        probes, params = [], []
        for table in ("tickets", "customers"):
            for p in parts:
                probes.append(probe.format(table=table))
                params += [generation, p]
        sql = "SELECT min(t) FROM (" + " UNION ALL ".join(probes) + ") AS probes"  # noqa: S608
        row = self._read(lambda tx: tx.one(sql, params))
        return None if row is None else row[0]

    def ticket_rows(self, generation: int, tickets: Iterable[TicketKey]) -> dict[TicketKey, TicketRow]:
        rows = self._by_pairs("tickets", TICKET_COLUMNS, "ticket_id", generation, tickets)
        return {(row[1], row[0]): ticket_row(row) for row in rows}

    def customer_rows(self, generation: int, customer_ids: Iterable[str]) -> dict[str, CustomerRow]:
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        where, param = self._in("customer_id", ids)
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {CUSTOMERS} FROM customers WHERE generation = ? AND {where}",  # noqa: S608
                (generation, param),
            )
        )
        return {row[0]: customer_row(row) for row in rows}

    # -- the signal outbox -------------------------------------------------

    def pending_signals(self, limit: int = 500, partitions: Sequence[int] | None = None) -> list[Signal]:
        select = "SELECT signal_id, message_key, body, log_partition FROM signals WHERE NOT sent"
        params: tuple[object, ...]
        if partitions is None:
            sql, params = f"{select} ORDER BY seq LIMIT ?", (max(0, limit),)
        else:
            where, param = self._in("log_partition", sorted(set(partitions)))
            sql = f"{select} AND ({where} OR log_partition IS NULL) ORDER BY seq LIMIT ?"
            params = (param, max(0, limit))
        rows = self._read(lambda tx: tx.all(sql, params))
        return [Signal(sid, key, bytes(body), partition) for sid, key, body, partition in rows]

    def mark_signals_sent(self, signal_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(signal_ids))
        if not ids:
            return
        where, param = self._in("signal_id", ids)
        self._write(lambda tx: tx.run(f"UPDATE signals SET sent = TRUE WHERE {where}", (param,)))  # noqa: S608

    def signal_ids(self) -> list[str]:
        return [sid for (sid,) in self._read(lambda tx: tx.all("SELECT signal_id FROM signals ORDER BY seq"))]

    # -- queries -----------------------------------------------------------

    def ticket(self, generation: int, ticket: TicketKey) -> TicketRow | None:
        row = self._read(
            lambda tx: tx.one(
                f"SELECT {TICKETS} FROM tickets "  # noqa: S608
                "WHERE generation = ? AND customer_id = ? AND ticket_id = ?",
                (generation, *ticket),
            )
        )
        return None if row is None else ticket_row(row)

    def list_tickets(self, generation: int, query: TicketQuery) -> list[TicketRow]:
        if query.customer_ids is not None and not query.customer_ids:
            return []  # among no customers (and an empty array has no type in PostgreSQL)
        if query.sort in ("due", "breach"):
            column = "queue_due_at" if query.sort == "due" else "queue_breach_at"
            return self._tickets_by_due(generation, query, column)
        where, params = ticket_filter(query, self._in)
        sql = (
            f"SELECT {TICKETS} FROM tickets WHERE generation = ?{where} "  # noqa: S608
            "ORDER BY ticket_id, customer_id LIMIT ?"
        )
        rows = self._read(lambda tx: tx.all(sql, (generation, *params, max(0, query.limit))))
        return [ticket_row(row) for row in rows]

    def _tickets_by_due(self, generation: int, query: TicketQuery, column: str) -> list[TicketRow]:
        """The queue's order: (``column``, ticket_id, customer_id), ``column`` queue_due_at or
        queue_breach_at, then the tickets with no running clock by (ticket_id, customer_id). Two
        statements, one per part, each an index range in its order (tickets_queue and
        tickets_queue_breach, for open tickets): the dialects sort nulls apart
        (SQLite first, PostgreSQL last), and an ORDER BY on an expression would sort the whole
        generation for each page."""
        if query.after is not None:
            raise TypeError("TicketQuery.after pages sort='ticket'; sort='due' pages with after_due")
        where, params = ticket_filter(query, self._in)
        limit = max(0, query.limit)
        after = query.after_due
        if after is not None and (not isinstance(after, tuple) or len(after) != 3):
            raise TypeError(f"TicketQuery.after_due is ({column}, ticket_id, customer_id), not {after!r}")
        dated = f"SELECT {TICKETS} FROM tickets WHERE generation = ?{where} AND {column} IS NOT NULL"  # noqa: S608
        undated = f"SELECT {TICKETS} FROM tickets WHERE generation = ?{where} AND {column} IS NULL"  # noqa: S608

        def read(tx: Tx) -> list[tuple]:
            rows: list[tuple] = []
            if after is None or after[0] is not None:
                keyset, values = "", []
                if after is not None:
                    due, ticket, customer = after
                    # column >= ?: the start of the index range; the OR: strictly after the row.
                    keyset = (
                        f" AND {column} >= ? AND ({column} > ? OR ({column} = ? AND "
                        "(ticket_id > ? OR (ticket_id = ? AND customer_id > ?))))"
                    )
                    values = [due, due, due, ticket, ticket, customer]
                rows = tx.all(
                    dated + keyset + f" ORDER BY {column}, ticket_id, customer_id LIMIT ?",
                    (generation, *params, *values, limit),
                )
            if len(rows) < limit:
                keyset, values = "", []
                if after is not None and after[0] is None:
                    _, ticket, customer = after
                    keyset = " AND ticket_id >= ? AND (ticket_id > ? OR (ticket_id = ? AND customer_id > ?))"
                    values = [ticket, ticket, ticket, customer]
                rows += tx.all(
                    undated + keyset + " ORDER BY ticket_id, customer_id LIMIT ?",
                    (generation, *params, *values, limit - len(rows)),
                )
            return rows

        return [ticket_row(row) for row in self._read(read)]

    def customer(self, generation: int, customer_id: str) -> CustomerRow | None:
        row = self._read(
            lambda tx: tx.one(
                f"SELECT {CUSTOMERS} FROM customers WHERE generation = ? AND customer_id = ?",  # noqa: S608
                (generation, customer_id),
            )
        )
        return None if row is None else customer_row(row)

    def list_customers(self, generation: int, query: CustomerQuery) -> list[CustomerListing]:
        if query.customer_ids is not None and not query.customer_ids:
            return []  # among no customers (and an empty array has no type in PostgreSQL)
        terms: list[str] = []
        params: list[object] = [generation]
        # Booleans as literals, as in ticket_filter.
        if query.delinquent is not None:
            terms.append("delinquent" if query.delinquent else "NOT delinquent")
        if query.dashboard_suspended is not None:
            terms.append("dashboard_suspended" if query.dashboard_suspended else "NOT dashboard_suspended")
        if query.customer_ids is not None:
            among, param = self._in("customer_id", sorted(query.customer_ids))
            terms.append(among)
            params.append(param)
        if query.after is not None:
            terms.append("customer_id > ?")
            params.append(query.after)
        where = "".join(" AND " + t for t in terms)
        page = (
            f"SELECT {CUSTOMERS} FROM customers WHERE generation = ?{where} "  # noqa: S608
            "ORDER BY customer_id LIMIT ?"
        )
        params.append(max(0, query.limit))

        def read(tx: Tx) -> tuple[list[tuple], list[tuple]]:
            rows = tx.all(page, params)
            if not rows:
                return rows, []
            # The page's customers' open tickets, counted through the primary key's range of each
            # customer (generation, customer_id, ...): a page costs its customers' tickets, not the
            # whole generation's.
            among, param = self._in("customer_id", [row[0] for row in rows])
            counts = tx.all(
                "SELECT customer_id, count(*), sum(CASE WHEN breached THEN 1 ELSE 0 END) "  # noqa: S608
                f"FROM tickets WHERE generation = ? AND {among} AND state = 'open' GROUP BY customer_id",
                (generation, param),
            )
            return rows, counts

        rows, counts = self._read(read)
        counted = {customer: (int(n), int(breached or 0)) for customer, n, breached in counts}
        return [CustomerListing(customer_row(row), *counted.get(row[0], (0, 0))) for row in rows]

    def billing(self, generation: int, customer_id: str, month: str) -> list[TicketRow]:
        rows = self._read(
            lambda tx: tx.all(
                f"SELECT {TICKETS} FROM tickets "  # noqa: S608
                "WHERE generation = ? AND customer_id = ? AND billing_month = ? ORDER BY ticket_id",
                (generation, customer_id, month),
            )
        )
        return [ticket_row(row) for row in rows]

    def quarantined_count(self, generation: int, partitions: Sequence[int]) -> int:
        parts = sorted(set(partitions))
        if not parts:
            return 0
        where, param = self._in("log_partition", parts)
        row = self._read(
            lambda tx: tx.one(
                f"SELECT count(*) FROM tickets WHERE generation = ? AND {where} AND state = ?",  # noqa: S608
                (generation, param, QUARANTINED),
            )
        )
        return int(row[0]) if row is not None else 0

    def clock_counts(self, generation: int, partitions: Sequence[int]) -> list[tuple[str, str, str, int]]:
        parts = sorted(set(partitions))
        if not parts:
            return []
        where, param = self._in("log_partition", parts)
        totals: dict[tuple[str, str, str], int] = {}
        for clock in ("response", "resolution"):

            def count_of(tx: Tx, clock: str = clock) -> list[tuple]:
                return tx.all(
                    f"SELECT priority, {clock}_status, {clock}_at_risk, {clock}_breached, count(*) "  # noqa: S608
                    f"FROM tickets WHERE generation = ? AND {where} AND state IN ('open', 'resolved') "
                    f"GROUP BY priority, {clock}_status, {clock}_at_risk, {clock}_breached",
                    (generation, param),
                )

            rows = self._read(count_of)
            for priority, status, at_risk, breached, count in rows:
                labels = [status] if status in ("running", "paused") else []
                labels += ["at_risk"] if at_risk else []
                labels += ["breached_open"] if breached else []
                for label in labels:
                    totals[clock, priority, label] = totals.get((clock, priority, label), 0) + count
        return sorted((*key, count) for key, count in totals.items())

    def counts(self, generation: int) -> dict[str, int]:
        row = self._read(
            lambda tx: tx.one(
                "SELECT (SELECT count(*) FROM events WHERE generation = ?), "
                "(SELECT count(*) FROM tickets WHERE generation = ?), "
                "(SELECT count(*) FROM customers WHERE generation = ?)",
                (generation, generation, generation),
            )
        )
        assert row is not None
        return {"events": row[0], "tickets": row[1], "customers": row[2]}


PAUSED = "response_status = 'paused' OR resolution_status = 'paused'"


def ticket_filter(
    query: TicketQuery, among: Callable[[str, Iterable], tuple[str, object]]
) -> tuple[str, list]:
    """The WHERE terms (after ``generation = ?``) and parameters of a ticket query; ``among`` is
    the dialect's ``column IN (values)`` (``SqlStore._in``).

    Booleans are spelled out as literals, not parameters: only then can the
    planners match the partial indexes on ``breached`` and ``at_risk``.
    """
    terms: list[str] = []
    params: list = []

    def term(sql: str, *values: object) -> None:
        terms.append(sql)
        params.extend(values)

    if query.state == "open":
        term("state = 'open'")  # the queue's partial index's own predicate, so it is used
    elif query.state is not None:
        term("state = ?", query.state)
    if query.priority is not None:
        term("priority = ?", query.priority)
    if query.clock_status == "paused":
        term(f"({PAUSED})")  # the partial index's own predicate, so it is used
    elif query.clock_status is not None:
        term("(response_status = ? OR resolution_status = ?)", query.clock_status, query.clock_status)
    if query.breached is not None:
        term("breached" if query.breached else "NOT breached")
    if query.at_risk is not None:
        term("at_risk" if query.at_risk else "NOT at_risk")
    if query.due_before is not None:
        term("queue_due_at <= ?", query.due_before)
    if query.overdue is not None:
        term("queue_due_at <= ?", query.overdue)
    if query.not_overdue is not None:
        term("(queue_due_at IS NULL OR queue_due_at > ?)", query.not_overdue)
    if query.billing_status is not None:
        term("billing_status = ?", query.billing_status)
    if query.customer_id is not None:
        term("customer_id = ?", query.customer_id)
    if query.customer_ids is not None:
        term(*among("customer_id", sorted(query.customer_ids)))
    if query.escalation_level is not None:
        term("escalation_level >= ?", query.escalation_level)
        if query.escalation_level > 0:
            term("escalation_level > 0")  # the partial index's own predicate, so it is used
    if query.ticket_id is not None:
        term("ticket_id = ?", query.ticket_id)
    if query.after is not None:
        if not isinstance(query.after, tuple):  # a bare ticket id would unpack into nonsense
            raise TypeError(f"TicketQuery.after is a (customer_id, ticket_id) key, not {query.after!r}")
        customer, ticket = query.after
        # Row values would read better, but not every planner uses an index range for them.
        term("(ticket_id > ? OR (ticket_id = ? AND customer_id > ?))", ticket, ticket, customer)
    return "".join(" AND " + t for t in terms), params
