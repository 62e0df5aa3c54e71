"""A customer's account standing, from its invoice events (policy §11).

An invoice counts against the customer from its ``due_at`` on, until an
``account.invoice_paid`` (or, with ``disputed_invoices_exempt``, an
``account.invoice_disputed``) event. The customer is *delinquent* while such
an invoice is more than ``delinquent_after_days`` past due, and
*dashboard-suspended* while one is ``dashboard_suspended_at_days`` or more.
Days are 86 400 s of real time.

Each invoice event takes effect when it occurred: a later
``account.invoice_due`` for the same invoice moves its due date from then on,
never in the past.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from events.models import AccountInvoiceDisputed, AccountInvoiceDue, AccountInvoicePaid
from projections.policy import Policy
from projections.timeline import Recorded, whole_second

Interval = tuple[datetime, datetime | None]  # [start, end); None: still open
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class AccountStanding:
    delinquent: bool
    dashboard_suspended: bool
    # When the customer's suspendable tickets are paused: the union of every
    # invoice's "more than N days past due" stretches, in order.
    suspensions: tuple[Interval, ...]
    # The next instant after as_of at which delinquent or dashboard_suspended
    # changes with no new event (None: not without one).
    next_change_at: datetime | None = None


def _by_invoice(history: Iterable[Recorded]) -> dict[str, list[Recorded]]:
    """The account events of each invoice, in the order given."""
    by_invoice: dict[str, list[Recorded]] = {}
    for record in history:
        invoice_id = getattr(record.event.data, "invoice_id", None)
        if invoice_id is not None:
            by_invoice.setdefault(invoice_id, []).append(record)
    return by_invoice


def account_standing(history: Iterable[Recorded], policy: Policy, as_of: datetime) -> AccountStanding:
    """The standing at ``as_of``, from account events already in order and cut at ``as_of``."""
    rules = policy.suspension
    by_invoice = _by_invoice(history)

    delinquent_after = timedelta(seconds=rules.delinquent_after_seconds)
    suspended_at = timedelta(seconds=rules.dashboard_suspended_at_seconds)
    stretches: list[Interval] = []
    delinquent = dashboard = False
    ahead: list[datetime] = []
    for records in by_invoice.values():
        for start, end, due in _owing(records, rules.disputed_invoices_exempt):
            # Strictly more than N days: the stretch starts at due + N days.
            begin = max(start, due + delinquent_after)
            if end is None or begin < end:
                stretches.append((begin, end))
            if end is None or as_of < end:
                delinquent |= as_of - due > delinquent_after and as_of >= start
                dashboard |= as_of - due >= suspended_at and as_of >= start
                # The flags flip at begin + 1 s (more than N days) and at due + M days.
                ahead += [t for t in (begin + _SECOND, max(start, due + suspended_at)) if t > as_of]
    return AccountStanding(delinquent, dashboard, tuple(_union(stretches)), min(ahead, default=None))


def _owing(
    records: list[Recorded], disputes_exempt: bool
) -> list[tuple[datetime, datetime | None, datetime]]:
    """Stretches [start, end) during which the invoice was due at ``due`` and not settled."""
    stretches: list[tuple[datetime, datetime | None, datetime]] = []
    due: datetime | None = None
    since: datetime | None = None
    for record in records:
        event, at = record.event, record.at
        if isinstance(event, AccountInvoiceDue):
            if due is not None and since is not None:
                stretches.append((since, at, due))
            due, since = whole_second(event.data.due_at), at
        elif isinstance(event, AccountInvoicePaid) or (
            isinstance(event, AccountInvoiceDisputed) and disputes_exempt
        ):
            if due is not None and since is not None:
                stretches.append((since, at, due))
            return stretches  # settled for good
    if due is not None and since is not None:
        stretches.append((since, None, due))
    return stretches


def _union(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals, key=lambda i: i[0]):
        if merged and (merged[-1][1] is None or start <= merged[-1][1]):
            last_start, last_end = merged[-1]
            merged[-1] = (last_start, None if end is None or last_end is None else max(last_end, end))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class Owing:
    """An invoice counting against the customer at an instant (why it is delinquent or
    dashboard-suspended, or will be): :func:`owing_invoices`."""

    invoice_id: str
    due_at: datetime
    since: datetime  # when the event that made it due at ``due_at`` occurred
    overdue_seconds: int  # as of the instant asked about, since ``due_at`` (negative: not due yet)
    delinquent: bool  # it makes the customer delinquent (more than N days past due)
    dashboard_suspended: bool  # it suspends the customer's dashboard (M days or more)


def owing_invoices(history: Iterable[Recorded], policy: Policy, as_of: datetime) -> list[Owing]:
    """The invoices not settled at ``as_of`` (from account events already in order and cut at
    ``as_of``, as :func:`account_standing` takes them), by due date then invoice id. The
    standing's flags are exactly ``any`` of theirs: the same stretches, the same comparisons."""
    rules = policy.suspension
    by_invoice = _by_invoice(history)
    delinquent_after = timedelta(seconds=rules.delinquent_after_seconds)
    suspended_at = timedelta(seconds=rules.dashboard_suspended_at_seconds)
    found: list[Owing] = []
    for invoice_id, records in by_invoice.items():
        for start, end, due in _owing(records, rules.disputed_invoices_exempt):
            if as_of < start or (end is not None and as_of >= end):
                continue  # not the stretch in force at as_of
            found.append(
                Owing(
                    invoice_id=invoice_id,
                    due_at=due,
                    since=start,
                    overdue_seconds=int((as_of - due).total_seconds()),
                    delinquent=as_of - due > delinquent_after,
                    dashboard_suspended=as_of - due >= suspended_at,
                )
            )
    return sorted(found, key=lambda owing: (owing.due_at, owing.invoice_id))
