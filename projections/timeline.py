"""Putting a history in order: deduplicate, sort, cut at "as of".

Every event comes with its recording position (``seq``): its offset in the
log, or its line in a replay file. Events apply in ``occurred_at`` order;
equal instants apply in recording order. A repeated ``event_id`` counts once:
the copy recorded first is the event. Because the order depends only on what
each event carries, a shuffled or duplicated input gives the same history.

Identity (docs/events.md): an event is its customer's ``event_id``, a ticket
its customer's ``ticket_id``. The log orders a customer's events (one key,
one partition) but not two customers' events, so only a rule within one
customer's stream gives every reader of the log the same answer.
:func:`dedupe` applies it: the copy recorded first is the event, a later
identical copy is a duplicate, a later copy with another body a conflict.

Instants are floored to the whole second here, once: slatrack counts whole
seconds, and every later computation can rely on it.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeGuard

from pydantic import TypeAdapter, ValidationError

from events import Event, encode_event
from events.models import Instant, TicketOpened

EventKey = tuple[str, str]  # (customer_id, event_id)
TicketKey = tuple[str, str]  # (customer_id, ticket_id)


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event and where it was recorded (smaller ``seq`` = recorded earlier).

    ``at`` is the event's ``occurred_at`` as slatrack counts it (UTC, whole
    seconds), computed once here: sorting and cutting histories ask for it
    again and again.
    """

    seq: int
    event: Event
    at: datetime = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", whole_second(self.event.occurred_at))


def whole_second(instant: datetime) -> datetime:
    """The instant in UTC, without its fraction of a second."""
    return instant.astimezone(UTC).replace(microsecond=0)


_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)
INSTANT_FORM = "must be an RFC 3339 date-time with an offset, e.g. 2026-11-02T10:00:00-05:00"


def parse_instant(text: str) -> datetime:
    """An instant given as text (an ``as_of``, a bound), taken as the event contract takes one:
    RFC 3339 with an offset, 1970 to 2999; in UTC, whole seconds. ValueError saying why not."""
    try:
        return whole_second(_INSTANT.validate_python(text))
    except ValidationError as exc:  # a ValueError too: first
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    except (ValueError, OverflowError):
        raise ValueError(INSTANT_FORM) from None


def history(records: Iterable[Recorded], as_of: datetime | None = None) -> list[Recorded]:
    """The events that count, in the order they apply.

    Duplicates (same ``event_id``) are dropped, keeping the copy with the
    smallest ``seq``; events that occurred after ``as_of`` are left out (one
    exactly at ``as_of`` applies).
    """
    kept_records = first_copies(records, as_of)
    kept_records.sort(key=lambda r: (r.at, r.seq))
    return kept_records


def first_copies(records: Iterable[Recorded], as_of: datetime | None = None) -> list[Recorded]:
    """The events of :func:`history`, not yet in order: the first copy of each ``event_id``
    (the smallest ``seq``), none that occurred after ``as_of``."""
    first: dict[str, Recorded] = {}
    for record in records:
        kept = first.get(record.event.event_id)
        if kept is None or record.seq < kept.seq:
            first[record.event.event_id] = record
    cutoff = whole_second(as_of) if as_of is not None else None
    return [r for r in first.values() if cutoff is None or r.at <= cutoff]


def is_opening(event: Event) -> TypeGuard[TicketOpened]:
    """Whether the event opens its ticket (``ticket.opened``)."""
    return isinstance(event, TicketOpened)


def opening(records: Iterable[Recorded], as_of: datetime | None = None) -> Recorded | None:
    """The ``ticket.opened`` that opens the ticket as of ``as_of`` (default: ever): the first one in
    the order events apply, as the engine takes it (a later one is ignored); None if there is none."""
    return next((r for r in history(records, as_of) if is_opening(r.event)), None)


def event_key(event: Event) -> EventKey:
    return (event.customer_id, event.event_id)


def ticket_key(event: Event) -> TicketKey | None:
    """The ticket an event belongs to, None for an account event."""
    # A model's fields are its __dict__: an account event has no ticket_id there, and asking the
    # model for it would raise and catch an AttributeError inside pydantic (µs, for every event).
    ticket_id = event.__dict__.get("ticket_id")
    return None if ticket_id is None else (event.customer_id, ticket_id)


def by_ticket(
    records: Iterable[Recorded],
) -> tuple[dict[TicketKey, list[Recorded]], dict[str, list[Recorded]]]:
    """Each ticket's events and each customer's account events, each in the order given."""
    tickets: dict[TicketKey, list[Recorded]] = {}
    accounts: dict[str, list[Recorded]] = {}
    for record in records:
        key = ticket_key(record.event)
        if key is None:
            accounts.setdefault(record.event.customer_id, []).append(record)
        else:
            tickets.setdefault(key, []).append(record)
    return tickets, accounts


def same_event(a: Event, b: Event) -> bool:
    """Two copies of one event: the same canonical bytes (key order and spacing do not matter)."""
    return a == b or encode_event(a) == encode_event(b)


@dataclass
class Deduped:
    """A whole recorded input split by :func:`dedupe`."""

    kept: list[Recorded]
    duplicates: list[Recorded]  # later identical copies: counted, ignored
    conflicts: list[tuple[Recorded, Recorded]]  # (later copy with another body, the first copy)


def dedupe(records: Iterable[Recorded]) -> Deduped:
    """The first copy of each (customer_id, event_id), in recording order, wins."""
    first: dict[EventKey, Recorded] = {}
    result = Deduped([], [], [])
    for record in sorted(records, key=lambda r: r.seq):
        kept = first.get(event_key(record.event))
        if kept is None:
            first[event_key(record.event)] = record
            result.kept.append(record)
        elif same_event(kept.event, record.event):
            result.duplicates.append(record)
        else:
            result.conflicts.append((record, kept))
    return result
