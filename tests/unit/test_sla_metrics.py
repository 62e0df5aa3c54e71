"""What the SLA counters count for a ticket, given what its row already counted (the marks).

The worker calls ``Tally.count_ticket`` with the ticket's new state, its stored
marks and the signals recorded for the first time; these tests replay the
same story step by step, the way batches arrive, and check each step's counts.
"""

from datetime import datetime

import orjson
import pytest

from projections.counting import Marks
from projections.signals import Ledger, revocation_id, settle
from services.worker.sla_metrics import Tally, finalized_charge, stopped_cycles
from tests.engine_helpers import Story, ny
from tests.unit.test_view_bytes import STORIES, state_of

MON = "2026-11-02"  # a Monday; business hours are 08:00-17:00 New York in the default policy


def step(story: Story, as_of: datetime, marks: bytes | None, had: Ledger) -> tuple[Tally, bytes, Ledger]:
    """One batch as the worker runs it: the signals settled against the ticket's ledger
    (what it asserted so far), counted against the stored marks."""
    state = story.state(as_of)
    ledger, sent = settle(had, state, as_of)
    tally = Tally()
    new_marks = tally.count_ticket(state, marks, sent)
    return tally, new_marks, ledger


def test_a_response_in_time_is_evaluated_and_met_once():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "urgent")
    story.responded(ny(f"{MON} 09:30"))
    tally, marks, had = step(story, ny(f"{MON} 09:30"), None, Ledger())
    assert tally.evaluated == {("response", "urgent"): 1}
    assert tally.met == {("response", "urgent"): 1}
    assert tally.elapsed == [("response", "urgent", 1800)]
    responded = int(ny(f"{MON} 09:30").timestamp())
    assert orjson.loads(marks)["cycles"] == [f"response@{responded}"]

    story.closed(ny(f"{MON} 10:00"))  # urgent resolution has no target: never evaluated
    again, marks, _ = step(story, ny(f"{MON} 10:00"), marks, had)
    assert again.evaluated == {} and again.met == {} and again.elapsed == []


def test_a_late_response_counts_a_breach_when_it_happens_and_a_miss_when_it_stops():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "urgent")
    tally, marks, had = step(story, ny(f"{MON} 10:30"), None, Ledger())  # breached, still running
    assert tally.breaches == {("response", "urgent"): 1}
    assert tally.evaluated == {}
    story.responded(ny(f"{MON} 11:00"))
    tally, marks, had = step(story, ny(f"{MON} 11:00"), marks, had)
    assert tally.breaches == {}  # counted once, when it happened
    assert tally.evaluated == {("response", "urgent"): 1}
    assert tally.met == {("response", "urgent"): 0}
    assert tally.elapsed == [("response", "urgent", 7200)]


def test_a_reopened_ticket_is_evaluated_at_its_first_resolution_only():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "medium")
    story.responded(ny(f"{MON} 09:10"))
    story.resolved(ny(f"{MON} 10:00"))
    tally, marks, had = step(story, ny(f"{MON} 10:00"), None, Ledger())
    assert tally.evaluated == {("response", "medium"): 1, ("resolution", "medium"): 1}
    story.reopened(ny(f"{MON} 11:00"))
    story.resolved(ny(f"{MON} 16:00"))
    tally, marks, had = step(story, ny(f"{MON} 16:00"), marks, had)
    assert tally.evaluated == {}
    # The same counts from the final state alone (a rebuild writes these marks): equal.
    _, rebuilt, _ = step(story, ny(f"{MON} 16:00"), None, Ledger())
    assert orjson.loads(rebuilt)["cycles"] == orjson.loads(marks)["cycles"]
    keys = [c[0] for c in stopped_cycles(story.state(ny(f"{MON} 16:00")))]
    assert keys == [
        f"response@{int(ny(f'{MON} 09:10').timestamp())}",
        f"resolution@{int(ny(f'{MON} 10:00').timestamp())}",
    ]


