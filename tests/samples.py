"""Valid example events of every type, as JSON-ready dicts."""

import copy
from typing import Any

BASE_TICKET = {
    "schema_version": 1,
    "occurred_at": "2026-10-30T15:30:00-04:00",
    "customer_id": "cust-1",
    "ticket_id": "T-1",
}
BASE_ACCOUNT = {"schema_version": 1, "occurred_at": "2026-10-30T15:30:00-04:00", "customer_id": "cust-1"}

DATA: dict[str, dict[str, Any]] = {
    "ticket.opened": {"priority": "medium"},
    "ticket.priority_changed": {"priority": "urgent", "reason": "outage spread"},
    "ticket.responded": {"agent_id": "agent-7"},
    "ticket.status_changed": {"status": "pending_customer"},
    "ticket.resolved": {"workaround": True},
    "ticket.reopened": {},
    "ticket.closed": {"auto": True},
    "ticket.work_logged": {
        "agent_id": "agent-7",
        "started_at": "2026-10-30T18:00:00-04:00",
        "ended_at": "2026-10-30T19:30:00-04:00",
    },
    "ticket.fault_determined": {"party": "customer"},
    "ticket.escalation_requested": {"level": 2, "requested_by": "customer"},
    "account.invoice_due": {"invoice_id": "INV-1", "due_at": "2026-11-01T00:00:00Z"},
    "account.invoice_paid": {"invoice_id": "INV-1"},
    "account.invoice_disputed": {"invoice_id": "INV-1"},
    "account.contract_changed": {"contract": "premium", "effective_from": "2026-11-01T00:00:00Z"},
}


def sample(event_type: str, event_id: str = "evt-1", **overrides: Any) -> dict[str, Any]:
    base = BASE_ACCOUNT if event_type.startswith("account.") else BASE_TICKET
    event = {
        **copy.deepcopy(base),
        "event_id": event_id,
        "type": event_type,
        "data": copy.deepcopy(DATA[event_type]),
    }
    event.update(overrides)
    return event
