"""Incremental folds (projections.checkpoints) = full recompute, on random histories.

A ticket's history (out-of-order arrivals, duplicates, events dated after the instant asked,
work logged before it ends, priority changes, reopenings, suspensions of its customer's account
some of which lie ahead, a third-party disconnect) is recorded in a random order; then it is
evaluated at a random sequence of cut points, each a prefix of the recording (or some other
subset of it) as of a random instant (mostly later and later: the incremental case; sometimes
earlier, or with another policy or no standing: the fallbacks), with one checkpoint cache for
the whole sequence. Every state must be the one :func:`projections.ticket.evaluate` gives for
the same arguments: view, next change, effects, account reach, breaches, charge, steps; and the
states returned earlier must not change while the checkpoint they came from goes on.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from events.models import TicketOpened
from projections.as_of import standing_at
from projections.checkpoints import Checkpoint, continuation, evaluate_from
from projections.clock import Clock, Cycle
from projections.counting import Tally
from projections.policy import default_policy
from projections.signals import Ledger
from projections.story import FOREVER, tell, walk
from projections.ticket import TicketState, evaluate
from projections.timeline import Recorded, TicketKey, dedupe, history, ticket_key, whole_second
from tests.unit.test_engine_properties import CUSTOM_POLICY, DAY, OFFSETS, PRIORITIES, STATUSES, H, record

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = datetime(2026, 10, 19, tzinfo=UTC)  # a Monday
SPAN = 10 * DAY
DEFAULT = default_policy()
KEY: TicketKey = ("cust-a", "T-1")
KINDS = (
    "ticket.priority_changed",
    "ticket.priority_changed",
    "ticket.responded",
    "ticket.status_changed",
    "ticket.status_changed",
    "ticket.resolved",
    "ticket.resolved",
    "ticket.reopened",
    "ticket.reopened",
    "ticket.closed",
    "ticket.work_logged",
    "ticket.work_logged",
    "ticket.fault_determined",
    "ticket.escalation_requested",
)


@st.composite
def tickets(draw, ticket: str = "T-1", suspended: bool = False) -> list[dict[str, Any]]:
    """One ticket's events (as dicts), and invoices of its customer, in no particular order.
    ``suspended``: a ticket that suspensions pause, opened, and an invoice of its customer more
    than ten days past due within two days of the opening (a stretch starting while it runs)."""
    events: list[dict[str, Any]] = []
    seconds = st.one_of(st.integers(1, 2 * H), st.integers(1, 2 * DAY), st.integers(1, 8 * DAY))

    def emit(at: datetime, type_: str, data: dict[str, Any], ticket_id: str | None = ticket) -> None:
        body = {
            "event_id": f"{ticket}-{len(events)}" if ticket_id else f"acct-{ticket}-{len(events)}",
            "type": type_,
            "schema_version": 1,
            "occurred_at": at.astimezone(draw(st.sampled_from(OFFSETS))).isoformat(),
            "customer_id": "cust-a",
            "data": data,
        }
        if ticket_id is not None:
            body["ticket_id"] = ticket_id
        events.append(body)

    t0 = BASE + timedelta(seconds=draw(st.integers(0, SPAN // 900)) * 900)
    # Suspensions pause non_service tickets only (the default policy): drawn often.
    category = draw(st.sampled_from(["non_service", "non_service", "service", "new_install"]))
    if suspended:
        category = "non_service"
    opened: dict[str, Any] = {"priority": draw(st.sampled_from(PRIORITIES)), "category": category}
    for flag in ("after_hours_requested", "priority_handling_requested", "third_party_disconnect"):
        if draw(st.booleans()):
            opened[flag] = draw(st.booleans())
    if suspended or draw(st.integers(0, 9)):  # sometimes never opened
        emit(t0, "ticket.opened", opened)
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(KINDS))
        # Mostly after the opening; sometimes before it (ignored, or applied early).
        at = t0 + timedelta(seconds=draw(seconds)) * (1 if draw(st.integers(0, 7)) else -1)
        if draw(st.integers(0, 5)) == 0:
            at = t0  # the instant of dispatch: the opening still applies first
        data: dict[str, Any] = {}
        if kind == "ticket.priority_changed":
            data = {"priority": draw(st.sampled_from(PRIORITIES))}
        elif kind == "ticket.status_changed":
            data = {"status": draw(st.sampled_from(STATUSES))}
        elif kind == "ticket.work_logged":
            # Ending before, at or after the instant it is logged at (logged in advance: billed
            # up to the instant asked, work_ahead).
            end = at + timedelta(seconds=draw(st.sampled_from([-3600, -60, 0, 0, 600, 2 * H, DAY])))
            start = end - timedelta(seconds=draw(st.integers(1, 5 * H)))
            data = {"started_at": start.isoformat(), "ended_at": end.isoformat()}
        elif kind == "ticket.fault_determined":
            data = {"party": draw(st.sampled_from(["provider", "customer", "third_party"]))}
        elif kind == "ticket.escalation_requested":
            data = {
                "level": draw(st.integers(1, 3)),
                "requested_by": draw(st.sampled_from(["customer", "agent"])),
            }
        emit(at, kind, data)
    if draw(st.integers(0, 9)) == 0:  # a second opening (ignored where it applies after the first)
        emit(t0 + timedelta(seconds=draw(st.integers(-DAY, DAY))), "ticket.opened", dict(opened))
    for n in range(
        draw(st.sampled_from([0, 1, 1, 2, 3]))
    ):  # invoices: suspension stretches, before and ahead
        at = t0 + timedelta(seconds=draw(st.integers(-15 * DAY, 8 * DAY)))
        due = at - timedelta(seconds=draw(st.one_of(st.integers(-2 * DAY, 15 * DAY), st.just(10 * DAY))))
        invoice = f"INV-{ticket}-{n}"
        emit(at, "account.invoice_due", {"invoice_id": invoice, "due_at": due.isoformat()}, None)
        settle = draw(st.sampled_from(["none", "none", "account.invoice_paid", "account.invoice_disputed"]))
        if settle != "none":
            paid = at + timedelta(seconds=draw(st.integers(1, 20 * DAY)))
            emit(paid, settle, {"invoice_id": invoice}, None)
    if suspended:
        at = t0 - timedelta(seconds=draw(st.integers(0, 3 * DAY)))
        due = at - timedelta(days=10) + timedelta(seconds=draw(st.integers(0, 2 * DAY)))
        emit(at, "account.invoice_due", {"invoice_id": f"INV-{ticket}-s", "due_at": due.isoformat()}, None)
        if draw(st.booleans()):
            paid = due + timedelta(days=10) + timedelta(seconds=draw(st.integers(1, 3 * DAY)))
            emit(paid, "account.invoice_paid", {"invoice_id": f"INV-{ticket}-s"}, None)
    return events


@st.composite
def recordings(draw, events: list[dict[str, Any]], opened_first: bool = False) -> list[Recorded]:
    """The events recorded: in time order with some arriving late, or shuffled; some twice
    (an identical copy recorded later). ``opened_first``: the ticket.opened recorded first."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    order = sorted(range(len(events)), key=lambda i: events[i]["occurred_at"])  # roughly by time
    if draw(st.booleans()):
        rnd.shuffle(order)
    else:
        for _ in range(draw(st.integers(0, 3))):  # a few late arrivals
            if order:
                order.insert(rnd.randrange(len(order) + 1), order.pop(rnd.randrange(len(order))))
    dicts = [events[i] for i in order]
    if opened_first:
        dicts.sort(key=lambda d: d["type"] != "ticket.opened")  # stable: the rest keep their order
    for _ in range(draw(st.integers(0, 3))):  # duplicates, recorded after their original
        if dicts:
            original = rnd.randrange(len(dicts))
            dicts.insert(rnd.randint(original + 1, len(dicts)), dict(dicts[original]))
    return record(dicts)


