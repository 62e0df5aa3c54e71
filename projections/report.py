"""A customer's monthly compliance report (issue 13): what its SLA gave it in one month.

:func:`monthly_report` takes the customer's events (its tickets' and its account's), the
contracts and a month, and returns a :class:`MonthlyReport`: the contract versions in force
during the month, the attainment of the targets per clock and priority, every breached cycle
with its overrun, the escalations, the billing lines, the tickets still open at the report's
instant, and a digest of what it was computed from. ``projections.report_render`` writes it as
JSON, CSV and a printable HTML page. docs/audit.md ("Verifying a monthly report") says how a
customer recomputes it.

Which tickets. A ticket belongs to the month of its dispatch in the zone of its policy's month
calendar (:func:`projections.billing.month_of`, the month its charge is billed in): the
version of its contract in force at its dispatch decides, as for everything else about it.

The month. Its bounds are local midnights: ``period_start`` the first instant of the month,
``period_end`` the first instant of the next one, the widest over the month calendars of the
contracts the customer is on during the month, so that every ticket of the month lies within
them whatever its contract's zone; ``time_zone`` is that of the policy the customer is on at the
month's start, as known by the month's end (:func:`report_calendar`). A customer on one contract
all month has that zone's bounds.

As of. Every ticket is evaluated as of one instant, ``as_of``:

- ``month_end``: the month is over (``now`` at or after ``period_end``): ``period_end``. A
  complete month's report is a function of the log alone, whenever it is computed.
- ``latest_event``: the month is not over: the customer's latest event time (its log time,
  as a worker catching up evaluates its tickets), so the same log gives the same report.
- ``month_start``: the month is not over and the customer has no event since it began.

``now`` decides ``complete`` (and, through it, which of these applies); nothing else in the
report depends on it. "Still open at month end" is the state as of ``as_of``: at the month's
end for a complete month.

Attainment. A cycle with a target is *evaluated* once its outcome is known by ``as_of``: its
clock stopped at least once (as the SLA counters count it, docs/metrics.md), or it breached
(a running cycle past its target has failed, stopped or not). It is *met* unless it breached
by ``as_of``. A cycle superseded by a priority change before either is not evaluated.
Attainment is ``met/evaluated`` as an exact fraction (not reduced) and a percentage rounded
half up to two decimals (exact integer arithmetic): ``2/3`` is ``66.67``.

Pure: no clock, no I/O; the same events, contracts, month and ``complete`` give the same report.
"""

import hashlib
import re
import shlex
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Literal, cast

from pydantic import Field

from events import encode_event
from events.models import AccountContractChanged, Category, Priority
from projections.as_of import ticket_at
from projections.billing import month_of
from projections.calendar import Calendar
from projections.clock import BREACH
from projections.contracts import (
    Contracts,
    PolicySource,
    contract_at,
    contract_changes,
    contracts_of,
)
from projections.policy import PRIORITIES, ClockName, Policy
from projections.quarantine import quarantined_view
from projections.ticket import CLOCKS, TicketState, utc
from projections.timeline import Recorded, by_ticket, history, opening, whole_second
from projections.views import BillingRule, BillingStatus, ClockStatus, UtcInstant, View

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
FIRST_YEAR, LAST_YEAR = 1970, 2999  # the years the event contract's instants can be in
AsOfBasis = Literal["month_end", "latest_event", "month_start"]
ALL_PRIORITIES: Literal["all"] = "all"


class MonthError(ValueError):
    """A month that is not ``YYYY-MM`` from 1970-01 to 2999-12."""


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); :class:`MonthError` saying why not."""
    if not re.fullmatch(MONTH_PATTERN, text):
        raise MonthError(f"{text!r} is not a month: expected YYYY-MM, e.g. 2026-11")
    year, month = int(text[:4]), int(text[5:])
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise MonthError(f"{text!r}: the year must be from {FIRST_YEAR} to {LAST_YEAR}")
    return year, month


# -- the document ---------------------------------------------------------------------


class ContractVersion(View):
    """A version of a contract in force for the customer at some instant of the month."""

    contract: str
    policy_version: str = Field(description="The policy file's `version`")
    digest: str = Field(description="sha256 of the policy's settings (docs/audit.md)")
    effective_from: UtcInstant | None = Field(
        description="When the version took effect; null: the configured policy, from the beginning"
    )
    in_place_of: str | None = Field(
        description="The customer's contract, when it had no version in force and this default "
        "version measured instead (flag contract_without_version)"
    )


class ReportTicket(View):
    """A ticket of the month (dispatched in it), as of the report's instant."""

    ticket_id: str
    priority: Priority | None = Field(description="The current priority; null if quarantined")
    category: Category | None
    opened_at: UtcInstant = Field(description="Dispatch, UTC")
    state: Literal["open", "resolved", "closed", "quarantined"]
    level: int | None = Field(description="The escalation level reached; null if quarantined")
    contract: str
    policy_version: str


