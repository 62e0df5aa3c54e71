"""The projector's timer pass against a real SQLite store: it brings due tickets up
to date, and writes nothing once another worker has moved the partition on."""

from datetime import UTC, datetime, timedelta

import orjson

from events import decode_event
from projections.policy import default_policy
from services.config import Settings
from services.store import open_store
from services.worker.batches import ConsumedBatch, ConsumedEvent
from services.worker.ports import BatchWrite
from services.worker.projector import Projector

OPENED = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
TOPIC = "ticket-events"


def opened_event() -> ConsumedEvent:
    raw = orjson.dumps(
        {
            "event_id": "e-1",
            "type": "ticket.opened",
            "schema_version": 1,
            "occurred_at": "2026-11-02T14:00:00Z",
            "customer_id": "c-1",
            "ticket_id": "T-1",
            "data": {"priority": "urgent"},
        }
    )
    return ConsumedEvent(decode_event(raw), 0, 0, raw)


async def worker_with_one_ticket(settings, now: list[datetime]) -> Projector:
    projector = Projector(open_store(settings), default_policy(), TOPIC, clock=lambda: now[0])
    await projector.open()
    await projector.start_offsets({0})
    await projector.handle(ConsumedBatch([opened_event()], {0: (0, 1)}))
    return projector


async def test_a_timer_pass_brings_a_due_ticket_up_to_date(tmp_path):
    now = [OPENED]
    projector = await worker_with_one_ticket(_settings(tmp_path), now)
    try:
        now[0] = OPENED + timedelta(hours=2)  # the urgent response (1 h, 24x7) is breached
        assert await projector.tick() == 1
        assert projector.generation is not None
        row = projector.store.ticket(projector.generation, ("c-1", "T-1"))
        assert row is not None and row.breached and row.evaluated_at == int(now[0].timestamp())
    finally:
        projector.store.close()


async def test_a_timer_pass_writes_nothing_once_the_partition_moved_on(tmp_path):
    settings = _settings(tmp_path)
    now = [OPENED]
    projector = await worker_with_one_ticket(settings, now)
    other = open_store(settings)  # the partition's new owner: it has committed a batch since
    assert projector.generation is not None
    try:
        other.commit_batch(projector.generation, BatchWrite(TOPIC, {0: (1, 2)}))
        now[0] = OPENED + timedelta(hours=2)
        assert await projector.tick() == 0
        row = other.ticket(projector.generation, ("c-1", "T-1"))
        assert row is not None and not row.breached and row.evaluated_at == int(OPENED.timestamp())  # kept
    finally:
        other.close()
        projector.store.close()


def _settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)
