"""What the SLA counters count, and when: exactly once per cause, across restarts.

Pure: the worker publishes a :class:`Tally` to Prometheus once its batch is
committed (``services.worker.sla_metrics``); ``slatrack replay`` sums the same tallies
over the log's story (``projections.story``), so both give the same totals.

A worker compares each ticket's new state with the *marks* stored in its row:
the clock cycles, breaches, escalation level and finalized charge already
counted. The new marks are written in the same transaction as the row and the
batch's offsets, and the counters move only after that transaction commits.
So a batch read again after a crash finds its marks already stored and counts
nothing twice; a crash before the commit loses the counts with the process,
which Prometheus sees as a counter reset.

- A cycle with a target is counted (evaluated; met if it had not breached;
  its elapsed seconds observed) when its clock first stops. A cycle ended by
  a priority change counts only if it had breached: a cycle that was merely
  superseded was never measured to its end. A cycle is known by its clock and
  the instant it stopped (or ended), not by its number, which a late priority
  change can shift; once counted, it stays counted (a reopened and
  re-resolved ticket is not counted twice).
- Breaches and revocations are counted by signal id (derived from the cause
  and its turn), each once. Escalations are counted by level: a level reached
  counts once; a late event that lowers the level counts a revocation of each
  level it takes back, and reaching it again counts again (escalations -
  revocations is what stands, per level).
- A finalized charge (closed, or fault determined) adds its seconds and cents;
  if a later event changes a finalized charge, the difference is added, or
  counted as credited when it went down.

Marks belong to the live counters: when a rebuild's generation becomes the
active one, it takes over the marks of the generation it replaces (in the
same transaction, see ``ReadModelStore.activate_generation``), so the workers
that follow the switch count neither what they counted before nor miss what
they skipped.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from projections.signals import revocation_id
from projections.ticket import TicketState
from projections.views import BillingRule

# A finalized charge as counted: (rule, billable seconds, cents); a JSON array in the marks.
Charge = tuple[BillingRule, int, int]


class Marks(BaseModel):
    """What the counters counted for one ticket: its row's ``marks`` column (JSON).

    Its bytes are :meth:`encode`: the fields in this order, the lists sorted by whoever
    builds it (:meth:`Tally.count_ticket`), so the same counts always store the same bytes.
    Marks stored by any version decode: a missing field is nothing counted yet.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    billing: Charge | None = None  # the finalized charge counted, if any
    cycles: list[str] = []  # the cycles counted, "response@1762095600" (ended: "...:ended")
    level: int = 0  # the escalation level counted as standing
    signals: list[str] = []  # the breach and revocation signal ids counted (this turn)

    @classmethod
    def decode(cls, raw: bytes | None) -> "Marks":
        return cls.model_validate_json(raw) if raw else cls()

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump())


