"""Worked examples for business calendars (projections.calendar)."""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from projections.calendar import (
    TWENTY_FOUR_SEVEN,
    AlwaysOpenCalendar,
    Calendar,
    CalendarError,
    NoOpenTimeError,
)

UTC = UTC
NY = ZoneInfo("America/New_York")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
H = 3600


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz)


def every_day(tz_name: str, *spans: tuple[str, str]) -> Calendar:
    return Calendar(tz_name, {day: list(spans) for day in range(7)})


@pytest.fixture(scope="module")
def business() -> Calendar:
    """The default policy's calendar: Monday-Friday 09:00-17:00 New York."""
    return Calendar("America/New_York", {d: [("09:00", "17:00")] for d in WEEKDAYS}, name="business")


# --- the worked example of issue 3 -----------------------------------------------


def test_medium_ticket_across_the_autumn_dst_change(business: Calendar) -> None:
    dispatched = local(NY, 2026, 10, 30, 15, 30)  # Friday, EDT (UTC-4)
    answered = local(NY, 2026, 11, 2, 9, 45)  # Monday, EST (UTC-5)
    # Friday 15:30-17:00 (1 h 30) + Monday 09:00-09:45 (45 min).
    assert business.open_seconds(dispatched, answered) == 2 * H + 15 * 60 == 8100
    # The 4 h response target is due on Monday at 11:30 EST = 16:30 UTC.
    due = business.add_open_seconds(dispatched, 4 * H)
    assert due == utc(2026, 11, 2, 16, 30)
    assert due.tzinfo is UTC
    assert business.open_seconds(dispatched, due) == 4 * H


def test_landing_on_a_closing_time_returns_the_closing_time(business: Calendar) -> None:
    friday = local(NY, 2026, 10, 30, 15, 30)
    assert business.add_open_seconds(friday, 90 * 60) == local(NY, 2026, 10, 30, 17, 0)
    assert business.add_open_seconds(friday, 90 * 60 + 1) == local(NY, 2026, 11, 2, 9, 0, 1)


def test_adding_zero_returns_the_start_even_when_closed(business: Calendar) -> None:
    saturday = local(NY, 2026, 10, 31, 12, 0)
    assert business.add_open_seconds(saturday, 0) == saturday
    assert business.add_open_seconds(saturday, 1) == local(NY, 2026, 11, 2, 9, 0, 1)


def test_is_open_is_half_open(business: Calendar) -> None:
    assert not business.is_open(local(NY, 2026, 11, 2, 8, 59, 59))
    assert business.is_open(local(NY, 2026, 11, 2, 9, 0))
    assert business.is_open(local(NY, 2026, 11, 2, 16, 59, 59))
    assert not business.is_open(local(NY, 2026, 11, 2, 17, 0))
    assert not business.is_open(local(NY, 2026, 10, 31, 12, 0))  # Saturday


def test_parts_of_a_weekend(business: Calendar) -> None:
    start, end = local(NY, 2026, 10, 30, 15, 30), local(NY, 2026, 11, 2, 9, 45)
    assert business.parts(start, end) == [
        (utc(2026, 10, 30, 19, 30), utc(2026, 10, 30, 21, 0), True),
        (utc(2026, 10, 30, 21, 0), utc(2026, 11, 2, 14, 0), False),
        (utc(2026, 11, 2, 14, 0), utc(2026, 11, 2, 14, 45), True),
    ]
    assert business.open_intervals(start, end) == [
        (utc(2026, 10, 30, 19, 30), utc(2026, 10, 30, 21, 0)),
        (utc(2026, 11, 2, 14, 0), utc(2026, 11, 2, 14, 45)),
    ]


def test_empty_and_reversed_intervals(business: Calendar) -> None:
    t = local(NY, 2026, 11, 2, 10, 0)
    assert business.open_seconds(t, t) == 0
    assert business.open_seconds(t, t - timedelta(hours=1)) == 0
    assert business.parts(t, t) == []
    assert business.open_intervals(t, t - timedelta(hours=1)) == []


def test_next_open(business: Calendar) -> None:
    assert business.next_open(local(NY, 2026, 10, 30, 17, 0)) == local(NY, 2026, 11, 2, 9, 0)
    assert business.next_open(local(NY, 2026, 11, 2, 7, 0)) == local(NY, 2026, 11, 2, 9, 0)
    inside = local(NY, 2026, 11, 2, 10, 0)
    assert business.next_open(inside) == inside


