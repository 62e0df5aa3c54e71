"""Business calendars, exact to the second.

A :class:`Calendar` says when a support desk is open: weekly opening hours in
the local time of an IANA zone, minus holidays. It answers four questions
about real (elapsed) time: how many open seconds lie between two instants,
when N open seconds have elapsed after an instant, whether an instant is open,
and how an interval splits into open and closed parts.

Conventions (see also ``docs/sla-semantics.md``):

* Instants are timezone-aware :class:`~datetime.datetime` values in whole
  seconds; a naive datetime or a fractional second is a ``ValueError``
  (a calendar that rounded silently could not be exact). Results are in UTC.
* Open intervals are half-open, ``[open, close)``.
* Open time is real elapsed time. Local opening hours are turned into
  instants through the zone's own rules, so ``00:00-24:00`` on the day New
  York falls back counts 25 h, and 23 h on the day it springs forward.
* Local wall times that do not exist or exist twice are resolved by one rule:
  **a local time ``T`` means the earliest instant at which the local clock
  reads ``T`` or later.** Consequences:

  - in a spring-forward gap (New York 02:00-03:00 on the second Sunday of
    March), an opening or closing at 02:30 happens at the first instant after
    the gap (03:00 EDT); an interval entirely inside the gap is empty;
  - in a fall-back fold (01:00-02:00 on the first Sunday of November, seen
    twice), 01:30 is the first occurrence (``fold=0``, EDT); so ``01:00-01:30``
    lasts 30 min and ``01:30-02:00`` lasts 90 min (02:00 is only seen in EST).

Internally everything is integer seconds since the Unix epoch, and each local
date's open intervals are computed once and cached on the instance (a
calendar is immutable, so the caches never go stale). A ticket view asks for
spans of hours to weeks; spans of months or years use per-block prefix sums
so they stay cheap too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TWENTY_FOUR_SEVEN",
    "WEEKDAYS",
    "AlwaysOpenCalendar",
    "Calendar",
    "CalendarError",
    "NoOpenTimeError",
    "from_epoch",
    "parse_time_of_day",
    "to_epoch",
]

DAY_SECONDS = 86_400
TWENTY_FOUR_SEVEN = "24x7"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_NAIVE_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)

# A calendar that has had no open time for this many consecutive local days
# is taken to have none at all (three years, leap days included): searching
# further would only loop. Real calendars close for a few days at most.
MAX_CLOSED_DAYS = 3 * 366

# Days per block of cached prefix sums, used only for long spans.
_BLOCK = 64
# Spans of whole days up to this length are summed day by day: building a
# block of prefix sums costs more than it saves for a ticket's few days.
_SHORT_SPAN_DAYS = 16

_TIME_OF_DAY = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


class CalendarError(ValueError):
    """A calendar was defined or used wrongly."""


class NoOpenTimeError(CalendarError):
    """A calendar has no open time where some was needed."""


# --- instants ----------------------------------------------------------------


def to_epoch(instant: datetime) -> int:
    """Whole seconds since the Unix epoch of an aware, whole-second datetime."""
    if not isinstance(instant, datetime):
        raise TypeError(f"expected a datetime, got {type(instant).__name__}")
    offset = instant.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: instants must carry a time zone")
    if instant.microsecond or offset.microseconds:
        raise ValueError(f"{instant.isoformat()} is not a whole second: calendars count whole seconds")
    # timestamp() of an aware datetime is exact for whole seconds (integers far below 2**53).
    return int(instant.timestamp())


def from_epoch(seconds: int) -> datetime:
    """The UTC datetime ``seconds`` after the Unix epoch."""
    return datetime.fromtimestamp(seconds, UTC)


def _check_seconds(seconds: object) -> int:
    # bool is an int subclass; True open seconds is surely a mistake.
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise TypeError(f"seconds must be an int, got {type(seconds).__name__}")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return seconds


def _offset_seconds(local: datetime) -> int:
    """The UTC offset of an aware datetime, in seconds (one in a ZoneInfo zone always has one)."""
    offset = local.utcoffset()
    assert offset is not None, f"{local!r} is naive"
    return offset // _SECOND


# --- weekly hours ------------------------------------------------------------


def parse_time_of_day(value: object, *, allow_24: bool = False) -> int:
    """Seconds since local midnight of ``"HH:MM"``, ``"HH:MM:SS"``, a time or an int.

    Anything else raises :class:`CalendarError` (it parses what a user wrote).

    ``"24:00"`` (the end of the day) is accepted only with ``allow_24``.
    """
    if isinstance(value, bool):
        raise CalendarError(f"invalid time of day {value!r}")
    if isinstance(value, time):
        if value.tzinfo is not None or value.microsecond:
            raise CalendarError(f"time of day {value} must be naive and whole seconds")
        seconds = value.hour * 3600 + value.minute * 60 + value.second
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _TIME_OF_DAY.match(value)):
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        if minute > 59 or second > 59:
            raise CalendarError(f"invalid time of day {value!r}")
        seconds = hour * 3600 + minute * 60 + second
    else:
        raise CalendarError(f"invalid time of day {value!r}: expected HH:MM or HH:MM:SS")
    limit = DAY_SECONDS if allow_24 else DAY_SECONDS - 1
    if not 0 <= seconds <= limit:
        raise CalendarError(
            f"time of day {value!r} out of range (00:00 to {'24:00' if allow_24 else '23:59:59'})"
        )
    return seconds


def _weekday_index(key: str | int) -> int:
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 7:
        return key
    if isinstance(key, str) and key.lower() in WEEKDAYS:
        return WEEKDAYS.index(key.lower())
    raise CalendarError(f"invalid weekday {key!r}: expected 0-6 (Monday=0) or a name like 'monday'")


def _normalize_day(day: str, spans: Iterable[tuple[object, object]]) -> tuple[tuple[int, int], ...]:
    """Sorted local intervals of one weekday; touching ones are merged."""
    parsed = []
    for span in spans:
        try:
            start_text, end_text = span
        except (TypeError, ValueError):
            raise CalendarError(f"{day}: an interval is a pair (start, end), got {span!r}") from None
        start = parse_time_of_day(start_text)
        end = parse_time_of_day(end_text, allow_24=True)
        if end <= start:
            raise CalendarError(f"{day}: interval {start_text}-{end_text} must end after it starts")
        parsed.append((start, end))
    parsed.sort()
    merged: list[list[int]] = []
    for start, end in parsed:
        if merged and start < merged[-1][1]:
            # Overlaps are most likely typos; refuse rather than guess.
            raise CalendarError(f"{day}: opening intervals overlap")
        if merged and start == merged[-1][1]:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


# --- calendars ---------------------------------------------------------------

_Spans = Iterable[tuple[object, object]]
# Keyed by weekday names, by indices or by both (a Mapping's key type is invariant: each is listed).
WeeklyHoursInput = Mapping[str, _Spans] | Mapping[int, _Spans] | Mapping[str | int, _Spans]


class Calendar:
    """Weekly opening hours in an IANA zone, minus holidays.

    ``hours`` maps a weekday (``"monday"``... or 0-6, Monday=0) to a list of
    ``(start, end)`` local times (``"09:00"``, ``"17:30:00"``, ``"24:00"`` as an
    end, or seconds since midnight). A weekday not listed is closed.
    ``holidays`` are local dates closed all day; ``country`` (and optionally
    ``subdivision``) adds that country's public holidays from the ``holidays``
    package, observed days included (e.g. a Saturday holiday observed on Friday).
    """

    def __init__(
        self,
        time_zone: str,
        hours: WeeklyHoursInput,
        holidays: Iterable[date] = (),
        *,
        country: str | None = None,
        subdivision: str | None = None,
        name: str = "",
    ) -> None:
        try:
            self._tz = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CalendarError(f"unknown time zone {time_zone!r}: expected an IANA name") from None
        self.name = name
        self.time_zone = time_zone
        weekly: list[tuple[tuple[int, int], ...]] = [()] * 7
        for key, spans in hours.items():
            index = _weekday_index(key)
            weekly[index] = _normalize_day(WEEKDAYS[index], spans)
        self._weekly = tuple(weekly)
        self._holidays = frozenset(holidays)
        for day in self._holidays:
            if not isinstance(day, date) or isinstance(day, datetime):
                raise CalendarError(f"holiday {day!r} must be a date")
        if subdivision and not country:
            raise CalendarError("a holiday subdivision needs a country")
        self.country = country
        self.subdivision = subdivision
        self._country_holidays = _country_holidays(country, subdivision) if country else None
        # Caches keyed by proleptic Gregorian ordinal of the local date.
        self._starts: dict[int, int] = {}  # local midnight -> epoch
        self._hours: dict[int, tuple[int, int, int]] = {}  # UTC hour -> see _ordinal_of
        self._days: dict[int, tuple[tuple[int, int], ...]] = {}  # open intervals
        self._totals: dict[int, int] = {}  # open seconds of the day
        self._blocks: dict[int, tuple[int, ...]] = {}  # prefix sums per _BLOCK days

    def __repr__(self) -> str:
        return f"<Calendar {self.name or '(unnamed)'} {self.time_zone}>"

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    @property
    def weekly_hours(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Per weekday (Monday first), the opening intervals in seconds since local midnight."""
        return self._weekly

    @property
    def holidays(self) -> frozenset[date]:
        """The explicitly listed holidays (country holidays are looked up, see :meth:`is_holiday`)."""
        return self._holidays

    # -- public API, on datetimes --------------------------------------------

    def open_seconds(self, start: datetime, end: datetime) -> int:
        """Open seconds in ``[start, end)``; 0 if ``end <= start``."""
        a, b = to_epoch(start), to_epoch(end)
        return self._open_between(a, b) if b > a else 0

    def add_open_seconds(self, start: datetime, seconds: int) -> datetime:
        """The earliest instant by which ``seconds`` open seconds have elapsed after ``start``.

        Landing exactly on a closing time returns that closing time (not the
        next opening); ``seconds == 0`` returns ``start``. Raises
        :class:`NoOpenTimeError` if the calendar has no open time for
        :data:`MAX_CLOSED_DAYS` days in a row.
        """
        return from_epoch(self._add(to_epoch(start), _check_seconds(seconds)))

    def is_open(self, instant: datetime) -> bool:
        t = to_epoch(instant)
        return any(s <= t < e for s, e in self._day(self._ordinal_of(t)))

    def next_open(self, instant: datetime) -> datetime:
        """``instant`` if open, else the next opening time."""
        t = to_epoch(instant)
        o = self._ordinal_of(t)
        for s, e in self._day(o):
            if e > t:
                return from_epoch(max(s, t))
        closed = 0
        while True:
            o += 1
            day = self._day(o)
            if day:
                return from_epoch(day[0][0])
            closed += 1
            self._check_closed(closed, o)

    def parts(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, bool]]:
        """``[start, end)`` split into maximal open (True) and closed (False) parts, in order."""
        a, b = to_epoch(start), to_epoch(end)
        if b <= a:
            return []
        result: list[tuple[datetime, datetime, bool]] = []
        cursor = a
        for s, e in self._open_spans(a, b):
            if s > cursor:
                result.append((from_epoch(cursor), from_epoch(s), False))
            result.append((from_epoch(s), from_epoch(e), True))
            cursor = e
        if cursor < b:
            result.append((from_epoch(cursor), from_epoch(b), False))
        return result

    def open_intervals(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The maximal open intervals within ``[start, end)``, clipped to it."""
        a, b = to_epoch(start), to_epoch(end)
        return [(from_epoch(s), from_epoch(e)) for s, e in self._open_spans(a, b)] if b > a else []

    def local_date(self, instant: datetime) -> date:
        """The date a wall clock in this calendar's zone shows at ``instant``."""
        return datetime.fromtimestamp(to_epoch(instant), self._tz).date()

    def day_start(self, day: date) -> datetime:
        """The first instant of the local date ``day`` (UTC): its midnight in this calendar's zone,
        or, where the zone skips midnight, the first instant after (the rule for wall times above).
        A month in this zone is ``[day_start(first day), day_start(first day of the next month))``."""
        return from_epoch(self._wall_epoch(day.toordinal(), 0))

    def is_holiday(self, day: date) -> bool:
        return day in self._holidays or (self._country_holidays is not None and day in self._country_holidays)

    def is_open_day(self, day: date) -> bool:
        """Whether the local date ``day`` has any open time (a business day)."""
        return bool(self._day(day.toordinal()))

    def count_open_days(self, after: date, through: date, at_most: int | None = None) -> int:
        """Local dates ``d`` with ``after < d <= through`` that have open time.

        With ``at_most``, counting stops there: a notice question ("fewer than
        5 business days?") need not walk every day to a far install date.
        """
        count = 0
        for ordinal in range(after.toordinal() + 1, through.toordinal() + 1):
            if at_most is not None and count >= at_most:
                break
            count += bool(self._day(ordinal))
        return count

    # -- internals, on epoch seconds ------------------------------------------

    def _wall_epoch(self, ordinal: int, seconds: int) -> int:
        """The earliest instant at which local clocks read ``seconds`` after midnight of ``ordinal`` or later.

        ``seconds`` may be 86 400 (24:00 = next midnight).
        """
        naive = datetime.fromordinal(ordinal) + timedelta(seconds=seconds)
        base = (naive - _NAIVE_EPOCH) // _SECOND
        off0 = _offset_seconds(naive.replace(tzinfo=self._tz))
        off1 = _offset_seconds(naive.replace(tzinfo=self._tz, fold=1))
        t0, t1 = base - off0, base - off1
        if t0 <= t1:
            # Existing (t0 == t1) or ambiguous: fold=0 is the earlier instant.
            return t0
        # A gap: fold=1 (t1) lies before the transition, fold=0 (t0) after it.
        # Find the transition, the first instant whose wall clock reads at least
        # `naive`; the wall clock is monotone here, so bisect (gaps are rare and
        # the result is cached with its date).
        lo, hi = t1, t0  # wall(lo) < naive <= wall(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self._tz).replace(tzinfo=None) >= naive:
                hi = mid
            else:
                lo = mid
        return hi

    def _start(self, ordinal: int) -> int:
        """Epoch of local midnight starting date ``ordinal``."""
        start = self._starts.get(ordinal)
        if start is None:
            start = self._starts[ordinal] = self._wall_epoch(ordinal, 0)
        return start

    def _ordinal_of(self, t: int) -> int:
        """The local date whose [midnight, next midnight) holds ``t``.

        Cached per UTC hour: local midnights are hours apart, so an hour holds
        at most one of them (a skipped date's midnight coincides with the next).
        """
        hour = t // 3600
        entry = self._hours.get(hour)
        if entry is None:
            before = self._ordinal_of_uncached(hour * 3600)
            after = self._ordinal_of_uncached(hour * 3600 + 3599)
            entry = self._hours[hour] = (before, self._start(after), after)
        before, boundary, after = entry
        return after if t >= boundary else before

    def _ordinal_of_uncached(self, t: int) -> int:
        o = datetime.fromtimestamp(t, self._tz).toordinal()
        # Only differs from the wall date where midnight itself falls in a
        # fold (e.g. America/Santiago) or a day is skipped (Pacific/Apia 2011).
        while t >= self._start(o + 1):
            o += 1
        while t < self._start(o):
            o -= 1
        return o

    def _day(self, ordinal: int) -> tuple[tuple[int, int], ...]:
        """Open intervals of a local date as epoch pairs, sorted, disjoint, not touching."""
        day = self._days.get(ordinal)
        if day is None:
            day = self._days[ordinal] = self._compute_day(ordinal)
        return day

    def _compute_day(self, ordinal: int) -> tuple[tuple[int, int], ...]:
        local = date.fromordinal(ordinal)
        if self.is_holiday(local):
            return ()
        out: list[list[int]] = []
        for start, end in self._weekly[local.weekday()]:
            s, e = self._wall_epoch(ordinal, start), self._wall_epoch(ordinal, end)
            if e <= s:
                continue  # entirely inside a spring-forward gap
            if out and s <= out[-1][1]:
                out[-1][1] = max(out[-1][1], e)  # a gap made two intervals touch
            else:
                out.append([s, e])
        return tuple((s, e) for s, e in out)

    def _total(self, ordinal: int) -> int:
        total = self._totals.get(ordinal)
        if total is None:
            total = self._totals[ordinal] = sum(e - s for s, e in self._day(ordinal))
        return total

    def _prefix(self, block: int) -> tuple[int, ...]:
        """Cumulative open seconds at the start of each date of a block (and its end)."""
        prefix = self._blocks.get(block)
        if prefix is None:
            acc = [0]
            for o in range(block * _BLOCK, (block + 1) * _BLOCK):
                acc.append(acc[-1] + self._total(o))
            prefix = self._blocks[block] = tuple(acc)
        return prefix

    def _sum_days(self, first: int, stop: int) -> int:
        """Open seconds of the whole local dates ``first <= o < stop``."""
        if stop - first <= _SHORT_SPAN_DAYS:
            return sum(self._total(o) for o in range(first, stop))
        k1, i1 = divmod(first, _BLOCK)
        k2, i2 = divmod(stop, _BLOCK)
        if k1 == k2:
            p = self._prefix(k1)
            return p[i2] - p[i1]
        p = self._prefix(k1)
        total = p[_BLOCK] - p[i1]
        for k in range(k1 + 1, k2):
            total += self._prefix(k)[_BLOCK]
        return total + self._prefix(k2)[i2]

    @staticmethod
    def _clip(day: tuple[tuple[int, int], ...], a: int, b: int) -> int:
        total = 0
        for s, e in day:
            s, e = max(s, a), min(e, b)
            if e > s:
                total += e - s
        return total

    def _open_between(self, a: int, b: int) -> int:
        oa, ob = self._ordinal_of(a), self._ordinal_of(b)
        if oa == ob:
            return self._clip(self._day(oa), a, b)
        return self._clip(self._day(oa), a, b) + self._sum_days(oa + 1, ob) + self._clip(self._day(ob), a, b)

    def _add(self, a: int, n: int) -> int:
        if n == 0:
            return a
        o = self._ordinal_of(a)
        landed, n = self._consume(self._day(o), a, n)
        if landed is not None:
            return landed
        closed = 0  # consecutive dates without open time
        walked = 0
        o += 1
        while True:
            # On long walks, skip whole blocks of dates while they do not suffice.
            if walked > _SHORT_SPAN_DAYS and o % _BLOCK == 0:
                block_total = self._prefix(o // _BLOCK)[_BLOCK]
                if block_total < n:
                    n -= block_total
                    closed = 0 if block_total else closed + _BLOCK
                    self._check_closed(closed, o)
                    o += _BLOCK
                    continue
            total = self._total(o)
            if total >= n:  # lands on this date
                landed, _ = self._consume(self._day(o), a, n)
                assert landed is not None  # the date has the n seconds
                return landed
            n -= total
            closed = 0 if total else closed + 1
            self._check_closed(closed, o)
            o += 1
            walked += 1

    @staticmethod
    def _consume(day: tuple[tuple[int, int], ...], a: int, n: int) -> tuple[int | None, int]:
        """Spend ``n > 0`` open seconds of ``day`` from ``a`` on: (landing instant or None, what is left).

        The landing instant is the earliest one, so reaching ``n`` exactly at
        the end of an interval returns its closing time.
        """
        for s, e in day:
            if e <= a:
                continue
            s = max(s, a)
            if e - s >= n:
                return s + n, 0
            n -= e - s
        return None, n

    def _check_closed(self, closed_days: int, ordinal: int) -> None:
        if closed_days > MAX_CLOSED_DAYS:
            raise NoOpenTimeError(
                f"calendar {self.name or self.time_zone!r} has no open time in the "
                f"{closed_days} days up to {date.fromordinal(ordinal)}: check its hours and holidays"
            )

    def _open_spans(self, a: int, b: int) -> list[tuple[int, int]]:
        """Maximal open intervals clipped to [a, b), merged across midnight."""
        spans: list[list[int]] = []
        for o in range(self._ordinal_of(a), self._ordinal_of(b) + 1):
            for s, e in self._day(o):
                s, e = max(s, a), min(e, b)
                if e <= s:
                    continue
                if spans and spans[-1][1] == s:  # e.g. 24:00 followed by 00:00
                    spans[-1][1] = e
                else:
                    spans.append([s, e])
        return [(s, e) for s, e in spans]


class AlwaysOpenCalendar(Calendar):
    """The built-in ``24x7`` calendar: every second is open, so open time is wall time."""

    def __init__(self, name: str = TWENTY_FOUR_SEVEN) -> None:
        super().__init__("UTC", {day: [("00:00", "24:00")] for day in WEEKDAYS}, name=name)

    def __repr__(self) -> str:
        return f"<Calendar {self.name} (always open)>"

    # Closed-form answers: the generic code would give the same, slower.
    def open_seconds(self, start: datetime, end: datetime) -> int:
        return max(0, to_epoch(end) - to_epoch(start))

    def add_open_seconds(self, start: datetime, seconds: int) -> datetime:
        return from_epoch(to_epoch(start) + _check_seconds(seconds))

    def is_open(self, instant: datetime) -> bool:
        to_epoch(instant)  # validates
        return True

    def next_open(self, instant: datetime) -> datetime:
        return from_epoch(to_epoch(instant))

    def parts(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, bool]]:
        a, b = to_epoch(start), to_epoch(end)
        return [(from_epoch(a), from_epoch(b), True)] if b > a else []

    def open_intervals(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        a, b = to_epoch(start), to_epoch(end)
        return [(from_epoch(a), from_epoch(b))] if b > a else []

    def is_open_day(self, day: date) -> bool:
        return True

    def count_open_days(self, after: date, through: date, at_most: int | None = None) -> int:
        days = max(0, (through - after).days)
        return days if at_most is None else min(days, at_most)


def _country_holidays(country: str, subdivision: str | None) -> Mapping[date, str]:
    try:
        import holidays as holidays_package  # optional: only calendars that name a country need it
    except ImportError:
        raise CalendarError(
            f"country holidays {country!r} need the 'holidays' package: pip install holidays"
        ) from None
    try:
        return holidays_package.country_holidays(country, subdiv=subdivision)
    except NotImplementedError as exc:  # how the package says "unknown country/subdivision"
        raise CalendarError(f"country holidays: {exc}") from None
