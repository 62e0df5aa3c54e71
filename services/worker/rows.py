"""Row mapping: a ticket's engine state (or its lack of one) and a customer's standing as the
rows of the read models (services.worker.ports: TicketRow, CustomerRow), with the instants
that make the timers look again (``next_change_at``, ``account_until``).

Instants are integer epoch seconds in the rows (:func:`epoch`, :func:`instant_of`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from projections.as_of import standing_at
from projections.policy import ClockName, Policy
from projections.quarantine import quarantined_view
from projections.signals import Ledger
from projections.story import FOREVER
from projections.ticket import TicketState
from projections.timeline import Recorded, TicketKey, opening, whole_second
from projections.views import PendingView, QuarantinedView, TicketView
from services.worker.histories import partition_of
from services.worker.ports import FOREVER as FOREVER_EPOCH
from services.worker.ports import NEVER, CustomerRow, TicketRow

QUARANTINE_RETRY_S = 300  # how often a quarantined ticket is tried again as time passes


def epoch(instant: datetime | None) -> int | None:
    return None if instant is None else int(instant.timestamp())


def instant_of(epoch_seconds: int | None) -> datetime | None:
    return None if epoch_seconds is None else datetime.fromtimestamp(epoch_seconds, UTC)


@dataclass(frozen=True)
class _Schedule:
    """When a row's ticket changes next, derived from its state (not part of its view)."""

    dues: dict[ClockName, datetime | None]
    next_change: datetime | None
    reach: datetime | None  # account_until
    # Each clock's breach instant: past if breached, projected if running (the queue's order).
    breaches: dict[ClockName, datetime | None]

    @staticmethod
    def of(state: TicketState, records: list[Recorded], at: datetime) -> "_Schedule":
        future_events = [r.at for r in records if r.at > at]
        upcoming = [t for t in (state.next_change_at(), min(future_events, default=None)) if t is not None]
        dues = {name: state.clocks[name].due_at(at) for name in state.clocks}
        breaches = {name: state.clocks[name].breach_at(at) for name in state.clocks}
        return _Schedule(dues, min(upcoming, default=None), state.account_until(FOREVER), breaches)

    @staticmethod
    def unknown(at: datetime) -> "_Schedule":
        """The engine raised working it out: look again soon, and let any account change reach it."""
        return _Schedule({}, at + timedelta(seconds=QUARANTINE_RETRY_S), FOREVER, {})


def _ticket_row(
    state: TicketState,
    view: TicketView,
    schedule: _Schedule,
    records: list[Recorded],
    at: datetime,
    ledger: Ledger,
    marks: bytes | None,
) -> TicketRow:
    clocks, billing = view.clocks, view.billing
    named = clocks.named()
    dues = {name: schedule.dues.get(name) for name in named}
    running_dues = [due for name, due in dues.items() if due is not None and named[name].status == "running"]
    pending_dues = [due for due in running_dues if due > at]
    running_breaches = [
        breach
        for name, breach in schedule.breaches.items()
        if breach is not None and name in named and named[name].status == "running"
    ]
    upcoming = [schedule.next_change] if schedule.next_change is not None else []
    reach = schedule.reach
    return TicketRow(
        ticket_id=view.ticket_id,
        customer_id=view.customer_id,
        partition=partition_of(records[0]),
        priority=view.priority,
        category=view.category,
        state=view.state,
        status=view.status,
        escalation_level=view.escalation.level,
        response_status=clocks.response.status,
        resolution_status=clocks.resolution.status,
        breached=clocks.breached,
        at_risk=clocks.at_risk,
        response_due_at=epoch(dues["response"]),
        resolution_due_at=epoch(dues["resolution"]),
        next_due_at=epoch(min(pending_dues, default=None)),
        queue_due_at=epoch(min(running_dues, default=None)),
        next_change_at=epoch(min(upcoming, default=None)),
        billing_rule=billing.rule,
        billing_status=billing.status,
        billing_month=billing.month,
        amount_cents=billing.amount_cents,
        billable_seconds=billing.billable_seconds,
        opened_at=epoch(state.opened_at) or 0,
        evaluated_at=epoch(at) or 0,
        view=view.encode(),
        signals=ledger.encode(),
        response_at_risk=clocks.response.at_risk,
        response_breached=clocks.response.breached,
        resolution_at_risk=clocks.resolution.at_risk,
        resolution_breached=clocks.resolution.breached,
        marks=marks or b"{}",
        account_until=NEVER if reach is None else epoch(reach) or 0,
        queue_breach_at=epoch(min(running_breaches, default=None)),
    )


