"""An event that makes the engine raise (a bug, not bad input) quarantines its ticket
(issue 11, item 2): the row says so, with the error and the event; the partition goes on;
replay, the rebuild's check and explain give the same quarantined result; a later event, or
an engine that no longer raises, heals it."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from events import decode_event
from projections.explain import explain
from projections.policy import default_policy
from projections.quarantine import view_at
from projections.replay import replay
from projections.ticket import TicketState
from projections.timeline import Recorded, ticket_key
from services.cli.render import explain_table, replay_table
from services.worker.histories import seq_of
from services.worker.rows import QUARANTINE_RETRY_S
from tests.feed import Feed, event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAULT = "RuntimeError: injected engine fault"


@pytest.fixture
def faulty_engine(monkeypatch):
    """An engine with a bug: it raises on any ticket whose last event is `boom` (so a later event
    heals the ticket). Undo it with ``.undo()``: a fixed release of the engine."""
    apply = TicketState.apply  # a full replay and a checkpoint going on (projections.checkpoints) alike

    def buggy(self, steps):
        apply(self, steps)
        if self.steps and getattr(self.steps[-1][1], "event_id", None) == "boom":
            raise RuntimeError("injected engine fault")

    monkeypatch.setattr(TicketState, "apply", buggy)
    return monkeypatch


def opened(eid: str, ticket: str, at: str, customer: str = "c1") -> dict:
    return event(eid, "ticket.opened", at, customer, ticket, priority="high", category="service")


def records_of(feed: Feed) -> list[Recorded]:
    return [
        Recorded(seq_of(p, o), decode_event(orjson.dumps(d)))
        for p, docs in sorted(feed.log.items())
        for o, d in enumerate(docs)
    ]


async def test_an_engine_fault_quarantines_one_ticket_and_the_partition_goes_on(any_store, faulty_engine):
    feed = await Feed(any_store, NOW).open({0})
    await feed.send(
        opened("o1", "t1", "2026-11-30T09:00:00Z"),
        opened("o2", "t2", "2026-11-30T09:05:00Z"),
        event("boom", "ticket.responded", "2026-11-30T09:10:00Z", "c1", "t1"),
        event("r2", "ticket.responded", "2026-11-30T09:20:00Z", "c1", "t2"),
    )
    row = feed.row("c1", "t1")
    assert row is not None and row.state == "quarantined"
    quarantined = feed.view("c1", "t1")
    assert quarantined["quarantine"] == {"error": FAULT, "event_id": "boom", "event_type": "ticket.responded"}
    assert feed.view("c1", "t2")["clocks"]["response"]["status"] == "stopped"  # its neighbour is fine
    assert any_store.quarantined_count(feed.generation, [0]) == 1

    # The partition flows on: the next batch is projected.
    await feed.send(opened("o3", "t3", "2026-11-30T09:30:00Z"), partition=0)
    assert feed.view("c1", "t3")["state"] == "open"
    assert any_store.stored_offsets(feed.generation, "ticket-events") == {0: 5}

    # Replay, the rebuild's check and explain give the same quarantined result.
    records = records_of(feed)
    as_of = datetime.fromtimestamp(feed.row("c1", "t3").evaluated_at, UTC)
    assert feed.view("c1", "t1") == quarantined
    replayed = {
        (t["customer_id"], t["ticket_id"]): t for t in replay(records, default_policy(), as_of)["tickets"]
    }
    assert replayed["c1", "t1"] == quarantined
    assert "QUARANTINED: " + FAULT in replay_table(replay(records, default_policy(), as_of))
    mine = [r for r in records if ticket_key(r.event) == ("c1", "t1")]
    assert view_at(("c1", "t1"), mine, [], default_policy(), as_of) == quarantined
    trail = explain(mine, [], default_policy(), as_of)
    assert trail is not None and trail["quarantine"] == quarantined["quarantine"]
    assert "QUARANTINED" in explain_table(trail)

    # A later event heals it.
    await feed.send(event("s1", "ticket.resolved", "2026-11-30T10:00:00Z", "c1", "t1"), partition=0)
    healed = feed.view("c1", "t1")
    assert healed["state"] == "resolved" and "quarantine" not in healed
    assert any_store.quarantined_count(feed.generation, [0]) == 0


async def test_a_fixed_engine_heals_a_quarantined_ticket_as_time_passes(tmp_path, faulty_engine):
    from tests.feed import a_store

    with a_store("sqlite", tmp_path) as store:
        feed = await Feed(store, NOW).open({0})
        await feed.send(
            opened("o1", "t1", "2026-11-30T09:00:00Z"),
            event("boom", "ticket.responded", "2026-11-30T09:10:00Z", "c1", "t1"),
        )
        assert feed.row("c1", "t1").state == "quarantined"
        await feed.projector.tick()  # tried again as time passes: it still raises
        assert feed.row("c1", "t1").state == "quarantined"

        faulty_engine.undo()  # the release with the fix
        feed.now = NOW + timedelta(seconds=QUARANTINE_RETRY_S)
        assert await feed.projector.tick() == 1
        view = feed.view("c1", "t1")
        assert view["state"] == "open" and view["clocks"]["response"]["status"] == "stopped"


async def test_a_fault_outside_the_view_leaves_the_view_as_replay_has_it(any_store, monkeypatch):
    """The engine raising while the worker works out a row's next change (not part of the view)
    does not quarantine the ticket: its view is what replay gives, and it is looked at again."""

    def broken(self):
        raise RuntimeError("injected scheduling fault")

    monkeypatch.setattr(TicketState, "next_change_at", broken)
    feed = await Feed(any_store, NOW).open({0})
    await feed.send(opened("o1", "t1", "2026-11-30T09:00:00Z"))
    row = feed.row("c1", "t1")
    assert row is not None and row.state == "open"
    as_of = datetime.fromtimestamp(row.evaluated_at, UTC)
    (replayed,) = replay(records_of(feed), default_policy(), as_of)["tickets"]
    assert feed.view("c1", "t1") == replayed
    assert row.next_change_at == row.evaluated_at + QUARANTINE_RETRY_S
