"""The policy file: every number and choice of the SLA, validated.

A policy is a TOML file (read with :mod:`tomllib`) validated here with
pydantic. Unknown keys are errors, so a typo cannot silently fall back to a
default; every error names the key it is about. The packaged
``default_policy.toml`` encodes our reading of the support terms and is
commented line by line; a user adapts a copy of it, not the code.

Durations are written either as integer seconds (``3600``) or as a string of
hours, minutes and seconds in that order, each optional but at least one
present: ``"1h"``, ``"90m"``, ``"2h30m"``, ``"45s"``, ``"1h0m30s"``. The
conversion is exact integer arithmetic (1 h = 3600 s, 1 m = 60 s). There is
deliberately no day unit: "a day" could mean 24 h of real time or a business
day, and a policy must not be ambiguous. A clock's target may also be
``"none"`` (no target: the clock still runs and reports elapsed time).

Ratios are integer percents (``75``, ``150``) so that deciding an outcome
never involves a float: compare ``elapsed * 100 >= target * percent``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from datetime import date, datetime
from functools import cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .calendar import (
    TWENTY_FOUR_SEVEN,
    AlwaysOpenCalendar,
    Calendar,
    CalendarError,
    parse_time_of_day,
)

__all__ = [
    "PRIORITIES",
    "Policy",
    "PolicyError",
    "default_policy",
    "load_policy",
    "parse_duration",
    "parse_policy",
]

PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "medium", "low")
DAY_SECONDS = 86_400
DEFAULT_POLICY_RESOURCE = "default_policy.toml"

Priority = Literal["urgent", "high", "medium", "low"]
Category = Literal["service", "non_service", "new_install"]
Party = Literal["provider", "customer", "third_party"]
ClockName = Literal["response", "resolution"]


class PolicyError(ValueError):
    """A policy file that cannot be read or is not valid; ``problems`` lists each one."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid policy:\n" + "\n".join(f"  - {p}" for p in problems))


