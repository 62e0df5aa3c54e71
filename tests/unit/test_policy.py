"""The policy file model (projections.policy) and the packaged default policy."""

import re
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from projections.calendar import AlwaysOpenCalendar
from projections.policy import (
    PRIORITIES,
    Policy,
    PolicyError,
    default_policy,
    load_policy,
    parse_duration,
    parse_policy,
)

NY = ZoneInfo("America/New_York")
H = 3600
DEFAULT_TEXT = resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")


def edited(old: str, new: str, count: int = 1) -> str:
    """The default policy text with one edit (which must apply)."""
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, count)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "test.toml")
    assert str(caught.value).startswith("test.toml: invalid policy")
    return caught.value.problems


# --- the default policy -------------------------------------------------------------


def test_default_policy_loads_with_the_targets_of_issue_3() -> None:
    policy = default_policy()
    assert policy.version
    expected = {
        "urgent": ((1 * H, "24x7"), (None, "24x7")),
        "high": ((2 * H, "business"), (None, "business")),
        "medium": ((4 * H, "business"), (8 * H, "business")),
        "low": ((8 * H, "business"), (48 * H, "business")),
    }
    for priority in PRIORITIES:
        targets = policy.targets(priority)
        got = tuple((clock.target, clock.calendar) for clock in (targets.response, targets.resolution))
        assert got == expected[priority], priority


def test_default_business_calendar() -> None:
    policy = default_policy()
    spec = policy.calendars["business"]
    assert spec.time_zone == "America/New_York"
    assert spec.holidays == [] and spec.country_holidays is None
    weekday = [(9 * H, 17 * H)]
    assert spec.hours.model_dump() == {
        "monday": weekday,
        "tuesday": weekday,
        "wednesday": weekday,
        "thursday": weekday,
        "friday": weekday,
        "saturday": [],
        "sunday": [],
    }
    business = policy.calendar("business")
    assert business is policy.calendar("business")  # one instance: caches are shared
    # The worked example of issue 3, through the policy.
    dispatched, answered = datetime(2026, 10, 30, 15, 30, tzinfo=NY), datetime(2026, 11, 2, 9, 45, tzinfo=NY)
    assert business.open_seconds(dispatched, answered) == 8100
    assert isinstance(policy.calendar("24x7"), AlwaysOpenCalendar)
    with pytest.raises(KeyError, match="unknown calendar 'weekends'"):
        policy.calendar("weekends")


def test_default_clock_suspension_and_escalation_settings() -> None:
    policy = default_policy()
    assert policy.clocks.resolution_pause_statuses == ["pending_customer"]
    assert policy.clocks.warning_threshold_percent == 75

    suspension = policy.suspension
    assert (suspension.delinquent_after_days, suspension.dashboard_suspended_at_days) == (10, 15)
    assert suspension.delinquent_after_seconds == 10 * 86_400
    assert suspension.dashboard_suspended_at_seconds == 15 * 86_400
    assert suspension.paused_categories == ["non_service"]
    assert suspension.paused_clocks == ["response", "resolution"]
    assert suspension.disputed_invoices_exempt is True

    escalation = policy.escalation
    assert escalation.third_party_disconnect_entitled is False
    assert [lvl.level for lvl in escalation.levels] == [1, 2, 3]
    assert [lvl.on_breach for lvl in escalation.levels] == [True, False, False]
    assert [lvl.at_resolution_percent for lvl in escalation.levels] == [None, 150, 200]
    assert escalation.level(1).name == "Escalation desk"


def test_default_billing_settings() -> None:
    billing = default_policy().billing
    assert billing.rate_cents_per_hour == 12500
    assert billing.after_hours_calendar == "business"
    assert billing.month_calendar == "business"
    assert billing.new_install.minimum == 7200
    assert billing.uncovered_p1.minimum == 3600
    assert billing.new_install.minimum_applies == "when_billable"
    assert billing.uncovered_p1.minimum_applies == "always"
    assert billing.uncovered_p1.priority == "urgent"
    assert billing.uncovered_p1.waived_parties == ["provider"]
    assert billing.new_install_notice.business_days == 5
    assert billing.new_install_notice.calendar == "business"


