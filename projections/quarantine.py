"""Quarantined tickets: the engine raised while evaluating one.

Bad input never gets here (the contract rejects it before the engine sees
it), so an exception from the engine is a bug. It must not stop the
partition, nor turn into a made-up view: the ticket is *quarantined*. Its
view says so, with the error and the event that triggered it, and holds no
clocks, billing or escalation. Its signals and counters stay as they were
(nothing is asserted or taken back on a state nobody could compute).

The quarantined view is a function of the ticket's events and the instant,
like any view, so the worker, a rebuild and ``slatrack replay`` agree on it:
the triggering event is the last of the ticket's history as of that instant
(the one whose arrival made the evaluation raise, for a worker reading the
log in order). A later event, or a software version that no longer raises,
heals the ticket the next time it is evaluated (README, Operations).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from projections.as_of import policy_of, ticket_at
from projections.contracts import PolicySource
from projections.policy import Policy
from projections.timeline import Recorded, TicketKey, history
from projections.views import Quarantine, QuarantinedView, TicketView

QUARANTINED: Literal["quarantined"] = "quarantined"
MAX_ERROR_CHARS = 500  # an exception's text can be long; the row keeps its start


def describe(error: BaseException) -> str:
    """The error as the row records it: its type and message (no traceback: that is logged)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def quarantined_view(
    key: TicketKey, records: Sequence[Recorded], as_of: datetime, error: BaseException, policy: Policy
) -> QuarantinedView:
    """The view of a ticket whose evaluation as of ``as_of`` raised ``error``."""
    customer, ticket = key
    told = history(records, as_of)
    trigger = told[-1].event if told else None
    return QuarantinedView(
        ticket_id=ticket,
        customer_id=customer,
        state=QUARANTINED,
        quarantine=Quarantine(
            error=describe(error),
            event_id=trigger.event_id if trigger is not None else None,
            event_type=trigger.type if trigger is not None else None,
        ),
        contract=policy.contract,
        policy_version=policy.version,
        policy_digest=policy.digest,
    )


def view_at(
    key: TicketKey,
    records: Sequence[Recorded],
    account: Sequence[Recorded],
    source: PolicySource,
    as_of: datetime,
) -> dict[str, Any] | None:
    """A ticket's view as of ``as_of`` from its events and its customer's account events
    (None if not opened by then; the quarantined view if the engine raises), as a JSON
    document: what a row's ``view`` column decodes to."""
    view: TicketView | QuarantinedView | None
    try:
        state = ticket_at(records, account, source, as_of)
        view = None if state is None else state.view()
    except Exception as error:
        view = quarantined_view(key, records, as_of, error, policy_of(records, account, source, as_of))
    return None if view is None else view.document()