class Attainment(View):
    """The targets evaluated and met of one clock and priority (``all``: every priority)."""

    clock: ClockName
    priority: Priority | Literal["all"]
    evaluated: int
    met: int
    attainment: str | None = Field(description="met/evaluated, exact (not reduced); null: none evaluated")
    attainment_percent: str | None = Field(
        description="met/evaluated x 100, rounded half up to 2 decimals, e.g. `66.67`"
    )


class Breach(View):
    """A breached cycle of a ticket of the month."""

    ticket_id: str
    clock: ClockName
    cycle: int = Field(description="The cycle's number (1: from dispatch; a priority change starts another)")
    priority: Priority = Field(description="The cycle's priority")
    breached_at: UtcInstant
    target_seconds: int
    elapsed_seconds: int = Field(description="Open seconds counted in the cycle as of the report's instant")
    overrun_seconds: int = Field(description="elapsed_seconds - target_seconds")
    contract: str
    policy_version: str


class LevelCount(View):
    level: int
    tickets_at_level: int = Field(description="Tickets whose level reached is this one")
    tickets_reached: int = Field(description="Tickets that reached this level or a higher one")


class EscalatedTicket(View):
    ticket_id: str
    level: int = Field(description="The level reached (entitled escalations only)")
    reached_at: UtcInstant = Field(description="When the ticket first reached that level")
    cause: str


class Escalations(View):
    by_level: list[LevelCount]
    tickets: list[EscalatedTicket] = Field(description="The tickets of the month escalated, by ticket id")


class BillingLine(View):
    ticket_id: str
    rule: BillingRule
    billing_status: BillingStatus
    billable_seconds: int
    amount_cents: int
    contract: str
    policy_version: str


class ReportBilling(View):
    lines: list[BillingLine] = Field(description="Every ticket of the month under a billing rule")
    total_billable_seconds: int
    total_cents: int


class OpenTicket(View):
    """A ticket of the month neither resolved nor closed as of the report's instant."""

    ticket_id: str
    priority: Priority
    status: str
    opened_at: UtcInstant
    response: ClockStatus
    resolution: ClockStatus
    level: int


class QuarantinedTicket(View):
    """A ticket the engine raised on: left out of every number (README, Quarantined tickets)."""

    ticket_id: str
    error: str
    event_id: str | None


class DigestInputs(View):
    ticket_events: int
    account_events: int
    contracts_digest: str = Field(description="projections.contracts.Contracts.digest")


class Reproduce(View):
    export: str = Field(description="The command that exports the customer's log")
    report: str = Field(description="The command that computes this report again from it")


class MonthlyReport(View):
    """A customer's monthly compliance report (docs/audit.md, "Verifying a monthly report")."""

    customer_id: str
    month: str = Field(description="YYYY-MM")
    time_zone: str = Field(description="The zone whose midnights bound the month (IANA name)")
    period_start: UtcInstant = Field(description="The first instant of the month")
    period_end: UtcInstant = Field(description="The first instant of the next month")
    as_of: UtcInstant = Field(description="The instant every ticket is evaluated as of")
    as_of_basis: AsOfBasis = Field(
        description="`month_end` (the month is over), `latest_event` (the customer's latest event "
        "time, the month not being over) or `month_start` (no event since the month began)"
    )
    complete: bool = Field(description="Whether the month was over when the report was computed")
    contract_versions: list[ContractVersion] = Field(description="In force during the month")
    tickets: list[ReportTicket] = Field(description="The tickets dispatched in the month, by ticket id")
    attainment: list[Attainment]
    breaches: list[Breach]
    escalations: Escalations
    billing: ReportBilling
    open_at_end: list[OpenTicket] = Field(description="Tickets still open as of `as_of`")
    quarantined: list[QuarantinedTicket]
    digest: str = Field(description="sha256 of the events used and the contracts (docs/audit.md)")
    digest_inputs: DigestInputs
    reproduce: Reproduce


