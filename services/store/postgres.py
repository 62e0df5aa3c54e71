"""The shared read-model store: PostgreSQL (``SLATRACK_DATABASE_URL``), for
several workers and API replicas.

One connection per store object, guarded by a lock (each process has its
own store; callers reach it from a thread executor). The connection runs in
autocommit mode and writes open an explicit transaction, so reads never sit
idle in a transaction holding locks or old snapshots.

Concurrency between processes rests on row locks taken inside the write
transaction (see :mod:`services.store.sql`): the offsets row of each partition
(two workers committing the same range: one wins, the other gets StaleBatch),
the ``active_generation`` row held FOR SHARE (a switch waits for batches in
flight), and an advisory lock for migrations.

Bulk writes (a batch's events and rows) go through binary COPY into a
temporary table and one INSERT ... SELECT; small ones use ``executemany``, which
psycopg 3 pipelines. Either way a batch costs a few round trips, not one per row.

The URL may carry a password: it is never logged, only host, port and database.
"""

import contextlib
import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TypeVar

import psycopg

from services.store.sql import Bulk, SqlStore, Tx
from services.worker.ports import CALL_TIMEOUT, StoreTimeout, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Two-key advisory lock: a constant for "slatrack migrations" and the schema,
# so stores in different schemas of one database (tests) do not queue on each other.
MIGRATION_LOCK_KEY = 0x736C6174  # "slat"
# Below this many rows, a pipelined executemany beats setting up a COPY.
COPY_MIN_ROWS = 50
# How long a call past its limit waits for the server to cancel its statement
# before the connection is cut (a frozen server answers no cancel request either).
CANCEL_WAIT_S = 0.5
# What binary COPY sends for the Python type of a column's values (sql.Bulk.kinds).
COPY_TYPES = {int: "bigint", str: "text", bool: "boolean", bytes: "bytea"}
# Null-safe "differs" of two row values: a replaced row is written only where some column does.
DISTINCT = "IS DISTINCT FROM"


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    # The shared SQL uses sqlite3's "?" placeholders; psycopg wants "%s".
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, conn: psycopg.Connection) -> None:
        self._cur = conn.cursor()

    def all(self, sql: str, params: Sequence = ()) -> list[tuple]:
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchall()

    def one(self, sql: str, params: Sequence = ()) -> tuple | None:
        self._cur.execute(_pg(sql), params)
        return self._cur.fetchone()

    def run(self, sql: str, params: Sequence = ()) -> None:
        self._cur.execute(_pg(sql), params)

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._cur.executemany(_pg(sql), rows)

    def bulk(self, bulk: Bulk, rows: list[tuple]) -> None:
        if len(rows) < COPY_MIN_ROWS:
            self.many(bulk.insert(DISTINCT), rows)
            return
        # COPY into a temporary table, then one INSERT ... SELECT: several
        # times faster than a statement per row, even pipelined. DISTINCT ON
        # picks the row that wins among repeats of a key (a statement may not
        # touch one row twice), as one statement per row would have.
        stage = f"stage_{bulk.table}"
        columns = ", ".join(bulk.columns)
        key = ", ".join(bulk.key)
        types = ["bigint", *(COPY_TYPES[kind] for kind in bulk.kinds)]
        # Created inside this transaction if missing: a rollback takes it away
        # again, so nothing can go stale about whether it exists. Integers are
        # staged as bigint whatever their column (INSERT casts them), so that
        # the Python types alone say what binary COPY sends.
        declared = ", ".join(f"{c} {t}" for c, t in zip(("ord", *bulk.columns), types, strict=True))
        self._cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({declared}) ON COMMIT DELETE ROWS")
        # Binary: bytea (event bodies, views) goes as it is, not hex-escaped, and
        # numbers need no formatting or parsing (a third less time than text COPY).
        with self._cur.copy(f"COPY {stage} (ord, {columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for ord_, row in enumerate(rows):
                copy.write_row((ord_, *row))
        order = "ord" if bulk.keep == "first" else "ord DESC"
        self._cur.execute(
            f"INSERT INTO {bulk.table} ({columns}) "  # noqa: S608 (names from our dataclasses)
            f"SELECT DISTINCT ON ({key}) {columns} FROM {stage} ORDER BY {key}, {order} "
            f"{bulk.on_conflict(DISTINCT)}"
        )

    def script(self, sql: str) -> None:
        # No parameters: psycopg sends it as one simple query, several statements allowed.
        self._cur.execute(sql)


class PostgresStore(SqlStore):
    dialect = "postgres"
    _for_share = " FOR SHARE"
    _for_update = " FOR UPDATE"
    _no_timeout = "SET LOCAL statement_timeout = 0"
    _migration_lock = f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY}, hashtext(current_schema()))"
    _insert_signal = (
        "INSERT INTO signals (signal_id, message_key, body, created_at, log_partition) "
        "VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (signal_id) DO NOTHING"
    )

    def __init__(
        self,
        conninfo: str,
        *,
        statement_timeout_s: float = 60.0,
        connect_timeout_s: int = 10,
    ) -> None:
        """``conninfo``: a postgresql:// URL or key=value string (may hold a password)."""
        self._conninfo = conninfo
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._lock:
            conn = self._connection()  # fail at start-up, not at the first batch
        log.info("read models: PostgreSQL at %s:%s/%s", conn.info.host, conn.info.port, conn.info.dbname)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self, connect_timeout_s: int | None = None) -> psycopg.Connection:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            log.warning("PostgreSQL connection lost; reconnecting")
            conn.close()
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=connect_timeout_s or self._connect_timeout_s,
            fallback_application_name="slatrack",
        )
        try:
            # A statement stuck on a lock fails instead of hanging a worker forever;
            # a session that dies mid-transaction releases its row locks soon.
            conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            conn.execute(
                f"SET idle_in_transaction_session_timeout = {max(self._statement_timeout_ms, 60_000)}"
            )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _read(self, fn: Callable[[Tx], T]) -> T:
        limit = CALL_TIMEOUT.get()
        if limit is not None:
            return self._read_within(fn, limit)
        with self._lock, _unavailable():
            conn = self._connection()
            try:
                return fn(_PgTx(conn))
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
            # The connection broke (server restart, network): a read is safe to repeat once.
            return fn(_PgTx(self._connection()))

    def _read_within(self, fn: Callable[[Tx], T], limit: float) -> T:
        """A read that answers or fails within about ``limit`` seconds, whatever the server does."""
        timed_out = StoreTimeout(f"PostgreSQL did not answer within {limit:g} s")
        deadline = time.monotonic() + limit
        # Behind a call that hangs (a worker's, in the same process), this one gives up too.
        if not self._lock.acquire(timeout=limit):
            raise timed_out
        try:
            with _unavailable():
                # libpq's connect timeout is whole seconds, at least 2.
                conn = self._connection(max(2, math.ceil(deadline - time.monotonic())))
                with _Watchdog(conn, deadline - time.monotonic()) as watchdog:
                    try:
                        return fn(_PgTx(conn))
                    except psycopg.Error:
                        if watchdog.fired:
                            raise timed_out from None
                        raise
        except StoreUnavailable:
            if time.monotonic() >= deadline:  # connecting took all the time there was
                raise timed_out from None
            raise
        finally:
            self._lock.release()

    def _write(self, fn: Callable[[Tx], T]) -> T:
        with self._lock, _unavailable(), ExitStack() as stack:
            conn = self._connection()
            try:
                stack.enter_context(conn.transaction())
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                # BEGIN found the connection dead: nothing was written, so a new
                # connection may try again. Past this point a failure is never
                # retried here: if it broke during COMMIT, whether the batch
                # landed is unknown; the caller tries again and, if it had
                # landed, gets StaleBatch, which is the truth.
                conn = self._connection()
                stack.enter_context(conn.transaction())
            return fn(_PgTx(conn))

    def _pairs(self, pairs: Iterable[tuple[str, str]]) -> tuple[str, tuple]:
        firsts, seconds = zip(*pairs, strict=True) if pairs else ((), ())
        return "unnest(?::text[], ?::text[]) AS keys (a, b) JOIN", (list(firsts), list(seconds))

    def _in(self, column: str, values: Iterable) -> tuple[str, object]:
        return f"{column} = ANY(?)", list(values)


