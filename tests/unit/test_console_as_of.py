"""The ticket page's as_of (services.api.console.ticket_page.parse_as_of): as the API's, `now` and
an instant ahead of the server by at most the clock skew are now; further ahead is refused."""

from datetime import UTC, datetime

import pytest

from services.api.console.ticket_page import BadInstant, parse_as_of

NOW = datetime(2026, 11, 20, 23, 30, 0, 400_000, tzinfo=UTC)
ZONE = "America/New_York"


def test_now_and_a_browser_ahead_by_less_than_the_skew_are_now():
    whole = NOW.replace(microsecond=0)
    assert parse_as_of("now", ZONE, NOW, 30) == whole
    assert parse_as_of("2026-11-20T23:30:20Z", ZONE, NOW, 30) == whole
    assert parse_as_of("2026-11-20T18:30:30", ZONE, NOW, 30) == whole  # a local wall time, EST


def test_further_ahead_than_the_skew_is_refused():
    with pytest.raises(BadInstant, match="future"):
        parse_as_of("2026-11-20T23:30:31Z", ZONE, NOW, 30)
    with pytest.raises(BadInstant, match="future"):
        parse_as_of("2026-11-20T23:30:01Z", ZONE, NOW)  # no skew given


def test_earlier_instants_are_taken_as_they_are():
    assert parse_as_of("2026-11-09T10:00", ZONE, NOW, 30) == datetime(2026, 11, 9, 15, 0, tzinfo=UTC)
    assert parse_as_of("2026-11-09T15:00:00Z", ZONE, NOW, 30) == datetime(2026, 11, 9, 15, 0, tzinfo=UTC)
