"""Versioned schema migrations: numbered SQL scripts, one per dialect.

Applied versions are recorded in ``schema_migrations``. Each migration runs in
its own transaction together with the row that records it, so a crash leaves
the schema either before or after a version, never half-way. Never edit a
migration that has shipped: add the next number.

Column naming: the log's partition and offset are ``log_partition`` and
``log_offset`` because OFFSET is a reserved word in PostgreSQL (and PARTITION a
keyword in both dialects); quoting them everywhere would be a trap.

Every read-model table starts its primary key with ``generation``: a rebuild
fills a new generation beside the serving one. The ``signals`` outbox is the
exception on purpose: its key is the signal id alone, so no generation (no
rebuild) can ever record, and so re-emit, a signal whose id exists.
"""

import sqlite3
from dataclasses import dataclass

# Instants are integer epoch seconds (UTC), as in the store interface.

SQLITE_1 = """
CREATE TABLE generations (
    generation   INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a dropped number is never reused
    reason       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER
);

-- One row (id = 1): switching generations is one UPDATE in one transaction.
CREATE TABLE active_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);

CREATE TABLE events (
    generation    INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    ticket_id     TEXT,               -- NULL for account events
    customer_id   TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    log_offset    INTEGER NOT NULL,
    occurred_at   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    PRIMARY KEY (generation, event_id)
);
CREATE INDEX events_by_ticket ON events (generation, ticket_id, log_partition, log_offset);
CREATE INDEX events_by_account ON events (generation, customer_id, log_partition, log_offset)
    WHERE ticket_id IS NULL;
-- Log order, for the rebuild's check against the live generation. Offsets
-- grow within a partition, so inserts land at the end of each range: cheap.
CREATE INDEX events_by_position ON events (generation, log_partition, log_offset, event_id);

CREATE TABLE tickets (
    generation        INTEGER NOT NULL,
    ticket_id         TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    log_partition     INTEGER NOT NULL,
    priority          TEXT NOT NULL,
    category          TEXT NOT NULL,
    state             TEXT NOT NULL,
    status            TEXT NOT NULL,
    escalation_level  INTEGER NOT NULL,
    response_status   TEXT NOT NULL,
    resolution_status TEXT NOT NULL,
    breached          INTEGER NOT NULL,
    at_risk           INTEGER NOT NULL,
    response_due_at   INTEGER,
    resolution_due_at INTEGER,
    next_due_at       INTEGER,
    next_change_at    INTEGER,
    billing_rule      TEXT,
    billing_status    TEXT NOT NULL,
    billing_month     TEXT,
    amount_cents      INTEGER NOT NULL,
    billable_seconds  INTEGER NOT NULL,
    opened_at         INTEGER NOT NULL,
    evaluated_at      INTEGER NOT NULL,
    view              BLOB NOT NULL,
    signals           BLOB NOT NULL,
    PRIMARY KEY (generation, ticket_id)
);
-- ticket_id last in the list indexes: pages come out in keyset order without a sort.
CREATE INDEX tickets_by_state ON tickets (generation, state, priority, ticket_id);
-- Clock status: only "paused" is selective ("running" is most open tickets,
-- "stopped" most closed ones; the state index and the key order serve those),
-- and a partial index costs nothing to tickets outside it.
CREATE INDEX tickets_paused ON tickets (generation, ticket_id)
    WHERE response_status = 'paused' OR resolution_status = 'paused';
CREATE INDEX tickets_breached ON tickets (generation, ticket_id) WHERE breached;
CREATE INDEX tickets_at_risk ON tickets (generation, ticket_id) WHERE at_risk;
CREATE INDEX tickets_by_due ON tickets (generation, next_due_at) WHERE next_due_at IS NOT NULL;
CREATE INDEX tickets_by_change ON tickets (generation, log_partition, next_change_at)
    WHERE next_change_at IS NOT NULL;
CREATE INDEX tickets_by_customer ON tickets (generation, customer_id, ticket_id);
CREATE INDEX tickets_by_billing ON tickets (generation, customer_id, billing_month, ticket_id)
    WHERE billing_month IS NOT NULL;
CREATE INDEX tickets_by_escalation ON tickets (generation, escalation_level, ticket_id)
    WHERE escalation_level > 0;

CREATE TABLE customers (
    generation          INTEGER NOT NULL,
    customer_id         TEXT NOT NULL,
    log_partition       INTEGER NOT NULL,
    delinquent          INTEGER NOT NULL,
    dashboard_suspended INTEGER NOT NULL,
    next_change_at      INTEGER,
    evaluated_at        INTEGER NOT NULL,
    view                BLOB NOT NULL,
    PRIMARY KEY (generation, customer_id)
);
CREATE INDEX customers_by_change ON customers (generation, log_partition, next_change_at)
    WHERE next_change_at IS NOT NULL;

CREATE TABLE offsets (
    generation    INTEGER NOT NULL,
    topic         TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    next_offset   INTEGER NOT NULL,
    PRIMARY KEY (generation, topic, log_partition)
);

CREATE TABLE signals (
    signal_id   TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL UNIQUE,  -- insertion order: the outbox is sent oldest first
    message_key TEXT NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX signals_pending ON signals (seq) WHERE NOT sent;
"""

