"""The picture of a ticket's clocks (services.api.console.clock_picture) and its SVG (clock_svg):
on hand-built explain documents and on real explain output, against hand-computed instants."""

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from projections.explain import explain
from projections.policy import default_policy
from services.api.console.clock_picture import CyclePicture, Picture, Stretch, epoch, picture
from services.api.console.clock_svg import clocks_svg
from tests.engine_helpers import Story, ny, utc
from tests.unit.test_explain import everything, split

SVG = "{http://www.w3.org/2000/svg}"


def e(instant: datetime) -> int:
    return int(instant.timestamp())


def explained(story: Story, as_of: datetime) -> dict[str, Any]:
    document = explain(*split(story.records), default_policy(), as_of)
    assert document is not None
    return document


def cycle(p: Picture, clock: str, number: int = 1) -> CyclePicture:
    return next(c for c in p.cycles if (c.clock, c.cycle) == (clock, number))


def stretches(c: CyclePicture) -> list[tuple[int, int, str, str | None]]:
    return [(s.start, s.end, s.kind, s.reason) for s in c.stretches]


def marks(c: CyclePicture, kind: str) -> list[int]:
    return [m.at for m in c.marks if m.kind == kind]


def running_seconds(c: CyclePicture) -> int:
    return sum(s.end - s.start for s in c.stretches if s.kind == "running")


def check_consistent(p: Picture) -> None:
    """Stretches tile each cycle's span, and its running time is exactly its elapsed time."""
    for c in p.cycles:
        assert c.stretches[0].start == c.start and c.stretches[-1].end == c.end
        for before, after in zip(c.stretches, c.stretches[1:], strict=False):
            assert before.end == after.start and (before.kind, before.reason) != (after.kind, after.reason)
        assert running_seconds(c) == c.elapsed_seconds, (c.clock, c.cycle)


# -- hand-built documents -------------------------------------------------------------


def entry(at: str, type_: str, *effects: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "occurred_at": at, "position": 0, "effects": list(effects)}


def a_cycle(clock: str, number: int, started: str, ended: str | None, elapsed: int, **more: Any) -> dict:
    return {
        "clock": clock,
        "cycle": number,
        "priority": "medium",
        "target_seconds": 3600,
        "calendar": "24x7",
        "time_zone": "UTC",
        "started_at": started,
        "ended_at": ended,
        "elapsed_seconds": elapsed,
        "counting": more.get("counting", []),
        "closed": more.get("closed", []),
    }


def test_a_hand_built_document():
    started = {"effect": "clock_started", "cycle": 1, "status": "running"}
    document = {
        "ticket_id": "T-<1>",
        "customer_id": "c&o",
        "as_of": "2026-11-10T12:00:00Z",
        "time_zone": "America/New_York",
        "entries": [
            entry(
                "2026-11-10T08:00:00Z",
                "ticket.opened",
                started | {"clock": "response"},
                started | {"clock": "resolution"},
                event_id="e-1",
            ),
            entry(
                "2026-11-10T08:30:00Z",
                "ticket.status_changed",
                {"effect": "status_changed", "from": "open", "to": "pending_customer"},
                {"effect": "clock_paused", "clock": "resolution", "by": "status"},
                event_id="e-2",
            ),
            entry(
                "2026-11-10T08:45:00Z",
                "time",
                {"effect": "clock_at_risk", "clock": "response", "cycle": 1, "target_seconds": 3600},
            ),
            entry(
                "2026-11-10T09:00:00Z",
                "ticket.responded",
                {"effect": "clock_stopped", "clock": "response", "by": "responded"},
                event_id="e-3",
            ),
            entry(
                "2026-11-10T10:00:00Z",
                "ticket.status_changed",
                {"effect": "status_changed", "from": "pending_customer", "to": "open"},
                {"effect": "clock_resumed", "clock": "resolution", "after": "status"},
                event_id="e-4",
            ),
        ],
        "view": {
            "clocks": {
                "response": {"status": "stopped", "due_at": None},
                "resolution": {"status": "running", "due_at": "2026-11-10T14:00:00Z"},
            }
        },
        "cycles": [
            a_cycle("response", 1, "2026-11-10T08:00:00Z", None, 3600),
            # closed hours explain would list (a calendar closed 11:00-11:30 while it ran)
            a_cycle(
                "resolution",
                1,
                "2026-11-10T08:00:00Z",
                None,
                7200,
                closed=[["2026-11-10T11:00:00Z", "2026-11-10T11:30:00Z"]],
            ),
        ],
    }
    p = picture(document)
    t = lambda hm: epoch(f"2026-11-10T{hm}:00Z")  # noqa: E731
    assert (p.start, p.as_of, p.end) == (t("08:00"), t("12:00"), t("14:00"))
    assert stretches(cycle(p, "response")) == [
        (t("08:00"), t("09:00"), "running", None),
        (t("09:00"), t("12:00"), "stopped", "responded"),
    ]
    assert stretches(cycle(p, "resolution")) == [
        (t("08:00"), t("08:30"), "running", None),
        (t("08:30"), t("10:00"), "paused", "pending_customer"),
        (t("10:00"), t("11:00"), "running", None),
        (t("11:00"), t("11:30"), "paused", "closed_hours"),
        (t("11:30"), t("12:00"), "running", None),
    ]
    assert marks(cycle(p, "response"), "warning") == [t("08:45")]
    assert marks(cycle(p, "resolution"), "due") == [t("14:00")]  # projected, from the view
    assert [m.projected for m in cycle(p, "resolution").marks if m.kind == "due"] == [True]
    assert [m.event_id for m in cycle(p, "response").marks if m.kind == "event"] == [
        "e-1",
        "e-2",
        "e-3",
        "e-4",
    ]
    svg = str(clocks_svg(p))
    assert "T-&lt;1&gt;" in svg and "T-<1>" not in svg  # escaped
    ET.fromstring(svg)