def test_results_are_utc_whatever_the_input_zone(business: Calendar) -> None:
    start = datetime(2026, 11, 2, 15, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 09:00 New York
    assert business.add_open_seconds(start, H) == utc(2026, 11, 2, 15, 0)


def test_local_date(business: Calendar) -> None:
    assert business.local_date(utc(2026, 11, 2, 3, 0)) == date(2026, 11, 1)


def test_day_start_is_the_first_instant_of_a_local_date(business: Calendar) -> None:
    # New York leaves DST at 02:00 on 2026-11-01: that day begins in EDT, the next in EST.
    assert business.day_start(date(2026, 11, 1)) == utc(2026, 11, 1, 4)
    assert business.day_start(date(2026, 11, 2)) == utc(2026, 11, 2, 5)
    # Santiago skips from 00:00 to 01:00 on 2026-09-06: the day begins at 01:00 -03 (04:00Z).
    santiago = every_day("America/Santiago", ("09:00", "17:00"))
    start = santiago.day_start(date(2026, 9, 6))
    assert start == utc(2026, 9, 6, 4)
    assert santiago.local_date(start) == date(2026, 9, 6)
    assert santiago.local_date(start - timedelta(seconds=1)) == date(2026, 9, 5)
    assert AlwaysOpenCalendar().day_start(date(2026, 12, 1)) == utc(2026, 12, 1)


# --- DST: open time is real elapsed time ------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", date(2026, 11, 1), 25),  # fall back 02:00 -> 01:00
        ("America/New_York", date(2026, 3, 8), 23),  # spring forward 02:00 -> 03:00
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Australia/Lord_Howe", date(2026, 4, 5), 24.5),  # a 30-minute shift
        ("Australia/Lord_Howe", date(2026, 10, 4), 23.5),
        ("Asia/Kolkata", date(2026, 3, 8), 24),  # no DST
        ("America/Santiago", date(2026, 4, 4), 25),  # falls back at midnight
        ("America/Santiago", date(2026, 9, 6), 23),  # springs forward at midnight
    ],
)
def test_a_whole_day_lasts_its_real_length(zone: str, day: date, hours: float) -> None:
    cal = every_day(zone, ("00:00", "24:00"))
    tz = ZoneInfo(zone)
    start = datetime.combine(day - timedelta(days=1), time(12), tz)
    end = datetime.combine(day + timedelta(days=2), time(12), tz)
    assert cal.parts(start, end) == [(start, end, True)]  # one part: midnights merge
    day_cal = Calendar(zone, {day.weekday(): [("00:00", "24:00")]})
    assert day_cal.open_seconds(start, end) == int(hours * H)


def test_business_hours_on_the_dst_day_itself() -> None:
    sundays = Calendar("America/New_York", {"sunday": [("00:00", "24:00")]})
    fall_back = local(NY, 2026, 11, 1)
    assert sundays.open_seconds(fall_back, fall_back + timedelta(days=2)) == 25 * H
    assert sundays.add_open_seconds(fall_back, 25 * H) == local(NY, 2026, 11, 2)


def test_an_opening_in_the_spring_forward_gap_starts_when_the_gap_ends() -> None:
    # 2026-03-08 in New York: local 02:00-03:00 does not exist.
    gap_day = local(NY, 2026, 3, 8)
    after_gap = utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    cal = Calendar("America/New_York", {"sunday": [("02:30", "04:00")]})
    assert cal.open_intervals(gap_day, gap_day + timedelta(days=1)) == [(after_gap, utc(2026, 3, 8, 8, 0))]
    # An interval entirely inside the gap is empty that day only.
    inside = Calendar("America/New_York", {"sunday": [("02:00", "02:45")]})
    assert inside.open_seconds(gap_day, gap_day + timedelta(days=1)) == 0
    week_later = gap_day + timedelta(days=7)
    assert inside.open_seconds(week_later, week_later + timedelta(days=1)) == 45 * 60
    # A closing in the gap also means the end of the gap.
    closing = Calendar("America/New_York", {"sunday": [("01:00", "02:30")]})
    assert closing.open_intervals(gap_day, gap_day + timedelta(days=1)) == [
        (utc(2026, 3, 8, 6, 0), after_gap)
    ]


