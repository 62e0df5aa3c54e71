"""The ticket view: everything the SLA says about one ticket at an instant.

:func:`evaluate` replays a ticket's history (its own events, plus the
suspension stretches of its customer's account) through two clocks, the
escalation rules and the billing rules, up to ``as_of``. It keeps a list of
*effects* (clock started, paused, breached, escalated, ...) so that every
second of the result can be explained. Nothing here reads a clock, a file or
the network: the same history, policy and instant always give the same view.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, Literal, overload

from events.models import (
    Priority,
    TicketClosed,
    TicketEscalationRequested,
    TicketFaultDetermined,
    TicketOpened,
    TicketPriorityChanged,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketStatusChanged,
    TicketWorkLogged,
)
from projections.account import AccountStanding
from projections.account import Interval as AccountInterval
from projections.billing import Billing, Interval, bill, rule_for
from projections.calendar import TWENTY_FOUR_SEVEN
from projections.clock import BREACH, DUE, WARNING, Clock, Cycle, percent_of
from projections.policy import ClockName, Policy
from projections.timeline import Recorded, history, whole_second
from projections.views import Clocks, ClockView, EscalationReason, EscalationView, Flag, TicketView

CLOCKS: tuple[ClockName, ...] = ("response", "resolution")
_SUSPEND, _UNSUSPEND = "suspension_started", "suspension_ended"
_SECOND = timedelta(seconds=1)


@overload
def utc(instant: datetime) -> str: ...
@overload
def utc(instant: None) -> None: ...
@overload
def utc(instant: datetime | None) -> str | None: ...
def utc(instant: datetime | None) -> str | None:
    """An instant as the views print it: UTC, whole seconds, ``Z``."""
    return None if instant is None else instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Effect:
    """Something the replay did to the ticket, and why (see docs/audit.md for every kind)."""

    at: datetime
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    # Index in TicketState.steps of the step (event or suspension boundary)
    # being applied; None when time passing did it (a threshold reached).
    step: int | None = None

    def as_view(self) -> dict[str, Any]:
        """JSON-ready: instants in the detail are kept as datetimes (cheap) and printed here."""
        detail = {k: utc(v) if isinstance(v, datetime) else v for k, v in self.detail.items()}
        return {"at": utc(self.at), "effect": self.kind, "event_id": self.event_id, **detail}


def due_from_start(cycle: Cycle) -> datetime | None:
    """When a cycle that ran from its start without a pause reaches its target."""
    return None if cycle.target is None else cycle.calendar.add_open_seconds(cycle.started_at, cycle.target)


@dataclass
class Escalation:
    level: int
    at: datetime
    cause: str
    entitled: bool
    # The clock and cycle whose threshold raised it (None: requested by someone).
    clock: str | None = None
    cycle: int | None = None

    def as_view(self) -> EscalationReason:
        return EscalationReason(level=self.level, at=utc(self.at), cause=self.cause, entitled=self.entitled)


# A step as the replay sorts it: (instant, kind, seq, what). Kind 0: a suspension boundary (seq
# 0 a start, 1 an end), 1: ticket.opened, 2: any other event.
Step = tuple[datetime, int, int, Any]


def step_key(step: Step) -> tuple[datetime, int, int]:
    """The order steps apply in: at one instant, suspension boundaries, then ticket.opened (so
    that a response at the very instant of dispatch counts), then the rest in recording order."""
    return step[:3]


def record_steps(records: list[Recorded]) -> list[Step]:
    """The steps of a history's events (not sorted)."""
    return [(r.at, 1 if isinstance(r.event, TicketOpened) else 2, r.seq, r.event) for r in records]


def suspension_steps(
    suspensions: tuple[AccountInterval, ...], as_of: datetime
) -> tuple[list[Step], list[datetime]]:
    """The suspension boundaries that apply by ``as_of`` (not sorted), and those still ahead.

    A stretch [start, end) pauses the time after start: at start itself the customer is not yet
    "more than N days" late, so the view shows the pause from start + 1 s (as the account
    standing does); a payment at end applies at end.
    """
    steps: list[Step] = []
    ahead: list[datetime] = []
    for start, end in suspensions:
        if start < as_of:
            steps.append((start, 0, 0, _SUSPEND))
        else:
            ahead.append(start + _SECOND)
        if end is not None and end <= as_of:
            steps.append((end, 0, 1, _UNSUSPEND))
        elif end is not None:
            ahead.append(end)
    return steps, ahead