# -- computing it -----------------------------------------------------------------------


def month_calendar(policy: Policy) -> Calendar:
    return policy.calendar(policy.billing.month_calendar)


def report_calendar(
    contracts: Contracts, account: Sequence[Recorded], year: int, month: int
) -> tuple[Calendar, datetime, datetime]:
    """The calendar whose zone the report shows, and the month's bounds.

    The zone shown is that of the policy the customer is on at the month's start, as known by
    the month's end: a contract change recorded after the month does not move a finished month's
    report. A ticket's month is that of its dispatch in its own policy's month calendar, so the
    bounds are the widest over the month calendars of the contracts the customer is on during
    the month (at its start, and from each change in force within it): no ticket of the month
    falls outside them. A customer on one contract all month has that contract's zone's bounds."""
    # Contract changes recorded after the month (in the latest zone any version has) do not count.
    every = [month_calendar(contracts.base), *(month_calendar(v.policy) for v in contracts.versions)]
    latest = max(month_bounds(calendar, year, month)[1] for calendar in every)
    known = [r for r in account if r.at <= latest]
    calendar = month_calendar(contracts.base)
    for _ in range(3):  # a zone that moves the start to another contract: settles at once in practice
        first = calendar.day_start(date(year, month, 1))
        found = month_calendar(contracts.policy_at(contract_at(known, first), first))
        if found.time_zone == calendar.time_zone:
            break
        calendar = found
    start = month_bounds(calendar, year, month)[0]
    names = {contract_at(known, start)} | {
        r.event.data.contract
        for r in known
        if isinstance(r.event, AccountContractChanged)
        and start <= whole_second(r.event.data.effective_from) < latest
    }
    candidates = [calendar]
    for name in sorted(names):
        candidates.append(month_calendar(contracts.policy_at(name, start)))
        candidates += [
            month_calendar(v.policy) for v in contracts.history_of(name) if start <= v.effective_from < latest
        ]
    bounds = [month_bounds(c, year, month) for c in candidates]
    return calendar, min(b[0] for b in bounds), max(b[1] for b in bounds)


def month_bounds(calendar: Calendar, year: int, month: int) -> tuple[datetime, datetime]:
    """The first instant of the month and of the next one, in the calendar's zone."""
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return calendar.day_start(date(year, month, 1)), calendar.day_start(following)


def percent(met: int, evaluated: int) -> str:
    """met/evaluated x 100, rounded half up to 2 decimals, exactly: 2/3 -> ``66.67``."""
    hundredths = (2 * met * 10_000 + evaluated) // (2 * evaluated)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def digest(
    ticket_events: Iterable[Recorded], account_events: Iterable[Recorded], contracts: Contracts
) -> str:
    """``sha256:`` of each event's canonical bytes and a newline (the tickets' events, then the
    account's), then the contracts' digest (``sha256:...``, ASCII)."""
    sha = hashlib.sha256()
    for record in (*ticket_events, *account_events):
        sha.update(encode_event(record.event) + b"\n")
    sha.update(contracts.digest.encode())
    return "sha256:" + sha.hexdigest()


def reproduce(customer_id: str, month: str) -> Reproduce:
    customer = shlex.quote(customer_id)
    return Reproduce(
        export=f"slatrack export --customer {customer} > log.jsonl",
        report=f"slatrack report --events log.jsonl --customer {customer} --month {month}",
    )