class _Watchdog:
    """Interrupts the connection's statement if it runs past ``seconds``: first a cancel request (a
    live server stops the statement, the connection stays), then, if the statement has not ended
    soon after, it cuts the connection under libpq, whose wait then fails. A server-side
    statement_timeout cannot do this: a frozen server runs no timer and answers no cancel."""

    def __init__(self, conn: psycopg.Connection, seconds: float) -> None:
        self._conn = conn
        self._ended = threading.Event()
        self.fired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._ended.set()
        self._timer.cancel()
        self._timer.join()  # so that it never touches the connection of a later call

    def _fire(self) -> None:
        if self._ended.is_set():
            return
        self.fired = True
        with contextlib.suppress(psycopg.Error):
            self._conn.cancel_safe(timeout=CANCEL_WAIT_S)
        if self._ended.wait(CANCEL_WAIT_S):
            return
        # On a duplicate of libpq's descriptor: shutting the socket down wakes the waiting
        # thread (end of stream), while the descriptor itself stays libpq's to close.
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def _unavailable() -> Iterator[None]:
    """A server down, a connection lost or a statement timed out: StoreUnavailable (try again later)."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL: {str(exc).strip()}") from exc
    except psycopg.Error as exc:
        if exc.sqlstate not in OUTAGE_SQLSTATES:
            raise  # a bug of ours (a bad statement, a violated constraint): not "try again"
        raise StoreUnavailable(f"PostgreSQL: {str(exc).strip()}") from exc


# Outages psycopg does not class as OperationalError (it makes them InternalError): a server
# that turned read-only (a primary demoted in a switchover, a standby behind the address) and
# a session the server closed for idling in a transaction.
OUTAGE_SQLSTATES = frozenset({"25006", "25P03"})
