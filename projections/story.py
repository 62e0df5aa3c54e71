"""The log's story: the states of each ticket that its signals and counters come from.

A view is a function of the events and an instant. Signals and counters are
not: they say what was true *along the way* (a breach that stood for a while
before a late event took it back). For them to be a function of the log too,
"along the way" is defined by the log alone:

* Each customer's events form one ordered stream (one key, one partition).
  The customer's **log time** after an event is the latest ``occurred_at``
  among its events so far (never past ``cap``: the worker's wall clock, or a
  replay's as-of instant, so that an event dated in the future does not drag
  the customer's tickets ahead of real time).
* The **story** of a ticket is its state after every event of its customer,
  each as of the log time then. Signals are what the successive states
  assert and take back (:func:`projections.signals.settle`); counters count
  them (:mod:`projections.counting`).

Evaluating every ticket after every event would cost too much, and most of
those states add nothing: with the same inputs, a later instant only adds
(breaches, warnings, levels and stops never go away as time passes), and an
input that is not *late* — that occurred at or after the instant its ticket
was last evaluated as of — changes nothing before its own instant. So the
same signals and counts come from far fewer states (:func:`walk`):

1. right before and right after each *late* input (it may take back what
   was true), for every ticket it can change;
2. right after each input of a ticket whose charge may be settled (a closed
   ticket, or one with a fault determined: its ``billing.finalized`` changes
   with each later work log or fault), and right after the event that takes
   the log time past the end of work it logged in advance (billed up to the
   as-of instant, the charge settles then, with no input of its own);
3. at the end of what was read (a batch, or the whole log), as of the log
   time then, for every ticket an input reached and every ticket whose next
   change falls before that instant.

Any other state in between adds nothing, which is why the batch boundaries
of a worker (extra states of kind 3) do not change the story. A caught-up
worker's timers add states as of the wall clock: a breach that really stood
for a while is part of the story (docs/sla-semantics.md, "Signals and
counters").
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from events.models import TicketClosed, TicketFaultDetermined, TicketWorkLogged
from projections.account import AccountStanding
from projections.as_of import standing_at
from projections.checkpoints import Checkpoints, evaluate_from
from projections.contracts import PolicySource, contracts_of
from projections.counting import Tally
from projections.signals import Ledger, settle
from projections.ticket import TicketState, evaluate
from projections.timeline import Recorded, TicketKey, by_ticket, dedupe, ticket_key, whole_second

# The account_until of a ticket any later account change can reach (open, resolved, pending):
# the end of the instants the event contract accepts.
FOREVER = datetime(3000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Point:
    """A state of a ticket in the story: its inputs recorded up to ``upto``, as of ``at``."""

    upto: int | None  # the last recording position that counts (None: all)
    at: datetime
    because: tuple[Recorded, ...] = ()  # the late input applied at this point, if any


def settles(record: Recorded) -> bool:
    """Whether an input can settle its ticket's charge (a closed ticket, a fault determined)."""
    return isinstance(record.event, TicketClosed | TicketFaultDetermined)


def logged_work_ends(records: Iterable[Recorded]) -> list[datetime]:
    """The ``ended_at`` of every work a ticket's inputs logged."""
    return [whole_second(r.event.data.ended_at) for r in records if isinstance(r.event, TicketWorkLogged)]


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class Walk:
    """What :func:`walk` found in a customer's new events."""

    points: dict[TicketKey, list[Point]] = field(default_factory=dict)
    log_time: datetime | None = None  # the customer's log time after them (not capped)

    def add(self, ticket: TicketKey, point: Point) -> None:
        self.points.setdefault(ticket, []).append(point)