def test_an_ambiguous_time_in_the_fall_back_fold_is_the_earlier_instant() -> None:
    # 2026-11-01 in New York: local 01:00-02:00 happens twice (EDT, then EST).
    day = local(NY, 2026, 11, 1)
    first = Calendar("America/New_York", {"sunday": [("01:00", "01:30")]})
    assert first.open_intervals(day, day + timedelta(days=1)) == [
        (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30))  # 01:00-01:30 EDT
    ]
    second = Calendar("America/New_York", {"sunday": [("01:30", "02:00")]})
    assert second.open_seconds(day, day + timedelta(days=1)) == 90 * 60  # 01:30 EDT to 02:00 EST


def test_lord_howe_business_day_across_its_half_hour_shift() -> None:
    tz = ZoneInfo("Australia/Lord_Howe")
    # Sunday 2026-04-05 02:00 (+11) falls back to 01:30 (+10:30).
    cal = Calendar("Australia/Lord_Howe", {"sunday": [("01:00", "03:00")]})
    day = datetime(2026, 4, 5, tzinfo=tz)
    assert cal.open_seconds(day, day + timedelta(days=1)) == 2 * H + 30 * 60
    # Sunday 2026-10-04 02:00 (+10:30) springs forward to 02:30 (+11).
    day = datetime(2026, 10, 4, tzinfo=tz)
    assert cal.open_seconds(day, day + timedelta(days=1)) == H + 30 * 60


# --- shapes of opening hours ------------------------------------------------------


def test_split_day_with_a_lunch_break() -> None:
    cal = Calendar("Europe/Berlin", {d: [("09:00", "12:00"), ("13:00", "17:00")] for d in WEEKDAYS})
    berlin = ZoneInfo("Europe/Berlin")
    monday = datetime(2026, 3, 2, tzinfo=berlin)
    assert cal.open_seconds(monday, monday + timedelta(days=1)) == 7 * H
    nine = monday.replace(hour=9)
    assert cal.add_open_seconds(nine, 3 * H) == monday.replace(hour=12)  # the closing time
    assert cal.add_open_seconds(nine, 3 * H + 1) == monday.replace(hour=13, second=1)
    assert not cal.is_open(monday.replace(hour=12, minute=30))
    assert [flag for _, _, flag in cal.parts(nine, monday.replace(hour=17))] == [True, False, True]
    assert cal.next_open(monday.replace(hour=12)) == monday.replace(hour=13)


def test_an_interval_may_end_at_24_00_and_join_the_next_day() -> None:
    cal = Calendar("America/New_York", {"monday": [("20:00", "24:00")], "tuesday": [("00:00", "04:00")]})
    monday = local(NY, 2026, 11, 2)
    assert cal.parts(monday, monday + timedelta(days=2)) == [
        (monday, monday.replace(hour=20), False),
        (monday.replace(hour=20), monday.replace(day=3, hour=4), True),
        (monday.replace(day=3, hour=4), monday + timedelta(days=2), False),
    ]
    assert cal.is_open(monday.replace(day=3, hour=0))
    assert cal.open_seconds(monday.replace(hour=22), monday.replace(day=3, hour=2)) == 4 * H


def test_seconds_precision_in_hours() -> None:
    cal = Calendar("UTC", {"monday": [("09:00:30", "09:00:45")]})
    monday = utc(2026, 11, 2)
    assert cal.open_seconds(monday, monday + timedelta(days=1)) == 15
    assert cal.add_open_seconds(monday, 1) == utc(2026, 11, 2, 9, 0, 31)


def test_kolkata_has_a_half_hour_offset_and_no_dst() -> None:
    cal = Calendar("Asia/Kolkata", {d: [("09:00", "17:00")] for d in WEEKDAYS})
    # Monday 09:00 IST = 03:30 UTC.
    assert not cal.is_open(utc(2026, 3, 2, 3, 29, 59))
    assert cal.is_open(utc(2026, 3, 2, 3, 30))
    assert cal.add_open_seconds(utc(2026, 3, 2, 3, 30), 8 * H) == utc(2026, 3, 2, 11, 30)
    assert cal.add_open_seconds(utc(2026, 3, 6, 11, 0), H) == utc(2026, 3, 9, 4, 0)  # Fri -> Mon


# --- holidays ---------------------------------------------------------------------


