"""The audit trail of one ticket: every event, what it did, and a digest of the inputs.

:func:`explain` replays a ticket exactly as the views are computed (same
history, same account standing, same engine) and lays out the engine's
*effects* (:class:`projections.ticket.Effect`) per step, in the order they
were applied, so that every number of the final view can be traced to an
event or to time passing. docs/audit.md describes every effect kind and how
to recompute the digest by hand.

Pure like the rest of ``projections``: the caller hands over the events and
the instant; the same input gives the same document.
"""

import hashlib
from collections.abc import Iterable
from datetime import datetime
from fractions import Fraction
from typing import Any

from events import ACCOUNT_EVENT_TYPES, Event, encode_event
from events.models import AccountContractChanged
from projections.account import account_standing
from projections.as_of import policy_of, ticket_at
from projections.billing import Billing, bill, merge
from projections.contracts import DEFAULT_CONTRACT, PolicySource
from projections.policy import Policy, canonical_policy
from projections.quarantine import quarantined_view
from projections.ticket import Effect, TicketState, due_from_start, utc
from projections.timeline import Recorded, history, is_opening, opening, whole_second

TIME, SUSPENSION = "time", "account.suspension"  # entry types of what happens without an event


def explain(
    records: list[Recorded], account: list[Recorded], source: PolicySource, as_of: datetime
) -> dict[str, Any] | None:
    """The audit trail of a ticket as of ``as_of``; None if it was not opened by then.

    ``records`` are the ticket's own recorded events and ``account`` its
    customer's account events (others are left out), in any order, duplicates
    allowed: the history is put in order here, as for the views. ``source``: one
    policy, or contracts (the ticket is measured against the version of its
    customer's contract in force at its dispatch, as for the views).
    """
    as_of = whole_second(as_of)
    ordered = history(records, as_of)
    opened = opening(ordered)
    if opened is None or not is_opening(opened.event):
        return None
    customer, ticket_id = opened.event.customer_id, opened.event.ticket_id
    invoices = history([r for r in account if _is_account_event_of(r.event, customer)], as_of)
    policy = policy_of(ordered, invoices, source, as_of)
    try:
        return _explained(ordered, records, invoices, source, policy, as_of)
    except Exception as error:  # a bug of the engine: the ticket is quarantined (projections.quarantine)
        view = quarantined_view((customer, ticket_id), records, as_of, error, policy)
        return {
            "ticket_id": ticket_id,
            "customer_id": customer,
            "as_of": utc(as_of),
            **_contract(policy),
            "policy_version": policy.version,
            "quarantine": view.quarantine.document(),
            "view": view.document(),
        }


def _explained(
    ordered: list[Recorded],
    records: list[Recorded],
    invoices: list[Recorded],
    source: PolicySource,
    policy: Policy,
    as_of: datetime,
) -> dict[str, Any]:
    state = ticket_at(ordered, invoices, source, as_of)  # measured with ``policy`` (policy_of)
    assert state is not None and state.opened is not None
    opening, customer = state.opened, state.opened.customer_id
    ticket_events = [step for _, step in state.steps if not isinstance(step, str)]
    # Account events count only for a ticket that a suspension can pause (same test as the engine).
    # Contract changes count for every ticket: they chose the policy.
    counted = [
        r.event
        for r in invoices
        if state.opened.data.category in _paused(policy) or isinstance(r.event, AccountContractChanged)
    ]
    return {
        "ticket_id": opening.ticket_id,
        "customer_id": customer,
        "as_of": utc(as_of),
        **_contract(policy),
        "policy_version": policy.version,
        "digest": digest(ticket_events, counted, policy),
        "digest_inputs": {"ticket_events": len(ticket_events), "account_events": len(counted)},
        "entries": _entries(state, records, invoices, policy),
        "events_after_as_of": len(
            {r.event.event_id for r in history(records)} - {e.event_id for e in ticket_events}
        ),
        "view": state.view().document(),
        "billing": billing_explained(state, policy),
        "time_zone": policy.calendar(policy.billing.month_calendar).tz.key,
        "cycles": cycles_explained(state),
    }


# -- the digest ---------------------------------------------------------------------


