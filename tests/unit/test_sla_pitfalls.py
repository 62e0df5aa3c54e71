"""One test (or a few) per pitfall of docs/decisions/0002-sla-pitfalls.md (numbered as there).

Each pitfall is a bug another SLA engine shipped; each test here is that bug's scenario
written against slatrack's rules (issue 3). Default policy unless said otherwise:
business = Mon-Fri 09:00-17:00 America/New_York. 2026-11-06 is a Friday, 2026-11-09 a Monday.
"""

from datetime import UTC, datetime, timedelta
from importlib import resources

import orjson
import pytest

from projections.policy import default_policy, parse_policy
from projections.replay import replay
from tests.engine_helpers import BERLIN, H, M, Story, ny

DEFAULT_TEXT = resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")
SECOND = timedelta(seconds=1)


def edited_policy(old: str, new: str, version: str):
    assert old in DEFAULT_TEXT, old
    text = DEFAULT_TEXT.replace(old, new, 1).replace(
        'version = "default-2026.1"', f'version = "{version}"', 1
    )
    return parse_policy(text, "edited.toml")


# --- 1. pause time measured on the clock's own calendar (GLPI #10594) --------------------------


def test_pause_over_a_weekend_is_measured_in_business_hours():
    s = Story()
    s.opened(ny("2026-11-06 09:00"), "low")  # Friday
    s.responded(ny("2026-11-06 09:05"))
    s.status(ny("2026-11-06 16:00"), "pending_customer")
    s.status(ny("2026-11-09 10:00"), "in_progress")  # Monday
    view = s.view(ny("2026-11-09 12:00"))
    # Counted: Friday 09-16 (7 h) + Monday 10-12 (2 h). The pause held 2 business hours
    # (Friday 16-17, Monday 09-10), not its 66 wall-clock hours.
    resolution = view["clocks"]["resolution"]
    assert resolution["elapsed_seconds"] == 9 * H
    # 39 h remain: Mon 5, Tue 8, Wed 8, Thu 8, Fri 8 -> Monday 2026-11-16 11:00 EST.
    assert resolution["due_at"] == "2026-11-16T16:00:00Z"


def test_pause_over_a_weekend_on_a_24x7_clock_is_measured_in_real_time():
    s = Story()
    s.opened(ny("2026-11-06 09:00"), "urgent")
    s.responded(ny("2026-11-06 09:05"))
    s.status(ny("2026-11-06 16:00"), "pending_customer")
    s.status(ny("2026-11-09 10:00"), "in_progress")
    view = s.view(ny("2026-11-09 12:00"))
    # 75 h of wall time minus the 66 h pause.
    assert view["clocks"]["resolution"]["elapsed_seconds"] == 9 * H
    assert view["clocks"]["resolution"]["calendar"] == "24x7"


def test_pause_across_the_dst_change_on_a_24x7_clock_counts_real_seconds():
    s = Story()
    s.opened(ny("2026-10-31 20:00"), "urgent")  # Saturday EDT = 2026-11-01T00:00Z
    s.responded(ny("2026-10-31 20:05"))
    s.status(ny("2026-11-01 00:00"), "pending_customer")  # 04:00Z
    s.status(ny("2026-11-01 03:00"), "in_progress")  # EST = 08:00Z: the pause held 4 real hours
    view = s.view(ny("2026-11-01 04:00"))  # 09:00Z
    assert view["clocks"]["resolution"]["elapsed_seconds"] == 4 * H + 1 * H


# --- 2. accumulated time not lost when the SLA is re-applied (GLPI #6902, #15605) ---------------


def test_a_priority_change_to_the_same_priority_does_not_restart_the_cycle():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    s.priority(ny("2026-11-02 11:00"), "medium")
    s.status(ny("2026-11-02 12:00"), "in_progress")
    view = s.view(ny("2026-11-02 13:00"))
    resolution = view["clocks"]["resolution"]
    assert (resolution["cycles"], resolution["elapsed_seconds"]) == (1, 2 * H)
    assert (view["clocks"]["response"]["cycles"], view["clocks"]["response"]["elapsed_seconds"]) == (1, 4 * H)


