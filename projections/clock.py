"""SLA clocks: a response and a resolution clock per ticket, each a list of cycles.

A clock counts the open seconds of its cycle's calendar while it is
*counting*: started, not stopped, and not held by any pause. A priority change
ends the current cycle and starts a new one (see :meth:`Clock.restart`);
earlier cycles keep what happened in them, breaches included.

Thresholds: a cycle with a target records the instant its elapsed time first
reached each of its thresholds (warning, due, breach, escalation levels), so
later questions ("when did it breach?") need no recomputation. A breach is
elapsed > target, i.e. elapsed reaching target + 1 s.
"""

from dataclasses import dataclass, field
from datetime import datetime

from projections.calendar import Calendar
from projections.policy import ClockName
from projections.views import ClockStatus

# Threshold names.
WARNING = "warning"
DUE = "due"
BREACH = "breach"


def percent_of(target: int, percent: int) -> int:
    """The smallest whole number of seconds that is at least ``percent`` % of ``target``."""
    return -(-target * percent // 100)


@dataclass
class Cycle:
    priority: str
    target: int | None
    calendar_name: str
    calendar: Calendar
    started_at: datetime
    thresholds: dict[str, int]
    elapsed: int = 0
    ended_at: datetime | None = None
    reached: dict[str, datetime] = field(default_factory=dict)
    # (elapsed, breached, instant) when its clock first stopped: what
    # attainment counts once, even if a reopen resumes the cycle later.
    first_stop: tuple[int, bool, datetime] | None = None

    @property
    def breached(self) -> bool:
        return BREACH in self.reached

    def clone(self) -> "Cycle":
        """A copy to go on with apart (projections.checkpoints): what a replay changes in a cycle
        (elapsed, ended_at, reached, first_stop) is its own; the rest is never changed, shared."""
        return Cycle(
            self.priority,
            self.target,
            self.calendar_name,
            self.calendar,
            self.started_at,
            self.thresholds,
            self.elapsed,
            self.ended_at,
            dict(self.reached),
            self.first_stop,
        )


@dataclass
class Clock:
    name: ClockName
    cycles: list[Cycle] = field(default_factory=list)
    # Why the clock is not counting: pauses ("status", "suspended") hold it
    # for a while; a stop ("responded", "resolved", "closed") ends counting
    # until something resumes it.
    holds: set[str] = field(default_factory=set)
    stopped_by: str | None = None
    since: datetime | None = None  # counted up to here

    def clone(self) -> "Clock":
        """A copy to go on with apart (projections.checkpoints)."""
        return Clock(
            self.name, [c.clone() for c in self.cycles], set(self.holds), self.stopped_by, self.since
        )

    @property
    def current(self) -> Cycle:
        return self.cycles[-1]

    @property
    def started(self) -> bool:
        return bool(self.cycles)

    @property
    def counting(self) -> bool:
        return self.started and self.stopped_by is None and not self.holds

    @property
    def status(self) -> ClockStatus:
        if self.stopped_by is not None:
            return "stopped"
        return "paused" if self.holds else "running"

    def start(self, cycle: Cycle) -> None:
        self.cycles.append(cycle)
        self.since = cycle.started_at

    def advance(self, to: datetime) -> list[tuple[str, datetime]]:
        """Count open time up to ``to``; return the thresholds reached on the way, in order."""
        if not self.started or self.since is None or to <= self.since:
            return []
        reached: list[tuple[str, datetime]] = []
        if self.counting:
            cycle = self.current
            gained = cycle.calendar.open_seconds(self.since, to)
            if gained:
                before, after = cycle.elapsed, cycle.elapsed + gained
                for name, seconds in cycle.thresholds.items():
                    if name not in cycle.reached and before < seconds <= after:
                        at = cycle.calendar.add_open_seconds(self.since, seconds - before)
                        cycle.reached[name] = at
                        reached.append((name, at))
                cycle.elapsed = after
        self.since = to
        reached.sort(key=lambda item: (item[1], item[0]))
        return reached

    def hold(self, reason: str) -> None:
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        self.holds.discard(reason)

    def stop(self, reason: str) -> None:
        if self.started and self.stopped_by is None and self.current.first_stop is None:
            assert self.since is not None  # counted up to the instant of the stop
            self.current.first_stop = (self.current.elapsed, self.current.breached, self.since)
        if self.stopped_by != "closed":
            self.stopped_by = reason

    def resume(self) -> None:
        if self.stopped_by != "closed":
            self.stopped_by = None

    def restart(self, cycle: Cycle) -> bool:
        """A priority change: end the current cycle and start ``cycle``, unless stopped.

        A stopped clock keeps its cycle (a resolution clock resumed later by a
        reopen continues it). Returns whether a new cycle started.
        """
        if not self.started or self.stopped_by is not None:
            return False
        self.current.ended_at = cycle.started_at
        self.start(cycle)
        return True

    def due_at(self, as_of: datetime) -> datetime | None:
        """When elapsed reaches the target: past if reached, projected if running, else unknown."""
        cycle = self.current
        if cycle.target is None:
            return None
        if DUE in cycle.reached:
            return cycle.reached[DUE]
        if self.status != "running":
            return None
        return cycle.calendar.add_open_seconds(as_of, cycle.target - cycle.elapsed)

    def breach_at(self, as_of: datetime) -> datetime | None:
        """When elapsed passes the target: past if breached, projected if running, else unknown
        (one open second after the due instant: for business hours, the next opening's first)."""
        cycle = self.current if self.cycles else None
        if cycle is None or cycle.target is None or BREACH not in cycle.thresholds:
            return None
        if BREACH in cycle.reached:
            return cycle.reached[BREACH]
        if self.status != "running":
            return None
        return cycle.calendar.add_open_seconds(as_of, cycle.thresholds[BREACH] - cycle.elapsed)

    def next_threshold_at(self, as_of: datetime) -> datetime | None:
        """The next instant a threshold of the running cycle will be reached, with no new event."""
        if self.status != "running" or not self.cycles:
            return None
        cycle = self.current
        pending = [s for name, s in cycle.thresholds.items() if name not in cycle.reached]
        if not pending:
            return None
        return cycle.calendar.add_open_seconds(as_of, min(pending) - cycle.elapsed)