# --- value parsers -------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> int:
    """Seconds of a duration written as an int or as ``"2h30m"`` (see module doc)."""
    if isinstance(value, bool):
        raise ValueError("a duration is integer seconds or a string like '2h30m', not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return value
    if isinstance(value, str) and value and (m := _DURATION.match(value)):
        hours, minutes, seconds = (int(g or 0) for g in m.groups())
        return hours * 3600 + minutes * 60 + seconds
    raise ValueError(
        f"invalid duration {value!r}: use integer seconds or hours/minutes/seconds like '8h', '90m', '2h30m'"
    )


def _target(value: Any) -> int | None:
    if value == "none" or value is None:  # None: from model_dump(), TOML has no null
        return None
    seconds = parse_duration(value)
    if seconds == 0:
        raise ValueError('a target must be positive (write "none" for no target)')
    return seconds


def _local_date(value: Any) -> date:
    # TOML has a native date type (2026-12-25); a quoted "2026-12-25" is accepted too.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return date.fromisoformat(value)
    raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD")


def _span(value: Any) -> tuple[int, int]:
    # "09:00-17:00" -> seconds since local midnight; "24:00" allowed as an end.
    # A pair of ints (a model_dump() read back) goes through the same checks.
    if isinstance(value, str) and value.count("-") == 1:
        start_raw, end_raw = value.split("-")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        start_raw, end_raw = value
    else:
        raise ValueError(f"invalid opening interval {value!r}: expected 'HH:MM-HH:MM'")
    try:
        start = parse_time_of_day(start_raw)
        end = parse_time_of_day(end_raw, allow_24=True)
    except CalendarError as exc:
        raise ValueError(f"invalid opening interval {value!r}: {exc}") from None
    if end <= start:
        raise ValueError(f"opening interval {value!r} must end after it starts")
    return start, end


Duration = Annotated[int, BeforeValidator(parse_duration)]
Target = Annotated[int | None, BeforeValidator(_target)]
LocalDate = Annotated[date, BeforeValidator(_local_date)]
Span = Annotated[tuple[int, int], BeforeValidator(_span)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Percent = Annotated[int, Field(gt=0, le=1000)]


class _Model(BaseModel):
    # strict: TOML already has types; "10" is not 10 and 1 is not true.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- calendars -----------------------------------------------------------------


class WeeklyHours(_Model):
    """Opening intervals per weekday, local time. A weekday left out is closed."""

    monday: list[Span] = []
    tuesday: list[Span] = []
    wednesday: list[Span] = []
    thursday: list[Span] = []
    friday: list[Span] = []
    saturday: list[Span] = []
    sunday: list[Span] = []

    @field_validator("*")
    @classmethod
    def _no_overlap(cls, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        ordered = sorted(spans)
        for (_, end), (start, _) in pairwise(ordered):
            if start < end:
                raise ValueError("opening intervals overlap")
        return spans


class CalendarSpec(_Model):
    time_zone: Text
    hours: WeeklyHours
    holidays: list[LocalDate] = []
    country_holidays: Text | None = None
    country_subdivision: Text | None = None

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {name!r}: expected an IANA name like 'America/New_York'"
            ) from None
        return name

    def build(self, name: str) -> Calendar:
        return Calendar(
            self.time_zone,
            self.hours.model_dump(),
            self.holidays,
            country=self.country_holidays,
            subdivision=self.country_subdivision,
            name=name,
        )


# --- clocks --------------------------------------------------------------------


class ClockTarget(_Model):
    target: Target  # required: seconds, "8h" or "none"
    calendar: Name


class PriorityTargets(_Model):
    response: ClockTarget
    resolution: ClockTarget

    def clock(self, name: ClockName) -> ClockTarget:
        return getattr(self, name)


class Priorities(_Model):
    urgent: PriorityTargets
    high: PriorityTargets
    medium: PriorityTargets
    low: PriorityTargets


class ClockSettings(_Model):
    resolution_pause_statuses: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = [
        "pending_customer"
    ]
    warning_threshold_percent: Annotated[int, Field(gt=0, le=100)] = 75
    # The calendar that replaces 24x7 for tickets opened with
    # third_party_disconnect (not entitled to after-hours support); None: no replacement.
    third_party_disconnect_calendar: Name | None = None


# --- account suspension --------------------------------------------------------


class SuspensionSettings(_Model):
    # Days are 86 400 s of real time after the invoice's due_at.
    delinquent_after_days: Annotated[int, Field(ge=0)]  # strictly more than
    dashboard_suspended_at_days: Annotated[int, Field(ge=0)]  # this many or more
    paused_categories: list[Category]
    paused_clocks: list[ClockName]
    disputed_invoices_exempt: bool

    @property
    def delinquent_after_seconds(self) -> int:
        return self.delinquent_after_days * DAY_SECONDS

    @property
    def dashboard_suspended_at_seconds(self) -> int:
        return self.dashboard_suspended_at_days * DAY_SECONDS


# --- escalation ----------------------------------------------------------------


class EscalationLevel(_Model):
    level: Annotated[int, Field(ge=1, le=3)]
    name: Text
    email: Text | None = None
    phone: Text | None = None
    on_breach: bool = False  # reached as soon as any clock of the ticket breaches
    at_resolution_percent: Percent | None = None  # reached when resolution elapsed >= this % of target


class EscalationSettings(_Model):
    third_party_disconnect_entitled: bool
    levels: list[EscalationLevel]

    @field_validator("levels")
    @classmethod
    def _one_of_each(cls, levels: list[EscalationLevel]) -> list[EscalationLevel]:
        numbers = [lvl.level for lvl in levels]
        if sorted(numbers) != [1, 2, 3]:
            raise ValueError(f"define levels 1, 2 and 3 exactly once each, got {numbers}")
        return sorted(levels, key=lambda lvl: lvl.level)

    def level(self, number: int) -> EscalationLevel:
        return self.levels[number - 1]


# --- billing -------------------------------------------------------------------


# When a rule's minimum applies: only once some time is billable, or always
# (the call-out itself is charged even if no after-hours work was logged).
MinimumApplies = Literal["when_billable", "always"]


class NewInstallRule(_Model):
    minimum: Duration
    minimum_applies: MinimumApplies


class UncoveredP1Rule(_Model):
    minimum: Duration
    minimum_applies: MinimumApplies
    priority: Priority
    waived_parties: list[Party]


class InstallNotice(_Model):
    business_days: Annotated[int, Field(ge=0)]
    calendar: Name


class BillingSettings(_Model):
    rate_cents_per_hour: Annotated[int, Field(ge=0)]
    after_hours_calendar: Name
    month_calendar: Name
    new_install: NewInstallRule
    uncovered_p1: UncoveredP1Rule
    new_install_notice: InstallNotice


# --- the policy ----------------------------------------------------------------


class Policy(_Model):
    version: Text
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    calendars: dict[Name, CalendarSpec] = {}
    priorities: Priorities
    clocks: ClockSettings = ClockSettings()
    suspension: SuspensionSettings
    escalation: EscalationSettings
    billing: BillingSettings

    _built: dict[str, Calendar] = PrivateAttr(default_factory=dict)
    _digest: str | None = PrivateAttr(default=None)
    _text: str | None = PrivateAttr(default=None)
    # Which contract's version this is (projections.contracts.tagged): the default contract's,
    # in force from the beginning, unless tagged otherwise.
    _contract: str = PrivateAttr(default="default")
    _effective_from: datetime | None = PrivateAttr(default=None)
    _requested: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _calendars_exist_and_build(self) -> Policy:
        problems = []
        if TWENTY_FOUR_SEVEN in self.calendars:
            problems.append(f"calendars.{TWENTY_FOUR_SEVEN}: this name is built in and cannot be redefined")
        built: dict[str, Calendar] = {TWENTY_FOUR_SEVEN: AlwaysOpenCalendar()}
        for name, spec in self.calendars.items():
            if name == TWENTY_FOUR_SEVEN:
                continue
            try:
                built[name] = spec.build(name)
            except CalendarError as exc:
                problems.append(f"calendars.{name}: {exc}")
        for key, name in self._calendar_references():
            if name not in built and name not in self.calendars:
                known = ", ".join(sorted(set(built) | set(self.calendars)))
                problems.append(f"{key}: unknown calendar {name!r} (known: {known})")
        if problems:
            raise ValueError("\n".join(problems))  # one problem a line, see _problems
        self._built = built
        return self

    def _calendar_references(self) -> list[tuple[str, str]]:
        refs = []
        for priority in PRIORITIES:
            targets: PriorityTargets = getattr(self.priorities, priority)
            for clock in ("response", "resolution"):
                refs.append((f"priorities.{priority}.{clock}.calendar", targets.clock(clock).calendar))
        if self.clocks.third_party_disconnect_calendar is not None:
            refs.append(
                ("clocks.third_party_disconnect_calendar", self.clocks.third_party_disconnect_calendar)
            )
        refs.append(("billing.after_hours_calendar", self.billing.after_hours_calendar))
        refs.append(("billing.month_calendar", self.billing.month_calendar))
        refs.append(("billing.new_install_notice.calendar", self.billing.new_install_notice.calendar))
        return refs

    def __eq__(self, other: object) -> bool:
        # Compare the settings only, not the calendars built from them (their caches differ).
        if not isinstance(other, Policy):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside: not hashable

    @property
    def _private(self) -> dict[str, Any]:
        """The private attributes themselves. pydantic reads one through ``__getattr__`` (about
        2 µs); the engine asks for the calendars and the version's tags at every step and view."""
        return self.__pydantic_private__  # type: ignore[return-value]  # a dict once validated

    @property
    def digest(self) -> str:
        """``sha256:`` of :func:`canonical_policy`: the settings, whatever the comments and layout."""
        digest: str | None = self._private["_digest"]
        if digest is None:
            digest = self._digest = "sha256:" + hashlib.sha256(canonical_policy(self)).hexdigest()
        return digest

    @property
    def text(self) -> str | None:
        """The TOML text the policy was parsed from (None if built otherwise)."""
        return self._private["_text"]

    @property
    def contract(self) -> str:
        """The contract this policy is a version of (``default`` unless tagged)."""
        return self._private["_contract"]

    @property
    def effective_from(self) -> datetime | None:
        """The instant this version is in force from (None: from the beginning)."""
        return self._private["_effective_from"]

    @property
    def requested_contract(self) -> str | None:
        """The contract the customer is on, when it had no version in force and this measures instead."""
        return self._private["_requested"]

    def calendar(self, name: str) -> Calendar:
        """The calendar called ``name`` (``24x7`` is built in).

        One instance per name, so its caches are shared by every caller.
        """
        built: dict[str, Calendar] = self._private["_built"]
        try:
            return built[name]
        except KeyError:
            raise KeyError(f"unknown calendar {name!r} (known: {', '.join(sorted(built))})") from None

    def targets(self, priority: Priority) -> PriorityTargets:
        return getattr(self.priorities, priority)


# --- loading -------------------------------------------------------------------

_FRIENDLY = {
    "extra_forbidden": "unknown key (not part of the policy format; check its spelling)",
    "missing": "required key is missing",
}


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        message = _FRIENDLY.get(item["type"], item["msg"])
        for line in message.removeprefix("Value error, ").splitlines():
            problems.append(f"{key}: {line}" if key else line)
    return problems


def canonical_policy(policy: Policy) -> bytes:
    """The policy's settings as JSON with sorted keys (durations in seconds, no comments)."""
    return orjson.dumps(policy.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate a policy given as TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [f"not valid TOML: {exc}"]) from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, _problems(exc)) from None
    policy._text = text
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(str(path), [f"cannot read the file: {reason}"]) from None
    return parse_policy(text, str(path))


@cache
def default_policy() -> Policy:
    """The packaged default policy (``projections/default_policy.toml``), loaded once."""
    text = resources.files(__package__).joinpath(DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")
    return parse_policy(text, f"{__package__}/{DEFAULT_POLICY_RESOURCE}")