@st.composite
def cut_points(draw, records: list[Recorded]) -> list[dict[str, Any]]:
    """Where to evaluate: a part of the recording (mostly a growing prefix), an instant (mostly
    later and later, often the latest instant recorded so far, as a worker's log time), a policy
    (mostly the same object) and whether there is an account standing."""
    points: list[dict[str, Any]] = []
    upto = 0
    instant = records[0].at if records else BASE  # the first recorded (the opening, often)
    chosen: list[Recorded] = []
    for _ in range(draw(st.integers(1, 8))):
        mode = draw(st.sampled_from(["grow", "grow", "grow", "grow", "same", "any", "subset", "swap"]))
        was = chosen
        if mode == "grow":
            upto = min(len(records), upto + draw(st.integers(1, 3)))
        elif mode == "any":
            upto = draw(st.integers(0, len(records)))
        chosen = list(records[:upto])
        if mode == "subset":
            chosen = [r for r in records if draw(st.booleans())]
        elif mode == "swap" and was:  # one event gone, as many others come (the same count)
            gone = draw(st.integers(0, len(was) - 1))
            others = [r for r in records if r not in was]
            chosen = was[:gone] + was[gone + 1 :] + others[: draw(st.integers(1, 2))]
        latest = max((r.at for r in chosen), default=instant)
        how = draw(st.sampled_from(["log", "log", "later", "later", "earlier", "anywhere"]))
        if how == "log":
            instant = max(instant, latest)
        elif how == "later":
            instant += timedelta(seconds=draw(st.sampled_from([0, 1, 59, 3600, 6 * H, DAY, 5 * DAY])))
        elif how == "earlier":
            instant -= timedelta(seconds=draw(st.integers(1, 3 * DAY)))
        else:
            instant = BASE + timedelta(seconds=draw(st.integers(-2 * DAY, SPAN + 12 * DAY)))
        policy = draw(st.sampled_from([DEFAULT, DEFAULT, DEFAULT, DEFAULT, CUSTOM_POLICY]))
        standing = draw(st.sampled_from(["standing", "standing", "standing", "none"]))
        points.append({"records": chosen, "as_of": instant, "policy": policy, "standing": standing})
    return points