def test_default_contacts_are_roles_with_placeholders() -> None:
    for level in default_policy().escalation.levels:
        assert level.email is not None and level.email.endswith("@example.com")
        assert level.phone is not None and re.fullmatch(r"\+1-555-01\d\d", level.phone)
    # No real contact anywhere in the file, comments included: every address
    # is a placeholder at example.com, every phone number a fictional 555-01xx.
    emails = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", DEFAULT_TEXT)
    assert emails and all(email.endswith("@example.com") for email in emails)
    numbers = re.findall(r"\+?\d[\d -]{6,}\d", DEFAULT_TEXT)
    phones = [n for n in numbers if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", n)]  # dates are not phones
    assert phones and all(re.fullmatch(r"\+1-555-01\d\d", phone) for phone in phones)


def test_default_policy_is_commented_line_by_line() -> None:
    lines = DEFAULT_TEXT.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#"), f"line {number + 1} has no comment above it: {line!r}"


def test_default_policy_is_loaded_once_and_equals_the_file(tmp_path: Path) -> None:
    assert default_policy() is default_policy()
    copy = tmp_path / "policy.toml"
    copy.write_text(DEFAULT_TEXT, encoding="utf-8")
    assert load_policy(copy) == default_policy()
    assert load_policy(copy) != parse_policy(edited('version = "default-2026.1"', 'version = "other"'))
    assert load_policy(str(copy)).version == default_policy().version


def test_a_policy_reads_back_its_own_dump() -> None:
    policy = parse_policy(edited("holidays = []", "holidays = [2026-12-25]"))
    assert Policy.model_validate(policy.model_dump()) == policy
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


# --- durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (0, 0),
        (3600, 3600),
        ("1h", 3600),
        ("90m", 5400),
        ("2h30m", 9000),
        ("45s", 45),
        ("1h0m30s", 3630),
        ("48h", 172_800),
        ("0s", 0),
    ],
)
def test_durations(written: object, seconds: int) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["", "1d", "1.5h", "h", "-1h", "30m1h", "1 h", "1H", -5, True, 1.5, None])
def test_bad_durations(written: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(written)


def test_targets_accept_seconds_and_none_but_not_zero() -> None:
    policy = parse_policy(
        edited(
            'response = { target = "4h", calendar = "business" }',
            'response = { target = 14400, calendar = "business" }',
        )
    )
    assert policy.priorities.medium.response.target == 14400
    policy = parse_policy(
        edited(
            'resolution = { target = "8h", calendar = "business" }',
            'resolution = { target = "none", calendar = "business" }',
        )
    )
    assert policy.priorities.medium.resolution.target is None
    [problem] = problems_of(edited('target = "4h"', "target = 0"))
    assert problem.startswith("priorities.medium.response.target:") and "none" in problem


# --- calendars in a policy ----------------------------------------------------------


def test_a_policy_with_holidays_split_days_and_country_holidays() -> None:
    pytest.importorskip("holidays")
    text = edited("holidays = []", 'holidays = [2026-12-25, "2026-12-31"]\ncountry_holidays = "US"')
    text = text.replace('monday = ["09:00-17:00"]', 'monday = ["08:30-12:00", "13:00-24:00"]')
    policy = parse_policy(text)
    business = policy.calendar("business")
    assert not business.is_open_day(date(2026, 12, 25))
    assert not business.is_open_day(date(2026, 12, 31))
    assert not business.is_open_day(date(2026, 11, 26))  # Thanksgiving, from the US calendar
    monday = datetime(2026, 11, 2, tzinfo=NY)
    assert business.open_seconds(monday, monday + timedelta(days=1)) == 3 * H + 30 * 60 + 11 * H


# --- bad files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("rate_cents_per_hour", "rate_cent_per_hour", "billing.rate_cent_per_hour", "unknown key"),
        ('"48h"', '"2d"', "priorities.low.resolution.target", "invalid duration"),
        (
            "rate_cents_per_hour = 12500",
            'rate_cents_per_hour = "12500"',
            "billing.rate_cents_per_hour",
            "integer",
        ),
        (
            "disputed_invoices_exempt = true",
            "disputed_invoices_exempt = 1",
            "suspension.disputed_invoices_exempt",
            "boolean",
        ),
        (
            "warning_threshold_percent = 75",
            "warning_threshold_percent = 0.75",
            "clocks.warning_threshold_percent",
            "integer",
        ),
        (
            "warning_threshold_percent = 75",
            "warning_threshold_percent = 175",
            "clocks.warning_threshold_percent",
            "100",
        ),
        ('time_zone = "America/New_York"', 'time_zone = "EST"', "", ""),  # EST is a valid tz name: no error
        (
            'time_zone = "America/New_York"',
            'time_zone = "Eastern"',
            "calendars.business.time_zone",
            "time zone",
        ),
        ('monday = ["09:00-17:00"]', 'monday = ["9-17"]', "calendars.business.hours.monday.0", "HH:MM"),
        (
            'monday = ["09:00-17:00"]',
            'monday = ["17:00-09:00"]',
            "calendars.business.hours.monday.0",
            "end after",
        ),
        (
            'monday = ["09:00-17:00"]',
            'monday = ["09:00-13:00", "12:00-17:00"]',
            "calendars.business.hours.monday",
            "overlap",
        ),
        ("holidays = []", 'holidays = ["25/12/2026"]', "calendars.business.holidays.0", "YYYY-MM-DD"),
        (
            'response = { target = "4h", calendar = "business" }',
            'response = { target = "4h", calendar = "biz" }',
            "priorities.medium.response.calendar",
            "unknown calendar 'biz'",
        ),
        (
            'after_hours_calendar = "business"',
            'after_hours_calendar = "offhours"',
            "billing.after_hours_calendar",
            "unknown calendar",
        ),
        (
            'paused_categories = ["non_service"]',
            'paused_categories = ["nonservice"]',
            "suspension.paused_categories.0",
            "non_service",
        ),
        ("level = 3", "level = 2", "escalation.levels", "exactly once"),
        (
            'waived_parties = ["provider"]',
            'waived_parties = ["vendor"]',
            "billing.uncovered_p1.waived_parties.0",
            "provider",
        ),
        ("[priorities.low]", "[priorities.lowest]", "priorities.lowest", "unknown key"),
        ('version = "default-2026.1"', 'version = ""', "version", "at least 1"),
    ],
)
def test_bad_settings_are_named_in_the_error(old: str, new: str, key: str, words: str) -> None:
    text = edited(old, new)
    if not key:
        parse_policy(text)
        return
    problems = problems_of(text)
    assert any(p.startswith(f"{key}:") and words in p for p in problems), problems