# -- real explain output ---------------------------------------------------------------


def test_a_pause_for_pending_customer():
    """Medium ticket Monday 10:00 New York (15:00Z), answered 10:30, pending 11:00-13:00, resolved
    15:00: the resolution clock runs 4 h of its 8 business hours."""
    s = Story()
    s.opened(ny("2026-11-09 10:00"), "medium")
    s.responded(ny("2026-11-09 10:30"))
    s.status(ny("2026-11-09 11:00"), "pending_customer")
    s.status(ny("2026-11-09 13:00"), "open")
    s.resolved(ny("2026-11-09 15:00"))
    p = picture(explained(s, ny("2026-11-09 16:00")))
    check_consistent(p)
    assert p.time_zone == "America/New_York"
    at = lambda hm: e(ny(f"2026-11-09 {hm}"))  # noqa: E731
    assert stretches(cycle(p, "response")) == [
        (at("10:00"), at("10:30"), "running", None),
        (at("10:30"), at("16:00"), "stopped", "responded"),
    ]
    assert stretches(cycle(p, "resolution")) == [
        (at("10:00"), at("11:00"), "running", None),
        (at("11:00"), at("13:00"), "paused", "pending_customer"),
        (at("13:00"), at("15:00"), "running", None),
        (at("15:00"), at("16:00"), "stopped", "resolved"),
    ]
    assert cycle(p, "resolution").elapsed_seconds == 3 * 3600
    # 75 % of 4 h of response: never reached; of 8 h resolution: never reached either.
    assert not marks(cycle(p, "resolution"), "warning") and not marks(cycle(p, "resolution"), "due")
    assert [m.event_type for m in cycle(p, "resolution").marks if m.kind == "event"] == [
        "ticket.opened",
        "ticket.responded",
        "ticket.status_changed",
        "ticket.status_changed",
        "ticket.resolved",
    ]


def test_a_suspension():
    """An urgent non_service ticket (24x7) opened 03:00Z; its customer's invoice is more than 10 days
    late from 03:40Z until paid at 04:10Z: both clocks pause 30 minutes, the response falls due at
    04:30Z instead of 04:00Z, and breaches a second later."""
    s = Story()
    s.invoice_due(utc("2026-10-15 12:00"), "INV-1", utc("2026-10-29 03:40"))
    s.opened(utc("2026-11-08 03:00"), "urgent", category="non_service")
    s.invoice_paid(utc("2026-11-08 04:10"), "INV-1")
    p = picture(explained(s, utc("2026-11-08 05:00")))
    check_consistent(p)
    at = lambda hm: e(utc(f"2026-11-08 {hm}"))  # noqa: E731
    for name in ("response", "resolution"):
        assert stretches(cycle(p, name)) == [
            (at("03:00"), at("03:40"), "running", None),
            (at("03:40"), at("04:10"), "paused", "suspension"),
            (at("04:10"), at("05:00"), "running", None),
        ]
    response = cycle(p, "response")
    assert marks(response, "warning") == [at("04:15")]
    assert marks(response, "due") == [at("04:30")]
    assert marks(response, "breach") == [at("04:30") + 1]


def test_closed_hours_friday_evening():
    """A medium ticket opened Friday 18:00 New York: business hours Mon-Fri 09:00-17:00, so its
    clocks do not count until Monday 09:00; as of Monday 11:00 the response (4 business hours) has
    run 2 h and falls due at 13:00."""
    s = Story()
    s.opened(ny("2026-11-13 18:00"), "medium")
    p = picture(explained(s, ny("2026-11-16 11:00")))
    check_consistent(p)
    for name in ("response", "resolution"):
        assert stretches(cycle(p, name)) == [
            (e(ny("2026-11-13 18:00")), e(ny("2026-11-16 09:00")), "paused", "closed_hours"),
            (e(ny("2026-11-16 09:00")), e(ny("2026-11-16 11:00")), "running", None),
        ]
    response = cycle(p, "response")
    assert marks(response, "due") == [e(ny("2026-11-16 13:00"))]
    assert [m.projected for m in response.marks if m.kind == "due"] == [True]
    # The resolution clock's 8 business hours: all of Monday's; the axis reaches that due instant.
    assert marks(cycle(p, "resolution"), "due") == [e(ny("2026-11-16 17:00"))]
    assert p.end == e(ny("2026-11-16 17:00"))


