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


# --- the policy topic's events ------------------------------------------------------------------


def policy_text(version: str = "amended-2026.2", urgent_response: str = "2h") -> str:
    """The packaged default policy, renamed ``version``, with urgent tickets given
    ``urgent_response`` to respond (the default gives them 1h)."""
    from importlib import resources

    text = resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")
    amended = text.replace('version = "default-2026.1"', f'version = "{version}"').replace(
        'response = { target = "1h", calendar = "24x7" }',
        f'response = {{ target = "{urgent_response}", calendar = "24x7" }}',
    )
    assert amended.count(version) == 1 and f'"{urgent_response}"' in amended, "the default policy changed"
    return amended


def policy_sample(
    text: str | None = None,
    contract: str = "default",
    effective_from: str = "2026-11-01T00:00:00Z",
    event_id: str = "pol-1",
    **overrides: Any,
) -> dict[str, Any]:
    """A ``policy.version_published`` (its digest and version those of ``text``; of a text that is
    no policy, a digest of zeros and the version ``x``)."""
    from projections.policy import PolicyError, parse_policy

    text = policy_text() if text is None else text
    try:
        version, digest = (policy := parse_policy(text)).version, policy.digest
    except PolicyError:
        version, digest = "x", "sha256:" + "0" * 64
    event = {
        "event_id": event_id,
        "type": "policy.version_published",
        "schema_version": 1,
        "occurred_at": "2026-10-30T12:00:00Z",
        "contract": contract,
        "effective_from": effective_from,
        "retroactive": False,
        "policy_version": version,
        "digest": digest,
        "policy": text,
    }
    event.update(overrides)
    return event
