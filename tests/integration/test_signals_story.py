"""Signals and counters are functions of the log (issue 10, item 4): the same log in other
batches gives the same signals and counts; a late event that lowers the escalation level
revokes it; a ticket's signals come in the order of the instants they describe; every
signal says what it is about, and a revocation what it takes back and why."""

import random
from datetime import UTC, datetime

import orjson

from events import decode_event
from projections.policy import default_policy
from projections.story import story_of_log
from projections.timeline import Recorded
from services.dev.simulator import Helpdesk
from services.kafka.routing import expected_partition
from services.worker.histories import seq_of
from services.worker.outbox import as_sent
from services.worker.ports import Signal
from tests.feed import Feed, a_store, event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PARTITIONS = 6


def late_log(tickets: int = 150, seed: int = 7) -> dict[int, list[dict]]:
    """A simulated desk whose events reach the log late and out of order (per customer, shuffled
    within a sliding window), split into partitions by customer as a Kafka producer does."""
    desk = Helpdesk(seed=seed, customers=30, start=datetime(2026, 11, 2, tzinfo=UTC), days=20)
    rnd = random.Random(seed)
    streams: dict[str, list[dict]] = {}
    for document in desk.history(tickets):
        streams.setdefault(document["customer_id"], []).append(document)
    log: dict[int, list[dict]] = {}
    for customer in sorted(streams):
        stream = streams[customer]
        for i in range(len(stream) - 1):  # each event may swap with one of the next few
            j = min(len(stream) - 1, i + rnd.randint(0, 4))
            stream[i], stream[j] = stream[j], stream[i]
        partition = expected_partition(customer.encode(), PARTITIONS)
        log.setdefault(partition, []).extend(stream)
    return log


async def project(store, log: dict[int, list[dict]], batch: int) -> Feed:
    feed = await Feed(store, NOW).open(set(log))
    for partition, events in sorted(log.items()):
        for start in range(0, len(events), batch):
            await feed.send(*events[start : start + batch], partition=partition)
    await feed.projector.tick()
    return feed


async def test_the_same_log_in_other_batches_gives_the_same_signals_and_counts(tmp_path):
    log = late_log()
    runs = []
    for n, batch in enumerate((1, 7, 500)):
        (tmp_path / str(n)).mkdir()
        with a_store("sqlite", tmp_path / str(n)) as store:
            feed = await project(store, log, batch)
            runs.append(({s["signal_id"]: s for s in feed.signals()}, feed.counted.totals()))
    assert runs[0] == runs[1] == runs[2]
    signals, totals = runs[0]
    assert totals["breach_revocations"] > 0 and totals["escalation_revocations"], "the log has late events"
    records = [
        Recorded(seq_of(p, offset), decode_event(orjson.dumps(e)))
        for p, events in log.items()
        for offset, e in enumerate(events)
    ]
    story = story_of_log(records, default_policy(), NOW)
    assert signals == {s["signal_id"]: s for s in story.signals}
    assert totals == story.tally.totals()


URGENT = event("u1", "ticket.opened", "2026-11-02T14:00:00Z", "ACME", "U-1", priority="urgent")


async def test_a_late_answer_revokes_the_breach_and_the_escalation_it_raised(any_store):
    feed = await Feed(any_store, NOW).open()
    await feed.send(URGENT)
    # The customer's log moves on past the breach (urgent: 1 h, 24x7) ...
    await feed.send(event("u2", "ticket.opened", "2026-11-02T16:00:00Z", "ACME", "U-2", priority="low"))
    raised = [s for s in feed.signals() if s["ticket_id"] == "U-1"]
    assert [s["type"] for s in raised] == ["sla.warning", "sla.breached", "escalation.raised"]
    # ... then the answer, given 30 minutes after dispatch, arrives.
    await feed.send(event("u3", "ticket.responded", "2026-11-02T14:30:00Z", "ACME", "U-1"))
    revoked = [s for s in feed.signals() if s["ticket_id"] == "U-1"][3:]
    assert [s["type"] for s in revoked] == ["sla.breach_revoked", "escalation.revoked"]
    breach, escalation = raised[1], raised[2]
    assert {s["revokes"] for s in revoked} == {breach["signal_id"], escalation["signal_id"]}
    for signal in revoked:
        assert signal["reason"] == "late_event" and signal["at"] == "2026-11-02T16:00:00Z"
        assert signal["because"] == [
            {"event_id": "u3", "type": "ticket.responded", "occurred_at": "2026-11-02T14:30:00Z"}
        ]
    assert revoked[1]["revoked"] == {
        "type": "escalation.raised",
        "clock": "response",
        "cycle": 1,
        "level": 1,
        "at": "2026-11-02T15:00:01Z",
        "policy_version": default_policy().version,
    }
    assert feed.view("ACME", "U-1")["escalation"]["level"] == 0
    assert feed.counted.escalations == {1: 1} and feed.counted.escalation_revocations == {1: 1}
    assert feed.counted.revocations == 1


