"""Worked examples of the SLA engine (issue 3), as exact values on the ticket and customer views.

The default policy: business = Mon-Fri 09:00-17:00 America/New_York, no holidays.
New York left DST on Sunday 2026-11-01: before it EDT (UTC-4), after it EST (UTC-5).
Calendar facts used below: 2026-10-30 is a Friday, 2026-11-02 a Monday.
"""

from datetime import date, timedelta

import pytest

from projections.policy import default_policy
from tests.engine_helpers import H, M, Story, ny, utc

SECOND = timedelta(seconds=1)
VIEW_KEYS = {
    "ticket_id",
    "customer_id",
    "priority",
    "category",
    "state",
    "status",
    "opened_at",
    "clocks",
    "escalation",
    "billing",
    "flags",
    "contract",
    "policy_version",
    "policy_digest",
}
CLOCK_KEYS = ("status", "calendar", "target_seconds", "elapsed_seconds", "due_at", "breached", "cycles")


def clock(view: dict, name: str) -> dict:
    """The CLOCK fields of issue 3 (an engine may add more, e.g. at_risk)."""
    return {key: view["clocks"][name][key] for key in CLOCK_KEYS}


def expect_clock(status, calendar, target, elapsed, due_at, breached, cycles) -> dict:
    return {
        "status": status,
        "calendar": calendar,
        "target_seconds": target,
        "elapsed_seconds": elapsed,
        "due_at": due_at,
        "breached": breached,
        "cycles": cycles,
    }


# --- the view's shape -----------------------------------------------------------------------


def test_view_has_the_fields_of_issue_3():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    view = s.view(ny("2026-11-02 10:00"))
    assert set(view) == VIEW_KEYS
    assert set(view["clocks"]) == {"response", "resolution"}
    for name in ("response", "resolution"):
        assert set(CLOCK_KEYS) <= set(view["clocks"][name])
    assert set(view["escalation"]) == {"level", "reasons"}
    assert set(view["billing"]) == {"rule", "status", "billable_seconds", "amount_cents", "month"}
    assert view["policy_version"] == default_policy().version
    assert view["opened_at"] == "2026-11-02T14:00:00Z"


# --- response across the autumn DST change -------------------------------------------------------


def test_medium_response_across_the_autumn_dst_change_is_8100_seconds():
    s = Story()
    s.opened(ny("2026-10-30 15:30"), "medium")  # Friday, EDT
    s.responded(ny("2026-11-02 09:45"))  # Monday, EST
    view = s.view(ny("2026-11-02 09:45"))
    assert view["opened_at"] == "2026-10-30T19:30:00Z"
    # Friday 15:30-17:00 (1 h 30) + Monday 09:00-09:45 (45 min) = 2 h 15 min.
    assert clock(view, "response") == expect_clock("stopped", "business", 4 * H, 8100, None, False, 1)
    # Resolution (8 h business) has the same 8100 s; 5 h 45 min remain: Monday 15:30 EST.
    assert clock(view, "resolution") == expect_clock(
        "running", "business", 8 * H, 8100, "2026-11-02T20:30:00Z", False, 1
    )
    assert view["priority"] == "medium"
    assert view["category"] == "service"
    assert view["state"] == "open"
    assert view["status"] == "open"
    assert view["escalation"]["level"] == 0
    assert view["billing"] == {
        "rule": None,
        "status": "none",
        "billable_seconds": 0,
        "amount_cents": 0,
        "month": None,
    }
    assert view["flags"] == []
    # A week later the stopped response clock has not moved.
    assert clock(s.view(ny("2026-11-09 12:00")), "response")["elapsed_seconds"] == 8100


def test_response_over_the_weekend_of_the_dst_change_counts_no_weekend_time():
    s = Story()
    s.opened(ny("2026-10-30 15:30"), "medium")
    for at in ("2026-10-31 12:00", "2026-11-01 01:30", "2026-11-01 23:59:59", "2026-11-02 09:00"):
        assert clock(s.view(ny(at)), "response")["elapsed_seconds"] == 90 * M, at


# --- a low ticket pausing over pending_customer ---------------------------------------------------


def low_with_pending_stretch() -> Story:
    s = Story()
    s.opened(ny("2026-11-02 10:00"), "low")
    s.responded(ny("2026-11-02 10:30"))
    s.status(ny("2026-11-02 14:00"), "pending_customer")
    s.status(ny("2026-11-04 11:00"), "in_progress")
    s.resolved(ny("2026-11-05 12:00"))
    return s


def test_low_ticket_resolution_pauses_while_pending_customer():
    s = low_with_pending_stretch()
    paused = s.view(ny("2026-11-03 12:00"))
    assert paused["status"] == "pending_customer"
    assert clock(paused, "resolution") == expect_clock("paused", "business", 48 * H, 4 * H, None, False, 1)
    assert clock(paused, "response") == expect_clock("stopped", "business", 8 * H, 30 * M, None, False, 1)

    running = s.view(ny("2026-11-04 12:00"))
    # 4 h on Monday + 1 h on Wednesday; 43 h remain: Wednesday 2026-11-11 15:00 EST.
    assert clock(running, "resolution") == expect_clock(
        "running", "business", 48 * H, 5 * H, "2026-11-11T20:00:00Z", False, 1
    )

    resolved = s.view(ny("2026-11-05 12:00"))
    assert resolved["state"] == "resolved"
    assert resolved["status"] == "in_progress"
    # Monday 10-14 (4 h) + Wednesday 11-17 (6 h) + Thursday 9-12 (3 h) = 13 h.
    assert clock(resolved, "resolution") == expect_clock(
        "stopped", "business", 48 * H, 13 * H, None, False, 1
    )


# --- an urgent ticket at 22:00 ------------------------------------------------------------------


def urgent_at_night() -> Story:
    s = Story()
    s.opened(ny("2026-11-03 22:00"), "urgent")  # Tuesday, EST
    s.responded(ny("2026-11-03 23:15"))
    return s


