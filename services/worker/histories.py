"""The store's histories: stored events read back as records, in recording order
(:func:`seq_of`), by the one loader :func:`decoded` (the projector's history cache,
services.worker.history_cache, reads through it too); and where `slatrack explain`
and the query API get a ticket's history, and `slatrack report` and the API a customer's.
"""

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from events import ACCOUNT_EVENT_TYPES, Event, decode_event
from events.policies import decode_policy_event
from projections.contracts import Contracts, PolicyVersion, version_of
from projections.policy import Policy, parse_policy
from projections.timeline import Recorded, TicketKey, is_opening, ticket_key
from services.worker.batches import MAX_PARTITIONS
from services.worker.ports import ReadModelStore, StoredEvent, TicketQuery


def seq_of(partition: int, offset: int) -> int:
    """Recording order: the offset (a customer's events share one partition), then the partition
    (below MAX_PARTITIONS: the consumer projects no other, services.config creates no more)."""
    return offset * MAX_PARTITIONS + partition


def partition_of(record: Recorded) -> int:
    """The partition a record was read from (the inverse of :func:`seq_of`)."""
    return record.seq % MAX_PARTITIONS


def decode_stored_body(body: bytes) -> Event:
    """A stored event: accepted once under whatever size limit applied then, so read without one."""
    return decode_event(body, max_bytes=None)


def decode_stored(stored: list[StoredEvent]) -> list[Recorded]:
    return [Recorded(seq_of(e.partition, e.offset), decode_stored_body(e.body)) for e in stored]


K = TypeVar("K")


def decoded(
    read: Callable[[int, list[K]], dict[K, list[StoredEvent]]], generation: int, keys: list[K]
) -> dict[K, list[Recorded]]:
    """The stored histories of ``keys``, decoded (an empty one for a key with none). ``read``:
    the store's ``events_of_tickets`` (keys: tickets) or ``account_events_of`` (keys: customers)."""
    stored = read(generation, keys)
    return {key: decode_stored(stored.get(key, [])) for key in keys}


class UnknownTicket(LookupError):
    """No event of this ticket in the read models."""


class AmbiguousTicket(LookupError):
    """The ticket id exists under several customers: name the customer."""

    def __init__(self, ticket_id: str, customers: list[str]):
        super().__init__(
            f"ticket {ticket_id!r} exists under {len(customers)} customers ({', '.join(customers)}): "
            "name the customer"
        )
        self.customers = customers


def split_history(
    records: list[Recorded], ticket_id: str, customer_id: str | None = None
) -> tuple[list[Recorded], list[Recorded]]:
    """A whole history -> the ticket's own events and its customer's account events.

    A ticket is (customer_id, ticket_id): with no ``customer_id``, the id must
    belong to one customer that opened it, or (none did) to one customer only
    (:class:`AmbiguousTicket` otherwise), as :func:`find_ticket` decides.
    """
    keys = {key for r in records if (key := ticket_key(r.event)) is not None and key[1] == ticket_id}
    if customer_id is not None:
        keys = {key for key in keys if key[0] == customer_id}
    opened = {(r.event.customer_id, r.event.ticket_id) for r in records if is_opening(r.event)} & keys
    key = _one(ticket_id, opened or keys)
    mine = [r for r in records if ticket_key(r.event) == key]
    account = [r for r in records if r.event.type in ACCOUNT_EVENT_TYPES and r.event.customer_id == key[0]]
    return mine, account


def find_ticket(
    store: ReadModelStore,
    generation: int,
    ticket_id: str,
    customer_id: str | None = None,
    among: frozenset[str] | None = None,
) -> TicketKey:
    """The ticket with this id (of this customer, if given) in the read models.

    Without a customer, an opened ticket is preferred to placeholders of tickets never
    opened: another customer's stray event for this id does not make the id ambiguous.
    ``among``: only these customers' tickets are looked at (the scope of an API token limited
    to customers), as if no other customer's existed: neither found nor making the id ambiguous.
    """
    query = TicketQuery(ticket_id=ticket_id, customer_id=customer_id, customer_ids=among, limit=50)
    rows = store.list_tickets(generation, query)
    opened = [row for row in rows if row.state != "pending"]
    return _one(ticket_id, {row.key for row in (opened or rows)})


