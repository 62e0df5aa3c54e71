"""The read-model store: what the projector writes and the API reads.

The worker's port: defined here, by its roles (GenerationStore, ProjectionStore,
SignalOutbox, QueryStore; ReadModelStore is all four), and implemented by the
adapters in ``services.store``. One interface, two implementations (SQLite, the embedded default; PostgreSQL,
shared by several workers and API replicas), held to one contract test suite
(``tests/integration/test_store_contract.py``).

Everything lives in a *generation*: a complete set of read models built from
the log. ``slatrack rebuild`` fills a new generation while the active one keeps
serving, then switches atomically. A worker writes only to the active
generation: :meth:`ReadModelStore.commit_batch` fails with
:class:`GenerationChanged` when it is no longer active, and the worker starts
again from the new generation's offsets.

Exactly-once effect: a batch's rows and its partitions' next offsets are
written in one transaction, and only if each partition's stored offset is
exactly where the batch starts (:class:`StaleBatch` otherwise): a batch can
never be applied twice, nor applied over a gap.

Identity: a ticket is (customer_id, ticket_id) and an event (customer_id,
event_id), as in the event contract (docs/events.md, "Identity").

Instants are integer epoch seconds (UTC) in this interface and in the tables.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, TypeVar

T = TypeVar("T")

TicketKey = tuple[str, str]  # (customer_id, ticket_id)
EventKey = tuple[str, str]  # (customer_id, event_id)

# account_until of a ticket any later account change can reach: 3000-01-01T00:00:00Z,
# past every instant the event contract accepts (projections.story.FOREVER).
FOREVER = 32_503_680_000
# account_until of a ticket no account change can reach (a category suspensions do not pause).
NEVER = -1


class StoreError(RuntimeError):
    pass


class StoreNotOpened(StoreError):
    """The read models cannot be opened as configured: there are none where a command only reads, or
    their place cannot be written. The user's to fix, not an outage that passes."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or stayed busy too long: nothing was written; try again."""


class StoreTimeout(StoreUnavailable):
    """The database did not answer within the caller's limit (:data:`CALL_TIMEOUT`)."""


# A limit, in seconds, on each store call made in this context: the API sets it
# (a frozen database must be a quick 503, not a hung request); a worker does not.
# A PostgreSQL store enforces it on the client side, so it holds against a server
# that accepts connections but never answers. SQLite has its busy timeout instead.
CALL_TIMEOUT: ContextVar[float | None] = ContextVar("slatrack_store_call_timeout", default=None)