def test_urgent_ticket_answered_after_75_minutes_is_breached_and_escalated_to_1():
    view = urgent_at_night().view(ny("2026-11-03 23:15"))
    assert clock(view, "response") == expect_clock(
        "stopped", "24x7", 1 * H, 75 * M, "2026-11-04T04:00:00Z", True, 1
    )
    assert clock(view, "resolution") == expect_clock("running", "24x7", None, 75 * M, None, False, 1)
    assert view["escalation"]["level"] == 1
    assert view["billing"]["rule"] == "uncovered_p1"
    assert view["billing"]["status"] == "pending_review"


def test_urgent_response_breaches_one_second_after_the_hour():
    s = urgent_at_night()
    at_target = s.view(ny("2026-11-03 23:00:00"))
    assert at_target["clocks"]["response"]["elapsed_seconds"] == H
    assert at_target["clocks"]["response"]["breached"] is False
    assert at_target["clocks"]["response"]["due_at"] == "2026-11-04T04:00:00Z"
    assert at_target["escalation"]["level"] == 0
    over = s.view(ny("2026-11-03 23:00:01"))
    assert over["clocks"]["response"]["breached"] is True
    assert over["escalation"]["level"] == 1


# --- billing: new_install -------------------------------------------------------------------------

TUE = "2026-11-03"  # a Tuesday in EST


def new_install(flags: dict, work: list[tuple[str, str]], day: str = TUE) -> dict:
    s = Story()
    s.opened(ny(f"{day} 10:00"), "low", category="new_install", **flags)
    for start, end in work:
        s.work(ny(f"{day} {start}"), ny(f"{day} {end}"))
    return s.view(ny("2026-11-08 12:00"))["billing"]


AFTER_HOURS = {"after_hours_requested": True}
PRIORITY_HANDLING = {"priority_handling_requested": True}


@pytest.mark.parametrize(
    ("flags", "work", "seconds", "cents"),
    [
        # after-hours part only; below the 2 h minimum -> 2 h
        (AFTER_HOURS, [("16:30", "17:30")], 2 * H, 25_000),
        # exactly the minimum
        (AFTER_HOURS, [("16:00", "19:00")], 2 * H, 25_000),
        # above the minimum: 17:00-20:30 = 3 h 30
        (AFTER_HOURS, [("16:00", "20:30")], 3 * H + 30 * M, 43_750),
        # 2 h 0 min 18 s x 12 500 / 3600 = 25 062.5 -> rounded half up
        (AFTER_HOURS, [("17:00", "19:00:18")], 2 * H + 18, 25_063),
        # overlapping logs count once: 17:00-20:00
        (AFTER_HOURS, [("17:00", "19:00"), ("18:00", "20:00")], 3 * H, 37_500),
        # all of the logged work, in or out of hours; below the minimum
        (PRIORITY_HANDLING, [("10:00", "11:00")], 2 * H, 25_000),
        # above the minimum: 3 h + 2 h
        (PRIORITY_HANDLING, [("10:00", "13:00"), ("16:00", "18:00")], 5 * H, 62_500),
        # 7207 s x 12 500 / 3600 = 25 024.3 -> 25 024
        (PRIORITY_HANDLING, [("10:00", "12:00:07")], 2 * H + 7, 25_024),
        # both flags: priority handling bills all of it
        ({**AFTER_HOURS, **PRIORITY_HANDLING}, [("10:00", "13:00")], 3 * H, 37_500),
    ],
)
def test_new_install_billing(flags, work, seconds, cents):
    billing = new_install(flags, work)
    assert billing == {
        "rule": "new_install",
        "status": "billable",
        "billable_seconds": seconds,
        "amount_cents": cents,
        "month": "2026-11",
    }


def test_new_install_after_hours_work_on_a_weekend_is_all_after_hours():
    billing = new_install(AFTER_HOURS, [("10:00", "13:00")], day="2026-11-07")  # Saturday
    assert (billing["billable_seconds"], billing["amount_cents"]) == (3 * H, 37_500)


@pytest.mark.parametrize(
    ("flags", "work"),
    [
        (AFTER_HOURS, []),
        (AFTER_HOURS, [("10:00", "12:00")]),  # all in business hours: nothing after hours
        (PRIORITY_HANDLING, []),
    ],
)
def test_new_install_with_nothing_billable_bills_no_minimum(flags, work):
    billing = new_install(flags, work)
    assert billing["rule"] == "new_install"
    assert billing["billable_seconds"] == 0
    assert billing["amount_cents"] == 0


def test_new_install_without_a_request_is_not_billed():
    billing = new_install({}, [("16:00", "20:00")])
    assert billing == {
        "rule": None,
        "status": "none",
        "billable_seconds": 0,
        "amount_cents": 0,
        "month": None,
    }


# --- billing: uncovered_p1 ------------------------------------------------------------------------


def uncovered(party: str | None, work: list[tuple[str, str]]) -> dict:
    s = Story()
    s.opened(ny("2026-11-03 22:00"), "urgent")
    for start, end in work:
        s.work(ny(start), ny(end))
    if party is not None:
        s.fault(ny("2026-11-04 12:00"), party)
    return s.view(ny("2026-11-05 12:00"))["billing"]


def test_uncovered_p1_is_pending_review_until_fault_is_determined():
    billing = uncovered(None, [("2026-11-03 22:00", "2026-11-03 23:30")])
    assert billing["rule"] == "uncovered_p1"
    assert billing["status"] == "pending_review"
    assert billing["billable_seconds"] == 0
    assert billing["amount_cents"] == 0


def test_uncovered_p1_pending_review_before_the_fault_event_as_of():
    s = Story()
    s.opened(ny("2026-11-03 22:00"), "urgent")
    s.work(ny("2026-11-03 22:00"), ny("2026-11-03 23:30"))
    s.fault(ny("2026-11-04 12:00"), "customer")
    assert s.view(ny("2026-11-04 11:59:59"))["billing"]["status"] == "pending_review"
    assert s.view(ny("2026-11-04 12:00"))["billing"]["status"] == "billable"


def test_uncovered_p1_is_waived_when_the_provider_is_at_fault():
    billing = uncovered("provider", [("2026-11-03 22:00", "2026-11-04 01:00")])
    assert billing == {
        "rule": "uncovered_p1",
        "status": "waived",
        "billable_seconds": 0,
        "amount_cents": 0,
        "month": "2026-11",
    }