def test_a_priority_change_while_resolved_keeps_the_accumulated_resolution_time():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-02 12:00"), "pending_customer")
    s.status(ny("2026-11-03 12:00"), "in_progress")
    s.resolved(ny("2026-11-03 15:00"))
    s.priority(ny("2026-11-04 09:00"), "medium")  # "final priority" bookkeeping while resolved
    s.reopened(ny("2026-11-04 10:00"))
    view = s.view(ny("2026-11-04 11:00"))
    resolution = view["clocks"]["resolution"]
    # 3 h Monday + 3 h Tuesday + 1 h Wednesday, still low's 48 h cycle.
    assert (resolution["cycles"], resolution["target_seconds"], resolution["elapsed_seconds"]) == (
        1,
        48 * H,
        7 * H,
    )
    assert resolution["status"] == "running"


def test_earlier_cycles_are_not_rewritten_by_a_later_change():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "high")
    s.priority(ny("2026-11-02 11:30"), "low")
    before_change = s.view(ny("2026-11-02 11:30"))
    assert before_change["clocks"]["response"]["breached"] is True
    # Viewing later, the past (breach at 11:00:01 in cycle 1) is still what it was.
    for as_of in ("2026-11-02 12:00", "2026-11-05 12:00", "2026-12-01 12:00"):
        view = s.view(ny(as_of))
        assert view["clocks"]["response"]["breached"] is True, as_of
        assert view["clocks"]["response"]["cycles"] == 2, as_of
        assert view["escalation"]["level"] >= 1, as_of


# --- 3. a breach stays a breach ---------------------------------------------------------------


def test_a_priority_change_cannot_launder_a_response_breach():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "urgent")
    s.priority(ny("2026-11-02 10:30"), "low")  # urgent response breached at 10:00:01
    s.responded(ny("2026-11-02 11:00"))  # well within low's 8 h
    view = s.view(ny("2026-11-02 12:00"))
    response = view["clocks"]["response"]
    assert response == {
        **response,
        "status": "stopped",
        "calendar": "business",
        "target_seconds": 8 * H,
        "elapsed_seconds": 30 * M,
        "breached": True,
        "cycles": 2,
        "due_at": None,
    }
    assert view["escalation"]["level"] == 1


def test_a_breach_in_an_earlier_cycle_survives_many_changes():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:30"))
    s.priority(ny("2026-11-03 10:00"), "low")  # resolution 9 h > 8 h: breached in cycle 1
    s.priority(ny("2026-11-03 11:00"), "medium")
    s.priority(ny("2026-11-03 12:00"), "high")
    view = s.view(ny("2026-11-03 13:00"))
    resolution = view["clocks"]["resolution"]
    assert resolution["breached"] is True
    assert resolution["cycles"] == 4
    assert resolution["target_seconds"] is None
    assert resolution["due_at"] is None
    assert view["escalation"]["level"] == 1


# --- 4. deadline vs timer (GLPI #17186) ----------------------------------------------------------


def test_due_at_of_a_running_clock_does_not_move_while_time_passes():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    seen = {
        s.view(ny(at))["clocks"]["resolution"]["due_at"]
        for at in (
            "2026-11-02 09:00",
            "2026-11-02 10:00",
            "2026-11-02 12:34:56",
            "2026-11-02 16:59:59",
        )
    }
    assert seen == {"2026-11-02T22:00:00Z"}
    elapsed = [
        s.view(ny(at))["clocks"]["resolution"]["elapsed_seconds"]
        for at in (
            "2026-11-02 09:00",
            "2026-11-02 10:00",
            "2026-11-02 16:59:59",
        )
    ]
    assert elapsed == [0, H, 8 * H - 1]


