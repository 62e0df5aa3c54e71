"""The picture of a ticket's clocks, from its audit trail (:func:`projections.explain.explain`).

:func:`picture` turns the explain document into what the ticket page draws: per clock and cycle,
the stretches of time ``[start, end)`` in which it was running, paused (and why) or stopped (and
by what), and the marks on it: its warning, due and breach instants, the priority changes and the
ticket's events. Pure (no I/O, no clock) and no second implementation of the rules: every instant
comes from the document, the engine's effects (``entries``) and what explain says of each cycle
(``cycles``: when it counted, and the closed hours of its calendar meanwhile, docs/audit.md).

Reasons (``Stretch.reason``):

- running: none;
- paused: the holds, space-separated: the ticket's status that pauses the clock (a pause status of
  the policy, e.g. ``pending_customer``), ``suspension`` (the customer's account is suspended),
  or ``closed_hours`` (the clock runs but its calendar is closed: it does not count);
- stopped: what stopped it: ``responded``, ``resolved`` or ``closed``.

One approximation: the effects say when a pause starts and ends, not every change of what holds
a clock already paused. A status that starts (or stops) pausing a clock already paused by a
suspension gives no effect; the picture infers it when the suspension ends (the clock not
resuming then means the status still holds it) and otherwise keeps the reasons it knew.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

StretchKind = Literal["running", "paused", "stopped"]
MarkKind = Literal["due", "warning", "breach", "event", "priority-change"]
SUSPENSION, CLOSED_HOURS = "suspension", "closed_hours"
_STATUS = "status"  # the hold of a pause status (named by the ticket's status in a reason)


def epoch(text: str) -> int:
    """A UTC instant of the document (``2026-11-08T03:00:00Z``) as seconds since the epoch."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Stretch:
    start: int  # epoch seconds, inclusive
    end: int  # exclusive
    kind: StretchKind
    reason: str | None = None


@dataclass(frozen=True)
class Mark:
    at: int
    kind: MarkKind
    label: str
    event_type: str | None = None  # events: the event type
    event_id: str | None = None
    projected: bool = False  # a due instant not reached yet (the clock is running)


@dataclass
class CyclePicture:
    clock: str
    cycle: int
    priority: str
    target_seconds: int | None
    calendar: str
    start: int
    end: int  # the next cycle's start, or the as-of instant
    elapsed_seconds: int
    stretches: list[Stretch] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass
class Picture:
    ticket_id: str
    customer_id: str
    time_zone: str
    as_of: int
    start: int  # the dispatch
    end: int  # the as-of instant, or a later projected due instant
    cycles: list[CyclePicture]


@dataclass
class _Clock:
    """A clock as the walk of the effects goes."""

    cycle: int = 0
    kind: StretchKind | None = None  # None: not started
    holds: set[str] = field(default_factory=set)
    stopped_by: str | None = None
    since: int = 0


def picture(document: dict[str, Any]) -> Picture:
    """The picture of an explain document (not a quarantined ticket's: it has no ``cycles``)."""
    as_of = epoch(document["as_of"])
    cycles = {
        (c["clock"], c["cycle"]): CyclePicture(
            clock=c["clock"],
            cycle=c["cycle"],
            priority=c["priority"],
            target_seconds=c["target_seconds"],
            calendar=c["calendar"],
            start=epoch(c["started_at"]),
            end=epoch(c["ended_at"]) if c["ended_at"] is not None else as_of,
            elapsed_seconds=c["elapsed_seconds"],
        )
        for c in document["cycles"]
    }
    closed = {
        (c["clock"], c["cycle"]): [(epoch(a), epoch(b)) for a, b in c["closed"]] for c in document["cycles"]
    }
    _walk(document, cycles, closed, as_of)
    _marks(document, cycles, as_of)
    opened = min((c.start for c in cycles.values()), default=as_of)
    end = max([as_of, *(m.at for c in cycles.values() for m in c.marks)])
    ordered = sorted(cycles.values(), key=lambda c: (c.clock != "response", c.cycle))
    return Picture(
        document["ticket_id"], document["customer_id"], document["time_zone"], as_of, opened, end, ordered
    )


def _reason(clock: _Clock, status: str) -> str | None:
    if clock.kind == "stopped":
        return clock.stopped_by
    if clock.kind != "paused":
        return None
    names = ([status] if _STATUS in clock.holds else []) + ([SUSPENSION] if SUSPENSION in clock.holds else [])
    return " ".join(names) or _STATUS