class TicketState:
    """A ticket replayed up to ``as_of``. Build it with :func:`evaluate`."""

    def __init__(self, policy: Policy, as_of: datetime):
        self.policy = policy
        self.as_of = as_of
        self.opened: TicketOpened | None = None
        self.opened_at: datetime | None = None
        self.dispatch_priority: Priority | None = None
        self.priority: Priority | None = None
        self.state: Literal["open", "resolved", "closed"] = "open"
        self.status = "open"
        self.closed_at: datetime | None = None
        self.billing_at: datetime | None = None  # the latest event the charge depends on
        self.clocks = {name: Clock(name) for name in CLOCKS}
        self.work: list[Interval] = []
        self.fault_party: str | None = None
        self.escalations: list[Escalation] = []
        self.effects: list[Effect] = []
        # What was applied, in order: (instant, event or suspension boundary).
        self.steps: list[tuple[datetime, Any]] = []
        self._step: int | None = None  # the step being applied, for _effect
        # Per clock, the due instant last known while it ran (see _due_moved); a
        # Cycle stands for "projected from that cycle's start", computed only if asked.
        self._due: dict[str, datetime | Cycle | None] = {}
        self.suspended = False
        self.boundaries_ahead: list[datetime] = []  # suspension starts and ends after as_of
        self.work_ahead: list[datetime] = []  # ends of logged work cut at as_of (billed up to it)
        self.applied = 0  # events that counted

    # -- replay ------------------------------------------------------------

    def run(self, records: list[Recorded], standing: AccountStanding | None) -> None:
        self.apply(self.plan(records, standing))
        self.pass_time()

    def plan(self, records: list[Recorded], standing: AccountStanding | None) -> list[Step]:
        """The steps of ``records`` (a history, in order and cut at ``as_of``) and of the account
        standing's suspensions, sorted as they apply; sets :attr:`boundaries_ahead`."""
        steps = record_steps(records)
        opening = next((r.event for r in records if isinstance(r.event, TicketOpened)), None)
        suspensions = self.paused_by(opening, standing)
        if suspensions is not None:
            found, self.boundaries_ahead = suspension_steps(suspensions, self.as_of)
            steps += found
        steps.sort(key=step_key)
        return steps

    def paused_by(
        self, opening: TicketOpened | None, standing: AccountStanding | None
    ) -> tuple[AccountInterval, ...] | None:
        """The suspension stretches that pause this ticket, ``opening`` its ticket.opened (the
        first that applies). None: none can, whatever they are (no standing, not opened, or a
        category that suspensions do not pause)."""
        if standing is None or opening is None:
            return None
        if opening.data.category not in self.policy.suspension.paused_categories:
            return None
        return standing.suspensions

    def apply(self, steps: list[Step]) -> None:
        """Apply ``steps`` (sorted, each after every step applied before) after those applied."""
        first = len(self.steps)
        self.steps += [(at, step) for at, _, _, step in steps]
        for index in range(first, len(self.steps)):
            at, step = self.steps[index]
            self._advance(at)  # thresholds reached before this step: effects with step None
            self._step = index
            if isinstance(step, str):
                self._suspension(at, step)
            else:
                self._apply(at, step)
            self._step = None

    def pass_time(self) -> None:
        """Let time pass from the last step to ``as_of`` (the end of a replay)."""
        self._advance(self.as_of)

    # What clone() copies (a new attribute must be added there, and here: tests check the list).
    CLONED = (
        "clocks",
        "work",
        "escalations",
        "effects",
        "steps",
        "_due",
        "boundaries_ahead",
        "work_ahead",
    )

    def clone(self) -> "TicketState":
        """A copy to go on with apart (projections.checkpoints): a checkpoint is cloned, and the
        clone advanced to its as-of instant, so the checkpoint can take later events.

        Far cheaper than copy.deepcopy: the lists are copied, not what they hold (effects,
        escalations, steps, events and work intervals are never changed once made), the clocks
        and their cycles are cloned, and ``billing`` (a cached_property) is left out: it is
        computed again from the clone's own work and fault.
        """
        twin = object.__new__(TicketState)
        attributes = dict(self.__dict__)
        attributes.pop("billing", None)
        twin.__dict__ = attributes
        twin.clocks = {name: clock.clone() for name, clock in self.clocks.items()}
        twin.work = list(self.work)
        twin.escalations = list(self.escalations)
        twin.effects = list(self.effects)
        twin.steps = list(self.steps)
        twin._due = dict(self._due)
        twin.boundaries_ahead = list(self.boundaries_ahead)
        twin.work_ahead = list(self.work_ahead)
        return twin

    def _advance(self, to: datetime) -> None:
        for clock in self.clocks.values():
            for name, at in clock.advance(to):
                self._reached(clock, name, at)

    def _reached(self, clock: Clock, threshold: str, at: datetime) -> None:
        cycle = clock.current
        detail = {"clock": clock.name, "cycle": len(clock.cycles), "target_seconds": cycle.target}
        if threshold == WARNING:
            self._effect(at, "clock_at_risk", detail)
        elif threshold == DUE:
            self._effect(at, "clock_due", detail)
        elif threshold == BREACH:
            self._effect(at, "clock_breached", detail)
            for level in self.policy.escalation.levels:
                if level.on_breach:
                    self._escalate(level.level, at, f"{clock.name}_breached", automatic=True, clock=clock)
        else:  # an escalation threshold of the resolution clock: "level<N>"
            level = self.policy.escalation.level(int(threshold.removeprefix("level")))
            cause = f"resolution_{level.at_resolution_percent}_percent"
            self._escalate(level.level, at, cause, automatic=True, clock=clock)

    def _escalate(
        self, level: int, at: datetime, cause: str, automatic: bool, clock: Clock | None = None
    ) -> None:
        entitled = self.entitled
        if automatic and not entitled:
            return  # not entitled: no automatic levels at all
        before = self.level
        cycle = len(clock.cycles) if clock is not None else None
        self.escalations.append(
            Escalation(level, at, cause, entitled, clock.name if clock is not None else None, cycle)
        )
        if self.level > before:
            self._effect(at, "escalated", {"level": self.level, "cause": cause})
        elif not entitled:
            self._effect(at, "escalation_not_entitled", {"level_requested": level, "cause": cause})
        else:  # listed in the reasons, but the level was already that high
            self._effect(at, "escalation_recorded", {"level": level, "cause": cause, "current_level": before})

    @property
    def _third_party_disconnect(self) -> bool:
        return self.opened is not None and self.opened.data.third_party_disconnect

    @property
    def entitled(self) -> bool:
        return not (
            self._third_party_disconnect and not self.policy.escalation.third_party_disconnect_entitled
        )

    @property
    def level(self) -> int:
        return max((e.level for e in self.escalations if e.entitled), default=0)

    def _suspension(self, at: datetime, step: str) -> None:
        self.suspended = step == _SUSPEND
        self._effect(at, step, {"clocks": list(self.policy.suspension.paused_clocks)})
        for name in self.policy.suspension.paused_clocks:
            clock = self.clocks[name]
            if self.suspended:
                self._pause(clock, "suspended", at)
            else:
                self._unpause(clock, "suspended", at)

    def _apply(self, at: datetime, event: Any) -> None:
        if isinstance(event, TicketOpened):
            self._open(at, event)
            return
        if self.opened is None and not isinstance(event, TicketStatusChanged | TicketWorkLogged):
            self._effect(at, "ignored", {"reason": "before ticket.opened"}, event)
            return
        self.applied += 1
        match event:
            case TicketPriorityChanged():
                self._priority(at, event)
            case TicketResponded():
                response = self.clocks["response"]
                if response.stopped_by is None:
                    response.stop("responded")
                    self._effect(at, "clock_stopped", {"clock": "response", "by": "responded"}, event)
                else:
                    reason = f"the response clock is already stopped ({response.stopped_by})"
                    self._effect(at, "ignored", {"reason": reason}, event)
            case TicketStatusChanged():
                self._effect(at, "status_changed", {"from": self.status, "to": event.data.status}, event)
                self.status = event.data.status
                resolution = self.clocks["resolution"]
                if event.data.status in self.policy.clocks.resolution_pause_statuses:
                    self._pause(resolution, "status", at, event)
                else:
                    self._unpause(resolution, "status", at, event)
            case TicketResolved():
                if self.state == "open":
                    self.state = "resolved"
                    self.clocks["resolution"].stop("resolved")
                    self._effect(at, "clock_stopped", {"clock": "resolution", "by": "resolved"}, event)
                else:
                    self._effect(at, "ignored", {"reason": f"the ticket is {self.state}"}, event)
            case TicketReopened():
                self._reopen(at, event)
            case TicketClosed():
                if self.state != "closed":
                    self.state = "closed"
                    self.closed_at = self.billing_at = at
                    for clock in self.clocks.values():
                        if clock.stopped_by is None:
                            self._effect(at, "clock_stopped", {"clock": clock.name, "by": "closed"}, event)
                        clock.stop("closed")
                else:
                    self._effect(at, "ignored", {"reason": "the ticket is already closed"}, event)
            case TicketWorkLogged():
                self._work(at, event)
            case TicketFaultDetermined():
                self.fault_party = event.data.party
                self.billing_at = at
                self._effect(at, "fault_determined", {"party": event.data.party}, event)
            case TicketEscalationRequested():
                if self.state == "closed":
                    self._effect(at, "ignored", {"reason": "the ticket is closed"}, event)
                else:
                    cause = f"requested_by_{event.data.requested_by}"
                    self._escalate(event.data.level, at, cause, automatic=False)

    def _reopen(self, at: datetime, event: TicketReopened) -> None:
        if self.state != "resolved":
            reason = "closed is final" if self.state == "closed" else "the ticket is not resolved"
            self._effect(at, "ignored", {"reason": reason}, event)
            return
        self.state = "open"
        resolution = self.clocks["resolution"]
        resolution.resume()
        self._effect(at, "clock_resumed", {"clock": "resolution", "status": resolution.status}, event)
        self._due_moved(resolution, at)

    def _work(self, at: datetime, event: TicketWorkLogged) -> None:
        # Work is billed up to as_of at most: a log cannot bill the future.
        start = whole_second(event.data.started_at)
        ended = whole_second(event.data.ended_at)
        end = min(ended, self.as_of)
        if ended > self.as_of:
            self.work_ahead.append(ended)  # billed up to as_of: the view grows until then
        if start >= end:
            self._effect(at, "ignored", {"reason": "no whole second of the work by the as-of instant"}, event)
            return
        self.work.append((start, end))
        self.billing_at = at
        detail = {"seconds": (end - start) // _SECOND, "started_at": start, "ended_at": end}
        self._effect(at, "work_logged", detail, event)

    def _open(self, at: datetime, event: TicketOpened) -> None:
        if self.opened is not None:
            self._effect(at, "ignored", {"reason": "ticket already opened"}, event)
            return
        self.applied += 1
        self.opened, self.opened_at = event, at
        self.billing_at = at
        self.priority = self.dispatch_priority = event.data.priority
        for clock in self.clocks.values():
            clock.start(self._cycle(clock.name, event.data.priority, at))
            self._due[clock.name] = clock.current if clock.status == "running" else None
            self._effect(at, "clock_started", self._cycle_detail(clock), event)

    def _priority(self, at: datetime, event: TicketPriorityChanged) -> None:
        new = event.data.priority
        if new == self.priority:
            self._effect(at, "ignored", {"reason": f"priority already {new}"}, event)
            return
        self._effect(at, "priority_changed", {"from": self.priority, "to": new}, event)
        self.priority = new
        for clock in self.clocks.values():
            if clock.restart(self._cycle(clock.name, new, at)):
                self._effect(at, "cycle_restarted", self._cycle_detail(clock), event)
                self._due_moved(clock, at)

    def _pause(self, clock: Clock, reason: str, at: datetime, event: Any = None) -> None:
        was = clock.status
        clock.hold(reason)
        if clock.started and was == "running":
            self._effect(at, "clock_paused", {"clock": clock.name, "by": reason}, event)

    def _unpause(self, clock: Clock, reason: str, at: datetime, event: Any = None) -> None:
        if reason not in clock.holds:
            return
        clock.release(reason)
        if clock.started and clock.status == "running":
            self._effect(at, "clock_resumed", {"clock": clock.name, "after": reason}, event)
            self._due_moved(clock, at)

    def _due_moved(self, clock: Clock, at: datetime) -> None:
        """Say when a resume, a reopen or a new cycle changed the instant the clock falls due.

        A running clock's due instant stays put while it keeps running, so
        the one known when it last started running is the one to compare
        with. Paused, it has none: the move shows when it runs again (a pause
        while the calendar is closed anyway moves nothing). Computed only at
        these steps, so the live engine pays for it rarely.
        """
        if clock.status != "running":
            return
        due, was = clock.due_at(at), self._due.get(clock.name)
        if isinstance(was, Cycle):
            was = due_from_start(was)
        self._due[clock.name] = due
        if due != was:
            self._effect(
                at, "due_moved", {"clock": clock.name, "cycle": len(clock.cycles), "from": was, "to": due}
            )

    def _cycle(self, clock: ClockName, priority: Priority, at: datetime) -> Cycle:
        settings = self.policy.targets(priority).clock(clock)
        target = settings.target
        thresholds: dict[str, int] = {}
        if target is not None:
            warning = percent_of(target, self.policy.clocks.warning_threshold_percent)
            thresholds = {WARNING: warning, DUE: target, BREACH: target + 1}
            if clock == "resolution":
                for level in self.policy.escalation.levels:
                    if level.at_resolution_percent is not None:
                        thresholds[f"level{level.level}"] = percent_of(target, level.at_resolution_percent)
        calendar_name = settings.calendar
        replacement = self.policy.clocks.third_party_disconnect_calendar
        if replacement and calendar_name == TWENTY_FOUR_SEVEN and self._third_party_disconnect:
            # §3: not entitled to after-hours support, so no round-the-clock clock either.
            calendar_name = replacement
        calendar = self.policy.calendar(calendar_name)
        return Cycle(priority, target, calendar_name, calendar, at, thresholds)

    def _cycle_detail(self, clock: Clock) -> dict[str, Any]:
        cycle = clock.current
        return {
            "clock": clock.name,
            "cycle": len(clock.cycles),
            "priority": cycle.priority,
            "target_seconds": cycle.target,
            "calendar": cycle.calendar_name,
            "status": clock.status,
        }

    def _effect(self, at: datetime, kind: str, detail: dict[str, Any], event: Any = None) -> None:
        # An effect of a step belongs to the event applied (if the step is one), even when the
        # code that produced it did not pass the event (an escalation, a due instant moving).
        if event is None and self._step is not None:
            event = self.steps[self._step][1]
        self.effects.append(Effect(at, kind, detail, getattr(event, "event_id", None), self._step))

    # -- results -----------------------------------------------------------

    @cached_property
    def billing(self) -> Billing:
        """The charge, computed once: the view and the signals both ask (call after the replay)."""
        assert self.opened is not None and self.opened_at is not None and self.dispatch_priority
        data = self.opened.data
        rule = rule_for(
            self.policy,
            data.category,
            self.dispatch_priority,
            self.opened_at,
            data.after_hours_requested,
            data.priority_handling_requested,
        )
        return bill(
            self.policy, rule, self.opened_at, self.work, data.priority_handling_requested, self.fault_party
        )

    @property
    def charge_final(self) -> bool:
        """Whether the charge is settled: a rule applies, the ticket is closed or its fault known,
        and no logged work runs past the as-of instant (a charge still growing is not settled)."""
        return (
            self.billing.rule is not None
            and (self.state == "closed" or self.fault_party is not None)
            and not self.work_ahead
        )

    def account_until(self, forever: datetime) -> datetime | None:
        """The latest instant at which a change of the account standing can change this view.

        None: never (a category that suspensions do not pause). A closed
        ticket: the instant it closed (after it, its clocks are stopped for
        good and no flag depends on the account). Otherwise ``forever``.
        """
        assert self.opened is not None
        if self.opened.data.category not in self.policy.suspension.paused_categories:
            return None
        return self.closed_at if self.closed_at is not None else forever

    def flags(self) -> list[Flag]:
        assert self.opened is not None and self.opened_at is not None
        flags: list[Flag] = []
        install_date: date | None = self.opened.data.install_date
        if self.opened.data.category == "new_install" and install_date is not None:
            notice = self.policy.billing.new_install_notice
            calendar = self.policy.calendar(notice.calendar)
            opened_on = calendar.local_date(self.opened_at)
            days = calendar.count_open_days(opened_on, install_date, at_most=notice.business_days)
            if days < notice.business_days:
                flags.append("short_install_notice")
        if any(not e.entitled for e in self.escalations):
            flags.append("escalation_not_entitled")
        if self.suspended and self.state != "closed":
            flags.append("suspended")
        if self.policy.requested_contract is not None:
            flags.append("contract_without_version")
        return sorted(flags)

    def clock_view(self, name: ClockName) -> ClockView:
        clock = self.clocks[name]
        cycle = clock.current
        at_risk = (
            clock.status != "stopped"
            and cycle.target is not None
            and WARNING in cycle.reached
            and BREACH not in cycle.reached
        )
        return ClockView(
            status=clock.status,
            calendar=cycle.calendar_name,
            target_seconds=cycle.target,
            elapsed_seconds=cycle.elapsed,
            due_at=utc(clock.due_at(self.as_of)),
            breached=any(c.breached for c in clock.cycles),
            at_risk=at_risk,
            cycles=len(clock.cycles),
        )

    def breaches(self) -> list[dict[str, Any]]:
        """Every breached cycle (the view only says "some cycle breached"): clock, cycle, instant."""
        return [
            {"clock": clock.name, "cycle": number, "at": utc(cycle.reached[BREACH])}
            for clock in self.clocks.values()
            for number, cycle in enumerate(clock.cycles, start=1)
            if cycle.breached
        ]

    def view(self) -> TicketView:
        assert self.opened is not None and self.opened_at is not None and self.priority is not None
        return TicketView(
            ticket_id=self.opened.ticket_id,
            customer_id=self.opened.customer_id,
            priority=self.priority,
            category=self.opened.data.category,
            state=self.state,
            status=self.status,
            opened_at=utc(self.opened_at),
            clocks=Clocks(**{name: self.clock_view(name) for name in CLOCKS}),
            escalation=EscalationView(
                level=self.level,
                reasons=[e.as_view() for e in sorted(self.escalations, key=lambda e: (e.at, e.level))],
            ),
            billing=self.billing.as_view(),
            flags=self.flags(),
            contract=self.policy.contract,
            policy_version=self.policy.version,
            policy_digest=self.policy.digest,
        )

    def next_change_at(self) -> datetime | None:
        """The next instant after ``as_of`` at which the view changes with no new event.

        A live worker sleeps until then: a threshold of a running clock, or a
        suspension of the customer's account starting or ending.
        """
        instants = [at for c in self.clocks.values() if (at := c.next_threshold_at(self.as_of)) is not None]
        if self.state != "closed":
            instants += self.boundaries_ahead  # a known suspension starting or ending
        instants += self.work_ahead  # logged work billed up to as_of ends
        return min(instants, default=None)


def evaluate(
    records: Iterable[Recorded],
    policy: Policy,
    as_of: datetime,
    standing: AccountStanding | None = None,
) -> TicketState | None:
    """Replay one ticket's events (any order, duplicates allowed) up to ``as_of``.

    ``standing`` is its customer's account standing at ``as_of`` (for
    suspension). Returns None if the ticket was not opened by ``as_of``.
    """
    as_of = whole_second(as_of)
    ordered = history(records, as_of)
    state = TicketState(policy, as_of)
    state.run(ordered, standing)
    return state if state.opened is not None else None


def ticket_view(
    records: Iterable[Recorded],
    policy: Policy,
    as_of: datetime,
    standing: AccountStanding | None = None,
) -> TicketView | None:
    state = evaluate(records, policy, as_of, standing)
    return state.view() if state is not None else None
