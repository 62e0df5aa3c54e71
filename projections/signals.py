"""SLA signals: what a ticket's replayed state asserts, for notification systems.

Each signal's id is a hash of its *cause* (ticket, clock, cycle, what
happened), never of when it was computed: a rebuild, a restart or a second
worker derives the same id for the same cause, so downstream consumers can
deduplicate, and the outbox records each cause once.

- ``sla.warning``: a cycle reached its warning threshold;
- ``sla.breached``: a cycle's elapsed time exceeded its target;
- ``sla.breach_revoked``: a breach asserted earlier is no longer there (a
  late event changed the outcome);
- ``escalation.raised``: the ticket reached an escalation level;
- ``billing.finalized``: the charge is settled (fault determined, or ticket
  closed) — a later change of the amount is a new cause, hence a new signal.
"""

import hashlib
from typing import Any

from projections.clock import BREACH, DUE, WARNING
from projections.ticket import TicketState, utc


def signal_id(*cause: object) -> str:
    return hashlib.sha256("\x1f".join(str(part) for part in cause).encode()).hexdigest()[:32]


def asserted(state: TicketState) -> dict[str, dict[str, Any]]:
    """Every signal the state asserts, by id (breaches, warnings, levels, final billing)."""
    assert state.opened is not None
    ticket, customer = state.opened.ticket_id, state.opened.customer_id
    base = {"ticket_id": ticket, "customer_id": customer, "policy_version": state.policy.version}
    signals: dict[str, dict[str, Any]] = {}
    for clock in state.clocks.values():
        for number, cycle in enumerate(clock.cycles, start=1):
            common = {
                **base,
                "clock": clock.name,
                "cycle": number,
                "priority": cycle.priority,
                "target_seconds": cycle.target,
                "due_at": utc(cycle.reached.get(DUE)),
            }
            for threshold, kind in ((WARNING, "sla.warning"), (BREACH, "sla.breached")):
                if threshold in cycle.reached:
                    sid = signal_id(kind, ticket, clock.name, number)
                    signals[sid] = {
                        "signal_id": sid,
                        "type": kind,
                        **common,
                        "at": utc(cycle.reached[threshold]),
                    }
    for escalation in state.escalations:
        if escalation.entitled:
            sid = signal_id("escalation.raised", ticket, escalation.level, escalation.cause)
            signals[sid] = {
                "signal_id": sid,
                "type": "escalation.raised",
                **base,
                "level": escalation.level,
                "cause": escalation.cause,
                "at": utc(escalation.at),
            }
    billing = state.billing
    if state.charge_final:
        sid = signal_id("billing.finalized", ticket, billing.rule, billing.status, billing.amount_cents)
        signals[sid] = {
            "signal_id": sid,
            "type": "billing.finalized",
            **base,
            "rule": billing.rule,
            "status": billing.status,
            "amount_cents": billing.amount_cents,
            "billable_seconds": billing.billable_seconds,
            "month": billing.month,
        }
    return signals


def revocation_id(breach_id: str) -> str:
    """The id of ``sla.breach_revoked`` for the breach ``breach_id``."""
    return signal_id("sla.breach_revoked", breach_id)


def breach_ids(signals: dict[str, dict[str, Any]]) -> set[str]:
    return {sid for sid, body in signals.items() if body["type"] == "sla.breached"}


def revoked(
    before: set[str], now: dict[str, dict[str, Any]], ticket_id: str, customer_id: str
) -> dict[str, dict[str, Any]]:
    """``sla.breach_revoked`` for each breach asserted before and not any more."""
    signals = {}
    for sid in sorted(before - breach_ids(now)):
        rid = revocation_id(sid)
        signals[rid] = {
            "signal_id": rid,
            "type": "sla.breach_revoked",
            "revokes": sid,
            "ticket_id": ticket_id,
            "customer_id": customer_id,
        }
    return signals