def _walk(
    document: dict[str, Any],
    cycles: dict[tuple[str, int], CyclePicture],
    closed: dict[tuple[str, int], list[tuple[int, int]]],
    as_of: int,
) -> None:
    """The stretches of every cycle, from the effects in the order the engine applied them."""
    clocks: dict[str, _Clock] = {}
    status = "open"

    def cut(name: str, at: int) -> None:
        """End the clock's current stretch at ``at`` (its state up to then)."""
        clock = clocks[name]
        if clock.kind is not None and at > clock.since:
            key = (name, clock.cycle)
            _add(cycles[key], Stretch(clock.since, at, clock.kind, _reason(clock, status)), closed[key])
        clock.since = max(clock.since, at)

    for entry in document["entries"]:
        at = epoch(entry["occurred_at"])
        effects = entry["effects"]
        resumed = {e["clock"] for e in effects if e["effect"] == "clock_resumed"}
        for effect in effects:
            kind, name = effect["effect"], effect.get("clock")
            if kind == "status_changed":
                for clock_name, clock in clocks.items():
                    if clock.kind == "paused" and _STATUS in clock.holds and effect["to"] != status:
                        cut(clock_name, at)  # the same hold, named by another status from here
                status = effect["to"]
            elif kind in ("suspension_started", "suspension_ended"):
                for clock_name in effect["clocks"]:
                    clock = clocks.setdefault(clock_name, _Clock())
                    cut(clock_name, at)
                    if kind == "suspension_started":
                        clock.holds.add(SUSPENSION)
                    else:
                        clock.holds.discard(SUSPENSION)
                        if clock.kind == "paused" and clock_name not in resumed and not clock.holds:
                            clock.holds.add(_STATUS)  # still paused: its status holds it
            elif kind in ("clock_started", "cycle_restarted"):
                clock = clocks.setdefault(name, _Clock())
                cut(name, at)
                clock.cycle, clock.since = effect["cycle"], at
                clock.kind = "running" if effect["status"] == "running" else "paused"
                if clock.kind == "paused" and not clock.holds:
                    clock.holds.add(_STATUS)  # not suspended: a pause status held it from the start
            elif kind == "clock_paused":
                clock = clocks[name]
                cut(name, at)
                clock.kind = "paused"
                clock.holds.add(SUSPENSION if effect["by"] == "suspended" else _STATUS)
            elif kind == "clock_resumed":
                clock = clocks[name]
                cut(name, at)
                clock.stopped_by = None
                if effect.get("status", "running") == "running":
                    clock.kind, clock.holds = "running", set()
                else:  # a reopen while a pause holds it
                    clock.kind = "paused"
                    clock.holds = clock.holds or {_STATUS}
            elif kind == "clock_stopped":
                clock = clocks[name]
                cut(name, at)
                clock.kind, clock.stopped_by = "stopped", effect["by"]
    for name, clock in clocks.items():
        if clock.kind is not None:
            cut(name, cycles[(name, clock.cycle)].end if clock.cycle else as_of)


def _add(cycle: CyclePicture, stretch: Stretch, closed: list[tuple[int, int]]) -> None:
    """Add ``stretch`` to ``cycle``: a running one split where the calendar is closed (the closed
    hours explain lists for the cycle), and merged with the one before it when alike."""
    pieces = [stretch]
    if stretch.kind == "running":
        pieces, cursor = [], stretch.start
        for start, end in closed:
            start, end = max(start, stretch.start), min(end, stretch.end)
            if start >= end:
                continue
            if start > cursor:
                pieces.append(Stretch(cursor, start, "running"))
            pieces.append(Stretch(start, end, "paused", CLOSED_HOURS))
            cursor = end
        if cursor < stretch.end:
            pieces.append(Stretch(cursor, stretch.end, "running"))
    for piece in pieces:
        last = cycle.stretches[-1] if cycle.stretches else None
        if (
            last is not None
            and last.end == piece.start
            and (last.kind, last.reason) == (piece.kind, piece.reason)
        ):
            cycle.stretches[-1] = Stretch(last.start, piece.end, piece.kind, piece.reason)
        else:
            cycle.stretches.append(piece)


_THRESHOLDS: dict[str, MarkKind] = {
    "clock_at_risk": "warning",
    "clock_due": "due",
    "clock_breached": "breach",
}
_LABELS: dict[MarkKind, str] = {"warning": "at risk (warning)", "due": "due", "breach": "breach"}


def _marks(document: dict[str, Any], cycles: dict[tuple[str, int], CyclePicture], as_of: int) -> None:
    """The thresholds reached (time entries), the projected due instant of a running clock, the
    priority changes and the events, each on the cycles whose span holds its instant."""
    by_clock: dict[str, list[CyclePicture]] = {}
    for cycle in cycles.values():
        by_clock.setdefault(cycle.clock, []).append(cycle)

    def holding(at: int) -> list[CyclePicture]:
        """The cycle of each clock whose [start, end) holds ``at`` (a current cycle: up to as_of)."""
        found = []
        for own in by_clock.values():
            last = max(c.cycle for c in own)
            found += [c for c in own if c.start <= at and (at < c.end or (c.cycle == last and at <= c.end))]
        return found

    for entry in document["entries"]:
        at = epoch(entry["occurred_at"])
        effects = entry["effects"]
        for effect in effects:
            kind = effect["effect"]
            if kind in _THRESHOLDS:
                mark_kind = _THRESHOLDS[kind]
                cycles[(effect["clock"], effect["cycle"])].marks.append(
                    Mark(at, mark_kind, f"{effect['clock']} {_LABELS[mark_kind]}")
                )
            elif kind == "priority_changed":
                for cycle in holding(at):
                    cycle.marks.append(
                        Mark(at, "priority-change", f"priority {effect['from']} → {effect['to']}")
                    )
        duplicate = all(e["effect"] == "ignored" and e["reason"].startswith("duplicate") for e in effects)
        if entry["event_id"] is not None and effects and not duplicate:
            for cycle in holding(at):
                cycle.marks.append(
                    Mark(
                        at, "event", f"{entry['type']} {entry['event_id']}", entry["type"], entry["event_id"]
                    )
                )
    view_clocks = document["view"]["clocks"]
    for name, own in by_clock.items():
        current = max(own, key=lambda c: c.cycle)
        due = view_clocks[name]["due_at"]
        reached = any(m.kind == "due" for m in current.marks)
        if due is not None and not reached and view_clocks[name]["status"] == "running":
            current.marks.append(Mark(epoch(due), "due", f"{name} due (projected)", projected=True))
    for cycle in cycles.values():
        cycle.marks.sort(key=lambda m: m.at)