def test_explicit_holidays_are_closed_all_day() -> None:
    cal = Calendar("America/New_York", {d: [("09:00", "17:00")] for d in WEEKDAYS}, [date(2026, 12, 25)])
    assert cal.is_holiday(date(2026, 12, 25))
    christmas = local(NY, 2026, 12, 25)
    assert cal.open_seconds(christmas, christmas + timedelta(days=1)) == 0
    # Thursday 16:00 -> Monday 10:00: one hour on Thursday, one on Monday.
    assert cal.open_seconds(local(NY, 2026, 12, 24, 16), local(NY, 2026, 12, 28, 10)) == 2 * H
    assert cal.add_open_seconds(local(NY, 2026, 12, 24, 16), H) == local(NY, 2026, 12, 24, 17)
    assert cal.add_open_seconds(local(NY, 2026, 12, 24, 17), 1) == local(NY, 2026, 12, 28, 9, 0, 1)


def test_country_holidays_from_the_holidays_package() -> None:
    pytest.importorskip("holidays")
    us = Calendar("America/New_York", {d: [("09:00", "17:00")] for d in WEEKDAYS}, country="US")
    thanksgiving = local(NY, 2026, 11, 26)
    assert us.open_seconds(thanksgiving, thanksgiving + timedelta(days=1)) == 0
    assert not us.is_open_day(date(2026, 7, 3))  # Independence Day (observed): 4 July is a Saturday
    assert us.is_open_day(date(2026, 11, 25))
    # Subdivisions: Epiphany is a holiday in Bavaria, not in Berlin.
    bavaria = Calendar("Europe/Berlin", {"tuesday": [("09:00", "17:00")]}, country="DE", subdivision="BY")
    berlin = Calendar("Europe/Berlin", {"tuesday": [("09:00", "17:00")]}, country="DE", subdivision="BE")
    epiphany = datetime(2026, 1, 6, tzinfo=ZoneInfo("Europe/Berlin"))
    assert bavaria.open_seconds(epiphany, epiphany + timedelta(days=1)) == 0
    assert berlin.open_seconds(epiphany, epiphany + timedelta(days=1)) == 8 * H


def test_unknown_country_or_subdivision_is_an_error() -> None:
    pytest.importorskip("holidays")
    with pytest.raises(CalendarError, match="XX"):
        Calendar("UTC", {}, country="XX")
    with pytest.raises(CalendarError, match="ZZ"):
        Calendar("UTC", {}, country="US", subdivision="ZZ")


def test_business_days_for_install_notice() -> None:
    pytest.importorskip("holidays")
    cal = Calendar("America/New_York", {d: [("09:00", "17:00")] for d in WEEKDAYS}, country="US")
    # After Monday 2 Nov through Monday 9 Nov: Tue, Wed, Thu, Fri, Mon.
    assert cal.count_open_days(date(2026, 11, 2), date(2026, 11, 9)) == 5
    # Thanksgiving (Thu 26 Nov) does not count.
    assert cal.count_open_days(date(2026, 11, 23), date(2026, 11, 30)) == 4
    assert cal.count_open_days(date(2026, 11, 9), date(2026, 11, 2)) == 0
    # Stops counting at at_most: a far install date costs a few days, not centuries.
    assert cal.count_open_days(date(2026, 11, 2), date(2026, 11, 9), at_most=3) == 3
    assert cal.count_open_days(date(2026, 11, 2), date(2999, 12, 31), at_most=5) == 5


# --- 24x7 -------------------------------------------------------------------------


def test_twenty_four_seven_counts_real_seconds() -> None:
    cal = AlwaysOpenCalendar()
    assert cal.name == TWENTY_FOUR_SEVEN
    start = local(NY, 2026, 10, 31, 22, 0)
    end = local(NY, 2026, 11, 1, 22, 0)  # 25 h later: the clocks fell back
    assert cal.open_seconds(start, end) == 25 * H
    assert cal.add_open_seconds(start, 75 * 60) == utc(2026, 11, 1, 3, 15)
    assert cal.parts(start, end) == [(start, end, True)]
    assert cal.is_open(start) and cal.next_open(start) == start
    assert cal.count_open_days(date(2026, 11, 1), date(2026, 11, 8)) == 7
    assert cal.count_open_days(date(2026, 11, 1), date(2026, 11, 8), at_most=5) == 5


# --- long spans and calendars without open time -----------------------------------