def test_a_pause_moves_due_at_by_exactly_the_paused_open_time_and_elapsed_not_at_all():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-02 12:00"), "pending_customer")
    s.status(ny("2026-11-02 14:00"), "in_progress")
    paused = s.view(ny("2026-11-02 13:00"))["clocks"]["resolution"]
    assert (paused["status"], paused["elapsed_seconds"], paused["due_at"]) == ("paused", 3 * H, None)
    running = s.view(ny("2026-11-02 15:00"))["clocks"]["resolution"]
    # Elapsed is the timer: 3 h + 1 h. due_at moves by the 2 paused business hours:
    # from Monday 17:00 to Tuesday 11:00 EST.
    assert running["elapsed_seconds"] == 4 * H
    assert running["due_at"] == "2026-11-03T16:00:00Z"


def test_once_reached_due_at_stays_while_elapsed_keeps_growing():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:05"))
    views = [s.view(ny(at))["clocks"]["resolution"] for at in ("2026-11-03 10:00", "2026-11-04 10:00")]
    assert [v["due_at"] for v in views] == ["2026-11-02T22:00:00Z"] * 2
    assert [v["elapsed_seconds"] for v in views] == [9 * H, 17 * H]


# --- 5. time-driven signals follow the calendar (GLPI PR #22678; zammad #4432, #2157) -------------


def friday_afternoon_ticket() -> Story:
    s = Story()
    s.opened(ny("2026-11-06 15:00"), "medium")  # response 4 h: Fri 15-17 + Mon 09-11
    return s


@pytest.mark.parametrize(
    ("as_of", "breached"),
    [
        ("2026-11-06 17:00:01", False),
        ("2026-11-06 23:59:59", False),
        ("2026-11-07 00:00:00", False),  # Saturday midnight
        ("2026-11-08 12:00:00", False),  # Sunday
        ("2026-11-09 00:00:00", False),  # Monday midnight
        ("2026-11-09 09:00:00", False),
        ("2026-11-09 11:00:00", False),  # exactly 4 h
        ("2026-11-09 11:00:01", True),  # the next business second
    ],
)
def test_a_business_hours_breach_happens_during_business_hours(as_of, breached):
    view = friday_afternoon_ticket().view(ny(as_of))
    assert view["clocks"]["response"]["breached"] is breached
    assert view["escalation"]["level"] == (1 if breached else 0)
    assert view["clocks"]["response"]["due_at"] == "2026-11-09T16:00:00Z"


def test_next_change_falls_in_business_hours_not_on_the_weekend():
    s = friday_afternoon_ticket()
    business = default_policy().calendar("business")
    for at in ("2026-11-06 17:30", "2026-11-07 03:00", "2026-11-08 23:00", "2026-11-09 08:59:59"):
        state = s.state(ny(at))
        change = state.next_change_at()
        assert change is not None, at
        assert change >= ny("2026-11-09 09:00"), at
        assert change <= ny("2026-11-09 11:00:01"), at
        # The second just before the change is a business second: the change comes from counting.
        assert business.is_open(change - SECOND), at


def test_resolution_escalations_after_a_weekend_land_in_business_hours():
    s = Story()
    s.opened(ny("2026-11-06 09:00"), "medium")  # resolution 8 h: met Fri 17:00
    s.responded(ny("2026-11-06 09:05"))
    levels = {
        at: s.view(ny(at))["escalation"]["level"]
        for at in (
            "2026-11-06 17:00:00",
            "2026-11-07 12:00",
            "2026-11-09 09:00:00",
            "2026-11-09 09:00:01",
            "2026-11-09 12:59:59",
            "2026-11-09 13:00:00",
            "2026-11-09 17:00:00",
        )
    }
    assert levels == {
        "2026-11-06 17:00:00": 0,
        "2026-11-07 12:00": 0,
        "2026-11-09 09:00:00": 0,
        "2026-11-09 09:00:01": 1,
        "2026-11-09 12:59:59": 1,
        "2026-11-09 13:00:00": 2,
        "2026-11-09 17:00:00": 3,
    }