def observed(state: TicketState | None) -> Any:
    """Everything a reader of a state sees of it (the worker, explain, the report)."""
    if state is None:
        return None
    return {
        "view": state.view().model_dump(),
        "next_change_at": state.next_change_at(),
        "effects": [(e.as_view(), e.step) for e in state.effects],
        "steps": [(at, step if isinstance(step, str) else step.event_id) for at, step in state.steps],
        "account_until": state.account_until(FOREVER),
        "breaches": state.breaches(),
        "charge_final": state.charge_final,
        "billing": state.billing,
        "escalations": [(e.level, e.at, e.cause, e.entitled, e.clock, e.cycle) for e in state.escalations],
        "cycles": {
            name: [
                (c.priority, c.elapsed, c.started_at, c.ended_at, dict(c.reached), c.first_stop)
                for c in clock.cycles
            ]
            for name, clock in state.clocks.items()
        },
        "as_of": state.as_of,
        "applied": state.applied,
        "work": list(state.work),
        "work_ahead": list(state.work_ahead),
        "boundaries_ahead": list(state.boundaries_ahead),
    }


def full(point: dict[str, Any]) -> TicketState | None:
    return evaluate(point["records"], point["policy"], point["as_of"], _standing(point))


def _standing(point: dict[str, Any]):
    if point["standing"] == "none":
        return None
    account = [r for r in point["records"] if ticket_key(r.event) is None]
    return standing_at(account, point["policy"], point["as_of"])


def _mine(point: dict[str, Any]) -> list[Recorded]:
    return [r for r in point["records"] if ticket_key(r.event) == KEY]