def _pending_row(
    key: TicketKey, records: list[Recorded], as_of: datetime, before: TicketRow | None
) -> TicketRow:
    customer, ticket = key
    ahead = [r.at for r in records if r.at > as_of]
    opened = opening(records)
    opens_at = whole_second(opened.event.occurred_at).strftime("%Y-%m-%dT%H:%M:%SZ") if opened else None
    view = PendingView(ticket_id=ticket, customer_id=customer, state="pending", opens_at=opens_at)
    # What the row asserted and counted before stays: a view that is only not opened *yet*
    # takes nothing back.
    return _row_without_state(
        key,
        records,
        as_of,
        view,
        next_change_at=epoch(min(ahead, default=None)),
        signals=before.signals if before is not None else b"{}",
        marks=before.marks if before is not None else b"{}",
    )


def _quarantined_row(
    key: TicketKey,
    records: list[Recorded],
    as_of: datetime,
    policy: Policy,
    error: Exception,
    ledger: Ledger,
    marks: bytes | None,
) -> TicketRow:
    """A ticket the engine raised on: its view says so (projections.quarantine). Its signals
    and counts stay as they were; it is evaluated again at its next event, or as of the wall
    clock after QUARANTINE_RETRY_S (a fixed version of the engine heals it then)."""
    return _row_without_state(
        key,
        records,
        as_of,
        quarantined_view(key, records, as_of, error, policy),
        next_change_at=(epoch(as_of) or 0) + QUARANTINE_RETRY_S,
        signals=ledger.encode(),
        marks=marks or b"{}",
    )


def _row_without_state(
    key: TicketKey,
    records: list[Recorded],
    as_of: datetime,
    view: PendingView | QuarantinedView,
    *,
    next_change_at: int | None,
    signals: bytes,
    marks: bytes,
) -> TicketRow:
    """The row of a ticket with no engine state as of ``as_of`` (pending, quarantined): no
    clocks, billing or escalation; any account change can reach it."""
    customer, ticket = key
    return TicketRow(
        ticket_id=ticket,
        customer_id=customer,
        partition=partition_of(records[0]),
        priority="",
        category="",
        state=view.state,
        status="",
        escalation_level=0,
        response_status="",
        resolution_status="",
        breached=False,
        at_risk=False,
        response_due_at=None,
        resolution_due_at=None,
        next_due_at=None,
        queue_due_at=None,
        next_change_at=next_change_at,
        billing_rule=None,
        billing_status="none",
        billing_month=None,
        amount_cents=0,
        billable_seconds=0,
        opened_at=0,
        evaluated_at=epoch(as_of) or 0,
        view=view.encode(),
        signals=signals,
        marks=marks,
        account_until=FOREVER_EPOCH,
    )


def _customer_row(
    customer: str,
    partition: int,
    policy: Policy,
    at: datetime,
    accounts: list[Recorded],
    log_time: datetime | None,
    switches: Sequence[datetime] = (),
) -> CustomerRow:
    """``switches``: the instants from which the customer's rules may change with no new event
    (its contract changes' and its contracts' versions' effective instants)."""
    standing = standing_at(accounts, policy, at)
    future = [r.at for r in accounts if r.at > at] + [t for t in switches if t > at]
    upcoming = [t for t in (standing.next_change_at, min(future, default=None)) if t is not None]
    view = {
        "customer_id": customer,
        "delinquent": standing.delinquent,
        "dashboard_suspended": standing.dashboard_suspended,
    }
    return CustomerRow(
        customer_id=customer,
        partition=partition,
        delinquent=standing.delinquent,
        dashboard_suspended=standing.dashboard_suspended,
        next_change_at=epoch(min(upcoming, default=None)),
        evaluated_at=epoch(at) or 0,
        view=orjson.dumps(view),
        log_time=epoch(log_time),
    )