def _one(ticket_id: str, keys: set[TicketKey]) -> TicketKey:
    if not keys:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}")
    if len(keys) > 1:
        raise AmbiguousTicket(ticket_id, sorted(c for c, _ in keys))
    return next(iter(keys))


def stored_histories(
    store: ReadModelStore, generation: int, ticket: TicketKey
) -> tuple[list[Recorded], list[Recorded]]:
    """The ticket's stored events and its customer's account events."""
    customer = ticket[0]
    records = decoded(store.events_of_tickets, generation, [ticket])[ticket]
    return records, decoded(store.account_events_of, generation, [customer])[customer]


def customer_history(
    store: ReadModelStore,
    generation: int,
    customer_id: str,
    page: int = 500,
    decode: Callable[[list[StoredEvent]], list[Recorded]] | None = None,
) -> list[Recorded]:
    """Every stored event of a customer, its tickets' and its account's, in recording order (the
    monthly report's input, projections.report). ``decode``: how stored events become records
    (default :func:`decode_stored`; the API passes a cached one)."""
    into = decode or decode_stored

    def read_decoded(
        read: Callable[[int, list[K]], dict[K, list[StoredEvent]]], keys: list[K]
    ) -> dict[K, list[Recorded]]:
        stored = read(generation, keys)
        return {key: into(stored.get(key, [])) for key in keys}

    keys: list[TicketKey] = []
    after: TicketKey | None = None
    while True:
        rows = store.list_tickets(generation, TicketQuery(customer_id=customer_id, after=after, limit=page))
        keys += [row.key for row in rows]
        if len(rows) < page:
            break
        after = rows[-1].key
    records: list[Recorded] = []
    for start in range(0, len(keys), page):
        for events in read_decoded(store.events_of_tickets, keys[start : start + page]).values():
            records += events
    records += read_decoded(store.account_events_of, [customer_id])[customer_id]
    return sorted(records, key=lambda r: r.seq)


def generation_policy(store: ReadModelStore, generation: int, configured: Policy) -> Policy:
    """The policy a generation's rows are computed with (the configured one if it records none)."""
    text = store.generation_policy(generation)
    if text is None or text == configured.text:
        return configured
    return _parsed(text, f"generation {generation}")


def generation_contracts(store: ReadModelStore, generation: int, configured: Policy) -> Contracts:
    """The contracts a generation's rows are computed with: its policy as the default contract's
    base, and the policy versions the generation has read from the policy topic."""
    return Contracts(generation_policy(store, generation, configured), stored_versions(store, generation))


def stored_versions(store: ReadModelStore, generation: int) -> list[PolicyVersion]:
    """The policy versions a generation has read (each checked when it was read: trusted here)."""
    return [_version(position, body) for position, body in store.policy_versions(generation)]


@lru_cache(maxsize=256)
def _version(position: int, body: bytes) -> PolicyVersion:
    return version_of(decode_policy_event(body), position)


@lru_cache(maxsize=8)
def _parsed(text: str, source: str) -> Policy:
    return parse_policy(text, source)


def histories_from_store(
    store: ReadModelStore, ticket_id: str, customer_id: str | None, configured: Policy
) -> tuple[list[Recorded], list[Recorded], Contracts]:
    """The ticket's recorded events, its customer's account events and the contracts of the active
    generation."""
    generation = store.active_generation()
    if generation is None:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: the read models hold no generation yet")
    try:
        key = find_ticket(store, generation, ticket_id, customer_id)
    except UnknownTicket:
        raise UnknownTicket(f"unknown ticket {ticket_id!r}: no event of it in the read models") from None
    records, account = stored_histories(store, generation, key)
    return records, account, generation_contracts(store, generation, configured)