def monthly_report(
    records: Iterable[Recorded], source: PolicySource, customer_id: str, month: str, now: datetime
) -> MonthlyReport:
    """The report of ``customer_id`` for ``month`` (``YYYY-MM``, :class:`MonthError` if not).

    ``records``: the customer's events, ticket and account, in any order, duplicates allowed
    (others' are left out; later copies of an event id with another body must have been taken
    out, as :func:`projections.timeline.dedupe` does). ``now`` only decides ``complete``.
    """
    year, number = parse_month(month)
    contracts = contracts_of(source)
    mine = history(r for r in records if r.event.customer_id == customer_id)
    tickets, accounts = by_ticket(mine)
    account = accounts.get(customer_id, [])

    calendar, start, end = report_calendar(contracts, account, year, number)
    latest = max((r.at for r in mine), default=None)
    as_of, basis = _as_of(start, end, latest, whole_second(now))

    found = _Found(contracts, as_of)
    for key in sorted(tickets):  # one customer's: in ticket id order
        found.ticket(customer_id, key[1], tickets[key], account, month)
    known_account = history(account, as_of)  # the account events that count: all of them are used
    versions = _versions(contracts, known_account, start, end, as_of, found.policies)
    return MonthlyReport(
        customer_id=customer_id,
        month=month,
        time_zone=calendar.time_zone,
        period_start=utc(start),
        period_end=utc(end),
        as_of=utc(as_of),
        as_of_basis=basis,
        complete=whole_second(now) >= end,
        contract_versions=[_listing(policy) for policy in versions],
        tickets=found.listed,
        attainment=found.attainment(),
        breaches=found.breaches,
        escalations=found.escalations(_levels(versions)),
        billing=ReportBilling(
            lines=found.billing,
            total_billable_seconds=sum(line.billable_seconds for line in found.billing),
            total_cents=sum(line.amount_cents for line in found.billing),
        ),
        open_at_end=found.open,
        quarantined=found.quarantined,
        digest=digest(found.used, known_account, contracts),
        digest_inputs=DigestInputs(
            ticket_events=len(found.used),
            account_events=len(known_account),
            contracts_digest=contracts.digest,
        ),
        reproduce=reproduce(customer_id, month),
    )


def _as_of(
    start: datetime, end: datetime, latest: datetime | None, now: datetime
) -> tuple[datetime, AsOfBasis]:
    if now >= end:
        return end, "month_end"
    if latest is None or latest < start:
        return start, "month_start"
    if latest >= end:  # events dated after the month, the month not over yet
        return end, "month_end"
    return latest, "latest_event"


class _Found:
    """The tickets of the month, evaluated, and what the report lists of them."""

    def __init__(self, contracts: Contracts, as_of: datetime):
        self.contracts = contracts
        self.as_of = as_of
        self.policies: list[Policy] = []  # those measuring the tickets
        self.used: list[Recorded] = []  # the tickets' events that count, ticket after ticket
        self.listed: list[ReportTicket] = []
        self.outcomes: list[tuple[ClockName, str, bool]] = []  # (clock, priority, met) per evaluated cycle
        self.breaches: list[Breach] = []
        self.levels: list[tuple[str, int, datetime, str]] = []  # escalated: ticket, level, at, cause
        self.billing: list[BillingLine] = []
        self.open: list[OpenTicket] = []
        self.quarantined: list[QuarantinedTicket] = []

    def ticket(
        self, customer_id: str, ticket_id: str, records: list[Recorded], account: list[Recorded], month: str
    ) -> None:
        opened = opening(records, self.as_of)
        if opened is None:
            return  # not dispatched by the report's instant
        policy = self.contracts.policy_for(records, account, self.as_of)
        if month_of(policy, opened.at) != month:
            return
        self.policies.append(policy)
        self.used += history(records, self.as_of)
        try:
            state = ticket_at(records, account, self.contracts, self.as_of)
            assert state is not None  # opened by as_of
            self._listed(state)
        except Exception as error:  # a bug of the engine: the ticket is quarantined, as a worker has it
            view = quarantined_view((customer_id, ticket_id), records, self.as_of, error, policy)
            self.quarantined.append(
                QuarantinedTicket(
                    ticket_id=ticket_id, error=view.quarantine.error, event_id=view.quarantine.event_id
                )
            )
            self.listed.append(
                ReportTicket(
                    ticket_id=ticket_id,
                    priority=None,
                    category=None,
                    opened_at=utc(opened.at),
                    state="quarantined",
                    level=None,
                    contract=policy.contract,
                    policy_version=policy.version,
                )
            )

    def _listed(self, state: TicketState) -> None:
        # Everything is computed before anything is kept: a ticket the engine raises on is
        # quarantined whole, not half listed.
        view = state.view()
        ids = {"contract": state.policy.contract, "policy_version": state.policy.version}
        outcomes, breaches = [], []
        for clock in CLOCKS:
            for number, cycle in enumerate(state.clocks[clock].cycles, start=1):
                if cycle.target is None:
                    continue
                if cycle.breached or cycle.first_stop is not None:
                    outcomes.append((clock, cycle.priority, not cycle.breached))
                if cycle.breached:
                    breaches.append(
                        Breach(
                            ticket_id=view.ticket_id,
                            clock=clock,
                            cycle=number,
                            priority=cast(Priority, cycle.priority),  # a priority of its policy
                            breached_at=utc(cycle.reached[BREACH]),
                            target_seconds=cycle.target,
                            elapsed_seconds=cycle.elapsed,
                            overrun_seconds=cycle.elapsed - cycle.target,
                            **ids,
                        )
                    )
        level = view.escalation.level
        reached = min(
            ((e.at, e.cause) for e in state.escalations if e.entitled and e.level == level), default=None
        )
        billing = view.billing
        line = (
            BillingLine(
                ticket_id=view.ticket_id,
                rule=billing.rule,
                billing_status=billing.status,
                billable_seconds=billing.billable_seconds,
                amount_cents=billing.amount_cents,
                **ids,
            )
            if billing.rule is not None
            else None
        )
        self.listed.append(
            ReportTicket(
                ticket_id=view.ticket_id,
                priority=view.priority,
                category=view.category,
                opened_at=view.opened_at,
                state=view.state,
                level=level,
                **ids,
            )
        )
        self.outcomes += outcomes
        self.breaches += breaches
        if level and reached is not None:
            self.levels.append((view.ticket_id, level, *reached))
        if line is not None:
            self.billing.append(line)
        if view.state == "open":
            self.open.append(
                OpenTicket(
                    ticket_id=view.ticket_id,
                    priority=view.priority,
                    status=view.status,
                    opened_at=view.opened_at,
                    response=view.clocks.response.status,
                    resolution=view.clocks.resolution.status,
                    level=level,
                )
            )

    def attainment(self) -> list[Attainment]:
        rows = []
        for clock in CLOCKS:
            mine = [(priority, met) for name, priority, met in self.outcomes if name == clock]
            for priority in (*PRIORITIES, ALL_PRIORITIES):
                chosen = [met for p, met in mine if priority in (p, ALL_PRIORITIES)]
                evaluated, met = len(chosen), sum(chosen)
                rows.append(
                    Attainment(
                        clock=clock,
                        priority=priority,
                        evaluated=evaluated,
                        met=met,
                        attainment=f"{met}/{evaluated}" if evaluated else None,
                        attainment_percent=percent(met, evaluated) if evaluated else None,
                    )
                )
        return rows

    def escalations(self, levels: list[int]) -> Escalations:
        reached = [level for _, level, _, _ in self.levels]
        return Escalations(
            by_level=[
                LevelCount(
                    level=level,
                    tickets_at_level=sum(1 for r in reached if r == level),
                    tickets_reached=sum(1 for r in reached if r >= level),
                )
                for level in levels
            ],
            tickets=[
                EscalatedTicket(ticket_id=ticket, level=level, reached_at=utc(at), cause=cause)
                for ticket, level, at, cause in self.levels
            ],
        )