@SETTINGS
@given(data=st.data())
def test_incremental_is_full_recompute(data):
    suspended = data.draw(st.booleans())
    events = data.draw(tickets(suspended=suspended))
    records = data.draw(recordings(events, opened_first=suspended))
    points = data.draw(cut_points(records))
    checkpoints: dict[TicketKey, Checkpoint] = {}
    told: list[tuple[TicketState | None, Any]] = []
    for point in points:
        mine, standing = _mine(point), _standing(point)
        kept = checkpoints.get(KEY)
        as_of = whole_second(point["as_of"])
        if kept is None:
            event("no checkpoint")
        elif continuation(kept, history(mine, as_of), point["policy"], as_of, standing) is None:
            event("checkpoint not valid: full replay")
        else:
            steps = continuation(kept, history(mine, as_of), point["policy"], as_of, standing)
            assert steps is not None
            event("went on from the checkpoint")
            event(f"went on with {min(len(steps), 3)}+ new steps")
            if kept.suspensions:
                event("went on, with suspensions")
            if any(isinstance(step, str) for *_, step in steps):
                event("went on, with a new suspension boundary")
        state = evaluate_from(KEY, mine, point["policy"], point["as_of"], standing, checkpoints)
        expected = observed(evaluate(mine, point["policy"], point["as_of"], standing))
        assert observed(state) == expected
        told.append((state, expected))
    for state, expected in told:  # nothing a later step did reached a state returned before
        assert observed(state) == expected


@SETTINGS
@given(data=st.data())
def test_a_story_told_from_checkpoints_is_the_story(data):
    """The worker's path (projections.story.tell with a cache): the same states, signals and
    counts, batch after batch, for two tickets of one customer."""
    events = data.draw(tickets("T-1")) + data.draw(tickets("T-2"))
    records = dedupe(data.draw(recordings(events))).kept  # a log's first copies
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    checkpoints: dict[TicketKey, Checkpoint] = {}
    ledgers: dict[bool, dict[TicketKey, Ledger]] = {True: {}, False: {}}
    evaluated: dict[TicketKey, datetime] = {}
    log_time: datetime | None = None
    cap = max((r.at for r in records), default=BASE) + timedelta(days=data.draw(st.integers(0, 3)))
    done = 0
    while done < len(records):
        batch = records[done : done + rnd.randint(1, 4)]
        done += len(batch)
        so_far = records[:done]
        found = walk(batch, log_time, cap, evaluated=evaluated)
        log_time = found.log_time
        account = [r for r in so_far if ticket_key(r.event) is None]
        for key, points in found.points.items():
            mine = [r for r in so_far if ticket_key(r.event) == key]
            results = {}
            for cached in (True, False):
                tally = Tally()
                result = tell(
                    points,
                    mine,
                    account,
                    DEFAULT,
                    ledgers[cached].get(key, Ledger()),
                    None,
                    tally,
                    checkpoints=checkpoints if cached else None,
                )
                ledgers[cached][key] = result.ledger
                results[cached] = (observed(result.state), result.signals, tally, repr(result.fault))
            assert results[True] == results[False]
            evaluated[key] = points[-1].at


def test_clone_copies_every_attribute_a_replay_changes():
    """TicketState.clone copies its mutable attributes (TicketState.CLONED): a new attribute must
    be added there, or deliberately shared (immutable values, set once)."""
    state = evaluate(
        record(
            [
                {
                    "event_id": "e-1",
                    "type": "ticket.opened",
                    "schema_version": 1,
                    "occurred_at": BASE.isoformat(),
                    "customer_id": "cust-a",
                    "ticket_id": "T-1",
                    "data": {"priority": "high", "category": "service"},
                }
            ]
        ),
        DEFAULT,
        BASE + timedelta(hours=1),
    )
    assert state is not None and isinstance(state.opened, TicketOpened)
    mutable = {name for name, value in vars(state).items() if isinstance(value, list | dict | set)}
    assert mutable == set(TicketState.CLONED)
    twin = state.clone()
    for name in TicketState.CLONED:
        assert getattr(twin, name) == getattr(state, name)
        assert getattr(twin, name) is not getattr(state, name)
    for name, clock in state.clocks.items():
        assert isinstance(clock, Clock)
        assert twin.clocks[name].holds is not clock.holds
        for mine, theirs in zip(twin.clocks[name].cycles, clock.cycles, strict=True):
            assert isinstance(mine, Cycle) and mine is not theirs and mine.reached is not theirs.reached
            assert mine == theirs
    _ = state.billing  # cached on the original: not carried over to a clone made after it
    assert "billing" not in vars(state.clone())