def digest(ticket_events: Iterable[Event], account_events: Iterable[Event], policy: Policy) -> str:
    """``sha256:`` of each event's canonical bytes followed by a newline, then the canonical policy.

    Ticket events in applied order, then account events in applied order: the
    same events in any order or with duplicates give the same digest, and any
    changed event or policy setting a different one.
    """
    sha = hashlib.sha256()
    for event in (*ticket_events, *account_events):
        sha.update(encode_event(event) + b"\n")
    sha.update(canonical_policy(policy))
    if policy.contract != DEFAULT_CONTRACT or policy.effective_from is not None:
        # A published version: which contract it is of, and from when, count too.
        sha.update(f"\n{policy.contract} {utc(policy.effective_from)}".encode())
    return "sha256:" + sha.hexdigest()


def _contract(policy: Policy) -> dict[str, Any]:
    """Which contract's version measures the ticket (the policy file's ``version`` follows)."""
    found: dict[str, Any] = {"contract": policy.contract, "effective_from": utc(policy.effective_from)}
    if policy.requested_contract is not None:
        found["contract_requested"] = policy.requested_contract
    return found


# -- the entries --------------------------------------------------------------------


def _entries(
    state: TicketState, records: list[Recorded], invoices: list[Recorded], policy: Policy
) -> list[dict[str, Any]]:
    """One entry per step (event or suspension boundary), per instant a threshold was reached
    with no event, and per ignored duplicate copy; in time order, ties as the engine applied them."""
    first = {r.event.event_id: r for r in history(records)}  # the copy of each event that counts
    steps: list[dict[str, Any]] = [_step_entry(at, step, first) for at, step in state.steps]
    by_instant: dict[datetime, dict[str, Any]] = {}
    for effect in state.effects:
        rendered = _effect(effect, state)
        if effect.step is not None:
            steps[effect.step]["effects"].append(rendered)
        else:  # time passing: one entry per instant
            entry = by_instant.setdefault(effect.at, _entry(effect.at, None, TIME, None))
            entry["effects"].append(rendered)
    _add_billing(steps, state, policy)
    _add_suspension_causes(steps, state, invoices, policy)
    # Thresholds reached at a step's instant were reached before it (the engine
    # counts time up to each step first); duplicate copies come last.
    keyed = [((at, 0, 0), entry) for at, entry in by_instant.items()]
    keyed += [((at, 1, index), steps[index]) for index, (at, _) in enumerate(state.steps)]
    keyed += [((r.at, 2, r.seq), entry) for r, entry in _duplicates(records, state.as_of, first)]
    return [entry for _, entry in sorted(keyed, key=lambda item: item[0])]


def _entry(at: datetime, event_id: str | None, kind: str, position: int | None) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "occurred_at": utc(at), "position": position, "effects": []}


def _step_entry(at: datetime, step: Any, first: dict[str, Recorded]) -> dict[str, Any]:
    if isinstance(step, str):  # a suspension boundary of the customer's account
        return _entry(at, None, SUSPENSION, None)
    return _entry(at, step.event_id, step.type, first[step.event_id].seq)


def _effect(effect: Effect, state: TicketState) -> dict[str, Any]:
    rendered = {"effect": effect.kind, **effect.as_view()}
    for key in ("at", "event_id"):  # the entry says when and which event
        del rendered[key]
    if effect.kind == "clock_started":
        # The engine does not compute this (it costs a calendar walk on every
        # ticket); a clock that starts running falls due target open seconds later.
        cycle = state.clocks[effect.detail["clock"]].cycles[effect.detail["cycle"] - 1]
        rendered["due_at"] = utc(due_from_start(cycle)) if effect.detail["status"] == "running" else None
    return rendered


def _duplicates(
    records: list[Recorded], as_of: datetime, first: dict[str, Recorded]
) -> list[tuple[Recorded, dict[str, Any]]]:
    """Later copies of an event_id, at or before as_of: ignored, naming the copy that counts."""
    seen: set[tuple[str, int]] = set()
    found = []
    for record in records:
        event_id = record.event.event_id
        kept = first[event_id]
        if record.seq == kept.seq or record.at > as_of or (event_id, record.seq) in seen:
            continue
        seen.add((event_id, record.seq))
        entry = _entry(record.at, event_id, record.event.type, record.seq)
        reason = f"duplicate event_id: the copy recorded first (position {kept.seq}) is the event"
        if kept.at > as_of:
            reason += ", and it occurred after the as-of instant"
        entry["effects"].append({"effect": "ignored", "reason": reason})
        found.append((record, entry))
    return found


# -- the cycles ---------------------------------------------------------------------