POSTGRES_1 = """
CREATE TABLE generations (
    generation   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- a sequence never reuses a number
    reason       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT
);

-- One row (id = 1): switching generations is one UPDATE in one transaction, and
-- writers hold it FOR SHARE while they commit, so a switch waits for them.
CREATE TABLE active_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);

CREATE TABLE events (
    generation    BIGINT NOT NULL,
    event_id      TEXT NOT NULL,
    ticket_id     TEXT,               -- NULL for account events
    customer_id   TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    log_offset    BIGINT NOT NULL,
    occurred_at   BIGINT NOT NULL,
    body          BYTEA NOT NULL,
    PRIMARY KEY (generation, event_id)
);
CREATE INDEX events_by_ticket ON events (generation, ticket_id, log_partition, log_offset);
CREATE INDEX events_by_account ON events (generation, customer_id, log_partition, log_offset)
    WHERE ticket_id IS NULL;
-- Log order, for the rebuild's check against the live generation. Offsets
-- grow within a partition, so inserts land at the end of each range: cheap.
CREATE INDEX events_by_position ON events (generation, log_partition, log_offset, event_id);

CREATE TABLE tickets (
    generation        BIGINT NOT NULL,
    ticket_id         TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    log_partition     INTEGER NOT NULL,
    priority          TEXT NOT NULL,
    category          TEXT NOT NULL,
    state             TEXT NOT NULL,
    status            TEXT NOT NULL,
    escalation_level  INTEGER NOT NULL,
    response_status   TEXT NOT NULL,
    resolution_status TEXT NOT NULL,
    breached          BOOLEAN NOT NULL,
    at_risk           BOOLEAN NOT NULL,
    response_due_at   BIGINT,
    resolution_due_at BIGINT,
    next_due_at       BIGINT,
    next_change_at    BIGINT,
    billing_rule      TEXT,
    billing_status    TEXT NOT NULL,
    billing_month     TEXT,
    amount_cents      BIGINT NOT NULL,
    billable_seconds  BIGINT NOT NULL,
    opened_at         BIGINT NOT NULL,
    evaluated_at      BIGINT NOT NULL,
    view              BYTEA NOT NULL,
    signals           BYTEA NOT NULL,
    PRIMARY KEY (generation, ticket_id)
);
-- ticket_id last in the list indexes: pages come out in keyset order without a sort.
CREATE INDEX tickets_by_state ON tickets (generation, state, priority, ticket_id);
-- Clock status: only "paused" is selective ("running" is most open tickets,
-- "stopped" most closed ones; the state index and the key order serve those),
-- and a partial index costs nothing to tickets outside it.
CREATE INDEX tickets_paused ON tickets (generation, ticket_id)
    WHERE response_status = 'paused' OR resolution_status = 'paused';
CREATE INDEX tickets_breached ON tickets (generation, ticket_id) WHERE breached;
CREATE INDEX tickets_at_risk ON tickets (generation, ticket_id) WHERE at_risk;
CREATE INDEX tickets_by_due ON tickets (generation, next_due_at) WHERE next_due_at IS NOT NULL;
CREATE INDEX tickets_by_change ON tickets (generation, log_partition, next_change_at)
    WHERE next_change_at IS NOT NULL;
CREATE INDEX tickets_by_customer ON tickets (generation, customer_id, ticket_id);
CREATE INDEX tickets_by_billing ON tickets (generation, customer_id, billing_month, ticket_id)
    WHERE billing_month IS NOT NULL;
CREATE INDEX tickets_by_escalation ON tickets (generation, escalation_level, ticket_id)
    WHERE escalation_level > 0;

CREATE TABLE customers (
    generation          BIGINT NOT NULL,
    customer_id         TEXT NOT NULL,
    log_partition       INTEGER NOT NULL,
    delinquent          BOOLEAN NOT NULL,
    dashboard_suspended BOOLEAN NOT NULL,
    next_change_at      BIGINT,
    evaluated_at        BIGINT NOT NULL,
    view                BYTEA NOT NULL,
    PRIMARY KEY (generation, customer_id)
);
CREATE INDEX customers_by_change ON customers (generation, log_partition, next_change_at)
    WHERE next_change_at IS NOT NULL;

CREATE TABLE offsets (
    generation    BIGINT NOT NULL,
    topic         TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    next_offset   BIGINT NOT NULL,
    PRIMARY KEY (generation, topic, log_partition)
);

CREATE TABLE signals (
    signal_id   TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the outbox is sent oldest first
    message_key TEXT NOT NULL,
    body        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    sent        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX signals_pending ON signals (seq) WHERE NOT sent;
"""