@pytest.mark.parametrize(
    ("change_at", "counted", "met"),
    [
        # Changed before the medium response target (4 business hours): superseded, not evaluated.
        # The urgent cycle (1 h from 10:00) is answered at 14:00: missed.
        ("10:00", {("response", "urgent"): 1}, {("response", "urgent"): 0}),
        # Changed after the medium response breached: that cycle counts, as missed; the urgent
        # cycle from 13:30 is answered in time.
        (
            "13:30",
            {("response", "medium"): 1, ("response", "urgent"): 1},
            {("response", "medium"): 0, ("response", "urgent"): 1},
        ),
    ],
)
def test_a_cycle_ended_by_a_priority_change_counts_only_if_it_breached(change_at, counted, met):
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "medium")
    story.priority(ny(f"{MON} {change_at}"), "urgent")
    story.responded(ny(f"{MON} 14:00"))
    tally, _, _ = step(story, ny(f"{MON} 14:00"), None, Ledger())
    assert tally.evaluated == counted
    assert tally.met == met


def test_a_finalized_charge_is_counted_then_only_its_changes():
    story = Story()
    sat = "2026-11-07"  # outside business hours: an urgent call-out is billed (uncovered P1)
    story.opened(ny(f"{sat} 03:00"), "urgent")
    story.responded(ny(f"{sat} 03:10"))
    story.work(ny(f"{sat} 03:00"), ny(f"{sat} 05:00"))
    tally, marks, had = step(story, ny(f"{sat} 05:00"), None, Ledger())
    assert tally.billed_cents == {}  # pending review: not final until the fault is determined
    story.fault(ny(f"{sat} 05:30"), "customer")
    tally, marks, had = step(story, ny(f"{sat} 05:30"), marks, had)
    assert finalized_charge(story.state(ny(f"{sat} 05:30"))) == ("uncovered_p1", 7200, 25_000)
    assert tally.billed_seconds == {"uncovered_p1": 7200}
    assert tally.billed_cents == {"uncovered_p1": 25_000}

    story.closed(ny(f"{sat} 06:00"))
    again, marks, had = step(story, ny(f"{sat} 06:00"), marks, had)  # closing changed nothing
    assert again.billed_cents == {} and again.credited_cents == {}

    # A late work log adds an hour to the closed ticket: the difference is added.
    story.work(ny(f"{sat} 05:00"), ny(f"{sat} 06:00"))
    tally, marks, had = step(story, ny(f"{sat} 07:00"), marks, had)
    assert tally.billed_seconds == {"uncovered_p1": 3600}
    assert tally.billed_cents == {"uncovered_p1": 12_500}

    # The provider's fault waives it: everything billed is credited back.
    story.fault(ny(f"{sat} 08:00"), "provider")  # the fault, reviewed again
    tally, marks, _ = step(story, ny(f"{sat} 08:00"), marks, had)
    assert tally.billed_cents == {}
    assert tally.credited_cents == {"uncovered_p1": 37_500}
    assert tally.credited_seconds == {"uncovered_p1": 10_800}


def test_a_late_priority_change_does_not_count_a_response_twice():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "medium")
    story.responded(ny(f"{MON} 09:30"))
    tally, marks, had = step(story, ny(f"{MON} 09:30"), None, Ledger())
    assert tally.evaluated == {("response", "medium"): 1}
    story.priority(ny(f"{MON} 09:10"), "high")  # arrives late: the response now ends cycle 2
    tally, marks, _ = step(story, ny(f"{MON} 09:40"), marks, had)
    assert tally.evaluated == {}


def test_escalations_count_levels_reached_once_each():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "medium")
    story.responded(ny(f"{MON} 09:10"))
    # Resolution runs on: breached at 8 business hours (level 1), 150 % (level 2), 200 % (level 3).
    tally, marks, had = step(story, ny("2026-11-04 17:00"), None, Ledger())
    assert tally.escalations == {1: 1, 2: 1, 3: 1}
    story.escalation_request(ny("2026-11-04 17:30"), 2)  # a level already reached: nothing new
    again, _, _ = step(story, ny("2026-11-04 18:00"), marks, had)
    assert again.escalations == {}