def walk(
    records: Sequence[Recorded],
    log_time: datetime | None,
    cap: datetime,
    *,
    reached: Callable[[Recorded], Iterable[TicketKey]] = lambda record: (),
    evaluated: Mapping[TicketKey, datetime] | None = None,
    settling: Iterable[TicketKey] = (),
    work_ends: Mapping[TicketKey, Iterable[datetime]] | None = None,
) -> Walk:
    """The points of the story in one customer's new events (kinds 1 to 3 above).

    ``records``: the customer's new events, each a first copy, in recording
    order. ``log_time``: the customer's log time before them (None: no event
    yet). ``reached(account_event)``: the known tickets an account event can
    change (besides those of ``records`` before it). ``evaluated``: when each
    known ticket was last evaluated (a view never goes back in time).
    ``settling``: the tickets whose inputs already hold a ticket.closed or a
    ticket.fault_determined. ``work_ends``: the ``ended_at`` of each known
    ticket's logged work (its later work logs are read here).
    """
    customer = records[0].event.customer_id if records else None
    evaluated = evaluated or {}
    settling = {key for key in settling if key[0] == customer}  # a walk is one customer's
    ends = {key: list(v) for key, v in (work_ends or {}).items() if key[0] == customer}
    result = Walk(log_time=log_time)
    mine: list[TicketKey] = []  # tickets with an input in ``records``, first seen first
    touched: dict[TicketKey, None] = {}  # every ticket an input reached, in order

    def instant(ticket: TicketKey, log: datetime | None) -> datetime | None:
        return _later(None if log is None else min(log, cap), evaluated.get(ticket))

    for record in records:
        key = ticket_key(record.event)
        if key is not None:
            targets = [key]
            if settles(record):
                settling.add(key)
            ends.setdefault(key, []).extend(logged_work_ends([record]))
        else:
            targets = list(dict.fromkeys([*mine, *reached(record)]))
        before = result.log_time
        after = _later(before, record.at)
        touched.update(dict.fromkeys(targets))
        for ticket in targets:
            at = instant(ticket, before)
            if at is not None and record.at < at:  # late: what it changes was already told otherwise
                result.add(ticket, Point(record.seq - 1, at))
                result.add(ticket, Point(record.seq, at, (record,)))
            elif ticket in settling and key is not None:
                result.add(ticket, Point(record.seq, instant(ticket, after) or record.at))
        for ticket in settling - set(targets):  # time passing settles a charge
            was, now = instant(ticket, before), instant(ticket, after)
            if now is not None and any(
                (was is None or was < end) and end <= now for end in ends.get(ticket, ())
            ):
                result.add(ticket, Point(record.seq, now))
                touched[ticket] = None
        if key is not None and key not in mine:
            mine.append(key)
        result.log_time = after
    for ticket in touched:
        end = instant(ticket, result.log_time)
        assert end is not None
        result.add(ticket, Point(None, end))
    return result


# (customer, recording position, instant, policy): a standing is computed with its policy's rules.
StandingCache = dict[tuple[str, int | None, datetime, int], AccountStanding]


def state_at(
    point: Point,
    records: Sequence[Recorded],
    account: Sequence[Recorded],
    source: PolicySource,
    standings: StandingCache | None = None,
    checkpoints: Checkpoints | None = None,
) -> TicketState | None:
    """The ticket at ``point``: ``records`` its own events, ``account`` its customer's; measured
    against the version of its contract in force at its dispatch (projections.contracts).
    ``checkpoints``: the tickets' checkpoints to go on from where valid (the same state,
    without replaying the history: projections.checkpoints), updated."""
    mine = records if point.upto is None else [r for r in records if r.seq <= point.upto]
    if not mine:
        return None
    upto = account if point.upto is None else [r for r in account if r.seq <= point.upto]
    policy = contracts_of(source).policy_for(mine, upto, point.at)
    customer = mine[0].event.customer_id
    cache_key = (customer, point.upto, point.at, id(policy))
    standing = standings.get(cache_key) if standings is not None else None
    if standing is None:
        standing = standing_at(upto, policy, point.at)
        if standings is not None:
            standings[cache_key] = standing
    if checkpoints is not None:
        key = ticket_key(mine[0].event)
        assert key is not None  # a ticket's own events
        return evaluate_from(key, mine, policy, point.at, standing, checkpoints)
    return evaluate(mine, policy, point.at, standing)


def _counted(records: Sequence[Recorded], upto: int | None) -> int:
    return len(records) if upto is None else sum(r.seq <= upto for r in records)