def _versions(
    contracts: Contracts,
    account: list[Recorded],
    start: datetime,
    end: datetime,
    as_of: datetime,
    measuring: list[Policy],
) -> list[Policy]:
    """The versions in force for the customer at some instant of [start, end) (which contract it
    is on and which version is in force change only at the instants tried here), and those
    measuring its tickets, once each, in the order they take effect."""
    instants = {start}
    instants |= {at for at in contract_changes(account) if start < at < end}
    instants |= {v.effective_from for v in contracts.versions if start < v.effective_from < end}
    found: dict[tuple[str, datetime | None, str, str | None], Policy] = {}
    for policy in [
        *(contracts.policy_at(contract_at(account, at, as_of), at) for at in sorted(instants)),
        *measuring,
    ]:
        found.setdefault(_identity(policy), policy)
    return sorted(found.values(), key=_order)


def _identity(policy: Policy) -> tuple[str, datetime | None, str, str | None]:
    return (policy.contract, policy.effective_from, policy.digest, policy.requested_contract)


def _order(policy: Policy) -> tuple[int, str, str, str, str]:
    effective = policy.effective_from
    return (
        0 if effective is None else 1,
        utc(effective) or "",
        policy.contract,
        policy.digest,
        policy.requested_contract or "",
    )


def _listing(policy: Policy) -> ContractVersion:
    return ContractVersion(
        contract=policy.contract,
        policy_version=policy.version,
        digest=policy.digest,
        effective_from=utc(policy.effective_from),
        in_place_of=policy.requested_contract,
    )


def _levels(versions: list[Policy]) -> list[int]:
    return sorted({level.level for policy in versions for level in policy.escalation.levels})