@pytest.mark.parametrize(
    ("party", "work", "seconds", "cents"),
    [
        ("customer", [("2026-11-03 22:00", "2026-11-03 22:30")], H, 12_500),  # below the 1 h minimum
        ("customer", [("2026-11-03 22:00", "2026-11-03 23:00")], H, 12_500),  # exactly the minimum
        ("third_party", [("2026-11-03 22:00", "2026-11-04 00:00")], 2 * H, 25_000),  # above it
        # 3618 s x 12 500 / 3600 = 12 562.5 -> rounded half up
        ("customer", [("2026-11-03 22:00", "2026-11-03 23:00:18")], H + 18, 12_563),
        # only the after-hours part: 07:30-09:00 of 07:30-09:30
        ("third_party", [("2026-11-04 07:30", "2026-11-04 09:30")], 90 * M, 18_750),
        # overlapping logs count once: 22:00-00:30
        (
            "customer",
            [("2026-11-03 22:00", "2026-11-03 23:30"), ("2026-11-03 23:00", "2026-11-04 00:30")],
            150 * M,
            31_250,
        ),
    ],
)
def test_uncovered_p1_is_billed_for_customer_or_third_party(party, work, seconds, cents):
    billing = uncovered(party, work)
    assert billing == {
        "rule": "uncovered_p1",
        "status": "billable",
        "billable_seconds": seconds,
        "amount_cents": cents,
        "month": "2026-11",
    }


def test_uncovered_p1_with_no_work_logged_still_bills_the_one_hour_minimum():
    # Read as: "billable = the after-hours part ..., at least 1 h" (no "when billable > 0" here,
    # unlike new_install).
    billing = uncovered("customer", [])
    assert (billing["status"], billing["billable_seconds"], billing["amount_cents"]) == (
        "billable",
        H,
        12_500,
    )


@pytest.mark.parametrize(
    ("dispatched", "rule"),
    [
        ("2026-11-03 16:59:59", None),
        ("2026-11-03 17:00:00", "uncovered_p1"),  # closing time is outside business hours
        ("2026-11-03 08:59:59", "uncovered_p1"),
        ("2026-11-03 09:00:00", None),
        ("2026-11-07 12:00:00", "uncovered_p1"),  # Saturday noon
    ],
)
def test_uncovered_p1_depends_on_dispatch_outside_business_hours(dispatched, rule):
    s = Story()
    s.opened(ny(dispatched), "urgent")
    assert s.view(ny("2026-11-08 12:00"))["billing"]["rule"] == rule


def test_uncovered_p1_needs_dispatch_as_urgent():
    s = Story()
    s.opened(ny("2026-11-03 22:00"), "medium")
    s.priority(ny("2026-11-03 22:30"), "urgent")
    s.fault(ny("2026-11-04 12:00"), "customer")
    assert s.view(ny("2026-11-05 12:00"))["billing"]["rule"] is None

    s = Story()
    s.opened(ny("2026-11-03 22:00"), "urgent")
    s.priority(ny("2026-11-03 22:30"), "low")
    assert s.view(ny("2026-11-05 12:00"))["billing"]["rule"] == "uncovered_p1"


def test_uncovered_p1_does_not_apply_to_new_installs():
    s = Story()
    s.opened(ny("2026-11-03 22:00"), "urgent", category="new_install")
    s.work(ny("2026-11-03 22:00"), ny("2026-11-03 23:00"))
    s.fault(ny("2026-11-04 12:00"), "customer")
    assert s.view(ny("2026-11-05 12:00"))["billing"]["rule"] is None


def test_charge_belongs_to_the_month_of_dispatch_in_new_york_time():
    s = Story()
    s.opened(ny("2026-10-31 22:00"), "urgent")  # Saturday, EDT = 2026-11-01T02:00Z
    s.work(ny("2026-10-31 22:00"), ny("2026-10-31 23:30"))
    s.fault(ny("2026-11-02 12:00"), "customer")
    view = s.view(ny("2026-11-03 12:00"))
    assert view["opened_at"] == "2026-11-01T02:00:00Z"
    assert view["billing"] == {
        "rule": "uncovered_p1",
        "status": "billable",
        "billable_seconds": 90 * M,
        "amount_cents": 18_750,
        "month": "2026-10",
    }
    customer = s.customer(ny("2026-11-03 12:00"))
    assert customer["billing"] == {"2026-10": {"amount_cents": 18_750, "billable_seconds": 90 * M}}


def test_customer_billing_sums_tickets_per_month():
    s = Story()
    s.opened(ny("2026-10-31 22:00"), "urgent", ticket_id="T-1")
    s.fault(ny("2026-11-02 12:00"), "customer", ticket_id="T-1")  # no work: 1 h minimum
    s.opened(
        ny("2026-11-03 10:00"), "low", category="new_install", after_hours_requested=True, ticket_id="T-2"
    )
    s.work(ny("2026-11-03 17:00"), ny("2026-11-03 20:00"), ticket_id="T-2")
    s.opened(ny("2026-11-03 22:00"), "urgent", ticket_id="T-3")
    s.work(ny("2026-11-03 22:00"), ny("2026-11-04 00:00"), ticket_id="T-3")
    s.fault(ny("2026-11-04 12:00"), "third_party", ticket_id="T-3")
    customer = s.customer(ny("2026-11-05 12:00"))
    assert customer["customer_id"] == "cust-1"
    assert customer["billing"] == {
        "2026-10": {"amount_cents": 12_500, "billable_seconds": H},
        "2026-11": {"amount_cents": 37_500 + 25_000, "billable_seconds": 3 * H + 2 * H},
    }


# --- priority changes ----------------------------------------------------------------------------


def test_priority_change_restarts_the_cycle_and_keeps_the_earlier_breach():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "high")  # response 2 h business: due 11:00
    s.priority(ny("2026-11-02 11:30"), "low")
    before = s.view(ny("2026-11-02 11:00:00"))
    assert clock(before, "response")["breached"] is False
    view = s.view(ny("2026-11-02 12:30"))
    assert view["priority"] == "low"
    # Response: new cycle at 11:30 with low's 8 h; 1 h elapsed; 7 h remain -> Tuesday 11:30 EST.
    assert clock(view, "response") == expect_clock(
        "running", "business", 8 * H, 1 * H, "2026-11-03T16:30:00Z", True, 2
    )
    # Resolution: high had no target; low's 48 h from 11:30 -> 47 h remain -> Tue 2026-11-10 11:30 EST.
    assert clock(view, "resolution") == expect_clock(
        "running", "business", 48 * H, 1 * H, "2026-11-10T16:30:00Z", False, 2
    )
    assert view["escalation"]["level"] == 1