def cycles_explained(state: TicketState) -> list[dict[str, Any]]:
    """Each cycle of each clock: when it ran, and when its calendar was closed while it ran.

    ``counting`` is where the clock counted, read from the effects (a clock runs from a
    ``clock_started``, ``cycle_restarted`` or ``clock_resumed`` whose status is running until a
    ``clock_paused``, a ``clock_stopped``, the next cycle or the as-of instant); ``closed`` the
    parts of those stretches where the cycle's calendar is closed (projections.calendar): the
    clock ran but did not count. Their open seconds add up to the cycle's elapsed seconds.
    """
    spans: dict[tuple[str, int], list[list[datetime]]] = {}
    running: dict[str, tuple[int, datetime] | None] = {}
    ends: dict[tuple[str, int], datetime] = {}
    current: dict[str, int] = {}  # the cycle each clock is in, as the effects go

    def halt(clock: str, at: datetime) -> None:
        since = running.get(clock)
        if since is not None:
            if at > since[1]:
                spans.setdefault((clock, since[0]), []).append([since[1], at])
            running[clock] = None

    for effect in state.effects:
        detail, at = effect.detail, effect.at
        clock = detail.get("clock")
        if not isinstance(clock, str):
            continue
        if effect.kind in ("clock_started", "cycle_restarted"):
            halt(clock, at)
            if effect.kind == "cycle_restarted":
                ends[(clock, detail["cycle"] - 1)] = at
            current[clock] = detail["cycle"]
            running[clock] = (detail["cycle"], at) if detail["status"] == "running" else None
        elif effect.kind == "clock_resumed" and detail.get("status", "running") == "running":
            halt(clock, at)
            running[clock] = (current[clock], at)
        elif effect.kind in ("clock_paused", "clock_stopped"):
            halt(clock, at)
    for clock in list(running):
        halt(clock, state.as_of)
    found: list[dict[str, Any]] = []
    for name, clock_state in state.clocks.items():
        for number, cycle in enumerate(clock_state.cycles, start=1):
            counting = spans.get((name, number), [])
            closed = [
                [start, end]
                for begin, stop in counting
                for start, end, is_open in cycle.calendar.parts(begin, stop)
                if not is_open
            ]
            found.append(
                {
                    "clock": name,
                    "cycle": number,
                    "priority": cycle.priority,
                    "target_seconds": cycle.target,
                    "calendar": cycle.calendar_name,
                    "time_zone": cycle.calendar.tz.key,
                    "started_at": utc(cycle.started_at),
                    "ended_at": utc(ends.get((name, number))),
                    "elapsed_seconds": cycle.elapsed,
                    "counting": [[utc(a), utc(b)] for a, b in counting],
                    "closed": [[utc(a), utc(b)] for a, b in closed],
                }
            )
    return found


# -- billing ------------------------------------------------------------------------


def _add_billing(steps: list[dict[str, Any]], state: TicketState, policy: Policy) -> None:
    """After each work log and fault determination: what it added to the billable seconds.

    Done here rather than in the engine, which would otherwise bill the
    ticket again at every work log of every ticket it evaluates.
    """
    assert state.opened is not None and state.opened_at is not None
    rule, handling = state.billing.rule, state.opened.data.priority_handling_requested
    logged, party = 0, None
    before = bill(policy, rule, state.opened_at, [], handling, None)
    for entry in steps:
        kinds = {e["effect"]: e for e in entry["effects"]}
        if "work_logged" not in kinds and "fault_determined" not in kinds:
            continue
        logged += "work_logged" in kinds
        party = kinds["fault_determined"]["party"] if "fault_determined" in kinds else party
        after = bill(policy, rule, state.opened_at, state.work[:logged], handling, party)
        entry["effects"].append(
            {
                "effect": "billable_added",
                "rule": rule,
                "status": after.status,
                "seconds": after.billable_seconds - before.billable_seconds,
                "billable_seconds": after.billable_seconds,
                "amount_cents": after.amount_cents,
                "minimum_applied": _minimum_applied(after, handling),
            }
        )
        before = after


def _counted(billing: Billing, priority_handling: bool) -> tuple[str, int]:
    """What the rule bills before its minimum: all the work, or its after-hours part."""
    if billing.rule == "new_install" and priority_handling:
        return "all_work", billing.worked_seconds
    return "after_hours", billing.after_hours_seconds