def test_long_spans_are_exact(business: Calendar) -> None:
    start, end = local(NY, 2024, 1, 1), local(NY, 2028, 1, 1)
    weekdays = sum(
        1
        for n in range((date(2028, 1, 1) - date(2024, 1, 1)).days)
        if (date(2024, 1, 1) + timedelta(days=n)).weekday() < 5
    )
    total = business.open_seconds(start, end)
    assert total == weekdays * 8 * H
    landed = business.add_open_seconds(start, total)
    assert landed == local(NY, 2027, 12, 31, 17, 0)  # a Friday's closing time
    assert business.open_seconds(start, landed) == total


def test_long_adds_land_exactly_on_closing_times() -> None:
    # Open from 00:00 to 24:00, so N days of open time from a midnight land on a
    # midnight, however many days (long adds skip ahead by blocks of days).
    berlin = ZoneInfo("Europe/Berlin")
    cal = every_day("Europe/Berlin", ("00:00", "24:00"))
    start = datetime(2026, 1, 1, tzinfo=berlin)
    for days in range(1, 400):
        midnight = datetime.combine(date(2026, 1, 1) + timedelta(days=days), time(), berlin)
        seconds = int(midnight.timestamp() - start.timestamp())  # real time: DST days are 23 h and 25 h
        assert cal.add_open_seconds(start, seconds) == midnight
        assert cal.add_open_seconds(start, seconds + 1) == midnight + timedelta(seconds=1)


def test_long_adds_land_on_the_closing_time_of_the_last_business_day(business: Calendar) -> None:
    start = local(NY, 2026, 1, 5, 9)  # a Monday
    dates = (date(2026, 1, 5) + timedelta(days=n) for n in range(500))
    weekdays = [day for day in dates if day.weekday() < 5][:300]
    for count, day in enumerate(weekdays, start=1):
        assert business.add_open_seconds(start, count * 8 * H) == datetime.combine(day, time(17), NY)


def test_a_calendar_without_open_time_fails_clearly() -> None:
    closed = Calendar("UTC", {}, name="never")
    t = utc(2026, 1, 1)
    assert closed.open_seconds(t, t + timedelta(days=3650)) == 0
    with pytest.raises(NoOpenTimeError, match="never"):
        closed.add_open_seconds(t, 1)
    with pytest.raises(NoOpenTimeError):
        closed.next_open(t)
    assert closed.add_open_seconds(t, 0) == t


# --- misuse -----------------------------------------------------------------------


def test_naive_and_fractional_instants_are_rejected(business: Calendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        business.open_seconds(datetime(2026, 11, 2, 9), utc(2026, 11, 3))
    with pytest.raises(ValueError, match="naive"):
        business.is_open(datetime(2026, 11, 2, 9))
    with pytest.raises(ValueError, match="whole second"):
        business.add_open_seconds(utc(2026, 11, 2, 9, 0, 0, 500), 1)


def test_bad_seconds_are_rejected(business: Calendar) -> None:
    t = utc(2026, 11, 2)
    with pytest.raises(ValueError):
        business.add_open_seconds(t, -1)
    with pytest.raises(TypeError):
        business.add_open_seconds(t, True)
    with pytest.raises(TypeError):
        business.add_open_seconds(t, 1.5)  # type: ignore[arg-type]  # the wrong type, on purpose


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"monday": [("09:00", "12:00"), ("11:00", "13:00")]}, "overlap"),
        ({"monday": [("17:00", "09:00")]}, "end after it starts"),
        ({"monday": [("24:00", "24:00")]}, "out of range"),
        ({"monday": [("9:00", "17:00")]}, "HH:MM"),
        ({"monday": [("09:60", "17:00")]}, "invalid time"),
        ({"mondy": [("09:00", "17:00")]}, "weekday"),
    ],
)
def test_bad_hours_are_rejected(hours: dict, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        Calendar("UTC", hours)


def test_unknown_zone_is_rejected() -> None:
    with pytest.raises(CalendarError, match="time zone"):
        Calendar("Eastern", {})


def test_touching_intervals_are_one() -> None:
    cal = Calendar("UTC", {"monday": [("12:00", "17:00"), ("09:00", "12:00")]})
    monday = utc(2026, 11, 2)
    assert cal.parts(monday.replace(hour=8), monday.replace(hour=18)) == [
        (monday.replace(hour=8), monday.replace(hour=9), False),
        (monday.replace(hour=9), monday.replace(hour=17), True),
        (monday.replace(hour=17), monday.replace(hour=18), False),
    ]