def test_breaches_and_revocations_are_counted_once_by_id():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "urgent")
    state = story.state(ny(f"{MON} 09:00"))
    breach = {"signal_id": "b1", "type": "sla.breached", "clock": "response", "priority": "urgent"}
    revocation = {"signal_id": revocation_id("b1"), "type": "sla.breach_revoked", "revokes": "b1"}
    first = Tally()
    marks = first.count_ticket(state, None, [breach, {"signal_id": "w1", "type": "sla.warning"}])
    assert first.breaches == {("response", "urgent"): 1} and first.revocations == 0
    again = Tally()
    marks = again.count_ticket(state, marks, [breach])  # still asserted: nothing new
    assert again.breaches == {} and again.revocations == 0
    taken_back = Tally()
    marks = taken_back.count_ticket(state, marks, [revocation])
    assert taken_back.breaches == {} and taken_back.revocations == 1
    after = Tally()
    after.count_ticket(state, marks, [revocation])
    assert after.revocations == 0


def test_a_breach_taken_back_and_brought_back_counts_again():
    story = Story()
    story.opened(ny(f"{MON} 09:00"), "urgent")
    state = story.state(ny(f"{MON} 09:00"))
    breach = {"signal_id": "b1", "type": "sla.breached", "clock": "response", "priority": "urgent"}
    revocation = {"signal_id": revocation_id("b1"), "type": "sla.breach_revoked", "revokes": "b1"}
    totals = Tally()
    marks = None
    for signals in ([breach], [revocation], [breach], [breach], [revocation]):
        tally = Tally()
        marks = tally.count_ticket(state, marks, signals)
        totals.breaches.update(tally.breaches)
        totals.revocations += tally.revocations
    assert totals.breaches == {("response", "urgent"): 2} and totals.revocations == 2  # net 0, as now


# -- the marks' bytes ---------------------------------------------------------------------------
# What Tally.count_ticket stored for the hand-made tickets of test_view_bytes.py before the marks
# were typed (projections.counting.Marks), pasted: the row's marks column must not change a byte.

MARKS = {
    "running": b'{"billing":null,"cycles":[],"level":0,"signals":[]}',
    "uncovered_p1": (
        b'{"billing":["uncovered_p1",6000,20833],"cycles":["response@1793765700"],"level":3,'
        b'"signals":["2ea666e70a713c98cec7f5eda3d9e8d6"]}'
    ),
    "new_install_closed": (
        b'{"billing":["new_install",9900,34375],"cycles":["response@1793980800"],"level":1,'
        b'"signals":["7d14fdb66ebabfd9daf62e52085ee0d1"]}'
    ),
    "not_entitled": (
        b'{"billing":null,"cycles":[],"level":0,"signals":["78764455fc0369a390286ad8d7aa3a51",'
        b'"c5905c870cff169cadb0eb39652861a1"]}'
    ),
    "suspended": b'{"billing":null,"cycles":[],"level":0,"signals":[]}',
    "unicode": b'{"billing":null,"cycles":[],"level":0,"signals":[]}',
}

MARKS_OVER_OLDER_MARKS = (
    b'{"billing":["new_install",9900,34375],"cycles":["response@1793980800"],"level":1,'
    b'"signals":["7d14fdb66ebabfd9daf62e52085ee0d1"]}'
)


@pytest.mark.parametrize("name", sorted(MARKS))
def test_typed_marks_encode_to_the_bytes_the_dict_marks_gave(name):
    state = state_of(name)
    _, sent = settle(Ledger(), state, STORIES[name][2])
    assert Tally().count_ticket(state, None, sent) == MARKS[name]
    assert Marks.decode(MARKS[name]).encode() == MARKS[name]


def test_marks_stored_in_another_shape_still_decode():
    """A missing field is nothing counted yet; an unknown one is left out (as the dict reads did)."""
    state = state_of("new_install_closed")  # at level 1
    _, sent = settle(Ledger(), state, STORIES["new_install_closed"][2])
    tally = Tally()
    assert tally.count_ticket(state, b'{"level":3,"other":1}', sent) == MARKS_OVER_OLDER_MARKS
    assert tally.escalation_revocations == {2: 1, 3: 1}  # the level stored was read
    assert Marks.decode(b"{}") == Marks.decode(None) == Marks()