@dataclass
class Tally:
    """Counts of one batch, published only once the batch is committed."""

    evaluated: Counter[tuple[str, str]] = field(default_factory=Counter)
    met: Counter[tuple[str, str]] = field(default_factory=Counter)
    elapsed: list[tuple[str, str, int]] = field(default_factory=list)
    breaches: Counter[tuple[str, str]] = field(default_factory=Counter)
    revocations: int = 0
    escalations: Counter[int] = field(default_factory=Counter)
    escalation_revocations: Counter[int] = field(default_factory=Counter)
    billed_seconds: Counter[str] = field(default_factory=Counter)
    billed_cents: Counter[str] = field(default_factory=Counter)
    credited_seconds: Counter[str] = field(default_factory=Counter)
    credited_cents: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    def count_ticket(self, state: TicketState, before: bytes | None, signals: list[dict[str, Any]]) -> bytes:
        """Count what is new about this ticket; return its new marks (JSON) for the row.

        ``signals``: the signals settled for this state (:func:`projections.signals.settle`):
        new assertions and revocations (a signal counted already is not counted again).
        """
        marks = Marks.decode(before)
        cycles = set(marks.cycles)
        for key, clock, priority, elapsed, breached in stopped_cycles(state):
            if key in cycles:
                continue
            cycles.add(key)
            self.evaluated[clock, priority] += 1
            self.met[clock, priority] += 0 if breached else 1
            self.elapsed.append((clock, priority, elapsed))
        counted = set(marks.signals)
        for signal in signals:
            kind, sid = signal["type"], signal["signal_id"]
            if kind not in ("sla.breached", "sla.breach_revoked") or sid in counted:
                continue
            counted.add(sid)
            # A breach and its revocation each count once per turn: a breach that late events
            # take back and then bring back counts again, so breaches - revocations stays right.
            if kind == "sla.breached":
                self.breaches[signal["clock"], signal["priority"]] += 1
                counted.discard(revocation_id(sid))
            else:
                self.revocations += 1
                counted.discard(signal["revokes"])
        counted_level, level = marks.level, state.level
        for raised in range(counted_level + 1, level + 1):
            self.escalations[raised] += 1
        for lowered in range(level + 1, counted_level + 1):  # a late event took them back
            self.escalation_revocations[lowered] += 1
        billing = finalized_charge(state) or marks.billing
        self._charge(marks.billing, billing)
        return Marks(billing=billing, cycles=sorted(cycles), level=level, signals=sorted(counted)).encode()

    def _charge(self, before: Charge | None, after: Charge | None) -> None:
        if before == after or after is None:
            return
        rule, seconds, cents = after
        old_seconds, old_cents = (before[1], before[2]) if before and before[0] == rule else (0, 0)
        if before and before[0] != rule:  # the charge moved to another rule
            self.credited_seconds[before[0]] += before[1]
            self.credited_cents[before[0]] += before[2]
        for added, taken, delta in (
            (self.billed_seconds, self.credited_seconds, seconds - old_seconds),
            (self.billed_cents, self.credited_cents, cents - old_cents),
        ):
            if delta > 0:
                added[rule] += delta
            elif delta < 0:
                taken[rule] -= delta

    def add(self, other: "Tally") -> None:
        """Add another tally's counts to this one (a replay sums the tallies of the log's story)."""
        for name in _COUNTERS:
            getattr(self, name).update(getattr(other, name))
        self.elapsed += other.elapsed
        self.revocations += other.revocations
        self.duplicates += other.duplicates

    def totals(self) -> dict[str, Any]:
        """Every count, JSON-ready and in a fixed order (two tallies are equal when these are)."""

        def flat(counter: Counter[Any]) -> dict[str, int]:
            return {
                "/".join(map(str, k)) if isinstance(k, tuple) else str(k): n
                for k, n in sorted(counter.items())
                if n
            }

        document: dict[str, Any] = {name: flat(getattr(self, name)) for name in _COUNTERS}
        document["elapsed"] = sorted(self.elapsed)
        document["breach_revocations"] = self.revocations
        document["duplicates"] = self.duplicates
        return document


_COUNTERS = (
    "evaluated",
    "met",
    "breaches",
    "escalations",
    "escalation_revocations",
    "billed_seconds",
    "billed_cents",
    "credited_seconds",
    "credited_cents",
)


def stopped_cycles(state: TicketState) -> list[tuple[str, str, str, int, bool]]:
    """(key, clock, priority, elapsed, breached) of each cycle that counts for attainment."""
    found: list[tuple[str, str, str, int, bool]] = []
    for clock in state.clocks.values():
        for cycle in clock.cycles:
            if cycle.target is None:
                continue
            if cycle.first_stop is not None:
                elapsed, breached, at = cycle.first_stop
                found.append(
                    (f"{clock.name}@{int(at.timestamp())}", clock.name, cycle.priority, elapsed, breached)
                )
            elif cycle is not clock.current and cycle.breached:  # ended by a priority change
                assert cycle.ended_at is not None
                key = f"{clock.name}@{int(cycle.ended_at.timestamp())}:ended"
                found.append((key, clock.name, cycle.priority, cycle.elapsed, True))
    return found


def finalized_charge(state: TicketState) -> Charge | None:
    """(rule, seconds, cents) of a settled charge (as ``billing.finalized`` defines it), else None."""
    if not state.charge_final:
        return None
    billing = state.billing
    assert billing.rule is not None  # charge_final: a rule applies
    return (billing.rule, billing.billable_seconds, billing.amount_cents)