def _minimum_applied(billing: Billing, priority_handling: bool) -> bool:
    return billing.status == "billable" and billing.billable_seconds > _counted(billing, priority_handling)[1]


def billing_explained(state: TicketState, policy: Policy) -> dict[str, Any]:
    """How the view's billing was computed: rule and why, work, minimum, rate, rounding."""
    assert state.opened is not None and state.opened_at is not None
    result, settings, data = state.billing, policy.billing, state.opened.data
    document: dict[str, Any] = {
        "rule": result.rule,
        "why": _why_rule(state, policy),
        "status": result.status,
        "month": result.month,
        "work": [[utc(start), utc(end)] for start, end in merge(state.work)],
        "worked_seconds": result.worked_seconds,
        "after_hours_seconds": result.after_hours_seconds,
        "after_hours_calendar": settings.after_hours_calendar,
    }
    if result.rule is None:
        return document
    rule = settings.new_install if result.rule == "new_install" else settings.uncovered_p1
    counted, seconds = _counted(result, data.priority_handling_requested)
    document |= {"counted": counted, "counted_seconds": seconds}
    document |= {"minimum_seconds": rule.minimum, "minimum_applies": rule.minimum_applies}
    document["minimum_applied"] = _minimum_applied(result, data.priority_handling_requested)
    if result.rule == "uncovered_p1":
        document |= {
            "fault_party": state.fault_party,
            "waived_parties": list(settings.uncovered_p1.waived_parties),
        }
    rate = settings.rate_cents_per_hour
    exact = Fraction(result.billable_seconds * rate, 3600)
    document |= {"billable_seconds": result.billable_seconds, "rate_cents_per_hour": rate}
    document |= {"exact_cents": _decimal(exact), "rounding": "half up to the cent"}
    document["amount_cents"] = result.amount_cents
    return document


def _why_rule(state: TicketState, policy: Policy) -> str:
    assert state.opened is not None
    data, rule, at = state.opened.data, state.billing.rule, utc(state.opened_at)
    calendar = policy.billing.after_hours_calendar
    if rule == "new_install":
        asked = [f for f in ("after_hours_requested", "priority_handling_requested") if getattr(data, f)]
        return f"a new_install ticket opened with {' and '.join(asked)}"
    if rule == "uncovered_p1":
        return f"dispatched at {at} with priority {state.dispatch_priority}, outside the {calendar} calendar"
    if data.category == "new_install":
        return "a new_install ticket opened without after-hours support or priority handling requested"
    if state.dispatch_priority == policy.billing.uncovered_p1.priority:
        return f"dispatched at {at} with priority {state.dispatch_priority}, inside the {calendar} calendar"
    return f"dispatched with priority {state.dispatch_priority}: no billing rule applies"


def _decimal(value: Fraction, places: int = 6) -> str:
    """A fraction as a decimal, exactly when it has at most ``places`` decimals, else cut and marked."""
    scaled = value * 10**places
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    text = f"{whole // 10**places}.{whole % 10**places:0{places}d}".rstrip("0").rstrip(".")
    return text if rest == 0 else text + "…"


# -- the account ---------------------------------------------------------------------


def _is_account_event_of(event: Event, customer: str) -> bool:
    return event.type in ACCOUNT_EVENT_TYPES and event.customer_id == customer


def _paused(policy: Policy) -> set[str]:
    return set(policy.suspension.paused_categories)


def _add_suspension_causes(
    steps: list[dict[str, Any]], state: TicketState, invoices: list[Recorded], policy: Policy
) -> None:
    """Name the invoices behind each suspension start, and the events that ended it.

    The engine only sees the union of the overdue stretches; each invoice's own
    stretches come from the same rules applied to its events alone.
    """
    by_invoice: dict[str, list[Recorded]] = {}
    for record in invoices:
        by_invoice.setdefault(getattr(record.event.data, "invoice_id", ""), []).append(record)
    stretches = {
        invoice: account_standing(records, policy, state.as_of).suspensions
        for invoice, records in by_invoice.items()
    }
    for entry, (at, _) in zip(steps, state.steps, strict=True):
        if entry["type"] != SUSPENSION:
            continue
        boundary = entry["effects"][0]
        if boundary["effect"] == "suspension_started":
            boundary["invoices"] = sorted(
                invoice
                for invoice, spans in stretches.items()
                if any(start <= at and (end is None or at < end) for start, end in spans)
            )
        else:
            boundary["events"] = [r.event.event_id for r in invoices if r.at == at]
