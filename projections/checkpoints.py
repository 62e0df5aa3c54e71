"""Checkpoints: a ticket's engine state kept after the last step it applied, so that a newly
arrived event is applied to it instead of replaying the ticket's whole history.

A replay (:meth:`projections.ticket.TicketState.run`) applies its steps in order (the events,
and the suspension boundaries of the account standing), letting time pass up to each, then lets
time pass up to ``as_of``. A :class:`Checkpoint` is the state after its steps and *before* that
last stretch of time: the state as of any later instant is a clone of it, advanced to that
instant (:meth:`TicketState.pass_time`), and a later step is applied to it as the replay would
apply it after the others.

That is the same state a full replay gives only when the replay would apply the checkpoint's
steps first, exactly as it did, and then the new ones (:func:`continuation`). Everything a
replay takes from its as-of instant besides the last stretch of time is checked there:

* the events that count (``history(records, as_of)``: first copies, cut at ``as_of``);
* the suspension boundaries that apply by ``as_of`` (the others are "ahead");
* logged work, billed up to ``as_of`` at most (cut work is "ahead").

Anything else (an event out of order, another policy, other suspension stretches, an earlier
instant, work cut at the checkpoint's instant) is a full replay, which makes a new checkpoint.
Validity is decided from the arguments alone (the records, policy, standing and instant given),
never from what the caller believes about them: a cache holding a stale checkpoint gives the
full replay's answer, only slower.

Pure, as the rest of the engine: the cache is a mapping the caller owns (and bounds).
"""

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from events import Event
from events.models import TicketOpened
from projections.account import AccountStanding
from projections.account import Interval as AccountInterval
from projections.policy import Policy
from projections.ticket import Step, TicketState, record_steps, step_key, suspension_steps
from projections.timeline import Recorded, TicketKey, first_copies, history, whole_second

StepKey = tuple[datetime, int, int]


@dataclass(slots=True)
class Checkpoint:
    """A ticket's state after its steps, before time passes to its as-of instant."""

    state: TicketState  # its as_of: the instant its steps were chosen for
    # The events applied, as (seq, event), in the order applied: a new history must begin so.
    applied: list[tuple[int, Event]]
    last: StepKey | None  # the sort key of the last step applied (None: none yet)
    # The suspension stretches that paused it (None: none could, see TicketState.paused_by).
    suspensions: tuple[AccountInterval, ...] | None


Checkpoints = MutableMapping[TicketKey, Checkpoint]


def evaluate_from(
    key: TicketKey,
    records: Sequence[Recorded],
    policy: Policy,
    as_of: datetime,
    standing: AccountStanding | None,
    checkpoints: Checkpoints,
) -> TicketState | None:
    """What :func:`projections.ticket.evaluate` returns, from the ticket's checkpoint in
    ``checkpoints`` when it is valid for these arguments, else by a full replay; the checkpoint
    after it is kept under ``key`` (taken out and put back: an ordered dict keeps it as the most
    recently used), unless it cannot serve a later instant."""
    as_of = whole_second(as_of)
    kept = checkpoints.pop(key, None)
    steps = continuation(kept, records, policy, as_of, standing) if kept is not None else None
    if kept is None or steps is None:
        kept = fresh(history(records, as_of), policy, as_of, standing)
    else:
        extend(kept, steps, as_of)
    if reusable(kept):
        checkpoints[key] = kept
        state = kept.state.clone()  # the checkpoint stays before the last stretch of time
    else:
        state = kept.state  # not kept: no copy needed
    state.pass_time()
    return state if state.opened is not None else None


def fresh(
    ordered: list[Recorded], policy: Policy, as_of: datetime, standing: AccountStanding | None
) -> Checkpoint:
    """A full replay of ``ordered`` (a history cut at ``as_of``), up to its last step."""
    state = TicketState(policy, as_of)
    steps = state.plan(ordered, standing)
    state.apply(steps)
    last = step_key(steps[-1]) if steps else None
    return Checkpoint(state, _events_of(steps), last, state.paused_by(_opening(steps), standing))


def continuation(
    kept: Checkpoint,
    records: Sequence[Recorded],
    policy: Policy,
    as_of: datetime,
    standing: AccountStanding | None,
) -> list[Step] | None:
    """The steps a full replay of ``records`` as of ``as_of`` (whole seconds) would apply after
    the checkpoint's, sorted; None if that replay would not begin with exactly the checkpoint's
    steps."""
    state = kept.state
    if state.policy is not policy:  # another policy (a new version, a contract change): other rules
        return None
    if as_of < state.as_of:  # events and boundaries were chosen for a later instant
        return None
    if state.work_ahead:  # work cut at the checkpoint's instant would be cut later now
        return None
    events = _event_steps(records, as_of)
    suspensions = state.paused_by(_opening(events), standing)
    if suspensions != kept.suspensions:  # other stretches, or the ticket pausable now or no longer
        return None
    if not _begins_with(events, kept.applied):  # an event out of order, superseded or gone
        return None
    new = events[len(kept.applied) :]
    if suspensions is not None:
        # Boundaries that apply by as_of and did not by the checkpoint's instant (the same
        # stretches: only those that were ahead then can be new).
        before, _ = suspension_steps(suspensions, state.as_of)
        now, _ = suspension_steps(suspensions, as_of)
        known = set(before)
        new += [step for step in now if step not in known]
        new.sort(key=step_key)  # stable: equal keys keep the replay's order (events first)
    if new and kept.last is not None and step_key(new[0]) <= kept.last:
        return None  # a new step would apply before (or among) the checkpoint's own
    return new


def extend(kept: Checkpoint, steps: list[Step], as_of: datetime) -> None:
    """Apply ``steps`` (from :func:`continuation`) to the checkpoint, now as of ``as_of``."""
    state = kept.state
    state.as_of = as_of  # what the new steps cut at (logged work), as the replay does
    if kept.suspensions is not None:
        _, state.boundaries_ahead = suspension_steps(kept.suspensions, as_of)
    state.apply(steps)
    kept.applied += _events_of(steps)
    if steps:
        kept.last = step_key(steps[-1])


def reusable(kept: Checkpoint) -> bool:
    """Whether the checkpoint can serve a later instant at all: not with work cut at its own
    instant (a later one bills more of it; see :func:`continuation`)."""
    return not kept.state.work_ahead


def _event_steps(records: Sequence[Recorded], as_of: datetime) -> list[Step]:
    """The steps of ``history(records, as_of)``, sorted as they apply: the same events
    (:func:`projections.timeline.first_copies`), sorted once, by the steps' order only."""
    steps = record_steps(first_copies(records, as_of))
    steps.sort(key=step_key)
    return steps


def _opening(steps: list[Step]) -> TicketOpened | None:
    """The ticket.opened that applies first (the one the replay takes), if any."""
    return next((what for _, kind, _, what in steps if kind == 1), None)


def _events_of(steps: list[Step]) -> list[tuple[int, Event]]:
    return [(seq, what) for _, _, seq, what in steps if not isinstance(what, str)]


def _begins_with(events: list[Step], applied: list[tuple[int, Event]]) -> bool:
    """Whether ``events`` (sorted steps) begin with the events ``applied``: the same positions
    with the same events (the same objects, or equal ones decoded again)."""
    if len(events) < len(applied):
        return False
    for (_, _, seq, event), (was_seq, was) in zip(events, applied, strict=False):
        if seq != was_seq or (event is not was and event != was):
            return False
    return True
