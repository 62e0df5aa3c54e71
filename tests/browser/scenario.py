"""The console's scripted scenario: three customers' tickets, hand-written, and what the pages must
show for them, computed by hand from the default policy (projections/default_policy.toml: business
hours Mon-Fri 09:00-17:00 America/New_York, EST = UTC-5 in November 2026; urgent's response 1 h on
24x7, high 2 h, medium 4 h and 8 h, low 8 h and 48 h on business; at risk from 75 %; a breach is
target + 1 s; uncovered_p1 bills the after-hours work of an urgent ticket dispatched outside
business hours, 1 h minimum, at 12,500 cents an hour, and is pending review until a fault is
determined).

The store is as of ``NOW``, Friday 2026-11-20 18:30 EST, after business hours: the overdue ticket's
response reached its 4 h target at 17:00 that day and breaches at 09:00:01 on Monday morning.

``tests/browser/test_scenario.py`` checks every figure here against the views the real projector
stored, so that the browser tests compare the pages with figures known to be right.
"""

from datetime import UTC, datetime
from typing import Any

from tests.feed import event

NOW = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # Fri 18:30 EST: the projector's clock
MONTH = "2026-11"

ACME, GLOBEX, INITECH = "acme", "globex", "initech"
CUSTOMERS = (ACME, GLOBEX, INITECH)

# The tokens of the scenario's app (16 characters at least): an unscoped reader, a reader limited to
# globex (a customer's portal), and a publisher without the reader role.
READER_TOKEN = "console-reader-token-0123456789"
GLOBEX_TOKEN = "console-globex-portal-token-0123"
PUBLISHER_TOKEN = "console-publisher-token-01234567"
TOKENS = [
    {"name": "ops-reader", "token": READER_TOKEN, "roles": ["reader"]},
    {"name": "globex-portal", "token": GLOBEX_TOKEN, "roles": ["reader"], "customers": [GLOBEX]},
    {"name": "helpdesk", "token": PUBLISHER_TOKEN, "roles": ["publisher"]},
]


def epoch(text: str) -> int:
    """``2026-11-20T22:00:00Z`` as epoch seconds."""
    return int(datetime.fromisoformat(text).timestamp())