def test_priority_change_keeps_a_stopped_clock_cycle_and_a_reopen_continues_it():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:30"))
    s.resolved(ny("2026-11-02 11:00"))
    s.priority(ny("2026-11-02 12:00"), "low")
    s.reopened(ny("2026-11-03 10:00"))
    view = s.view(ny("2026-11-03 11:00"))
    assert view["priority"] == "low"
    assert view["state"] == "open"
    assert clock(view, "response") == expect_clock("stopped", "business", 4 * H, 30 * M, None, False, 1)
    # Same cycle, medium's 8 h: 2 h Monday + 1 h Tuesday; 5 h remain -> Tuesday 16:00 EST.
    assert clock(view, "resolution") == expect_clock(
        "running", "business", 8 * H, 3 * H, "2026-11-03T21:00:00Z", False, 1
    )


def test_priority_change_while_paused_starts_a_paused_cycle():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.responded(ny("2026-11-02 09:10"))
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    s.priority(ny("2026-11-02 11:00"), "medium")
    s.status(ny("2026-11-02 13:00"), "in_progress")
    paused = s.view(ny("2026-11-02 12:00"))
    assert clock(paused, "resolution") == expect_clock("paused", "business", 8 * H, 0, None, False, 2)
    assert clock(paused, "response")["cycles"] == 1  # stopped at the change
    running = s.view(ny("2026-11-02 14:00"))
    assert clock(running, "resolution") == expect_clock(
        "running", "business", 8 * H, 1 * H, "2026-11-03T18:00:00Z", False, 2
    )


def test_priority_change_cannot_launder_a_resolution_breach_or_its_escalation():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:10"))
    s.priority(ny("2026-11-03 14:00"), "low")  # resolution at 13 h: breached, 150 % reached
    before = s.view(ny("2026-11-03 14:00"))
    assert before["escalation"]["level"] == 2
    view = s.view(ny("2026-11-03 15:00"))
    assert clock(view, "resolution") == expect_clock(
        "running", "business", 48 * H, 1 * H, "2026-11-11T19:00:00Z", True, 2
    )
    assert view["escalation"]["level"] == 2


def test_cycles_count_every_priority_change():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.priority(ny("2026-11-02 10:00"), "high")
    s.priority(ny("2026-11-02 11:00"), "low")
    s.priority(ny("2026-11-02 12:00"), "medium")
    view = s.view(ny("2026-11-02 12:30"))
    assert clock(view, "response") == expect_clock(
        "running", "business", 4 * H, 30 * M, "2026-11-02T21:00:00Z", False, 4
    )
    assert clock(view, "resolution")["cycles"] == 4
    assert clock(view, "resolution")["elapsed_seconds"] == 30 * M


def test_priority_change_to_urgent_switches_the_response_clock_to_24x7():
    s = Story()
    s.opened(ny("2026-11-02 16:00"), "medium")
    s.priority(ny("2026-11-02 16:30"), "urgent")
    view = s.view(ny("2026-11-02 18:00"))
    # 24x7 from 16:30: 1 h 30 elapsed, breached at 17:30:01, due 17:30 EST.
    assert clock(view, "response") == expect_clock(
        "running", "24x7", H, 90 * M, "2026-11-02T22:30:00Z", True, 2
    )
    assert clock(view, "resolution") == expect_clock("running", "24x7", None, 90 * M, None, False, 2)
    assert view["escalation"]["level"] == 1


# --- account suspension ---------------------------------------------------------------------------

DUE = utc("2026-10-23 16:00")  # Friday 12:00 EDT; 10 days later: Monday 2026-11-02 11:00 EST


def delinquent_story() -> Story:
    s = Story(customer_id="cust-9")
    s.invoice_due(utc("2026-10-01 12:00"), "INV-7", DUE)
    s.opened(ny("2026-11-02 09:00"), "low", category="non_service", ticket_id="T-NS")
    s.opened(ny("2026-11-02 09:00"), "low", category="service", ticket_id="T-S")
    return s


def test_delinquent_customer_non_service_ticket_paused_while_service_ticket_runs():
    s = delinquent_story()
    as_of = ny("2026-11-02 15:00")
    service = s.view(as_of, "T-S")
    assert clock(service, "response") == expect_clock(
        "running", "business", 8 * H, 6 * H, "2026-11-02T22:00:00Z", False, 1
    )
    assert clock(service, "resolution")["status"] == "running"
    assert clock(service, "resolution")["elapsed_seconds"] == 6 * H
    non_service = s.view(as_of, "T-NS")
    # Both clocks paused from 11:00 (due + 10 days): 2 h counted.
    assert clock(non_service, "response") == expect_clock("paused", "business", 8 * H, 2 * H, None, False, 1)
    assert clock(non_service, "resolution") == expect_clock(
        "paused", "business", 48 * H, 2 * H, None, False, 1
    )
    customer = s.customer(as_of, "cust-9")
    assert customer == {
        "customer_id": "cust-9",
        "delinquent": True,
        "dashboard_suspended": False,
        "billing": {},
    }


@pytest.mark.parametrize("settle", ["invoice_paid", "invoice_disputed"])
def test_paying_or_disputing_the_invoice_ends_the_suspension(settle):
    s = delinquent_story()
    getattr(s, settle)(ny("2026-11-02 13:00"), "INV-7")
    as_of = ny("2026-11-02 15:00")
    non_service = s.view(as_of, "T-NS")
    # 09:00-11:00 and 13:00-15:00.
    assert clock(non_service, "response") == expect_clock(
        "running", "business", 8 * H, 4 * H, "2026-11-03T16:00:00Z", False, 1
    )
    assert clock(non_service, "resolution")["elapsed_seconds"] == 4 * H
    assert s.customer(as_of, "cust-9")["delinquent"] is False
    assert s.customer(as_of, "cust-9")["dashboard_suspended"] is False