# Per-clock flags for the open-clocks gauge, and what the SLA counters have
# counted per ticket (see services/worker/sla_metrics.py).
_TICKET_COLUMNS_2 = (
    ("response_at_risk", "{bool} NOT NULL DEFAULT {false}"),
    ("response_breached", "{bool} NOT NULL DEFAULT {false}"),
    ("resolution_at_risk", "{bool} NOT NULL DEFAULT {false}"),
    ("resolution_breached", "{bool} NOT NULL DEFAULT {false}"),
    ("marks", "{blob} NOT NULL DEFAULT {empty}"),
)


def _add_ticket_columns(bool_type: str, false: str, blob: str, empty: str) -> str:
    return "\n".join(
        f"ALTER TABLE tickets ADD COLUMN {name} "
        + kind.format(bool=bool_type, false=false, blob=blob, empty=empty)
        + ";"
        for name, kind in _TICKET_COLUMNS_2
    )


_OPEN_CLOCKS_INDEX = """
-- The open-clocks gauge counts tickets not closed, by partition, at every scrape.
CREATE INDEX tickets_open_by_partition ON tickets (generation, log_partition, priority)
    WHERE state IN ('open', 'resolved');
"""
SQLITE_2 = _add_ticket_columns("INTEGER", "0", "BLOB", "X'7B7D'") + _OPEN_CLOCKS_INDEX
POSTGRES_2 = _add_ticket_columns("BOOLEAN", "FALSE", "BYTEA", "'\\x7b7d'::bytea") + _OPEN_CLOCKS_INDEX


# Each signal's partition: the worker holding it relays it (one sender per signal).
_SIGNALS_BY_PARTITION = """
ALTER TABLE signals ADD COLUMN log_partition INTEGER;
CREATE INDEX signals_pending_by_partition ON signals (log_partition, seq) WHERE NOT sent;
"""
SQLITE_3 = POSTGRES_3 = _SIGNALS_BY_PARTITION


# Identity (docs/events.md): a ticket is (customer_id, ticket_id), an event
# (customer_id, event_id). The primary keys change, the keyset indexes end in
# (ticket_id, customer_id), and three things are added: each ticket's
# account_until (the latest instant an account event can change it; 32503680000
# = 3000-01-01, any), each customer's log time, and each generation's policy.
# SQLite cannot change a primary key in place: those two tables are copied.

_TICKET_INDEXES_4 = """
CREATE INDEX tickets_by_id ON tickets (generation, ticket_id, customer_id);
CREATE INDEX tickets_by_state ON tickets (generation, state, priority, ticket_id, customer_id);
CREATE INDEX tickets_paused ON tickets (generation, ticket_id, customer_id)
    WHERE response_status = 'paused' OR resolution_status = 'paused';
CREATE INDEX tickets_breached ON tickets (generation, ticket_id, customer_id) WHERE breached;
CREATE INDEX tickets_at_risk ON tickets (generation, ticket_id, customer_id) WHERE at_risk;
CREATE INDEX tickets_by_due ON tickets (generation, next_due_at) WHERE next_due_at IS NOT NULL;
CREATE INDEX tickets_by_change ON tickets (generation, log_partition, next_change_at)
    WHERE next_change_at IS NOT NULL;
CREATE INDEX tickets_by_customer_change ON tickets (generation, customer_id, next_change_at)
    WHERE next_change_at IS NOT NULL;
CREATE INDEX tickets_by_account ON tickets (generation, customer_id, account_until);
CREATE INDEX tickets_by_billing ON tickets (generation, customer_id, billing_month, ticket_id)
    WHERE billing_month IS NOT NULL;
CREATE INDEX tickets_by_escalation ON tickets (generation, escalation_level, ticket_id, customer_id)
    WHERE escalation_level > 0;
CREATE INDEX tickets_open_by_partition ON tickets (generation, log_partition, priority)
    WHERE state IN ('open', 'resolved');
"""
_EVENT_INDEXES_4 = """
CREATE INDEX events_by_ticket ON events (generation, customer_id, ticket_id, log_partition, log_offset);
CREATE INDEX events_by_account ON events (generation, customer_id, log_partition, log_offset)
    WHERE ticket_id IS NULL;
CREATE INDEX events_by_position ON events (generation, log_partition, log_offset, event_id);
"""
_TICKET_COLUMNS_4 = (
    "generation, ticket_id, customer_id, log_partition, priority, category, state, status, "
    "escalation_level, response_status, resolution_status, breached, at_risk, response_due_at, "
    "resolution_due_at, next_due_at, next_change_at, billing_rule, billing_status, billing_month, "
    "amount_cents, billable_seconds, opened_at, evaluated_at, view, signals, response_at_risk, "
    "response_breached, resolution_at_risk, resolution_breached, marks"
)

