"""Feeding events to the projector as the consumer does (``Projector.handle`` with
``ConsumedBatch`` values), against a real store, without a broker: for tests of
what the worker stores and signals, batch by batch."""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson
from pydantic import SecretStr

from events import decode_event
from projections.counting import Tally
from projections.policy import Policy, default_policy
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.ports import ReadModelStore, TicketRow
from services.worker.projector import Projector

TOPIC = "ticket-events"


def event(
    event_id: str, type_: str, at: str, customer: str, ticket: str | None = None, **data: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": event_id,
        "type": type_,
        "schema_version": 1,
        "occurred_at": at,
        "customer_id": customer,
        "data": data,
    }
    if ticket is not None:
        document["ticket_id"] = ticket
    return document


def appended(
    log: dict[int, list[dict[str, Any]]],
    partition: int,
    events: Sequence[dict[str, Any]],
    *,
    lagging: bool = False,
) -> ConsumedBatch:
    """``events`` appended to ``partition`` of ``log``, as the consumer hands them over: one batch."""
    mine = log.setdefault(partition, [])
    start = len(mine)
    valid = []
    for i, document in enumerate(events):
        raw = orjson.dumps(document)
        valid.append(ConsumedEvent(decode_event(raw), partition, start + i, raw))
    mine.extend(events)
    return ConsumedBatch(
        valid, {partition: (start, start + len(events))}, 0, {partition} if lagging else set()
    )


class Feed:
    """A worker's projector with a fixed clock, and the log it has read so far."""

    def __init__(self, store: ReadModelStore, clock: datetime, policy: Policy | None = None, **options: Any):
        self.store = store
        self.now = clock
        self.counted = Tally()
        self.dead_letters: list[tuple[Any, Any]] = []
        self.projector = Projector(
            store,
            policy or default_policy(),
            TOPIC,
            clock=lambda: self.now,
            count_metrics=False,
            dead_letter=self._dead_letter,
            **options,
        )
        # What Prometheus gets. Assigning a method is a test's patch (and Tally.add names its
        # argument otherwise): mypy refuses both.
        self.projector._publish = self.counted.add  # type: ignore[method-assign,assignment]
        self.log: dict[int, list[dict[str, Any]]] = {}

    async def _dead_letter(self, items) -> None:
        self.dead_letters += items

    async def open(self, partitions: Iterable[int] = (0,)) -> "Feed":
        await self.projector.open()
        await self.projector.start_offsets(set(partitions))
        return self

    async def send(self, *events: dict[str, Any], partition: int = 0, lagging: bool = False) -> None:
        """One batch of these events, appended to the partition's log."""
        await self.projector.handle(appended(self.log, partition, events, lagging=lagging))

    @property
    def generation(self) -> int:
        assert self.projector.generation is not None
        return self.projector.generation

    def row(self, customer: str, ticket: str) -> TicketRow:
        row = self.store.ticket(self.generation, (customer, ticket))
        assert row is not None, (customer, ticket)
        return row

    def view(self, customer: str, ticket: str) -> dict[str, Any]:
        return orjson.loads(self.row(customer, ticket).view)

    def signals(self) -> list[dict[str, Any]]:
        """Every signal recorded in the outbox, oldest first."""
        return [orjson.loads(s.body) for s in self.store.pending_signals(limit=100_000)]


@contextmanager
def a_store(kind: str, tmp_path, postgres_dsn: str | None = None) -> Iterator[ReadModelStore]:
    """A fresh store: SQLite in ``tmp_path``, or a PostgreSQL database of its own."""
    if kind == "sqlite":
        store = open_store(Settings(data_dir=tmp_path))
        try:
            yield store
        finally:
            store.close()
        return
    from tests.worker_helpers import throwaway_database

    assert postgres_dsn is not None
    with throwaway_database(postgres_dsn, "slatrack_feed") as url:
        store = open_store(Settings(database_url=SecretStr(url)))
        try:
            yield store
        finally:
            store.close()
