"""The auditor's replay: a whole history in, every ticket and customer view out.

Pure: the caller reads the file (or the topic) and hands over the events with
their recording positions; the same input gives the same document, byte for
byte once serialised with sorted-free, insertion-ordered JSON.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from events.models import ACCOUNT_EVENT_TYPES
from projections.account import AccountStanding, account_standing
from projections.policy import Policy
from projections.ticket import evaluate, utc
from projections.timeline import Recorded, history, whole_second


def latest_instant(records: Iterable[Recorded]) -> datetime | None:
    return max((r.at for r in records), default=None)


def customer_view(
    customer_id: str, standing: AccountStanding, tickets: list[dict[str, Any]]
) -> dict[str, Any]:
    """A customer's standing and billing per month (from its ticket views)."""
    months: dict[str, dict[str, int]] = {}
    for ticket in tickets:
        billing = ticket["billing"]
        if billing["month"] is None:
            continue
        month = months.setdefault(billing["month"], {"amount_cents": 0, "billable_seconds": 0})
        month["amount_cents"] += billing["amount_cents"]
        month["billable_seconds"] += billing["billable_seconds"]
    return {
        "customer_id": customer_id,
        "delinquent": standing.delinquent,
        "dashboard_suspended": standing.dashboard_suspended,
        "billing": dict(sorted(months.items())),
    }


def replay(
    records: list[Recorded],
    policy: Policy,
    as_of: datetime | None = None,
    rejected: int = 0,
    *,
    breaches: bool = False,
) -> dict[str, Any]:
    """``{"as_of", "policy_version", "tickets", "customers", "rejected"}`` for a whole history.

    ``as_of`` defaults to the latest ``occurred_at`` in the history. With
    ``breaches``, the document also lists every breached cycle (``"breaches"``:
    ticket, customer, clock, cycle, instant), which the views do not show and
    a what-if comparison (:mod:`projections.compare`) needs.
    """
    as_of = whole_second(as_of) if as_of is not None else latest_instant(history(records))
    tickets: dict[str, list[Recorded]] = {}
    accounts: dict[str, list[Recorded]] = {}
    customers: set[str] = set()
    for record in records:
        event = record.event
        if as_of is not None and whole_second(event.occurred_at) <= as_of:
            customers.add(event.customer_id)  # a customer appears once one of its events counts
        if event.type in ACCOUNT_EVENT_TYPES:
            accounts.setdefault(event.customer_id, []).append(record)
        else:
            tickets.setdefault(event.ticket_id, []).append(record)
    if as_of is None:
        empty = {"as_of": None, "policy_version": policy.version, "tickets": [], "customers": []}
        return {**empty, "rejected": rejected} | ({"breaches": []} if breaches else {})

    standings = {
        customer: account_standing(history(accounts.get(customer, ()), as_of), policy, as_of)
        for customer in sorted(customers)
    }
    views, breached = [], []
    for ticket_id in sorted(tickets):
        ordered = history(tickets[ticket_id], as_of)
        state = evaluate(ordered, policy, as_of, _standing_of(ordered, standings))
        if state is not None:
            view = state.view()
            views.append(view)
            if breaches:
                ids = {"ticket_id": view["ticket_id"], "customer_id": view["customer_id"]}
                breached += [{**ids, **breach} for breach in state.breaches()]
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        by_customer.setdefault(view["customer_id"], []).append(view)
    return {
        "as_of": utc(as_of),
        "policy_version": policy.version,
        "tickets": views,
        "customers": [customer_view(c, standings[c], by_customer.get(c, [])) for c in sorted(customers)],
        "rejected": rejected,
    } | ({"breaches": breached} if breaches else {})


def _standing_of(ordered: list[Recorded], standings: dict[str, AccountStanding]) -> AccountStanding | None:
    # A ticket belongs to the customer named by the ticket.opened event that
    # applies: the first in order.
    opened = next((r.event for r in ordered if r.event.type == "ticket.opened"), None)
    return standings.get(opened.customer_id) if opened is not None else None