def test_escalation_reason_instants_are_business_instants():
    s = Story()
    s.opened(ny("2026-11-06 09:00"), "medium")
    s.responded(ny("2026-11-06 09:05"))
    view = s.view(ny("2026-11-10 12:00"))
    business = default_policy().calendar("business")
    instants = [
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        for reason in view["escalation"]["reasons"]
        for value in reason.values()
        if isinstance(value, str) and value.endswith("Z") and value[:4].isdigit()
    ]
    assert instants, view["escalation"]["reasons"]
    for at in instants:
        assert business.is_open(at - SECOND), at


# --- 6. time zone only from the policy (frappe/helpdesk PR #3776; GLPI #15429) --------------------

OFFSETS = ["Z", "+00:00", "-05:00", "+09:00", "+05:30", "-12:00", "+14:00"]


def history_written_in(offset_name: str) -> Story:
    zone = _zone(offset_name)
    s = Story()
    for kind, at, arg in [
        ("opened", "2026-11-02 09:00", "medium"),
        ("status", "2026-11-02 11:00", "pending_customer"),
        ("status", "2026-11-02 13:30", "in_progress"),
        ("responded", "2026-11-02 14:00", None),
        ("resolved", "2026-11-03 10:15", None),
    ]:
        instant = ny(at).astimezone(zone)
        add = getattr(s, kind)
        if arg is None:
            add(instant)
        else:
            add(instant, arg)
    s.work(ny("2026-11-02 16:00").astimezone(zone), ny("2026-11-02 18:00").astimezone(zone))
    return s


def _zone(offset_name: str):
    from datetime import timezone

    if offset_name == "Z":
        return UTC
    sign = -1 if offset_name[0] == "-" else 1
    hours, minutes = offset_name[1:].split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def test_the_offsets_events_are_written_in_do_not_change_the_view():
    documents = {
        name: orjson.dumps(history_written_in(name).replay(ny("2026-11-04 12:00"))) for name in OFFSETS
    }
    assert len(set(documents.values())) == 1, documents
    view = history_written_in("+09:00").view(ny("2026-11-04 12:00"))
    assert view["opened_at"] == "2026-11-02T14:00:00Z"
    # 09-11 + 13:30-17 + 09-10:15
    assert view["clocks"]["resolution"]["elapsed_seconds"] == 2 * H + 3 * H + 30 * M + 75 * M


def test_business_hours_are_those_of_the_policy_zone_not_the_event_offset():
    # 23:30 in Tokyo is Monday 09:30 in New York: inside business hours, no uncovered P1.
    s = Story()
    s.opened("2026-11-02T23:30:00+09:00", "urgent")
    assert s.view(ny("2026-11-02 12:00"))["billing"]["rule"] is None
    # 10:00 in Tokyo on Tuesday is Monday 20:00 in New York: outside business hours.
    s = Story()
    s.opened("2026-11-03T10:00:00+09:00", "urgent")
    assert s.view(ny("2026-11-03 12:00"))["billing"]["rule"] == "uncovered_p1"


def test_a_policy_in_another_zone_uses_that_zone():
    berlin_policy = edited_policy('time_zone = "America/New_York"', 'time_zone = "Europe/Berlin"', "berlin-1")
    s = Story()
    s.opened(datetime(2026, 11, 2, 9, 0, tzinfo=BERLIN), "medium")  # 08:00Z
    view = s.view(datetime(2026, 11, 2, 12, 0, tzinfo=BERLIN), policy=berlin_policy)
    assert view["clocks"]["response"]["elapsed_seconds"] == 3 * H
    assert view["clocks"]["response"]["due_at"] == "2026-11-02T12:00:00Z"  # 13:00 Berlin
    assert view["policy_version"] == "berlin-1"
    # The same events under the New York policy: Berlin 09:00-12:00 is 03:00-06:00 in New York.
    assert s.view(datetime(2026, 11, 2, 12, 0, tzinfo=BERLIN))["clocks"]["response"]["elapsed_seconds"] == 0