@pytest.mark.parametrize(
    ("after_due", "delinquent", "dashboard"),
    [
        (timedelta(days=10) - SECOND, False, False),
        (timedelta(days=10), False, False),  # exactly 10 days: not "more than 10"
        (timedelta(days=10) + SECOND, True, False),
        (timedelta(days=15) - SECOND, True, False),
        (timedelta(days=15), True, True),  # "15 days or more"
        (timedelta(days=40), True, True),
    ],
)
def test_customer_delinquent_and_dashboard_suspended_thresholds(after_due, delinquent, dashboard):
    s = delinquent_story()
    customer = s.customer(DUE + after_due, "cust-9")
    assert (customer["delinquent"], customer["dashboard_suspended"]) == (delinquent, dashboard)


def test_dashboard_suspension_ends_when_paid():
    s = delinquent_story()
    s.invoice_paid(DUE + timedelta(days=16), "INV-7")
    customer = s.customer(DUE + timedelta(days=17), "cust-9")
    assert (customer["delinquent"], customer["dashboard_suspended"]) == (False, False)


def test_suspension_starts_exactly_after_ten_days_of_real_time():
    s = delinquent_story()
    # 11:00:00 EST = due + 10 days exactly: the clock counted up to there.
    assert clock(s.view(ny("2026-11-02 11:00:00"), "T-NS"), "response")["elapsed_seconds"] == 2 * H
    assert clock(s.view(ny("2026-11-02 11:00:01"), "T-NS"), "response")["elapsed_seconds"] == 2 * H


def test_suspension_of_one_customer_does_not_pause_another_customers_ticket():
    s = delinquent_story()
    s.opened(ny("2026-11-02 09:00"), "low", category="non_service", ticket_id="T-OTHER", customer_id="cust-2")
    view = s.view(ny("2026-11-02 15:00"), "T-OTHER")
    assert clock(view, "response")["status"] == "running"
    assert clock(view, "response")["elapsed_seconds"] == 6 * H
    assert s.customer(ny("2026-11-02 15:00"), "cust-2")["delinquent"] is False


def test_customer_with_only_account_events_appears_in_the_replay():
    s = Story(customer_id="cust-9")
    s.invoice_due(utc("2026-10-01 12:00"), "INV-7", DUE)
    document = s.replay(DUE + 11 * timedelta(days=1))
    assert document["tickets"] == []
    assert document["customers"] == [
        {"customer_id": "cust-9", "delinquent": True, "dashboard_suspended": False, "billing": {}}
    ]


# --- escalation ---------------------------------------------------------------------------------


def medium_unresolved(**opened) -> Story:
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium", **opened)  # resolution 8 h business
    s.responded(ny("2026-11-02 09:10"))
    return s


@pytest.mark.parametrize(
    ("as_of", "level", "breached"),
    [
        ("2026-11-02 17:00:00", 0, False),  # 8 h: met
        ("2026-11-02 23:00:00", 0, False),
        ("2026-11-03 09:00:00", 0, False),
        ("2026-11-03 09:00:01", 1, True),  # 8 h + 1 s
        ("2026-11-03 12:59:59", 1, True),
        ("2026-11-03 13:00:00", 2, True),  # 12 h = 150 %
        ("2026-11-03 16:59:59", 2, True),
        ("2026-11-03 17:00:00", 3, True),  # 16 h = 200 %
        ("2026-11-10 12:00:00", 3, True),
    ],
)
def test_escalation_levels_follow_the_resolution_target(as_of, level, breached):
    view = medium_unresolved().view(ny(as_of))
    assert view["escalation"]["level"] == level
    assert view["clocks"]["resolution"]["breached"] is breached
    # due_at: the instant 8 h were reached, Monday 17:00 EST (a closing time, not Tuesday 09:00).
    assert view["clocks"]["resolution"]["due_at"] == "2026-11-02T22:00:00Z"


def test_requested_escalation_levels_count_and_the_level_never_decreases():
    s = medium_unresolved()
    s.escalation_request(ny("2026-11-02 10:00"), 2)
    s.escalation_request(ny("2026-11-02 11:00"), 1, by="agent")
    assert s.view(ny("2026-11-02 09:59:59"))["escalation"]["level"] == 0
    assert s.view(ny("2026-11-02 10:00"))["escalation"]["level"] == 2
    assert s.view(ny("2026-11-02 12:00"))["escalation"]["level"] == 2
    assert s.view(ny("2026-11-03 09:00:01"))["escalation"]["level"] == 2  # breach: 1 < 2
    assert s.view(ny("2026-11-03 17:00"))["escalation"]["level"] == 3


def test_resolving_does_not_lower_the_level():
    s = medium_unresolved()
    s.resolved(ny("2026-11-03 14:00"))
    assert s.view(ny("2026-11-10 12:00"))["escalation"]["level"] == 2


def test_urgent_ticket_has_no_resolution_levels():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "urgent")
    s.responded(ny("2026-11-02 09:10"))
    view = s.view(ny("2026-11-20 09:00"))
    assert view["escalation"]["level"] == 0
    assert view["clocks"]["resolution"]["target_seconds"] is None


def test_third_party_disconnect_tickets_get_no_automatic_levels():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium", third_party_disconnect=True)  # never responded
    view = s.view(ny("2026-11-04 17:00"))  # resolution 24 h = 300 %
    assert view["clocks"]["response"]["breached"] is True
    assert view["clocks"]["resolution"]["breached"] is True
    assert view["escalation"]["level"] == 0
    # The same ticket, entitled, is at level 3.
    assert medium_unresolved().view(ny("2026-11-04 17:00"))["escalation"]["level"] == 3


def test_third_party_disconnect_requested_levels_are_flagged_not_entitled():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium", third_party_disconnect=True)
    before = s.view(ny("2026-11-02 09:30"))
    assert "escalation_not_entitled" not in before["flags"]
    s.escalation_request(ny("2026-11-02 10:00"), 2)
    view = s.view(ny("2026-11-04 17:00"))
    assert "escalation_not_entitled" in view["flags"]
    # Whatever a request does to the level, the automatic levels (1 on breach, 3 at 200 %) never apply.
    assert view["escalation"]["level"] <= 2