_COPY_TICKETS_4 = f"INSERT INTO tickets_4 ({_TICKET_COLUMNS_4}) SELECT {_TICKET_COLUMNS_4} FROM tickets;"  # noqa: S608
SQLITE_4 = "\n".join(
    [
        """
CREATE TABLE events_4 (
    generation    INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    ticket_id     TEXT,
    customer_id   TEXT NOT NULL,
    log_partition INTEGER NOT NULL,
    log_offset    INTEGER NOT NULL,
    occurred_at   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    PRIMARY KEY (generation, customer_id, event_id)
);
INSERT INTO events_4 SELECT generation, event_id, ticket_id, customer_id, log_partition, log_offset,
    occurred_at, body FROM events;
DROP TABLE events;
ALTER TABLE events_4 RENAME TO events;

CREATE TABLE tickets_4 (
    generation          INTEGER NOT NULL,
    ticket_id           TEXT NOT NULL,
    customer_id         TEXT NOT NULL,
    log_partition       INTEGER NOT NULL,
    priority            TEXT NOT NULL,
    category            TEXT NOT NULL,
    state               TEXT NOT NULL,
    status              TEXT NOT NULL,
    escalation_level    INTEGER NOT NULL,
    response_status     TEXT NOT NULL,
    resolution_status   TEXT NOT NULL,
    breached            INTEGER NOT NULL,
    at_risk             INTEGER NOT NULL,
    response_due_at     INTEGER,
    resolution_due_at   INTEGER,
    next_due_at         INTEGER,
    next_change_at      INTEGER,
    billing_rule        TEXT,
    billing_status      TEXT NOT NULL,
    billing_month       TEXT,
    amount_cents        INTEGER NOT NULL,
    billable_seconds    INTEGER NOT NULL,
    opened_at           INTEGER NOT NULL,
    evaluated_at        INTEGER NOT NULL,
    view                BLOB NOT NULL,
    signals             BLOB NOT NULL,
    response_at_risk    INTEGER NOT NULL DEFAULT 0,
    response_breached   INTEGER NOT NULL DEFAULT 0,
    resolution_at_risk  INTEGER NOT NULL DEFAULT 0,
    resolution_breached INTEGER NOT NULL DEFAULT 0,
    marks               BLOB NOT NULL DEFAULT X'7B7D',
    account_until       INTEGER NOT NULL DEFAULT 32503680000,
    PRIMARY KEY (generation, customer_id, ticket_id)
);""",
        _COPY_TICKETS_4,
        """DROP TABLE tickets;
ALTER TABLE tickets_4 RENAME TO tickets;

ALTER TABLE customers ADD COLUMN log_time INTEGER;
ALTER TABLE generations ADD COLUMN policy TEXT;""",
        _EVENT_INDEXES_4,
        _TICKET_INDEXES_4,
    ]
)

_POSTGRES_DROPPED_INDEXES_4 = [
    "events_by_ticket",
    "events_by_account",
    "events_by_position",
    "tickets_by_state",
    "tickets_paused",
    "tickets_breached",
    "tickets_at_risk",
    "tickets_by_due",
    "tickets_by_change",
    "tickets_by_customer",
    "tickets_by_billing",
    "tickets_by_escalation",
    "tickets_open_by_partition",
]
POSTGRES_4 = "\n".join(
    [
        *(f"DROP INDEX {name};" for name in _POSTGRES_DROPPED_INDEXES_4),
        """
ALTER TABLE events DROP CONSTRAINT events_pkey, ADD PRIMARY KEY (generation, customer_id, event_id);
ALTER TABLE tickets DROP CONSTRAINT tickets_pkey, ADD PRIMARY KEY (generation, customer_id, ticket_id);
ALTER TABLE tickets ADD COLUMN account_until BIGINT NOT NULL DEFAULT 32503680000;
ALTER TABLE customers ADD COLUMN log_time BIGINT;
ALTER TABLE generations ADD COLUMN policy TEXT;""",
        _EVENT_INDEXES_4,
        _TICKET_INDEXES_4,
    ]
)