def call_with_timeout(limit: float, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` with :data:`CALL_TIMEOUT` set to ``limit``, in the thread that calls the store."""
    token = CALL_TIMEOUT.set(limit)
    try:
        return function(*args)
    finally:
        CALL_TIMEOUT.reset(token)


class StaleBatch(StoreError):
    """A partition's stored offset is not where the batch starts (applied already, or a gap)."""


class GenerationChanged(StoreError):
    """The generation written to is no longer the active one (a rebuild switched)."""


class GenerationBehind(StoreError):
    """Not switched: the generation has not read as far as the active one (partition -> (its, active's))."""

    def __init__(self, behind: dict[int, tuple[int, int]]):
        super().__init__(f"behind the active generation (partition: (offset, active offset)) {behind}")
        self.behind = behind


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as recorded in the log, kept with the read models."""

    event_id: str
    ticket_id: str | None  # None for account events
    customer_id: str
    partition: int
    offset: int
    occurred_at: int
    body: bytes  # the canonical JSON of the event


@dataclass(frozen=True, slots=True)
class TicketRow:
    """A ticket's current view and the columns the queries filter on."""

    ticket_id: str
    customer_id: str
    partition: int
    priority: str
    category: str
    state: str  # open | resolved | closed
    status: str
    escalation_level: int
    response_status: str  # running | paused | stopped
    resolution_status: str
    breached: bool  # any clock, any cycle
    at_risk: bool  # any clock
    response_due_at: int | None
    resolution_due_at: int | None
    next_due_at: int | None  # the earliest due_at of a running clock not yet reached
    # The earliest due_at of a running clock, reached (overdue, breached) or not: the queue's
    # order and what ``due_before`` and ``overdue`` compare (None: no running clock with a target).
    queue_due_at: int | None
    next_change_at: int | None  # when the view changes with no new event (timers)
    billing_rule: str | None
    billing_status: str
    billing_month: str | None
    amount_cents: int
    billable_seconds: int
    opened_at: int
    evaluated_at: int  # the instant the view is as of
    view: bytes  # the ticket view, JSON
    signals: bytes = b"{}"  # JSON {signal id: type} the view asserts (to see what a late event revokes)
    # Per clock, for the slatrack_sla_clocks gauge (the view has them too; columns let SQL count).
    response_at_risk: bool = False
    response_breached: bool = False
    resolution_at_risk: bool = False
    resolution_breached: bool = False
    # JSON: what the SLA counters already counted for this ticket (projections/counting.py),
    # committed with the row so that a restart or a rebalance never counts it again.
    marks: bytes = b"{}"
    # The latest instant at which an account event can change this view: FOREVER (open,
    # resolved, not opened yet), the instant it closed, or NEVER (projections.ticket).
    account_until: int = FOREVER
    # The earliest breach instant of a running clock, past (breached and still running) or
    # projected: the console's queue is in this order (an overdue business-hours clock breaches
    # only at the next opening, after a 24x7 one due later may have).
    queue_breach_at: int | None = None

    @property
    def key(self) -> TicketKey:
        return (self.customer_id, self.ticket_id)


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    partition: int
    delinquent: bool
    dashboard_suspended: bool
    next_change_at: int | None  # when the standing changes with no new event
    evaluated_at: int
    view: bytes  # the customer view, JSON
    # The customer's log time: the latest occurred_at among its events (projections.story).
    log_time: int | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """An SLA signal for ``sla-signals``, in the outbox until sent.

    ``signal_id`` is derived from the signal's cause, so the same cause always
    gives the same id (a rebuild or a restart never mints a new one).
    """

    signal_id: str
    key: str  # the customer id (the Kafka key)
    body: bytes  # JSON
    # The log partition of its customer: the worker holding that partition relays it
    # (one sender per signal, in the customer's order). None: any worker may.
    partition: int | None = None


@dataclass
class BatchWrite:
    """Everything one batch changes, written in one transaction."""

    topic: str
    # partition -> (offset the batch starts at, next offset after the batch)
    offsets: dict[int, tuple[int, int]]
    events: list[StoredEvent] = field(default_factory=list)
    tickets: list[TicketRow] = field(default_factory=list)
    customers: list[CustomerRow] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    # Policy versions read from the policy topic (position, canonical bytes), kept if new, and
    # how far each partition's tickets have been measured with them: events partition ->
    # (position stored before, position after), claimed as offsets of ``policy_topic``.
    policies: list[tuple[int, bytes]] = field(default_factory=list)
    policy_topic: str | None = None
    policy_offsets: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketQuery:
    """Filters for :meth:`ReadModelStore.list_tickets` (all optional, combined with AND)."""

    state: str | None = None
    priority: str | None = None
    clock_status: str | None = None  # either clock has this status
    breached: bool | None = None
    at_risk: bool | None = None
    # A running clock falls due at or before this: queue_due_at <= this (reached or not, so a
    # due-soon query includes the overdue tickets).
    due_before: int | None = None
    # A running clock is past its due instant (breached or not): queue_due_at <= this (the
    # caller's now); ``not_overdue``: none is (queue_due_at is null or after this).
    overdue: int | None = None
    not_overdue: int | None = None
    billing_status: str | None = None  # none | billable | pending_review | waived
    customer_id: str | None = None
    # The ticket's customer is one of these (None: any customer; empty: none). The API's scope of a
    # token limited to customers (services.api.scope), applied in the query itself, so that a page
    # and its cursor hold only those customers' tickets.
    customer_ids: frozenset[str] | None = None
    escalation_level: int | None = None  # at least this level
    ticket_id: str | None = None  # this ticket id (under any customer)
    after: TicketKey | None = None  # keyset pagination: (ticket_id, customer_id) > (after[1], after[0])
    # "ticket": by (ticket_id, customer_id), paged with ``after``; "due": by (queue_due_at,
    # ticket_id, customer_id), tickets without a running clock last (by ticket_id, customer_id),
    # paged with ``after_due`` = (queue_due_at, ticket_id, customer_id) of the last row;
    # "breach": the same with queue_breach_at (``after_due`` holds it then).
    sort: Literal["ticket", "due", "breach"] = "ticket"
    after_due: tuple[int | None, str, str] | None = None
    limit: int = 100


@dataclass(frozen=True)
class CustomerQuery:
    """Filters for :meth:`QueryStore.list_customers` (all optional, combined with AND)."""

    delinquent: bool | None = None
    dashboard_suspended: bool | None = None
    # The customer is one of these (None: any customer; empty: none): the scope of a token limited
    # to customers (services.api.scope), applied in the query, as TicketQuery.customer_ids.
    customer_ids: frozenset[str] | None = None
    after: str | None = None  # keyset pagination: customer_id > after
    limit: int = 100


@dataclass(frozen=True, slots=True)
class CustomerListing:
    """A customer's row and how many of its tickets are open (state ``open``), and of those how
    many have a breached clock (any clock, any cycle)."""

    row: CustomerRow
    open_tickets: int
    breached_open_tickets: int


class GenerationInfo(TypedDict):
    """One generation, as :meth:`GenerationStore.generations` lists it."""

    generation: int
    reason: str
    created_at: int  # epoch seconds
    active: bool


# The store's interface by role (each one what a part of slatrack needs); ReadModelStore is all of
# them, and each part is typed with the role it uses.


class GenerationStore(ABC):
    """Lifecycle and generations: the workers' start and follow, ``slatrack rebuild``."""

    @abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema (versioned migrations); safe to call every start."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def active_generation(self) -> int | None:
        """The generation the API serves and workers write to; None before the first."""

    @abstractmethod
    def create_generation(self, reason: str, policy: str | None = None) -> int:
        """A new, empty generation (not active). ``reason`` is kept for operators;
        ``policy`` is the TOML text of the policy its rows are computed with."""

    @abstractmethod
    def generation_policy(self, generation: int) -> str | None:
        """The TOML text of the policy the generation is computed with (None: not bound yet)."""

    @abstractmethod
    def bind_policy(self, generation: int, policy: str) -> str:
        """Bind a generation created unbound (before migration 4) to ``policy``, unless another
        process bound it first; return the policy it is bound to."""

    @abstractmethod
    def activate_generation(self, generation: int, *, covering: str | None = None) -> None:
        """Make ``generation`` the active one, atomically.

        With ``covering`` (a topic), only if it has read that topic at least as far
        as the generation it replaces, partition by partition, at the instant of the
        switch (batches in flight are waited for): :class:`GenerationBehind` otherwise,
        and nothing changes. A rebuild switches so: the live workers' marks and ledgers
        it takes over then describe no event it has not read.

        In the same transaction its tickets take over the ``marks`` and the
        signal ledgers (``signals``) of the generation it replaces (none where
        that one has no such ticket): they record what the live workers counted
        (projections/counting.py) and sent. A ticket whose ledger differed (or
        that the replaced generation has no row of) is made due at once, so that
        a timer pass sends what the switch changed.
        """

    @abstractmethod
    def policy_versions(self, generation: int) -> list[tuple[int, bytes]]:
        """(position, canonical bytes) of every policy version the generation has read, in order."""

    @abstractmethod
    def tickets_missing_from(self, generation: int, other: int) -> list[TicketKey]:
        """Tickets of ``generation`` that ``other`` has no row of."""

    @abstractmethod
    def ticket_keys(self, generation: int) -> list[TicketKey]:
        """Every ticket of ``generation``, in the order of :meth:`list_tickets` (ticket id, then
        customer id): where ``slatrack rebuild`` splits its check between processes."""

    @abstractmethod
    def drop_generation(self, generation: int) -> None:
        """Delete every row of an inactive generation."""

    @abstractmethod
    def generations(self) -> list[GenerationInfo]:
        """Every generation, oldest first."""


class ProjectionStore(ABC):
    """What the projector reads and writes (and ``slatrack restore`` reads back)."""

    @abstractmethod
    def stored_offsets(self, generation: int, topic: str) -> dict[int, int]:
        """partition -> next offset to read, for the partitions this generation has seen."""

    @abstractmethod
    def commit_batch(self, generation: int, batch: BatchWrite, *, must_be_active: bool = True) -> None:
        """Write the batch and advance its offsets, all in one transaction.

        Raises :class:`GenerationChanged` if ``must_be_active`` and
        ``generation`` is not the active one (a rebuild writes to a generation
        that is not active yet, with ``must_be_active=False``), and
        :class:`StaleBatch` if a partition's stored offset differs from where
        the batch starts (a partition never seen starts anywhere). Events are
        inserted once per (``customer_id``, ``event_id``) (a repeat is ignored); ticket and
        customer rows replace the previous ones; signals are inserted once per
        ``signal_id``, never replaced.
        """

    @abstractmethod
    def events_of_tickets(
        self, generation: int, tickets: Iterable[TicketKey]
    ) -> dict[TicketKey, list[StoredEvent]]:
        """Stored events of each ticket, in (partition, offset) order."""

    @abstractmethod
    def first_copies(self, generation: int, events: Iterable[EventKey]) -> dict[EventKey, StoredEvent]:
        """The stored event of each (customer_id, event_id) that has one (the first copy)."""

    @abstractmethod
    def event_positions(self, generation: int, partition: int, below: int) -> list[tuple[int, str]]:
        """(offset, event_id) of the partition's stored events with offset < ``below``, in offset order."""

    @abstractmethod
    def events_from(self, generation: int, partition: int, start: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` stored events of the partition at offsets from ``start`` on, in offset
        order (``slatrack restore`` writes a lost log back from them, page by page)."""

    @abstractmethod
    def account_events_of(self, generation: int, customer_ids: Iterable[str]) -> dict[str, list[StoredEvent]]:
        """Stored account events of each customer, in offset order."""

    @abstractmethod
    def tickets_reached(self, generation: int, since: dict[str, int]) -> list[TicketKey]:
        """Tickets an account change from ``since[customer]`` on can change:
        the customer's tickets with ``account_until`` at or after that instant, sorted."""

    @abstractmethod
    def tickets_opened_since(self, generation: int, since: dict[str, int]) -> list[TicketKey]:
        """The customer's tickets dispatched at or after ``since[customer]`` (a contract change
        effective from then can change them), sorted."""

    @abstractmethod
    def tickets_opened_from(
        self, generation: int, instant: int, partitions: Sequence[int]
    ) -> list[TicketKey]:
        """Tickets of these partitions dispatched at or after ``instant`` (a policy version in
        force from then can change them), sorted."""

    @abstractmethod
    def customers_in(self, generation: int, partitions: Sequence[int]) -> list[str]:
        """The customers of these partitions, sorted."""

    @abstractmethod
    def tickets_changing_by(
        self, generation: int, instant: int, partitions: Sequence[int]
    ) -> list[TicketKey]:
        """Tickets of these partitions whose ``next_change_at`` is at or before ``instant``."""

    @abstractmethod
    def customer_tickets_changing_by(self, generation: int, instants: dict[str, int]) -> list[TicketKey]:
        """Tickets of each customer whose ``next_change_at`` is at or before ``instants[customer]``."""

    @abstractmethod
    def next_change(self, generation: int, partitions: Sequence[int]) -> int | None:
        """The earliest ``next_change_at`` of a ticket or customer of these partitions."""

    @abstractmethod
    def customers_changing_by(self, generation: int, instant: int, partitions: Sequence[int]) -> list[str]:
        """Customers of these partitions whose ``next_change_at`` is at or before ``instant``."""

    @abstractmethod
    def ticket_rows(self, generation: int, tickets: Iterable[TicketKey]) -> dict[TicketKey, TicketRow]:
        """The stored rows of these tickets (missing ones are left out)."""

    @abstractmethod
    def customer_rows(self, generation: int, customer_ids: Iterable[str]) -> dict[str, CustomerRow]:
        """The stored rows of these customers (missing ones are left out)."""


class SignalOutbox(ABC):
    """The signals recorded with the rows, until the outbox relay has sent them."""

    @abstractmethod
    def pending_signals(self, limit: int = 500, partitions: Sequence[int] | None = None) -> list[Signal]:
        """Signals not yet sent, oldest first; with ``partitions``, only theirs (and those of none)."""

    @abstractmethod
    def mark_signals_sent(self, signal_ids: Iterable[str]) -> None: ...

    @abstractmethod
    def signal_ids(self) -> list[str]:
        """Every signal id ever recorded (sent or not), for tests and audits."""


class QueryStore(ABC):
    """What the query API, explain and the scrape-time gauges read."""

    @abstractmethod
    def ticket(self, generation: int, ticket: TicketKey) -> TicketRow | None: ...

    @abstractmethod
    def list_tickets(self, generation: int, query: TicketQuery) -> list[TicketRow]:
        """Tickets matching ``query``, at most ``query.limit``, ordered by (ticket_id, customer_id), or
        with ``sort="due"`` by (queue_due_at, ticket_id, customer_id), those with no running clock
        last."""

    @abstractmethod
    def customer(self, generation: int, customer_id: str) -> CustomerRow | None: ...

    @abstractmethod
    def list_customers(self, generation: int, query: CustomerQuery) -> list[CustomerListing]:
        """Customers matching ``query``, ordered by customer_id, at most ``query.limit``, each with
        its open and breached open tickets counted."""

    @abstractmethod
    def billing(self, generation: int, customer_id: str, month: str) -> list[TicketRow]:
        """The customer's tickets charged in ``month`` (YYYY-MM), ordered by ticket_id."""

    @abstractmethod
    def quarantined_count(self, generation: int, partitions: Sequence[int]) -> int:
        """How many tickets of these partitions are quarantined (projections.quarantine)."""

    @abstractmethod
    def clock_counts(self, generation: int, partitions: Sequence[int]) -> list[tuple[str, str, str, int]]:
        """Clocks of the tickets not closed (open or resolved) of these partitions:
        (clock, priority, status, count), sorted.

        status is running or paused (a clock not stopped), at_risk, or
        breached_open (breached in any cycle, on a ticket not closed). The
        last two overlap the first two: they are not a partition of the clocks.
        """

    @abstractmethod
    def counts(self, generation: int) -> dict[str, int]:
        """Row counts: ``{"events", "tickets", "customers"}``."""


class ReadModelStore(GenerationStore, ProjectionStore, SignalOutbox, QueryStore, ABC):
    """See the module docstring. Methods are synchronous; async callers use a thread."""


class SignalSender(Protocol):
    """Where the outbox sends signals (services.kafka.publisher.EventPublisher): returns once the
    broker acknowledged them all."""

    async def publish_signals(self, signals: Sequence[Signal]) -> None: ...