def test_views_print_utc_with_z():
    s = Story()
    s.opened("2026-11-02T23:30:00+09:00", "medium")
    view = s.view(ny("2026-11-02 12:00"))
    assert view["opened_at"] == "2026-11-02T14:30:00Z"
    assert view["clocks"]["response"]["due_at"] == "2026-11-02T18:30:00Z"


# --- 7. hold time dropped when resolved straight from a paused state (frappe PR #3776) -----------


def test_resolving_from_a_paused_state_counts_no_hold_time():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-02 11:00"), "pending_customer")
    s.resolved(ny("2026-11-02 15:00"))  # straight from pending_customer
    view = s.view(ny("2026-11-03 12:00"))
    resolution = view["clocks"]["resolution"]
    assert (resolution["status"], resolution["elapsed_seconds"], resolution["due_at"]) == (
        "stopped",
        2 * H,
        None,
    )


def test_reopening_a_ticket_still_pending_keeps_the_resolution_paused():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-02 11:00"), "pending_customer")
    s.resolved(ny("2026-11-02 15:00"))
    s.reopened(ny("2026-11-03 10:00"))
    s.status(ny("2026-11-03 14:00"), "in_progress")
    paused = s.view(ny("2026-11-03 12:00"))["clocks"]["resolution"]
    assert (paused["status"], paused["elapsed_seconds"]) == ("paused", 2 * H)
    running = s.view(ny("2026-11-03 16:00"))["clocks"]["resolution"]
    assert (running["status"], running["elapsed_seconds"]) == ("running", 4 * H)


def test_closing_from_a_paused_state_counts_no_hold_time():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    s.closed(ny("2026-11-03 10:00"))
    resolution = s.view(ny("2026-11-05 10:00"))["clocks"]["resolution"]
    assert (resolution["status"], resolution["elapsed_seconds"]) == ("stopped", 1 * H)


# --- 8. policy changes reach every ticket: a full rebuild (zammad #4353, #534; otobo #505) -------


def test_a_rebuild_under_another_policy_reaches_every_ticket():
    s = Story()
    for n in range(5):
        s.opened(ny("2026-11-02 09:00") + n * timedelta(minutes=10), "medium", ticket_id=f"T-{n}")
    shorter = edited_policy(
        'response = { target = "4h", calendar = "business" }',
        'response = { target = "1h", calendar = "business" }',
        "short-response-1",
    )
    as_of = ny("2026-11-02 11:00")
    old = replay(list(s.records), default_policy(), as_of)
    new = replay(list(s.records), shorter, as_of)
    assert new["policy_version"] == "short-response-1"
    assert [t["clocks"]["response"]["target_seconds"] for t in new["tickets"]] == [H] * 5
    assert all(t["clocks"]["response"]["breached"] for t in new["tickets"])
    assert all(t["escalation"]["level"] == 1 for t in new["tickets"])
    assert all(t["policy_version"] == "short-response-1" for t in new["tickets"])
    # And back: nothing stale is carried from one evaluation to the next.
    again = replay(list(s.records), default_policy(), as_of)
    assert orjson.dumps(again) == orjson.dumps(old)
    assert not any(t["clocks"]["response"]["breached"] for t in again["tickets"])


# --- 9. holidays only from the policy file (zammad #390) -----------------------------------------


@pytest.mark.parametrize(
    "day", ["2026-11-11", "2026-11-26", "2026-12-25"]
)  # Veterans Day, Thanksgiving, Christmas
def test_public_holidays_are_business_days_unless_the_policy_lists_them(day):
    s = Story()
    s.opened(ny(f"{day} 09:00"), "medium")
    s.responded(ny(f"{day} 09:05"))
    assert s.view(ny(f"{day} 17:00"))["clocks"]["resolution"]["elapsed_seconds"] == 8 * H


