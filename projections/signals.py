"""SLA signals: what a ticket's replayed state asserts, for notification systems.

Each signal's id is a hash of its *cause* (customer, ticket, clock, cycle,
what happened and at which instant), never of when it was computed: a rebuild, a restart or a
second worker derives the same id for the same cause, so downstream
consumers can deduplicate, and the outbox records each id once.

- ``sla.warning``: a cycle reached its warning threshold;
- ``sla.breached``: a cycle's elapsed time exceeded its target;
- ``escalation.raised``: the ticket reached an escalation level (one per level and cause);
- ``billing.finalized``: the charge is settled (fault determined, or ticket
  closed) — a later change of the amount is a new cause, hence a new signal;
- ``sla.breach_revoked`` and ``escalation.revoked``: a breach or an
  escalation asserted earlier is no longer there, or no longer at that
  instant (a late event changed the outcome, or a rebuild under another
  policy recomputed it). Each names the signal it revokes and why.

A ticket's :class:`Ledger` (kept in its row) records what it asserts and how
often each cause was revoked: a breach revoked and later true again is a new
*turn* of the same cause, with an id of its own, so it is sent again.
:func:`settle` compares a new state with the ledger and returns the signals to
send, in the order of the instants they describe. Every field of a signal is
a function of the log (docs/signals.md); the relay adds only ``late_by_seconds``.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from projections.clock import BREACH, DUE, WARNING, Cycle
from projections.ticket import TicketState, utc
from projections.timeline import Recorded

# Asserted kinds that a later state can take back, and the signal that says so.
REVOCATIONS = {"sla.breached": "sla.breach_revoked", "escalation.raised": "escalation.revoked"}
# Within one instant: a warning before the breach, the breach before the escalation it raises;
# a breach taken back before the escalation it had raised.
_RANK = {
    "sla.warning": 0,
    "sla.breached": 1,
    "escalation.raised": 2,
    "billing.finalized": 3,
    "sla.breach_revoked": 4,
    "escalation.revoked": 5,
}
# Why a revocation: a late event (named in "because"), or a rebuild that recomputed the ticket.
LATE_EVENT, REBUILD = "late_event", "rebuild"


def signal_id(*cause: object) -> str:
    return hashlib.sha256("\x1f".join(str(part) for part in cause).encode()).hexdigest()[:32]


def asserted(state: TicketState) -> dict[str, dict[str, Any]]:
    """Every signal the state asserts, by cause id (the id of its first turn)."""
    assert state.opened is not None
    ticket, customer = state.opened.ticket_id, state.opened.customer_id
    base = {
        "ticket_id": ticket,
        "customer_id": customer,
        "policy_version": state.policy.version,
        "policy_digest": state.policy.digest,
    }
    signals: dict[str, dict[str, Any]] = {}
    for clock in state.clocks.values():
        for number, cycle in enumerate(clock.cycles, start=1):
            for threshold, kind in ((WARNING, "sla.warning"), (BREACH, "sla.breached")):
                if threshold in cycle.reached:
                    at = utc(cycle.reached[threshold])
                    # The instant is part of the cause: a late event that moves a breach takes
                    # the old one back and asserts the new one.
                    signals[signal_id(kind, customer, ticket, clock.name, number, at)] = {
                        "type": kind,
                        **base,
                        "clock": clock.name,
                        "cycle": number,
                        "at": at,
                        "priority": cycle.priority,
                        "target_seconds": cycle.target,
                        "due_at": utc(_due(cycle, threshold)),
                    }
    for escalation in state.escalations:
        if escalation.entitled:
            at = utc(escalation.at)
            cause = signal_id("escalation.raised", customer, ticket, escalation.level, escalation.cause, at)
            signals[cause] = {
                "type": "escalation.raised",
                **base,
                "clock": escalation.clock,
                "cycle": escalation.cycle,
                "at": at,
                "level": escalation.level,
                "cause": escalation.cause,
            }
    billing = state.billing
    if state.charge_final:
        cause = signal_id(
            "billing.finalized", customer, ticket, billing.rule, billing.status, billing.amount_cents
        )
        signals[cause] = {
            "type": "billing.finalized",
            **base,
            "clock": None,
            "cycle": None,
            "at": utc(state.billing_at),
            "rule": billing.rule,
            "status": billing.status,
            "amount_cents": billing.amount_cents,
            "billable_seconds": billing.billable_seconds,
            "month": billing.month,
        }
    return signals


def _due(cycle: Cycle, threshold: str) -> datetime | None:
    """When the cycle falls due, as known at the threshold: reached (a breach), or, for a
    warning, projected from it as if the clock keeps running (whatever happens later, so
    that the warning says the same however late it is found)."""
    if threshold == BREACH or cycle.target is None:
        return cycle.reached.get(DUE)
    return cycle.calendar.add_open_seconds(
        cycle.reached[threshold], cycle.target - cycle.thresholds[threshold]
    )


def turn_id(cause: str, turn: int) -> str:
    """The id of a cause's ``turn``-th assertion (the first keeps the cause's own id)."""
    return cause if turn == 0 else signal_id(cause, "turn", turn)


def revocation_id(revoked: str) -> str:
    """The id of the signal that revokes the signal ``revoked``."""
    return signal_id("revoked", revoked)


@dataclass
class Ledger:
    """What a ticket asserts (signal id -> what it is), and each cause's revocations so far."""

    asserted: dict[str, dict[str, Any]] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps({"asserted": self.asserted, "turns": self.turns}, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def decode(cls, raw: bytes | None) -> "Ledger":
        document = orjson.loads(raw) if raw else {}
        return cls(dict(document.get("asserted", {})), dict(document.get("turns", {})))


def _summary(cause: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of an asserted signal: enough to say what a revocation takes back."""
    keep = ("type", "clock", "cycle", "at", "level", "policy_version")
    return {"cause": cause, **{k: body[k] for k in keep if k in body}}


def settle(
    ledger: Ledger,
    state: TicketState,
    at: datetime,
    because: Sequence[Recorded] = (),
) -> tuple[Ledger, list[dict[str, Any]]]:
    """The ledger after ``state`` (the ticket as of ``at``), and the signals to send for it.

    New causes are asserted; revocable signals the ledger holds and the state
    no longer asserts are revoked (``because``: the events applied since the
    ledger was last settled, which the revocation names; with none, time alone
    cannot take anything back, so the ledger was settled under another policy
    and the revocation's reason is ``rebuild``). A signal already in
    the ledger is not sent again; a superseded warning or final charge simply
    leaves it. A cause that comes back after leaving is a new turn.
    """
    assert state.opened is not None
    now = asserted(state)
    turns = dict(ledger.turns)
    by_cause = {summary["cause"]: sid for sid, summary in ledger.asserted.items()}
    kept: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for cause, body in now.items():
        sid = by_cause.get(cause) or turn_id(cause, turns.get(cause, 0))
        kept[sid] = _summary(cause, body)
        if sid not in ledger.asserted:
            out.append({"signal_id": sid, **body})
    for sid, summary in ledger.asserted.items():
        if sid in kept:
            continue
        # Not asserted any more: if it comes back, it is a new turn, with an id of its own.
        turns[summary["cause"]] = turns.get(summary["cause"], 0) + 1
        if summary["type"] in REVOCATIONS:
            out.append(_revocation(state, sid, summary, at, because, LATE_EVENT if because else REBUILD))
    out.sort(key=lambda s: (s["at"], _RANK[s["type"]], s["signal_id"]))
    return Ledger(dict(sorted(kept.items())), dict(sorted(turns.items()))), out


def _revocation(
    state: TicketState,
    sid: str,
    summary: dict[str, Any],
    at: datetime,
    because: Sequence[Recorded],
    reason: str,
) -> dict[str, Any]:
    assert state.opened is not None
    revoked = {k: v for k, v in summary.items() if k != "cause"}
    return {
        "signal_id": revocation_id(sid),
        "type": REVOCATIONS[summary["type"]],
        "ticket_id": state.opened.ticket_id,
        "customer_id": state.opened.customer_id,
        "policy_version": state.policy.version,
        "policy_digest": state.policy.digest,
        "clock": summary.get("clock"),
        "cycle": summary.get("cycle"),
        "at": utc(at),
        "revokes": sid,
        "revoked": revoked,
        "reason": reason,
        "because": [
            {"event_id": r.event.event_id, "type": r.event.type, "occurred_at": utc(r.at)} for r in because
        ],
    }
