"""The auditor's replay: a whole history in, every ticket and customer view out.

Pure: the caller reads the file (or the topic) and hands over the events with
their recording positions; the same input gives the same document, byte for
byte once serialised with sorted-free, insertion-ordered JSON.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from projections.account import AccountStanding
from projections.as_of import standing_at
from projections.contracts import Contracts, PolicySource, contracts_of
from projections.counting import Tally
from projections.policy import Policy
from projections.quarantine import quarantined_view
from projections.story import story_of_log
from projections.ticket import TicketState, evaluate, utc
from projections.timeline import Recorded, TicketKey, by_ticket, dedupe, history, whole_second
from projections.views import QuarantinedView, TicketView


def latest_instant(records: Iterable[Recorded]) -> datetime | None:
    return max((r.at for r in records), default=None)


def customer_view(
    customer_id: str, standing: AccountStanding, tickets: list[TicketView | QuarantinedView]
) -> dict[str, Any]:
    """A customer's standing and billing per month (from its ticket views)."""
    months: dict[str, dict[str, int]] = {}
    for ticket in tickets:
        if not isinstance(ticket, TicketView):
            continue  # a quarantined ticket has no billing
        billing = ticket.billing
        if billing.month is None:
            continue
        month = months.setdefault(billing.month, {"amount_cents": 0, "billable_seconds": 0})
        month["amount_cents"] += billing.amount_cents
        month["billable_seconds"] += billing.billable_seconds
    return {
        "customer_id": customer_id,
        "delinquent": standing.delinquent,
        "dashboard_suspended": standing.dashboard_suspended,
        "billing": dict(sorted(months.items())),
    }


def replay(
    records: list[Recorded],
    source: PolicySource,
    as_of: datetime | None = None,
    rejected: int = 0,
    *,
    breaches: bool = False,
    signals: bool = False,
) -> dict[str, Any]:
    """``{"as_of", "policy_version", "tickets", "customers", "rejected"}`` for a whole history.

    ``as_of`` defaults to the latest ``occurred_at`` in the history. A later
    copy of an event id with another body than the first (per customer, in
    recording order: :func:`projections.timeline.dedupe`) is not an event: it
    counts in ``rejected``. With ``breaches``, the document also lists every
    breached cycle (``"breaches"``: ticket, customer, clock, cycle, instant),
    which the views do not show and a what-if comparison
    (:mod:`projections.compare`) needs. With ``signals``, it also has the
    log's story (:mod:`projections.story`): ``"signals"`` (every signal a
    worker sends, in order), ``"standing_signals"`` (the ids that stand at
    the end) and ``"counters"`` (the SLA counters' totals).

    ``source``: one policy for everything, or contracts (projections.contracts): each ticket is
    measured against the version of its customer's contract in force at its dispatch, and the
    document lists the versions (``"policies"``) and their digest. ``"policy_version"`` is the
    default contract's base, or the override's (which measures every ticket); contracts with
    no version are the one policy, so that their document is the one policy's, byte for byte.
    """
    contracts = contracts_of(source)
    policy = contracts.override if contracts.override is not None else contracts.base
    deduped = dedupe(records)
    rejected += len(deduped.conflicts)
    kept = deduped.kept
    as_of = whole_second(as_of) if as_of is not None else latest_instant(kept)
    tickets, accounts = by_ticket(kept)
    # A customer appears once one of its events counts.
    customers = {r.event.customer_id for r in kept if as_of is not None and r.at <= as_of}
    extra: dict[str, Any] = {"breaches": []} if breaches else {}
    if as_of is None:
        empty: dict[str, Any] = {
            "as_of": None,
            "policy_version": policy.version,
            **_policies(contracts),
            "tickets": [],
            "customers": [],
        }
        if signals:
            extra |= {"signals": [], "standing_signals": [], "counters": Tally().totals()}
        return {**empty, "rejected": rejected} | extra

    # One standing per customer and policy (projections.as_of, as ticket_at has it): the customer's
    # own is with the rules of the contract it is on at as_of.
    standings: dict[tuple[str, int], AccountStanding] = {}

    def standing(customer: str, policy: Policy) -> AccountStanding:
        key = (customer, id(policy))
        if key not in standings:
            standings[key] = standing_at(accounts.get(customer, ()), policy, as_of)
        return standings[key]

    views: list[TicketView | QuarantinedView] = []
    breached: list[dict[str, Any]] = []
    for key in sorted(tickets, key=display_order):
        customer, _ = key
        view: TicketView | QuarantinedView
        state: TicketState | None
        account = accounts.get(customer, [])
        mine = contracts.policy_for(tickets[key], account, as_of)
        try:
            state = evaluate(history(tickets[key], as_of), mine, as_of, standing(customer, mine))
            if state is None:
                continue
            view = state.view()
        except Exception as error:  # a bug of the engine: the ticket is quarantined, as a worker has it
            state, view = None, quarantined_view(key, tickets[key], as_of, error, mine)
        views.append(view)
        found = _breaches(state) if breaches and state is not None else []
        ids = {"ticket_id": view.ticket_id, "customer_id": view.customer_id}
        breached += [{**ids, **breach} for breach in found]
    by_customer: dict[str, list[TicketView | QuarantinedView]] = {}
    for view in views:
        by_customer.setdefault(view.customer_id, []).append(view)
    if breaches:
        extra["breaches"] = breached
    if signals:
        told = story_of_log(kept, contracts, as_of)
        extra |= {
            "signals": told.signals,
            "standing_signals": sorted(told.standing()),
            "counters": told.tally.totals(),
        }
    return {
        "as_of": utc(as_of),
        "policy_version": policy.version,
        **_policies(contracts),
        "tickets": [view.document() for view in views],
        "customers": [
            customer_view(
                c, standing(c, _customer_policy(contracts, accounts, c, as_of)), by_customer.get(c, [])
            )
            for c in sorted(customers)
        ],
        "rejected": rejected,
    } | extra


def _customer_policy(
    contracts: Contracts, accounts: dict[str, list[Recorded]], customer: str, as_of: datetime
) -> Policy:
    return contracts.customer_policy(accounts.get(customer, []), as_of)


def _policies(contracts: Contracts) -> dict[str, Any]:
    """The versions a document was computed with, and their digest (none: the one policy, the
    base or the override, measures everything: the document is that policy's)."""
    if not contracts.versions:
        return {}
    return {
        "policies": [version.listing() for version in contracts.versions],
        "policies_digest": contracts.digest,
    }


def _breaches(state: TicketState) -> list[dict[str, Any]]:
    """The breached cycles (for a what-if); none if the engine raises listing them (the view stands)."""
    try:
        return state.breaches()
    except Exception:
        return []


def display_order(key: TicketKey) -> tuple[str, str]:
    """Tickets are listed by ticket id, then customer (a ticket id may exist under two customers)."""
    customer, ticket = key
    return (ticket, customer)