def test_a_holiday_listed_in_the_policy_is_closed():
    with_holiday = edited_policy("holidays = []", "holidays = [2026-11-26]", "thanksgiving-1")
    s = Story(policy=with_holiday)
    s.opened(ny("2026-11-25 16:00"), "medium")  # Wednesday
    s.responded(ny("2026-11-25 16:05"))
    view = s.view(ny("2026-11-27 10:00"))  # Friday
    assert view["clocks"]["resolution"]["elapsed_seconds"] == 2 * H  # Wed 1 h + Fri 1 h
    # Due: 6 h left at Fri 10:00 -> Fri 16:00 EST.
    assert view["clocks"]["resolution"]["due_at"] == "2026-11-27T21:00:00Z"
    assert Story().policy.calendars["business"].holidays == []


def test_a_policy_holiday_shortens_the_install_notice():
    with_holiday = edited_policy("holidays = []", "holidays = [2026-11-26]", "thanksgiving-1")
    s = Story(policy=with_holiday)
    s.opened(ny("2026-11-23 10:00"), "low", category="new_install", install_date="2026-11-30")
    assert "short_install_notice" in s.view(ny("2026-11-23 11:00"))["flags"]  # Tue, Wed, Fri, Mon: 4
    assert "short_install_notice" not in s.view(ny("2026-11-23 11:00"), policy=default_policy())["flags"]


# --- 10. each deadline shown separately (zammad #3928) ------------------------------------------------


def test_each_clock_shows_its_own_deadline():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 10:00"))
    before = s.view(ny("2026-11-02 09:30"))["clocks"]
    assert before["response"]["due_at"] == "2026-11-02T18:00:00Z"  # 13:00 EST
    assert before["resolution"]["due_at"] == "2026-11-02T22:00:00Z"  # 17:00 EST
    after = s.view(ny("2026-11-02 10:30"))["clocks"]
    assert after["response"]["due_at"] is None  # answered in time
    assert after["resolution"]["due_at"] == "2026-11-02T22:00:00Z"


def test_each_clock_has_its_own_calendar_and_target():
    s = Story()
    s.opened(ny("2026-11-02 20:00"), "urgent")
    clocks = s.view(ny("2026-11-02 20:30"))["clocks"]
    assert (clocks["response"]["calendar"], clocks["response"]["target_seconds"]) == ("24x7", H)
    assert clocks["response"]["due_at"] == "2026-11-03T02:00:00Z"
    assert (clocks["resolution"]["calendar"], clocks["resolution"]["target_seconds"]) == ("24x7", None)
    assert clocks["resolution"]["due_at"] is None


def test_next_change_includes_a_suspension_that_starts_with_no_new_event():
    """A live worker sleeps until next_change_at(): it must wake when a known suspension begins.

    The customer's invoice was due 2026-10-23T16:00Z, so its non_service ticket pauses at
    2026-11-02T16:00Z (Monday 11:00 EST) with no further event. Evaluated at 10:00 EST, the next
    change of the view (response and resolution go from running to paused) is at 11:00 EST.
    """
    from projections.account import account_standing
    from projections.ticket import evaluate
    from projections.timeline import history

    s = Story(customer_id="cust-9")
    s.invoice_due(datetime(2026, 10, 1, 12, tzinfo=UTC), "INV-7", datetime(2026, 10, 23, 16, tzinfo=UTC))
    s.opened(ny("2026-11-02 09:00"), "low", category="non_service")
    account = [r for r in s.records if r.event.type.startswith("account.")]
    ticket = [r for r in s.records if r.event.type.startswith("ticket.")]
    policy = default_policy()

    def state_at(as_of):
        return evaluate(ticket, policy, as_of, account_standing(history(account, as_of), policy, as_of))

    assert state_at(ny("2026-11-02 10:00")).view().clocks.response.status == "running"
    assert state_at(ny("2026-11-02 11:00:01")).view().clocks.response.status == "paused"
    change = state_at(ny("2026-11-02 10:00")).next_change_at()
    assert change is not None
    assert change <= ny("2026-11-02 11:00:01"), change