# --- new install notice ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispatched", "install", "short"),
    [
        ("2026-11-02 10:00", date(2026, 11, 9), False),  # Tue..Fri, Mon: 5 business days
        ("2026-11-02 10:00", date(2026, 11, 6), True),  # 4
        ("2026-11-02 23:30", date(2026, 11, 9), False),  # 2026-11-03 in UTC, still Monday in New York
        ("2026-11-06 10:00", date(2026, 11, 13), False),  # Friday -> next Friday: 5
        ("2026-11-06 10:00", date(2026, 11, 12), True),  # 4
        ("2026-11-07 10:00", date(2026, 11, 13), False),  # Saturday -> Mon..Fri: 5
        ("2026-11-02 10:00", date(2026, 11, 2), True),  # same day: 0
        ("2026-11-02 10:00", date(2026, 10, 30), True),  # install before dispatch
        ("2026-11-23 10:00", date(2026, 11, 30), False),  # Thanksgiving is no holiday in the default policy
    ],
)
def test_short_install_notice(dispatched, install, short):
    s = Story()
    s.opened(ny(dispatched), "low", category="new_install", install_date=install)
    view = s.view(ny(dispatched) + timedelta(hours=1))
    assert ("short_install_notice" in view["flags"]) is short


def test_no_install_date_no_notice_flag():
    s = Story()
    s.opened(ny("2026-11-02 10:00"), "low", category="new_install")
    assert "short_install_notice" not in s.view(ny("2026-11-02 11:00"))["flags"]


# --- resolve, reopen, close ---------------------------------------------------------------------


def test_resolve_and_reopen_continue_the_same_cycle():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:05"))
    s.resolved(ny("2026-11-02 11:00"))
    s.reopened(ny("2026-11-03 10:00"))
    resolved = s.view(ny("2026-11-03 09:30"))
    assert resolved["state"] == "resolved"
    assert clock(resolved, "resolution") == expect_clock("stopped", "business", 8 * H, 2 * H, None, False, 1)
    reopened = s.view(ny("2026-11-03 12:00"))
    assert reopened["state"] == "open"
    # 2 h Monday + 2 h Tuesday; 4 h remain -> Tuesday 16:00 EST.
    assert clock(reopened, "resolution") == expect_clock(
        "running", "business", 8 * H, 4 * H, "2026-11-03T21:00:00Z", False, 1
    )


def test_closed_is_final_and_a_reopen_after_close_is_ignored():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.resolved(ny("2026-11-02 10:00"))
    s.closed(ny("2026-11-02 11:00"))
    s.reopened(ny("2026-11-02 12:00"))
    view = s.view(ny("2026-11-05 12:00"))
    assert view["state"] == "closed"
    assert clock(view, "resolution") == expect_clock("stopped", "business", 8 * H, 1 * H, None, False, 1)
    # Never responded: the response clock ran until the close.
    assert clock(view, "response") == expect_clock("stopped", "business", 4 * H, 2 * H, None, False, 1)


def test_closing_an_open_ticket_stops_both_clocks_for_good():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.closed(ny("2026-11-02 11:00"))
    s.responded(ny("2026-11-02 12:00"))
    s.reopened(ny("2026-11-02 13:00"))
    view = s.view(ny("2026-11-04 12:00"))
    assert view["state"] == "closed"
    assert clock(view, "response")["status"] == "stopped"
    assert clock(view, "response")["elapsed_seconds"] == 2 * H
    assert clock(view, "resolution")["status"] == "stopped"
    assert clock(view, "resolution")["elapsed_seconds"] == 2 * H
    assert view["escalation"]["level"] == 0


# --- due_at -------------------------------------------------------------------------------------


def test_due_at_running_is_projected():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    view = s.view(ny("2026-11-02 10:00"))
    assert view["clocks"]["response"]["due_at"] == "2026-11-02T18:00:00Z"  # 13:00 EST
    assert view["clocks"]["resolution"]["due_at"] == "2026-11-02T22:00:00Z"  # 17:00 EST


def test_due_at_paused_before_reaching_is_null():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    view = s.view(ny("2026-11-02 11:00"))
    assert view["clocks"]["resolution"]["status"] == "paused"
    assert view["clocks"]["resolution"]["due_at"] is None
    assert view["clocks"]["response"]["due_at"] == "2026-11-02T18:00:00Z"  # response does not pause


def test_due_at_stopped_before_reaching_is_null():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 10:00"))
    s.resolved(ny("2026-11-02 12:00"))
    view = s.view(ny("2026-11-03 12:00"))
    assert view["clocks"]["response"]["due_at"] is None
    assert view["clocks"]["resolution"]["due_at"] is None


def test_due_at_once_reached_is_the_instant_reached():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.status(ny("2026-11-02 14:00"), "pending_customer")
    s.responded(ny("2026-11-02 15:00"))
    running = s.view(ny("2026-11-02 13:30"))  # response reached 4 h at 13:00, still running
    assert running["clocks"]["response"] == {
        **running["clocks"]["response"],
        "status": "running",
        "elapsed_seconds": 4 * H + 30 * M,
        "due_at": "2026-11-02T18:00:00Z",
        "breached": True,
    }
    stopped = s.view(ny("2026-11-03 12:00"))
    assert clock(stopped, "response") == expect_clock(
        "stopped", "business", 4 * H, 6 * H, "2026-11-02T18:00:00Z", True, 1
    )


def test_due_at_reached_then_paused_keeps_the_instant_reached():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 09:05"))
    s.status(ny("2026-11-03 10:00"), "pending_customer")  # resolution 9 h: past its 8 h
    view = s.view(ny("2026-11-03 12:00"))
    assert clock(view, "resolution") == expect_clock(
        "paused", "business", 8 * H, 9 * H, "2026-11-02T22:00:00Z", True, 1
    )


def test_elapsed_equal_to_target_is_met_not_breached():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 13:00"))  # exactly 4 h
    view = s.view(ny("2026-11-02 16:00"))  # resolution at 7 h: not breached either
    assert clock(view, "response") == expect_clock(
        "stopped", "business", 4 * H, 4 * H, "2026-11-02T18:00:00Z", False, 1
    )
    assert view["escalation"]["level"] == 0

    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 13:00:01"))
    view = s.view(ny("2026-11-02 16:00"))
    assert clock(view, "response")["elapsed_seconds"] == 4 * H + 1
    assert clock(view, "response")["breached"] is True
    assert view["escalation"]["level"] == 1


