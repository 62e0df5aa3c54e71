"""A ticket as of an instant, from its own events and its customer's account events: the
customer's account standing at that instant first, then the engine with it. One way, for every
reader of the log: the worker's rows, the API's ``?as_of=``, a rebuild's check, ``slatrack
replay`` and ``slatrack explain`` (a standing computed another way would be another view).
"""

from collections.abc import Iterable
from datetime import datetime

from projections.account import AccountStanding, account_standing
from projections.contracts import PolicySource, contracts_of
from projections.policy import Policy
from projections.ticket import TicketState, evaluate
from projections.timeline import Recorded, history


def standing_at(account: Iterable[Recorded], policy: Policy, as_of: datetime) -> AccountStanding:
    """The customer's account standing at ``as_of`` from its account events, in any order,
    duplicates allowed (put in order and cut at ``as_of`` here)."""
    return account_standing(history(account, as_of), policy, as_of)


def ticket_at(
    records: Iterable[Recorded], account: Iterable[Recorded], source: PolicySource, as_of: datetime
) -> TicketState | None:
    """The ticket as of ``as_of`` (None if not opened by then): ``records`` its own events and
    ``account`` its customer's account events, each in any order, duplicates allowed; measured
    against the version of its contract in force at its dispatch (projections.contracts). Raises
    what the engine raises (a bug: the callers quarantine the ticket, projections.quarantine)."""
    records, account = list(records), list(account)
    policy = contracts_of(source).policy_for(records, account, as_of)
    return evaluate(records, policy, as_of, standing_at(account, policy, as_of))


def policy_of(
    records: Iterable[Recorded], account: Iterable[Recorded], source: PolicySource, as_of: datetime
) -> Policy:
    """The policy that measures the ticket as of ``as_of`` (what its view names)."""
    return contracts_of(source).policy_for(list(records), list(account), as_of)
