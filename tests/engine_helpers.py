"""Helpers for the SLA engine tests: build histories as dicts, decode them, replay them.

Events are written as JSON-ready dicts, decoded through the event contract
(``events.decode_event``) and recorded with increasing ``seq`` in the order
they are added, as a log would record them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from events import decode_event
from projections.policy import Policy, default_policy
from projections.replay import replay
from projections.ticket import evaluate
from projections.timeline import Recorded

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
H = 3600
M = 60
DAY = 86_400


def ny(text: str) -> datetime:
    """A New York wall time ('2026-10-30 15:30' or with seconds) as an aware datetime (fold=0)."""
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def z(instant: datetime) -> str:
    """How the views print an instant: UTC, whole seconds, Z."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(instant: datetime) -> str:
    """An instant as an event carries it (its own offset kept)."""
    text = instant.isoformat()
    return text.removesuffix("+00:00") + "Z" if instant.tzinfo is UTC else text


def decode(event: dict[str, Any]):
    return decode_event(orjson.dumps(event))


class Story:
    """A log under construction: one or several tickets and their customers' accounts."""

    def __init__(self, ticket_id: str = "T-1", customer_id: str = "cust-1", policy: Policy | None = None):
        self.ticket_id = ticket_id
        self.customer_id = customer_id
        self.policy = policy or default_policy()
        self.dicts: list[dict[str, Any]] = []
        self.records: list[Recorded] = []
        self._ids = 0

    # -- adding events ----------------------------------------------------------

    def add(
        self,
        type_: str,
        at: datetime | str,
        data: dict[str, Any] | None = None,
        *,
        ticket_id: str | None = None,
        customer_id: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        self._ids += 1
        event: dict[str, Any] = {
            "event_id": event_id or f"e-{self._ids}",
            "type": type_,
            "schema_version": 1,
            "occurred_at": at if isinstance(at, str) else rfc3339(at),
            "customer_id": customer_id or self.customer_id,
            "data": dict(data or {}),
        }
        if type_.startswith("ticket."):
            event["ticket_id"] = ticket_id or self.ticket_id
        self.record(event)
        return event

    def record(self, event: dict[str, Any]) -> None:
        """Record one event (a dict) at the next position of the log."""
        self.dicts.append(copy.deepcopy(event))
        self.records.append(Recorded(len(self.records), decode(event)))

    def opened(self, at, priority: str = "medium", **data: Any) -> dict[str, Any]:
        route = _route(data)
        return self.add("ticket.opened", at, {"priority": priority, **_dates(data)}, **route)

    def responded(self, at, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.responded", at, {}, **kw)

    def status(self, at, status: str, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.status_changed", at, {"status": status}, **kw)

    def priority(self, at, priority: str, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.priority_changed", at, {"priority": priority}, **kw)

    def resolved(self, at, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.resolved", at, {}, **kw)

    def reopened(self, at, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.reopened", at, {}, **kw)

    def closed(self, at, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.closed", at, {}, **kw)

    def work(self, start: datetime, end: datetime, at: datetime | None = None, **kw: Any) -> dict[str, Any]:
        data = {"started_at": rfc3339(start), "ended_at": rfc3339(end)}
        return self.add("ticket.work_logged", at or end, data, **kw)

    def fault(self, at, party: str, **kw: Any) -> dict[str, Any]:
        return self.add("ticket.fault_determined", at, {"party": party}, **kw)

    def escalation_request(self, at, level: int, by: str = "customer", **kw: Any) -> dict[str, Any]:
        return self.add("ticket.escalation_requested", at, {"level": level, "requested_by": by}, **kw)

    def invoice_due(self, at, invoice_id: str, due_at: datetime, **kw: Any) -> dict[str, Any]:
        return self.add(
            "account.invoice_due", at, {"invoice_id": invoice_id, "due_at": rfc3339(due_at)}, **kw
        )

    def invoice_paid(self, at, invoice_id: str, **kw: Any) -> dict[str, Any]:
        return self.add("account.invoice_paid", at, {"invoice_id": invoice_id}, **kw)

    def invoice_disputed(self, at, invoice_id: str, **kw: Any) -> dict[str, Any]:
        return self.add("account.invoice_disputed", at, {"invoice_id": invoice_id}, **kw)

    def contract(self, at, contract: str, effective_from: datetime, **kw: Any) -> dict[str, Any]:
        data = {"contract": contract, "effective_from": rfc3339(effective_from)}
        return self.add("account.contract_changed", at, data, **kw)

    # -- reading results ---------------------------------------------------------

    def replay(self, as_of: datetime | None = None, policy: Policy | None = None) -> dict[str, Any]:
        return replay(list(self.records), policy or self.policy, as_of)

    def view(
        self, as_of: datetime, ticket_id: str | None = None, policy: Policy | None = None
    ) -> dict[str, Any]:
        """The ticket view at ``as_of``, through the whole replay (so account standing applies)."""
        wanted = ticket_id or self.ticket_id
        document = self.replay(as_of, policy)
        found = [t for t in document["tickets"] if t["ticket_id"] == wanted]
        assert found, f"ticket {wanted} not in the replay at {as_of}"
        return found[0]

    def customer(self, as_of: datetime, customer_id: str | None = None) -> dict[str, Any]:
        wanted = customer_id or self.customer_id
        document = self.replay(as_of)
        found = [c for c in document["customers"] if c["customer_id"] == wanted]
        assert found, f"customer {wanted} not in the replay at {as_of}"
        return found[0]

    def state(self, as_of: datetime, ticket_id: str | None = None, policy: Policy | None = None):
        """The engine's TicketState for one ticket (no account standing)."""
        wanted = ticket_id or self.ticket_id
        mine = [r for r in self.records if getattr(r.event, "ticket_id", None) == wanted]
        return evaluate(mine, policy or self.policy, as_of)

    def clock(self, as_of: datetime, name: str, ticket_id: str | None = None) -> dict[str, Any]:
        return self.view(as_of, ticket_id)["clocks"][name]


def _route(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data.pop(key) for key in ("ticket_id", "customer_id", "event_id") if key in data}


def _dates(data: dict[str, Any]) -> dict[str, Any]:
    if "install_date" in data and not isinstance(data["install_date"], str):
        data["install_date"] = data["install_date"].isoformat()
    return data


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)
