"""What the SLA counters count, and when: exactly once per cause, across restarts.

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
- Breaches and revocations are counted by signal id (derived from the cause),
  escalations by level reached: each once.
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

from projections.signals import revocation_id
from projections.ticket import TicketState
from services import metrics

# {"cycles": ["response@1762095600", ...], "signals": [counted breach/revocation ids],
#  "level": highest escalation level counted, "billing": [rule, seconds, cents] | None}
Marks = dict[str, Any]


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

    def count_ticket(self, state: TicketState, before: bytes | None, signals: list[dict[str, Any]]) -> bytes:
        """Count what is new about this ticket; return its new marks (JSON) for the row.

        ``signals``: every signal the state asserts, and the revocations of breaches it no longer does.
        """
        marks: Marks = orjson.loads(before) if before else {}
        cycles = set(marks.get("cycles", []))
        for key, clock, priority, elapsed, breached in stopped_cycles(state):
            if key in cycles:
                continue
            cycles.add(key)
            self.evaluated[clock, priority] += 1
            self.met[clock, priority] += 0 if breached else 1
            self.elapsed.append((clock, priority, elapsed))
        counted = set(marks.get("signals", []))
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
        level = max(marks.get("level", 0), state.level)
        for raised in range(marks.get("level", 0) + 1, level + 1):
            self.escalations[raised] += 1
        billing = finalized_charge(state) or marks.get("billing")
        self._charge(marks.get("billing"), billing)
        return orjson.dumps(
            {"billing": billing, "cycles": sorted(cycles), "level": level, "signals": sorted(counted)}
        )

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


def finalized_charge(state: TicketState) -> list | None:
    """[rule, seconds, cents] of a settled charge (as ``billing.finalized`` defines it), else None."""
    if not state.charge_final:
        return None
    billing = state.billing
    return [billing.rule, billing.billable_seconds, billing.amount_cents]
