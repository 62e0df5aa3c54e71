"""Clock.breach_at: the instant a clock breaches (its elapsed open time passes the target), past
or projected — the console's queue is in this order (issue 15). Hand-computed from the default
policy: business hours Mon-Fri 09:00-17:00 America/New_York; medium response 4 h, urgent 1 h 24x7."""

from tests.engine_helpers import Story, ny


def test_an_overdue_business_hours_clock_breaches_at_the_next_opening():
    story = Story()
    story.opened(ny("2026-11-20 13:00"), "medium")  # Friday
    state = story.state(ny("2026-11-20 18:30"))
    response = state.clocks["response"]
    assert response.due_at(ny("2026-11-20 18:30")) == ny("2026-11-20 17:00")  # reached: overdue
    assert response.breach_at(ny("2026-11-20 18:30")) == ny("2026-11-23 09:00:01")  # Monday


def test_a_24x7_clock_breaches_one_second_after_its_due_and_a_breach_stays_put():
    story = Story()
    story.opened(ny("2026-11-20 18:00"), "urgent")
    response = story.state(ny("2026-11-20 18:30")).clocks["response"]
    assert response.breach_at(ny("2026-11-20 18:30")) == ny("2026-11-20 19:00:01")
    later = story.state(ny("2026-11-21 08:00")).clocks["response"]
    assert later.current.breached and later.breach_at(ny("2026-11-21 08:00")) == ny("2026-11-20 19:00:01")


def test_a_stopped_or_paused_clock_has_no_breach_ahead():
    story = Story()
    story.opened(ny("2026-11-18 10:00"), "low")
    story.responded(ny("2026-11-18 11:00"))
    story.status(ny("2026-11-19 12:00"), "pending_customer")
    state = story.state(ny("2026-11-19 13:00"))
    assert state.clocks["response"].breach_at(ny("2026-11-19 13:00")) is None  # stopped, not breached
    assert state.clocks["resolution"].breach_at(ny("2026-11-19 13:00")) is None  # paused