async def test_a_tickets_signals_come_in_the_order_of_their_instants(any_store):
    """One batch finds the warning, the breach and the escalation at once: in that order."""
    feed = await Feed(any_store, NOW).open()
    medium = event("m1", "ticket.opened", "2026-11-02T14:00:00Z", "ACME", "M-1", priority="medium")
    later = event("m2", "ticket.opened", "2026-11-06T14:00:00Z", "ACME", "M-2", priority="low")
    await feed.send(medium, later)
    mine = [s for s in feed.signals() if s["ticket_id"] == "M-1"]
    assert [s["at"] for s in mine] == sorted(s["at"] for s in mine)
    kinds = [s["type"] for s in mine]
    assert kinds.index("sla.warning") < kinds.index("sla.breached") < kinds.index("escalation.raised")


async def test_every_signal_says_what_it_is_about(any_store):
    feed = await Feed(any_store, NOW).open()
    # Urgent on a Saturday night: uncovered P1, billed; answered late, then the answer's true time.
    saturday = "2026-11-07T0{}:00:00Z"
    await feed.send(event("w1", "ticket.opened", saturday.format(8), "ACME", "W-1", priority="urgent"))
    await feed.send(
        event(
            "w2",
            "ticket.work_logged",
            saturday.format(9),
            "ACME",
            "W-1",
            started_at=saturday.format(8),
            ended_at=saturday.format(9),
        ),
        event("w3", "ticket.fault_determined", "2026-11-07T09:10:00Z", "ACME", "W-1", party="customer"),
        event("w4", "ticket.closed", "2026-11-07T09:20:00Z", "ACME", "W-1"),
    )
    await feed.send(event("w5", "ticket.responded", "2026-11-07T08:30:00Z", "ACME", "W-1"))
    policy = default_policy()
    kinds = set()
    for signal in feed.signals():
        kinds.add(signal["type"])
        assert {"signal_id", "type", "ticket_id", "customer_id", "clock", "cycle", "at"} <= set(signal)
        assert signal["policy_version"] == policy.version and signal["policy_digest"] == policy.digest
        if signal["type"].endswith("revoked"):
            assert {"revokes", "revoked", "reason", "because"} <= set(signal)
    assert kinds == {
        "sla.warning",
        "sla.breached",
        "escalation.raised",
        "billing.finalized",
        "sla.breach_revoked",
        "escalation.revoked",
    }


def test_a_signal_sent_long_after_its_instant_says_how_late():
    body = {"signal_id": "s", "type": "sla.breached", "at": "2026-11-02T15:00:01Z"}
    signal = Signal("s", "ACME", orjson.dumps(body), 0)
    week_later = datetime(2026, 11, 9, 15, 0, 1, tzinfo=UTC).timestamp()
    sent = orjson.loads(as_sent(signal, week_later).body)
    assert sent == {**body, "late_by_seconds": 7 * 86_400}
    assert orjson.loads(as_sent(signal, week_later - 8 * 86_400).body)["late_by_seconds"] == 0


async def test_a_charge_that_settles_as_time_passes_is_the_same_in_any_batches(tmp_path):
    """Work logged before it ends is billed up to the as-of instant: the charge settles when the
    customer's log time passes its end, with no input of the ticket (review of issue 10)."""
    log = [
        event("m1", "ticket.opened", "2026-11-07T14:00:00Z", "C", "M-1", priority="urgent"),
        event("m2", "ticket.fault_determined", "2026-11-07T15:00:00Z", "C", "M-1", party="customer"),
        event(
            "m3",
            "ticket.work_logged",
            "2026-11-07T15:10:00Z",
            "C",
            "M-1",
            started_at="2026-11-07T15:00:00Z",
            ended_at="2026-11-07T17:00:00Z",
        ),
        event("o1", "ticket.opened", "2026-11-07T17:30:00Z", "C", "O-1", priority="low"),  # time passes
        event(
            "m4",
            "ticket.work_logged",
            "2026-11-07T18:00:00Z",
            "C",
            "M-1",
            started_at="2026-11-07T17:45:00Z",
            ended_at="2026-11-07T18:00:00Z",
        ),
    ]
    charges = []
    for n, cuts in enumerate(([], [4], [1, 2, 3, 4])):
        (tmp_path / str(n)).mkdir()
        with a_store("sqlite", tmp_path / str(n)) as store:
            feed = await Feed(store, NOW).open()
            for start, end in zip([0, *cuts], [*cuts, len(log)], strict=True):
                await feed.send(*log[start:end])
            await feed.projector.tick()
            charges.append(
                [(s["amount_cents"], s["at"]) for s in feed.signals() if s["type"] == "billing.finalized"]
            )
    records = [Recorded(seq_of(0, i), decode_event(orjson.dumps(e))) for i, e in enumerate(log)]
    story = story_of_log(records, default_policy(), NOW)
    told = [(s["amount_cents"], s["at"]) for s in story.signals if s["type"] == "billing.finalized"]
    # The hour's minimum, then two hours once the work has ended, then 2 h 15 with the last log.
    assert charges == [told] * 3 and [amount for amount, _ in told] == [12_500, 25_000, 28_125]
