"""What the SLA counters count, and when: exactly once per cause, across restarts.

A worker compares each ticket's new state with the *marks* stored in its row:
the clock cycles already counted and the finalized charge already counted.
The new marks are written in the same transaction as the row and the batch's
offsets, and the counters move only after that transaction commits. So a
batch read again after a crash finds its marks already stored and counts
nothing twice; a crash before the commit loses the counts with the process,
which Prometheus sees as a counter reset.

- A cycle with a target is counted (evaluated; met if it had not breached;
  its elapsed seconds observed) when its clock first stops. A cycle ended by
  a priority change counts only if it had breached: a cycle that was merely
  superseded was never measured to its end. Marks of cycles are kept once
  set, so a reopened and re-resolved ticket is not counted twice.
- Breaches, revocations and escalations are counted from the signals the
  batch records for the first time (their ids are derived from their causes).
- A finalized charge (closed, or fault determined) adds its seconds and cents;
  if a later event changes a finalized charge, the difference is added, or
  counted as credited when it went down.

Rows carry marks in rebuilds too (a rebuild counts nothing itself), so a live
worker that follows a rebuild's switch finds the same marks.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from projections.ticket import TicketState
from services import metrics

Marks = dict[str, Any]  # {"cycles": ["response:1", ...], "billing": [rule, seconds, cents] | None}


@dataclass
class Tally:
    """Counts of one batch, published only once the batch is committed."""

    evaluated: Counter[tuple[str, str]] = field(default_factory=Counter)
    met: Counter[tuple[str, str]] = field(default_factory=Counter)
    elapsed: list[tuple[str, str, int]] = field(default_factory=list)
    breaches: Counter[tuple[str, str]] = field(default_factory=Counter)
    revocations: int = 0
    escalations: Counter[int] = field(default_factory=Counter)
    billed_seconds: Counter[str] = field(default_factory=Counter)
    billed_cents: Counter[str] = field(default_factory=Counter)
    credited_seconds: Counter[str] = field(default_factory=Counter)
    credited_cents: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    def count_ticket(self, state: TicketState, before: bytes | None, fresh: list[dict[str, Any]]) -> bytes:
        """Count what is new about this ticket; return its new marks (JSON) for the row."""
        marks: Marks = orjson.loads(before) if before else {}
        counted = set(marks.get("cycles", []))
        for key, clock, priority, elapsed, breached in stopped_cycles(state):
            if key in counted:
                continue
            counted.add(key)
            self.evaluated[clock, priority] += 1
            self.met[clock, priority] += 0 if breached else 1
            self.elapsed.append((clock, priority, elapsed))
        for signal in fresh:
            kind = signal["type"]
            if kind == "sla.breached":
                self.breaches[signal["clock"], signal["priority"]] += 1
            elif kind == "sla.breach_revoked":
                self.revocations += 1
            elif kind == "escalation.raised":
                self.escalations[signal["level"]] += 1
        billing = finalized_charge(state) or marks.get("billing")
        self._charge(marks.get("billing"), billing)
        return orjson.dumps({"billing": billing, "cycles": sorted(counted)})

    def _charge(self, before: list | None, after: list | None) -> None:
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

    def publish(self) -> None:
        """Move the Prometheus counters (call after the batch committed)."""
        for (clock, priority), n in self.evaluated.items():
            metrics.SLA_TARGETS_EVALUATED.labels(clock=clock, priority=priority).inc(n)
        for (clock, priority), n in self.met.items():
            metrics.SLA_TARGETS_MET.labels(clock=clock, priority=priority).inc(n)
        for clock, priority, seconds in self.elapsed:
            metrics.SLA_ELAPSED.observe(clock, priority, seconds)
        for (clock, priority), n in self.breaches.items():
            metrics.SLA_BREACHES.labels(clock=clock, priority=priority).inc(n)
        metrics.SLA_BREACH_REVOCATIONS.inc(self.revocations)
        for level, n in self.escalations.items():
            metrics.ESCALATIONS.labels(level=str(level)).inc(n)
        for counter, values in (
            (metrics.BILLABLE_SECONDS, self.billed_seconds),
            (metrics.BILLED_AMOUNT, self.billed_cents),
            (metrics.BILLABLE_CREDITED_SECONDS, self.credited_seconds),
            (metrics.BILLED_CREDITED, self.credited_cents),
        ):
            for rule, n in values.items():
                counter.labels(rule=rule).inc(n)
        metrics.EVENTS_DUPLICATE.inc(self.duplicates)


def stopped_cycles(state: TicketState) -> list[tuple[str, str, str, int, bool]]:
    """(key, clock, priority, elapsed, breached) of each cycle that counts for attainment."""
    found = []
    for clock in state.clocks.values():
        for number, cycle in enumerate(clock.cycles, start=1):
            if cycle.target is None:
                continue
            key = f"{clock.name}:{number}"
            if cycle.first_stop is not None:
                elapsed, breached = cycle.first_stop
                found.append((key, clock.name, cycle.priority, elapsed, breached))
            elif cycle is not clock.current and cycle.breached:  # ended by a priority change
                found.append((key, clock.name, cycle.priority, cycle.elapsed, True))
    return found


def finalized_charge(state: TicketState) -> list | None:
    """[rule, seconds, cents] of a settled charge (as ``billing.finalized`` defines it), else None."""
    billing = state.billing
    if billing.rule is None or not (state.state == "closed" or state.fault_party is not None):
        return None
    return [billing.rule, billing.billable_seconds, billing.amount_cents]