# The policy versions a generation has read from the policy topic (projections.contracts), by
# their position there: what the API's recomputations and reports measure with.
SQLITE_5 = """
CREATE TABLE policy_versions (
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (generation, position)
);
"""
POSTGRES_5 = """
CREATE TABLE policy_versions (
    generation INTEGER NOT NULL,
    position   BIGINT NOT NULL,
    body       BYTEA NOT NULL,
    PRIMARY KEY (generation, position)
);
"""


# The queue (issue 15): each ticket's earliest due instant of a running clock, reached or not
# (next_due_at counts only those not reached yet, so an overdue ticket had none), filled in from
# the columns every row has, and the index of the queue's order over open tickets (keyset pages
# of (queue_due_at, ticket_id, customer_id); the rows without one, last, by ticket id).
_RUNNING_DUE = "CASE WHEN {clock}_status = 'running' THEN {clock}_due_at END"
_QUEUE_DUE_6 = (
    "CASE WHEN ({r}) IS NULL THEN ({s}) WHEN ({s}) IS NULL THEN ({r}) "
    "WHEN ({r}) < ({s}) THEN ({r}) ELSE ({s}) END"
).format(r=_RUNNING_DUE.format(clock="response"), s=_RUNNING_DUE.format(clock="resolution"))
_QUEUE_6 = f"""
UPDATE tickets SET queue_due_at = {_QUEUE_DUE_6}
    WHERE response_status = 'running' OR resolution_status = 'running';
CREATE INDEX tickets_queue ON tickets (generation, queue_due_at, ticket_id, customer_id)
    WHERE state = 'open';
-- due_before compares queue_due_at now (an overdue ticket is due before any later instant):
-- its index replaces next_due_at's, which no query reads any more.
DROP INDEX tickets_by_due;
CREATE INDEX tickets_by_queue_due ON tickets (generation, queue_due_at) WHERE queue_due_at IS NOT NULL;
"""  # noqa: S608
# The console's queue is in the order of the next breach (queue_breach_at: the earliest breach
# instant of a running clock, past or projected). The rows have no column to compute it from (a
# business-hours clock breaches at the next opening's first second): it is filled in with the due
# instant, at or before it, and each row gets its own when it is next written (a new event, a
# timer at its next change); `slatrack rebuild` writes them all at once.
_QUEUE_BREACH_6 = """
UPDATE tickets SET queue_breach_at = queue_due_at WHERE queue_due_at IS NOT NULL;
CREATE INDEX tickets_queue_breach ON tickets (generation, queue_breach_at, ticket_id, customer_id)
    WHERE state = 'open';
"""
SQLITE_6 = (
    "ALTER TABLE tickets ADD COLUMN queue_due_at INTEGER;\n"
    "ALTER TABLE tickets ADD COLUMN queue_breach_at INTEGER;" + _QUEUE_6 + _QUEUE_BREACH_6
)
POSTGRES_6 = (
    "ALTER TABLE tickets ADD COLUMN queue_due_at BIGINT;\n"
    "ALTER TABLE tickets ADD COLUMN queue_breach_at BIGINT;" + _QUEUE_6 + _QUEUE_BREACH_6
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str

    def script(self, dialect: str) -> str:
        return getattr(self, dialect)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "read models, generations, offsets, outbox", SQLITE_1, POSTGRES_1),
    Migration(2, "per-clock flags and metric marks of tickets", SQLITE_2, POSTGRES_2),
    Migration(3, "the partition of each signal", SQLITE_3, POSTGRES_3),
    Migration(
        4, "identity per customer, account reach, log time, policy of a generation", SQLITE_4, POSTGRES_4
    ),
    Migration(5, "the policy versions of a generation", SQLITE_5, POSTGRES_5),
    Migration(6, "the queue: each ticket's earliest due instant of a running clock", SQLITE_6, POSTGRES_6),
)

CREATE_VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)
"""


def next_pending(applied: set[int]) -> Migration | None:
    """The lowest-numbered migration not applied yet, or None when the schema is current."""
    for migration in MIGRATIONS:
        if migration.version not in applied:
            return migration
    return None


def latest_version() -> int:
    return MIGRATIONS[-1].version


def split_statements(script: str) -> list[str]:
    """The statements of a script, for drivers that run one statement per call (sqlite3).

    ``executescript`` is not an option: it commits any open transaction first,
    so a migration could not share a transaction with its version row.
    """
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements
