"""The embedded read-model store: one SQLite file in ``SLATRACK_DATA_DIR``.

WAL mode lets readers (the API, ``slatrack rebuild`` checking counts, another
process) read while the worker writes. ``synchronous=NORMAL`` is durable
against a crash of the process; a power cut may lose the last transactions,
but never half of one, and since offsets are committed with the rows they
describe, the worker then simply re-reads those events from Kafka.

One connection, guarded by a lock: callers reach the store from a thread
executor, and sqlite3 connections must not be used by two threads at once.
Writes begin with ``BEGIN IMMEDIATE``, taking the write lock up front, so two
writers (two processes on one file) queue instead of failing halfway with
"database is locked".
"""

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from services.store import migrations
from services.store.sql import Bulk, SqlStore, Tx
from services.worker.ports import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
CACHE_KIB = 64 * 1024  # the page cache: most of a 100,000-ticket working set stays in memory
# SQLite plans from table statistics, and a store starts empty: without fresh
# statistics it may walk a whole generation in key order for a rare filter
# value. SQLite's advice for long-lived connections is PRAGMA optimize now and
# then; analysis_limit keeps each run to milliseconds.
OPTIMIZE_EVERY_S = 600.0
ANALYSIS_LIMIT = 1000
# Checkpoint every ~40 MB of WAL rather than SQLite's 4 MB: batches rewrite
# the same hot pages, and each checkpoint copies them and syncs the file.
WAL_CHECKPOINT_PAGES = 10_000


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence = ()) -> tuple | None:
        # fetchall, not fetchone: it finishes the statement (an INSERT ... RETURNING
        # left half-stepped would keep the transaction from committing).
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: Sequence = ()) -> None:
        self._conn.execute(sql, params)

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._conn.executemany(sql, rows)

    def bulk(self, bulk: Bulk, rows: list[tuple]) -> None:
        # executemany steps one prepared statement in C: SQLite has no faster
        # way in, and a row repeated in the batch meets the ON CONFLICT clause.
        # IS NOT on row values: null-safe, and older than SQLite's IS DISTINCT FROM (3.39).
        self.many(bulk.insert("IS NOT"), rows)

    def script(self, sql: str) -> None:
        for statement in migrations.split_statements(sql):
            self._conn.execute(statement)


class SqliteStore(SqlStore):
    dialect = "sqlite"
    # seq: the next number in one subquery (an index probe); writers are
    # serialized by BEGIN IMMEDIATE, so two inserts never pick the same one.
    _insert_signal = (
        "INSERT INTO signals (signal_id, seq, message_key, body, created_at, log_partition) "
        "VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM signals), ?, ?, ?, ?) "
        "ON CONFLICT (signal_id) DO NOTHING"
    )

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._closed = False
        # isolation_level=None: no implicit transactions; we say BEGIN and COMMIT.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            # Locked by another process past the busy timeout: unavailable, as any call. A file
            # SQLite cannot open as configured is the caller's (open_store: StoreNotOpened).
            with _unavailable(_LOCKED):
                self._conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a commit appends to the WAL without an fsync (the
                # checkpoint syncs). A power cut or an OS crash may lose the last committed
                # transactions, never part of one, and exactly-once still holds: a batch's
                # offsets are claimed in the transaction that writes its events, rows and
                # signals (SqlStore.commit_batch), so a lost batch loses its offsets with it,
                # the worker resumes from the offsets that survived and reads those events
                # again: nothing is skipped and nothing applied twice. (A signal the relay had
                # sent from a lost transaction is derived again with the same id: consumers
                # already take ids as the duplicate check.) A crash of the process alone loses
                # nothing: the WAL is in the OS's hands at COMMIT.
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                self._conn.execute("PRAGMA temp_store = MEMORY")
                self._conn.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        except BaseException:
            self._conn.close()
            raise
        # The first run soon after start: a restarted worker meets a full database.
        self._optimize_at = time.monotonic() + 60.0
        log.info("read models: SQLite at %s", self.path)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._optimize()
            self._conn.close()

    def _read(self, fn: Callable[[Tx], T]) -> T:
        with self._lock, _unavailable():
            return fn(_SqliteTx(self._conn))

    def _write(self, fn: Callable[[Tx], T]) -> T:
        with self._lock, _unavailable():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(_SqliteTx(self._conn))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # also when COMMIT itself failed
                    self._conn.execute("ROLLBACK")
                raise
            if time.monotonic() >= self._optimize_at:
                # Here, after a commit, not in _read: it needs the write lock,
                # and a reader must not wait for another process's writes.
                self._optimize_at = time.monotonic() + OPTIMIZE_EVERY_S
                self._optimize()
            return result

    def _optimize(self) -> None:
        # Statistics are an optimization: never wait for another process's
        # write lock for them, never fail a commit (already done) or a close.
        try:
            self._conn.execute("PRAGMA busy_timeout = 0")
            self._conn.execute("PRAGMA optimize")
        except sqlite3.Error as exc:
            log.info("PRAGMA optimize skipped: %s", exc)
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _pairs(self, pairs: Iterable[tuple[str, str]]) -> tuple[str, tuple]:
        # CROSS JOIN: SQLite then loops over the keys and probes the table's index for each,
        # instead of walking the table's whole generation for a virtual table of unknown size.
        relation = (
            "(SELECT json_extract(value, '$[0]') AS a, json_extract(value, '$[1]') AS b "
            "FROM json_each(?)) AS keys CROSS JOIN"
        )
        return relation, (json.dumps([list(pair) for pair in pairs]),)

    def _in(self, column: str, values: Iterable) -> tuple[str, object]:
        # One JSON array parameter rather than "IN (?, ?, ...)": any length
        # (SQLite caps the number of parameters) and one cached statement.
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))  # noqa: S608


# What passes (another process's lock, a full disk, a failing disk) rather than
# what a retry cannot fix (a missing table, a bad statement: a bug, which must stop the worker
# and is a 500 from the API; it propagates as sqlite3 raised it).
_LOCKED = ("SQLITE_BUSY", "SQLITE_LOCKED")
_TRANSIENT = (*_LOCKED, "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN")


@contextmanager
def _unavailable(transient: tuple[str, ...] = _TRANSIENT) -> Iterator[None]:
    """Locked past the busy timeout, a full disk, an I/O error: StoreUnavailable (try again later)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if not (getattr(exc, "sqlite_errorname", None) or "").startswith(transient):
            raise
        raise StoreUnavailable(f"SQLite: {exc}") from exc
