"""A late account event reaches every ticket it changes, closed ones included, and only those
(issue 10, item 1)."""

from datetime import UTC, datetime

import orjson

from events import decode_event
from projections.policy import default_policy
from projections.replay import replay
from projections.timeline import Recorded
from services.api.queries import view_as_of
from tests.feed import Feed, event

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TICKET = [
    event(
        "o",
        "ticket.opened",
        "2026-11-02T14:00:00Z",
        "ACME",
        "NS-1",
        priority="medium",
        category="non_service",
    ),
    event("r", "ticket.responded", "2026-11-03T14:00:00Z", "ACME", "NS-1"),
    event("s", "ticket.resolved", "2026-11-04T14:00:00Z", "ACME", "NS-1"),
    event("c", "ticket.closed", "2026-11-05T14:00:00Z", "ACME", "NS-1"),
]
# Occurred (and due) long before the ticket: the customer was already more than 10 days late on it.
BACKDATED = event(
    "inv",
    "account.invoice_due",
    "2026-10-01T14:00:00Z",
    "ACME",
    invoice_id="I-1",
    due_at="2026-10-10T00:00:00Z",
)


def replayed(feed: Feed, customer: str, ticket: str, as_of: datetime) -> dict:
    """The ticket as `slatrack replay` of what the feed sent gives it."""
    records = [Recorded(i, decode_event(orjson.dumps(e))) for i, e in enumerate(feed.log[0])]
    document = replay(records, default_policy(), as_of)
    return next(v for v in document["tickets"] if (v["customer_id"], v["ticket_id"]) == (customer, ticket))


async def test_a_backdated_invoice_reaches_a_closed_ticket(any_store):
    feed = await Feed(any_store, NOW).open()
    for e in TICKET:
        await feed.send(e)
    before = feed.view("ACME", "NS-1")
    # A whole business day to answer (medium: 4 h) and resolve (8 h): breached, every level.
    response = before["clocks"]["response"]
    assert response["elapsed_seconds"] == 28_800 and response["breached"]
    assert before["escalation"]["level"] == 3
    await feed.send(BACKDATED)

    row = feed.row("ACME", "NS-1")
    view = orjson.loads(row.view)
    # Suspended since 10-20 (more than 10 days past due), so neither clock ever ran.
    assert view["clocks"]["response"]["elapsed_seconds"] == 0
    assert not view["clocks"]["response"]["breached"]
    assert view["escalation"]["level"] == 0
    as_of = datetime.fromtimestamp(row.evaluated_at, UTC)
    assert view == replayed(feed, "ACME", "NS-1", as_of)
    assert view == view_as_of(any_store, feed.generation, default_policy(), ("ACME", "NS-1"), as_of)
    # What the late event took back is said, and why.
    revoked = [s for s in feed.signals() if s["type"] in ("sla.breach_revoked", "escalation.revoked")]
    assert {s["type"] for s in revoked} == {"sla.breach_revoked", "escalation.revoked"}
    assert all(
        s["because"]
        == [{"event_id": "inv", "type": "account.invoice_due", "occurred_at": "2026-10-01T14:00:00Z"}]
        for s in revoked
    )
    assert feed.counted.escalation_revocations == {1: 1, 2: 1, 3: 1}
    assert feed.counted.revocations == 2  # the response and the resolution breach


async def test_only_the_tickets_whose_life_reaches_the_instant_are_evaluated(any_store):
    feed = await Feed(any_store, NOW).open()
    # Closed on 09-30, before the invoice event occurred: nothing of it can change.
    early = [
        event(
            "e1",
            "ticket.opened",
            "2026-09-28T14:00:00Z",
            "ACME",
            "OLD",
            priority="low",
            category="non_service",
        ),
        event("e2", "ticket.closed", "2026-09-30T14:00:00Z", "ACME", "OLD"),
    ]
    # A service ticket: suspensions never pause it.
    service = [event("s1", "ticket.opened", "2026-11-02T14:00:00Z", "ACME", "SVC", priority="medium")]
    await feed.send(*early, *service, *TICKET)
    evaluated = {t: feed.row("ACME", t).evaluated_at for t in ("OLD", "SVC", "NS-1")}
    feed.now = datetime(2026, 11, 21, tzinfo=UTC)
    await feed.send(BACKDATED)
    assert feed.row("ACME", "OLD").evaluated_at == evaluated["OLD"]
    assert feed.row("ACME", "SVC").evaluated_at == evaluated["SVC"]
    assert feed.view("ACME", "NS-1")["clocks"]["response"]["elapsed_seconds"] == 0
    reached = any_store.tickets_reached(
        feed.generation, {"ACME": int(datetime(2026, 10, 1, 14, tzinfo=UTC).timestamp())}
    )
    assert reached == [("ACME", "NS-1")]