@pytest.mark.parametrize("policy", [DEFAULT, CUSTOM_POLICY])
def test_a_changed_policy_or_an_earlier_instant_replays(policy):
    """The fallbacks named in projections.checkpoints: another policy object, an earlier instant."""
    records = record(
        [
            {
                "event_id": "e-1",
                "type": "ticket.opened",
                "schema_version": 1,
                "occurred_at": BASE.isoformat(),
                "customer_id": "cust-a",
                "ticket_id": "T-1",
                "data": {"priority": "urgent", "category": "service"},
            }
        ]
    )
    checkpoints: dict[TicketKey, Checkpoint] = {}
    evaluate_from(KEY, records, DEFAULT, BASE + timedelta(hours=2), None, checkpoints)
    kept = checkpoints[KEY]
    ordered = history(records, BASE + timedelta(hours=3))
    assert continuation(kept, ordered, DEFAULT, BASE + timedelta(hours=3), None) == []
    assert continuation(kept, ordered, DEFAULT, BASE + timedelta(hours=1), None) is None
    other = policy.model_copy()
    assert continuation(kept, ordered, other, BASE + timedelta(hours=3), None) is None


def _event(n: int, type_: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {
        "event_id": f"e-{n}",
        "type": type_,
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "customer_id": "cust-a",
        "ticket_id": "T-1",
        "data": data,
    }


def test_a_history_that_does_not_begin_with_the_checkpoints_events_replays():
    """Gone, replaced at its position, superseded by an earlier copy: the checkpoint's events are
    not where a replay would apply them first (projections.checkpoints.continuation)."""
    opened = _event(1, "ticket.opened", BASE, priority="high", category="service")
    status = _event(2, "ticket.status_changed", BASE + timedelta(hours=1), status="on_hold")
    later = _event(3, "ticket.status_changed", BASE + timedelta(hours=3), status="open")
    a, b, c = record([opened, status, later])
    as_of = BASE + timedelta(hours=4)
    kept = _kept(a, b)

    def going_on(records: list[Recorded]) -> list[Any] | None:
        return continuation(kept, history(records, as_of), DEFAULT, as_of, None)

    assert going_on([a, b, c]) == [(c.at, 2, c.seq, c.event)]
    (again,) = record([status], order=[b.seq])  # the same event at the same position, decoded again
    assert again.event is not b.event
    assert going_on([a, again, c]) == [(c.at, 2, c.seq, c.event)]
    assert going_on([a, c]) is None  # gone (as many events as the checkpoint's, not the same)
    assert going_on([b, c]) is None  # the opening gone
    (other,) = record([{**status, "event_id": "e-9"}], order=[b.seq])  # another event there
    assert going_on([a, other, c]) is None
    (earlier,) = record([status], order=[-1])  # a copy recorded before: the one that counts
    assert going_on([earlier, a, b, c]) is None
    (late,) = record([_event(4, "ticket.responded", BASE + timedelta(minutes=30))], order=[10])
    assert going_on([a, b, late]) is None  # late: applies before the checkpoint's last event
    for records in ([a, c], [b, c], [a, other, c], [earlier, a, b, c], [a, b, late]):
        cache = {KEY: _kept(a, b)}
        state = evaluate_from(KEY, records, DEFAULT, as_of, None, cache)
        assert observed(state) == observed(evaluate(records, DEFAULT, as_of))


def _kept(*records: Recorded) -> Checkpoint:
    checkpoints: dict[TicketKey, Checkpoint] = {}
    evaluate_from(KEY, list(records), DEFAULT, BASE + timedelta(hours=2), None, checkpoints)
    return checkpoints[KEY]