# --- as of ---------------------------------------------------------------------------------------


def test_events_after_as_of_are_ignored_and_an_event_exactly_at_as_of_applies():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 10:00"))
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    before = s.view(ny("2026-11-02 09:59:59"))
    assert clock(before, "response")["status"] == "running"
    assert clock(before, "response")["elapsed_seconds"] == H - 1
    assert clock(before, "resolution")["status"] == "running"
    assert before["status"] == "open"
    at = s.view(ny("2026-11-02 10:00:00"))
    assert clock(at, "response") == expect_clock("stopped", "business", 4 * H, H, None, False, 1)
    assert clock(at, "resolution")["status"] == "paused"
    assert at["status"] == "pending_customer"


def test_a_ticket_opened_after_as_of_is_not_in_the_replay():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    assert s.replay(ny("2026-11-02 08:59:59"))["tickets"] == []
    view = s.view(ny("2026-11-02 09:00"))
    assert clock(view, "response")["elapsed_seconds"] == 0
    assert clock(view, "response")["status"] == "running"


def test_response_at_the_dispatch_instant_counts():
    s = Story()
    s.opened(ny("2026-11-02 10:00"), "medium")
    s.responded(ny("2026-11-02 10:00"))
    assert clock(s.view(ny("2026-11-02 12:00")), "response") == expect_clock(
        "stopped", "business", 4 * H, 0, None, False, 1
    )


def test_response_before_dispatch_does_not_stop_the_clock():
    s = Story()
    s.responded(ny("2026-11-02 09:30"))
    s.opened(ny("2026-11-02 10:00"), "medium")
    view = s.view(ny("2026-11-02 12:00"))
    assert clock(view, "response")["status"] == "running"
    assert clock(view, "response")["elapsed_seconds"] == 2 * H


def test_replay_default_as_of_is_the_latest_event():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.responded(ny("2026-11-02 10:00"))
    document = s.replay()
    assert document["as_of"] == "2026-11-02T15:00:00Z"
    assert document["rejected"] == 0
    assert document["policy_version"] == default_policy().version
    assert document["tickets"][0]["clocks"]["resolution"]["elapsed_seconds"] == H


def test_response_is_not_paused_by_status():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    view = s.view(ny("2026-11-02 12:00"))
    assert clock(view, "response")["status"] == "running"
    assert clock(view, "response")["elapsed_seconds"] == 3 * H
    assert clock(view, "resolution")["elapsed_seconds"] == 1 * H


# --- ordering, duplicates, the replay document -----------------------------------------------------


def test_equal_instants_apply_in_recording_order():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    s.status(ny("2026-11-02 10:00"), "in_progress")
    view = s.view(ny("2026-11-02 12:00"))
    assert view["status"] == "in_progress"
    assert clock(view, "resolution")["status"] == "running"
    assert clock(view, "resolution")["elapsed_seconds"] == 3 * H

    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.status(ny("2026-11-02 10:00"), "in_progress")
    s.status(ny("2026-11-02 10:00"), "pending_customer")
    view = s.view(ny("2026-11-02 12:00"))
    assert view["status"] == "pending_customer"
    assert clock(view, "resolution")["status"] == "paused"
    assert clock(view, "resolution")["elapsed_seconds"] == 1 * H


def test_resolved_and_reopened_at_one_instant_apply_in_recording_order():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.resolved(ny("2026-11-02 10:00"))
    s.reopened(ny("2026-11-02 10:00"))
    view = s.view(ny("2026-11-02 12:00"))
    assert view["state"] == "open"
    assert clock(view, "resolution")["elapsed_seconds"] == 3 * H

    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")
    s.reopened(ny("2026-11-02 10:00"))  # nothing to reopen yet
    s.resolved(ny("2026-11-02 10:00"))
    view = s.view(ny("2026-11-02 12:00"))
    assert view["state"] == "resolved"
    assert clock(view, "resolution")["elapsed_seconds"] == 1 * H


def test_a_response_recorded_before_the_opening_at_the_same_instant_counts():
    s = Story()
    s.responded(ny("2026-11-02 10:00"))
    s.opened(ny("2026-11-02 10:00"), "medium")
    assert clock(s.view(ny("2026-11-02 12:00")), "response") == expect_clock(
        "stopped", "business", 4 * H, 0, None, False, 1
    )


def test_a_repeated_event_id_counts_once():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    pending = s.status(ny("2026-11-02 10:00"), "pending_customer")
    s.status(ny("2026-11-02 10:00"), "in_progress")
    s.record(pending)  # the same event delivered again, recorded later
    view = s.view(ny("2026-11-02 12:00"))
    assert view["status"] == "in_progress"
    assert clock(view, "resolution")["status"] == "running"
    assert clock(view, "resolution")["elapsed_seconds"] == 3 * H


def test_a_repeated_escalation_request_or_opening_changes_nothing():
    s = Story()
    opening = s.opened(ny("2026-11-02 09:00"), "medium")
    request = s.escalation_request(ny("2026-11-02 10:00"), 2)
    once = s.replay(ny("2026-11-02 12:00"))
    s.record(opening)
    s.record(request)
    assert s.replay(ny("2026-11-02 12:00")) == once


def test_a_ticket_opened_while_the_customer_is_delinquent_is_paused_from_dispatch():
    s = delinquent_story()
    s.opened(ny("2026-11-02 12:00"), "medium", category="non_service", ticket_id="T-LATE")
    view = s.view(ny("2026-11-02 15:00"), "T-LATE")
    assert clock(view, "response") == expect_clock("paused", "business", 4 * H, 0, None, False, 1)
    assert clock(view, "resolution") == expect_clock("paused", "business", 8 * H, 0, None, False, 1)
    s.invoice_paid(ny("2026-11-03 09:00"), "INV-7")
    later = s.view(ny("2026-11-03 10:00"), "T-LATE")
    assert clock(later, "response")["elapsed_seconds"] == H
    assert clock(later, "response")["status"] == "running"


def test_a_service_or_new_install_ticket_is_never_suspended():
    s = delinquent_story()
    s.opened(ny("2026-11-02 09:00"), "low", category="new_install", ticket_id="T-NI")
    view = s.view(ny("2026-11-02 15:00"), "T-NI")
    assert clock(view, "response")["status"] == "running"
    assert clock(view, "response")["elapsed_seconds"] == 6 * H