def _ticket(customer: str, ticket: str, *steps: tuple[str, str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        event(f"{ticket}-{n}", type_, at, customer, ticket, **data)
        for n, (type_, at, data) in enumerate(steps, start=1)
    ]


OPENED, RESPONDED, STATUS = "ticket.opened", "ticket.responded", "ticket.status_changed"
PRIORITY, RESOLVED, CLOSED = "ticket.priority_changed", "ticket.resolved", "ticket.closed"
WORK, FAULT = "ticket.work_logged", "ticket.fault_determined"

TICKETS: dict[tuple[str, str], list[dict[str, Any]]] = {
    # Medium, Fri 13:00 EST, never answered: the response's 4 h are reached at Fri 17:00 (due), the
    # breach is Mon 09:00:01. Overdue (due passed, not breached) and at risk (warning Fri 16:00).
    (ACME, "A-OVERDUE"): _ticket(ACME, "A-OVERDUE", (OPENED, "2026-11-20T18:00:00Z", {"priority": "medium"})),
    # High, Thu 10:00 EST, never answered: due Thu 12:00, breached 12:00:01, still running
    # (escalation level 1 at the breach).
    (ACME, "A-BREACHED"): _ticket(ACME, "A-BREACHED", (OPENED, "2026-11-19T15:00:00Z", {"priority": "high"})),
    # Medium, Fri 14:00 EST, never answered: 3 h of 4 by Fri 17:00, i.e. 75 %: at risk, not overdue.
    (ACME, "A-RISK"): _ticket(ACME, "A-RISK", (OPENED, "2026-11-20T19:00:00Z", {"priority": "medium"})),
    # Low, Wed 10:00 EST, answered 11:00, pending the customer since Thu 12:00: resolution paused
    # with 10 h (Wed 7 h, Thu 3 h), no due.
    (ACME, "A-PAUSED"): _ticket(
        ACME,
        "A-PAUSED",
        (OPENED, "2026-11-18T15:00:00Z", {"priority": "low"}),
        (RESPONDED, "2026-11-18T16:00:00Z", {}),
        (STATUS, "2026-11-19T17:00:00Z", {"status": "pending_customer"}),
    ),
    # Medium, Tue 09:00 EST, answered 09:30, changed to low Tue 13:00 (the resolution clock's cycle 2
    # starts; the stopped response keeps its one cycle), pending the customer Wed 10:00-14:00.
    (ACME, "A-PRIO"): _ticket(
        ACME,
        "A-PRIO",
        (OPENED, "2026-11-17T14:00:00Z", {"priority": "medium"}),
        (RESPONDED, "2026-11-17T14:30:00Z", {}),
        (PRIORITY, "2026-11-17T18:00:00Z", {"priority": "low", "reason": "customer downgraded it"}),
        (STATUS, "2026-11-18T15:00:00Z", {"status": "pending_customer"}),
        (STATUS, "2026-11-18T19:00:00Z", {"status": "open"}),
    ),
    # Urgent, Thu 23:00 EST (outside business hours), answered 23:20: uncovered_p1, no fault
    # determined yet, so its charge is pending review.
    (ACME, "A-REVIEW"): _ticket(
        ACME,
        "A-REVIEW",
        (OPENED, "2026-11-20T04:00:00Z", {"priority": "urgent"}),
        (RESPONDED, "2026-11-20T04:20:00Z", {}),
    ),
    # Urgent, Sat 22:00 EST: uncovered_p1, 1 h 30 of after-hours work, the customer's fault: billable,
    # 5,400 s = 18,750 cents; resolved and closed (not in the queue).
    (ACME, "A-BILLED"): _ticket(
        ACME,
        "A-BILLED",
        (OPENED, "2026-11-15T03:00:00Z", {"priority": "urgent"}),
        (RESPONDED, "2026-11-15T03:30:00Z", {}),
        (
            WORK,
            "2026-11-15T05:00:00Z",
            {"started_at": "2026-11-15T03:30:00Z", "ended_at": "2026-11-15T05:00:00Z"},
        ),
        (FAULT, "2026-11-15T05:01:00Z", {"party": "customer"}),
        (RESOLVED, "2026-11-15T05:02:00Z", {}),
        (CLOSED, "2026-11-15T05:10:00Z", {}),
    ),
    # Low, Mon 10:00 EST, answered, resolved, closed the same day (not in the queue).
    (ACME, "A-DONE"): _ticket(
        ACME,
        "A-DONE",
        (OPENED, "2026-11-16T15:00:00Z", {"priority": "low"}),
        (RESPONDED, "2026-11-16T15:30:00Z", {}),
        (RESOLVED, "2026-11-16T17:00:00Z", {}),
        (CLOSED, "2026-11-16T17:05:00Z", {}),
    ),
    # High, Fri 10:00 EST, answered 10:30: the resolution clock has no target (no due).
    (GLOBEX, "G-HIGH"): _ticket(
        GLOBEX,
        "G-HIGH",
        (OPENED, "2026-11-20T15:00:00Z", {"priority": "high"}),
        (RESPONDED, "2026-11-20T15:30:00Z", {}),
    ),
    # Urgent in business hours (Fri 11:00 EST), answered in 20 min: no billing rule, no due.
    (GLOBEX, "G-URGENT"): _ticket(
        GLOBEX,
        "G-URGENT",
        (OPENED, "2026-11-20T16:00:00Z", {"priority": "urgent"}),
        (RESPONDED, "2026-11-20T16:20:00Z", {}),
    ),
    # Low, Fri 15:00 EST, never answered: 2 h of 8; due Mon 15:00 EST.
    (GLOBEX, "G-LOW"): _ticket(GLOBEX, "G-LOW", (OPENED, "2026-11-20T20:00:00Z", {"priority": "low"})),
    # Medium, Fri 12:00 EST, answered 12:10: resolution 5 h of 8, due Mon 12:00 EST.
    (INITECH, "I-MEDIUM"): _ticket(
        INITECH,
        "I-MEDIUM",
        (OPENED, "2026-11-20T17:00:00Z", {"priority": "medium"}),
        (RESPONDED, "2026-11-20T17:10:00Z", {}),
    ),
    # Medium, answered, resolved and closed on Wed (not in the queue).
    (INITECH, "I-DONE"): _ticket(
        INITECH,
        "I-DONE",
        (OPENED, "2026-11-18T14:00:00Z", {"priority": "medium"}),
        (RESPONDED, "2026-11-18T14:05:00Z", {}),
        (RESOLVED, "2026-11-18T16:00:00Z", {}),
        (CLOSED, "2026-11-18T16:10:00Z", {}),
    ),
}


# Each customer's November invoice, issued at NOW (due in December: nobody is delinquent). An
# account event concerns every ticket of its customer, so the projector tells them all as of it:
# every row is as of NOW (a stored view is as of its customer's log time, the latest of its events).
INVOICES = [
    event(
        f"INV-{customer}-2026-11",
        "account.invoice_due",
        "2026-11-20T23:30:00Z",
        customer,
        invoice_id=f"INV-{customer}-2026-11",
        due_at="2026-12-20T23:30:00Z",
    )
    for customer in CUSTOMERS
]


def events() -> list[dict[str, Any]]:
    """Every event of the scenario, in time order (a live desk's order)."""
    everything = [e for ticket in TICKETS.values() for e in ticket] + INVOICES
    return sorted(everything, key=lambda e: (e["occurred_at"], e["event_id"]))


# -- what the pages must show --------------------------------------------------------------------

# The queue: open tickets (resolved and closed ones are not in it), by their next breach: the
# earliest due_at of a clock that is not stopped (reached or projected), tickets with none last.
QUEUE_DUE: dict[str, int | None] = {
    "A-BREACHED": epoch("2026-11-19T17:00:00Z"),  # response, reached (breached at 17:00:01)
    "A-OVERDUE": epoch("2026-11-20T22:00:00Z"),  # response, reached: overdue
    "A-RISK": epoch("2026-11-23T15:00:00Z"),  # response, projected: Mon 10:00 EST
    "I-MEDIUM": epoch("2026-11-23T17:00:00Z"),  # resolution: Mon 12:00 EST
    "G-LOW": epoch("2026-11-23T20:00:00Z"),  # response: Mon 15:00 EST
    "A-PRIO": epoch("2026-11-25T22:00:00Z"),  # resolution's cycle 2 (low, 48 h): Wed 17:00 EST
    "A-PAUSED": None,  # resolution paused before its due, response stopped
    "A-REVIEW": None,  # urgent: response stopped, resolution without target
    "G-HIGH": None,
    "G-URGENT": None,
}
QUEUE = set(QUEUE_DUE)
NOT_IN_QUEUE = {"A-BILLED", "A-DONE", "I-DONE"}
CUSTOMER_OF = {ticket: customer for customer, ticket in TICKETS}
PRIORITY_OF = {
    "A-OVERDUE": "medium",
    "A-BREACHED": "high",
    "A-RISK": "medium",
    "A-PAUSED": "low",
    "A-PRIO": "low",
    "A-REVIEW": "urgent",
    "A-BILLED": "urgent",
    "A-DONE": "low",
    "G-HIGH": "high",
    "G-URGENT": "urgent",
    "G-LOW": "low",
    "I-MEDIUM": "medium",
    "I-DONE": "medium",
}

# The queue's filters (form#filters field -> value) and the rows each leaves.
FILTERS: list[tuple[dict[str, str], set[str]]] = [
    ({"customer": GLOBEX}, {"G-HIGH", "G-URGENT", "G-LOW"}),
    ({"priority": "low"}, {"A-PAUSED", "A-PRIO", "G-LOW"}),
    ({"priority": "urgent"}, {"A-REVIEW", "G-URGENT"}),
    ({"breached": "true"}, {"A-BREACHED"}),
    ({"at_risk": "true"}, {"A-OVERDUE", "A-RISK"}),
    ({"billing_status": "pending_review"}, {"A-REVIEW"}),
    ({"customer": ACME, "priority": "medium"}, {"A-OVERDUE", "A-RISK"}),
]

# Billing of the month, as GET /v1/customers/{c}/report?month=2026-11 has it (billing.total_cents).
TOTAL_CENTS = {ACME: 18_750, GLOBEX: 0, INITECH: 0}
BILLING_STATUS = {"A-BILLED": "billable", "A-REVIEW": "pending_review"}

# The ticket page's SVG: per ticket, the clocks and cycles drawn (g.clock[data-clock][data-cycle]),
# the marks (line.mark[data-kind][data-at]: the thresholds the engine records, projections/clock.py)
# and the pauses (rect.stretch[data-kind=paused][data-start][data-end]; None: still paused).
CLOCK_CYCLES: dict[str, set[tuple[str, int]]] = {
    "A-OVERDUE": {("response", 1), ("resolution", 1)},
    "A-BREACHED": {("response", 1), ("resolution", 1)},
    "A-PAUSED": {("response", 1), ("resolution", 1)},
    "A-PRIO": {("response", 1), ("resolution", 1), ("resolution", 2)},
}
MARKS: dict[str, list[tuple[str, int, str, int]]] = {  # (clock, cycle, kind, at)
    "A-OVERDUE": [
        ("response", 1, "warning", epoch("2026-11-20T21:00:00Z")),  # 75 % of 4 h: Fri 16:00 EST
        ("response", 1, "due", epoch("2026-11-20T22:00:00Z")),
    ],
    "A-BREACHED": [
        ("response", 1, "warning", epoch("2026-11-19T16:30:00Z")),
        ("response", 1, "due", epoch("2026-11-19T17:00:00Z")),
        ("response", 1, "breach", epoch("2026-11-19T17:00:01Z")),
    ],
}
PAUSES: dict[str, list[tuple[str, int, int, int | None]]] = {  # (clock, cycle, start, end)
    "A-PAUSED": [("resolution", 1, epoch("2026-11-19T17:00:00Z"), None)],
    "A-PRIO": [("resolution", 2, epoch("2026-11-18T15:00:00Z"), epoch("2026-11-18T19:00:00Z"))],
}
PRIORITY_CHANGE_AT = epoch("2026-11-17T18:00:00Z")  # A-PRIO: cycle 1 of its resolution ends here

# What the stored views hold, as of NOW (checked in test_scenario.py): per ticket and clock,
# (status, elapsed_seconds, due_at, breached, at_risk, cycles).
CLOCKS: dict[str, dict[str, tuple[str, int, str | None, bool, bool, int]]] = {
    "A-OVERDUE": {
        "response": ("running", 14_400, "2026-11-20T22:00:00Z", False, True, 1),
        "resolution": ("running", 14_400, "2026-11-23T18:00:00Z", False, False, 1),
    },
    "A-BREACHED": {
        "response": ("running", 54_000, "2026-11-19T17:00:00Z", True, False, 1),  # Thu 7 h, Fri 8 h
        "resolution": ("running", 54_000, None, False, False, 1),
    },
    "A-RISK": {
        "response": ("running", 10_800, "2026-11-23T15:00:00Z", False, True, 1),
        "resolution": ("running", 10_800, "2026-11-23T19:00:00Z", False, False, 1),
    },
    "A-PAUSED": {
        "response": ("stopped", 3_600, None, False, False, 1),
        "resolution": ("paused", 36_000, None, False, False, 1),
    },
    "A-PRIO": {
        "response": ("stopped", 1_800, None, False, False, 1),
        "resolution": ("running", 86_400, "2026-11-25T22:00:00Z", False, False, 2),
    },
    "G-LOW": {
        "response": ("running", 7_200, "2026-11-23T20:00:00Z", False, False, 1),
        "resolution": ("running", 7_200, "2026-11-30T20:00:00Z", False, False, 1),
    },
    "I-MEDIUM": {
        "response": ("stopped", 600, None, False, False, 1),
        "resolution": ("running", 18_000, "2026-11-23T17:00:00Z", False, False, 1),
    },
}