@dataclass
class Told:
    """A ticket after the points of its story: its last state, ledger, marks and the signals sent."""

    state: TicketState | None
    ledger: Ledger
    marks: bytes | None
    signals: list[dict[str, Any]]
    # The engine raised evaluating the last state (the ticket is quarantined: projections.quarantine).
    fault: Exception | None = None
    # The engine raised settling or counting a state that was computed: that state's signals and
    # counts are left out (the view stands), and the error is reported.
    uncounted: list[Exception] = field(default_factory=list)


def tell(
    points: Sequence[Point],
    records: Sequence[Recorded],
    account: Sequence[Recorded],
    policy: PolicySource,
    ledger: Ledger,
    marks: bytes | None,
    tally: Tally,
    *,
    standings: StandingCache | None = None,
    checkpoints: Checkpoints | None = None,
    because: Sequence[Recorded] = (),
) -> Told:
    """Evaluate a ticket at each point in turn, settling its signals and counting them.
    ``checkpoints``: see :func:`state_at`.

    ``because``: the events a revocation at a point with no late input of its
    own names (the ticket's new inputs, for a worker's batch).
    """
    state: TicketState | None = None
    fault: Exception | None = None
    uncounted: list[Exception] = []
    signals: list[dict[str, Any]] = []
    last: tuple[int, int, datetime] | None = None
    for point in points:
        # The same inputs as of the same instant are the same state: told once (consecutive late
        # inputs make "right after one" and "right before the next" the same point).
        inputs = (_counted(records, point.upto), _counted(account, point.upto), point.at)
        if inputs == last:
            continue
        last = inputs
        try:
            found = state_at(point, records, account, policy, standings, checkpoints)
        except Exception as error:  # a bug of the engine: the ticket is quarantined, nothing settled
            state, fault = None, error
            continue
        if found is None:
            continue  # not opened at this point: nothing asserted, nothing taken back
        state, fault = found, None
        counted = Tally()  # added only if the whole point is told: a failure counts nothing
        try:
            settled, sent = settle(ledger, state, point.at, point.because or because)
            marks = counted.count_ticket(state, marks, sent)
        except Exception as error:
            uncounted.append(error)
            continue
        ledger = settled
        tally.add(counted)
        signals += sent
    return Told(state, ledger, marks, signals, fault, uncounted)


@dataclass
class StoryOfLog:
    """The signals and counter totals of a whole log (what ``slatrack replay --signals`` prints)."""

    signals: list[dict[str, Any]]
    tally: Tally
    ledgers: dict[TicketKey, Ledger]
    rejected: list[tuple[Recorded, str]]  # (record, why): conflicting duplicate ids

    def standing(self) -> dict[str, dict[str, Any]]:
        """The signals that stand at the end: asserted by the last states, by id."""
        return {sid: s for ledger in self.ledgers.values() for sid, s in ledger.asserted.items()}


def story_of_log(records: Iterable[Recorded], policy: PolicySource, as_of: datetime) -> StoryOfLog:
    """The story of every ticket of a whole recorded history, up to ``as_of``.

    The same as a worker reading the log in any batches (with its timers
    stopped) and then evaluating every ticket as of ``as_of``.
    """
    deduped = dedupe(records)
    streams: dict[str, list[Recorded]] = {}
    for record in deduped.kept:
        streams.setdefault(record.event.customer_id, []).append(record)
    tally = Tally(duplicates=len(deduped.duplicates))
    signals: list[dict[str, Any]] = []
    ledgers: dict[TicketKey, Ledger] = {}
    for customer in sorted(streams):
        stream = streams[customer]
        tickets, accounts = by_ticket(stream)
        account = accounts.get(customer, [])
        found = walk(stream, None, as_of)
        standings: StandingCache = {}
        for ticket in sorted(tickets, key=lambda k: (k[1], k[0])):
            points = [*found.points.get(ticket, []), Point(None, as_of)]
            told = tell(points, tickets[ticket], account, policy, Ledger(), None, tally, standings=standings)
            if told.state is not None:
                ledgers[ticket] = told.ledger
            signals += told.signals
    rejected = [(record, "duplicate_event_id_conflict") for record, _ in deduped.conflicts]
    return StoryOfLog(signals, tally, ledgers, rejected)