def test_a_clock_without_target_counts_in_its_priority_calendar():
    s = Story()
    s.opened(ny("2026-11-06 16:00"), "high")  # Friday
    s.responded(ny("2026-11-06 16:30"))
    view = s.view(ny("2026-11-09 10:00"))  # Monday
    assert clock(view, "resolution") == expect_clock("running", "business", None, 2 * H, None, False, 1)
    assert clock(view, "response") == expect_clock("stopped", "business", 2 * H, 30 * M, None, False, 1)


def test_warning_threshold_feeds_at_risk():
    # The view of issue 3 names no field for it; the engine shows "at_risk" on each clock.
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium")  # response 4 h: 75 % = 3 h at 12:00
    assert s.view(ny("2026-11-02 11:59:59"))["clocks"]["response"]["at_risk"] is False
    assert s.view(ny("2026-11-02 12:00:00"))["clocks"]["response"]["at_risk"] is True


def test_replay_lists_tickets_and_customers_sorted_and_passes_rejected_through():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "medium", ticket_id="T-b", customer_id="cust-z")
    s.opened(ny("2026-11-02 09:00"), "medium", ticket_id="T-a", customer_id="cust-y")
    s.opened(ny("2026-11-02 09:00"), "medium", ticket_id="T-c", customer_id="cust-x")
    from projections.replay import replay

    document = replay(list(s.records), default_policy(), ny("2026-11-02 10:00"), rejected=3)
    assert list(document) == ["as_of", "policy_version", "tickets", "customers", "rejected"]
    assert document["as_of"] == "2026-11-02T15:00:00Z"
    assert [t["ticket_id"] for t in document["tickets"]] == ["T-a", "T-b", "T-c"]
    assert [c["customer_id"] for c in document["customers"]] == ["cust-x", "cust-y", "cust-z"]
    assert document["rejected"] == 3


def test_times_are_printed_in_utc_whole_seconds():
    s = Story()
    s.opened("2026-11-02T09:00:00.750-05:00", "medium")
    s.responded("2026-11-02T10:00:00.250-05:00")
    view = s.view(ny("2026-11-02 11:00"))
    assert view["opened_at"] == "2026-11-02T14:00:00Z"
    assert isinstance(view["clocks"]["response"]["elapsed_seconds"], int)
    assert view["clocks"]["resolution"]["due_at"] == "2026-11-02T22:00:00Z"


# --- edges found while writing docs/sla-semantics.md ----------------------------------------------


def test_at_exactly_ten_days_the_ticket_and_the_customer_agree():
    s = delinquent_story()
    at_boundary = s.replay(ny("2026-11-02 11:00:00"))
    ticket = next(t for t in at_boundary["tickets"] if t["ticket_id"] == "T-NS")
    assert at_boundary["customers"][0]["delinquent"] is False
    assert ticket["clocks"]["response"]["status"] == "running"
    assert "suspended" not in ticket["flags"]
    one_second_later = s.replay(ny("2026-11-02 11:00:01"))
    ticket = next(t for t in one_second_later["tickets"] if t["ticket_id"] == "T-NS")
    assert one_second_later["customers"][0]["delinquent"] is True
    assert ticket["clocks"]["response"]["status"] == "paused"
    assert "suspended" in ticket["flags"]


def test_next_change_is_the_first_second_of_a_known_suspension():
    s = delinquent_story()
    state = evaluate_with_standing(s, ny("2026-11-02 10:00"), "T-NS")
    assert state.next_change_at() == ny("2026-11-02 11:00:01")


def evaluate_with_standing(s: Story, as_of, ticket_id):
    from projections.account import account_standing
    from projections.ticket import evaluate
    from projections.timeline import history

    accounts = [r for r in s.records if r.event.type.startswith("account.")]
    standing = account_standing(history(accounts, as_of), s.policy, as_of)
    mine = [r for r in s.records if getattr(r.event, "ticket_id", None) == ticket_id]
    return evaluate(mine, s.policy, as_of, standing)


def test_default_as_of_ignores_a_duplicate_copy_that_occurred_later():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low", event_id="open")
    s.responded(ny("2026-11-02 10:00"), event_id="answer")
    s.responded(ny("2026-11-09 10:00"), event_id="answer")  # same id, recorded later: a duplicate
    assert s.replay()["as_of"] == "2026-11-02T15:00:00Z"


def test_customers_with_no_event_by_as_of_are_not_listed():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.opened(ny("2026-11-05 09:00"), "low", ticket_id="T-2", customer_id="cust-later")
    document = s.replay(ny("2026-11-03 09:00"))
    assert [c["customer_id"] for c in document["customers"]] == ["cust-1"]


def test_logged_work_is_billed_up_to_as_of_only():
    s = Story()
    s.opened(ny("2026-11-02 20:00"), "low", category="new_install", after_hours_requested=True)
    # Logged at 21:00, claiming work until 23:00.
    s.work(ny("2026-11-02 20:00"), ny("2026-11-02 23:00"), at=ny("2026-11-02 21:00"))
    assert s.view(ny("2026-11-02 22:30"))["billing"]["billable_seconds"] == int(2.5 * H)
    assert s.view(ny("2026-11-03 08:00"))["billing"]["billable_seconds"] == 3 * H


def test_escalation_request_after_close_is_ignored():
    s = Story()
    s.opened(ny("2026-11-02 09:00"), "low")
    s.closed(ny("2026-11-02 10:00"))
    s.escalation_request(ny("2026-11-02 11:00"), 3)
    view = s.view(ny("2026-11-02 12:00"))
    assert view["escalation"] == {"level": 0, "reasons": []}


def test_third_party_disconnect_urgent_ticket_gets_no_after_hours_clock():
    s = Story()
    s.opened(ny("2026-11-02 22:00"), "urgent", third_party_disconnect=True)
    view = s.view(ny("2026-11-03 09:30"))
    response = view["clocks"]["response"]
    # §3: not entitled to after-hours support: business hours, not 24x7.
    assert response["calendar"] == "business"
    assert response["elapsed_seconds"] == 30 * M
    assert response["due_at"] == "2026-11-03T15:00:00Z"