def test_priority_changes_and_breaches():
    """The explain tests' story: the resolution clock restarts twice (urgent -> medium -> low)."""
    document = explain(*split(everything().records), default_policy(), ny("2026-11-13 12:00"))
    assert document is not None
    p = picture(document)
    check_consistent(p)
    at = lambda text: e(utc(text))  # noqa: E731
    resolution = [c for c in p.cycles if c.clock == "resolution"]
    assert [(c.cycle, c.priority, c.start, c.end) for c in resolution] == [
        (1, "urgent", at("2026-11-08 03:00"), at("2026-11-09 14:00")),
        (2, "medium", at("2026-11-09 14:00"), at("2026-11-11 16:00")),
        (3, "low", at("2026-11-11 16:00"), at("2026-11-13 17:00")),
    ]
    assert marks(resolution[1], "priority-change") == [at("2026-11-09 14:00")]
    assert marks(resolution[2], "priority-change") == [at("2026-11-11 16:00")]
    # Cycle 2 starts paused (pending_customer since 05:20Z), runs from 10:00 New York, breaches
    # its 8 business hours at 10:00 the next day (Tuesday: 7 h Monday, 1 h Tuesday).
    assert stretches(resolution[1])[:3] == [
        (at("2026-11-09 14:00"), at("2026-11-09 15:00"), "paused", "pending_customer"),
        (at("2026-11-09 15:00"), at("2026-11-09 22:00"), "running", None),
        (at("2026-11-09 22:00"), at("2026-11-10 14:00"), "paused", "closed_hours"),
    ]
    assert marks(resolution[1], "breach") == [at("2026-11-10 15:00") + 1]
    # Cycle 3: resolved, reopened, closed.
    assert [(s.kind, s.reason) for s in resolution[2].stretches if s.kind == "stopped"] == [
        ("stopped", "resolved"),
        ("stopped", "closed"),
    ]
    response = cycle(p, "response")
    assert marks(response, "breach") == [at("2026-11-08 04:30") + 1]
    assert stretches(response)[1] == (at("2026-11-08 03:40"), at("2026-11-08 04:10"), "paused", "suspension")


def test_an_unanswered_urgent_ticket_breaches():
    s = Story()
    s.opened(utc("2026-11-10 08:00"), "urgent")
    p = picture(explained(s, utc("2026-11-10 10:00")))
    check_consistent(p)
    response = cycle(p, "response")
    assert stretches(response) == [(e(utc("2026-11-10 08:00")), e(utc("2026-11-10 10:00")), "running", None)]
    assert marks(response, "warning") == [e(utc("2026-11-10 08:45"))]
    assert marks(response, "due") == [e(utc("2026-11-10 09:00"))]
    assert marks(response, "breach") == [e(utc("2026-11-10 09:00")) + 1]
    assert not any(m.projected for m in response.marks)


# -- the SVG's DOM --------------------------------------------------------------------


def test_the_svg_dom():
    document = explain(*split(everything().records), default_policy(), ny("2026-11-13 12:00"))
    assert document is not None
    p = picture(document)
    root = ET.fromstring(str(clocks_svg(p)))
    assert (
        root.get("id") == "clocks" and root.get("role") == "img" and "T-1" in (root.get("aria-label") or "")
    )
    groups = root.findall(f"{SVG}g[@class='clock']")
    assert [(g.get("data-clock"), g.get("data-cycle")) for g in groups] == [
        ("response", "1"),
        ("resolution", "1"),
        ("resolution", "2"),
        ("resolution", "3"),
    ]
    for g, c in zip(groups, p.cycles, strict=True):
        rects = g.findall(f"{SVG}rect[@class='stretch']")
        drawn = [
            (
                int(r.get("data-start") or 0),
                int(r.get("data-end") or 0),
                r.get("data-kind"),
                r.get("data-reason") or None,
            )
            for r in rects
        ]
        assert drawn == stretches(c)
        lines = g.findall(f"{SVG}line[@class='mark']")
        assert [(int(x.get("data-at") or 0), x.get("data-kind")) for x in lines] == [
            (m.at, m.kind) for m in c.marks
        ]
        for element in [*rects, *lines]:
            title = element.find(f"{SVG}title")
            assert title is not None and title.text is not None
            assert "Z)" in title.text and ("EST" in title.text or "EDT" in title.text)
        for x in lines:
            if x.get("data-kind") == "event":
                assert (x.get("data-type") or "").startswith("ticket.")


def test_stretch_is_a_value():
    assert Stretch(1, 2, "running") == Stretch(1, 2, "running", None)