def test_a_missing_priority_or_section_is_named() -> None:
    text = (
        DEFAULT_TEXT[: DEFAULT_TEXT.index("[priorities.low]")]
        + DEFAULT_TEXT[DEFAULT_TEXT.index("[clocks]") :]
    )
    assert "priorities.low: required key is missing" in problems_of(text)
    problems = problems_of(edited("rate_cents_per_hour = 12500", ""))
    assert problems == ["billing.rate_cents_per_hour: required key is missing"]
    problems = problems_of(DEFAULT_TEXT.replace('version = "default-2026.1"\n', ""))
    assert problems == ["version: required key is missing"]


def test_the_built_in_calendar_cannot_be_redefined() -> None:
    text = DEFAULT_TEXT + '\n[calendars.24x7]\ntime_zone = "UTC"\nhours = {}\n'
    assert any(p.startswith("calendars.24x7:") and "built in" in p for p in problems_of(text))


def test_unknown_country_holidays_are_named() -> None:
    pytest.importorskip("holidays")
    [problem] = problems_of(edited("holidays = []", 'holidays = []\ncountry_holidays = "XX"'))
    assert problem.startswith("calendars.business:") and "XX" in problem


def test_invalid_toml_is_reported_with_the_file_name(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('version = "1"\n[calendars\n', encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.toml: invalid policy:\n  - not valid TOML"):
        load_policy(bad)


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "nope.toml")


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


def test_a_policy_is_immutable() -> None:
    with pytest.raises(ValueError):
        default_policy().version = "changed"  # type: ignore[misc]
    assert isinstance(default_policy(), Policy)
