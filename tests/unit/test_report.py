"""The monthly compliance report (projections.report) and its renderers (projections.report_render).

The default policy: business = Mon-Fri 09:00-17:00 America/New_York, no holidays; response
1 h urgent (24x7), 2 h high, 4 h medium, 8 h low (business); resolution 8 h medium, 48 h low
(business), none for urgent and high; escalation level 1 on any breach; 12,500 cents an hour.
November 2026: Sunday the 1st is the day New York leaves DST (EDT, UTC-4, until 02:00; then
EST, UTC-5); Monday the 2nd is a business day.
"""

import csv
import hashlib
import io
import random
from datetime import UTC, datetime

import orjson
import pytest

from events import encode_event
from events.policies import PolicyVersionPublished
from projections.billing import month_of
from projections.contracts import Contracts, version_of
from projections.policy import default_policy, parse_policy
from projections.report import MonthError, MonthlyReport, monthly_report, parse_month, percent
from projections.report_render import COLUMNS, render, render_csv, render_html, render_json
from projections.timeline import Recorded, history
from tests.engine_helpers import H, Story, ny, utc

LATER = datetime(2027, 1, 15, tzinfo=UTC)  # "now" for a month long over


def november() -> Story:
    """Customer acme: five tickets dispatched in November 2026, one in October, one in December."""
    s = Story("T-1", "acme")
    s.opened(ny("2026-10-30 15:00"), "medium", ticket_id="T-0")  # October's
    # T-1 medium, Mon 2 Nov 09:00: responded after 1 h (met); resolved Tue 12:00, 11 business hours.
    s.opened(ny("2026-11-02 09:00"), "medium", ticket_id="T-1")
    s.responded(ny("2026-11-02 10:00"), ticket_id="T-1")
    s.resolved(ny("2026-11-03 12:00"), ticket_id="T-1")
    # T-2 high, Wed 4 Nov 10:00: responded at 13:00, 3 business hours for a 2 h target.
    s.opened(ny("2026-11-04 10:00"), "high", ticket_id="T-2")
    s.responded(ny("2026-11-04 13:00"), ticket_id="T-2")
    s.resolved(ny("2026-11-04 15:00"), ticket_id="T-2")
    # T-3 urgent, Sat 7 Nov 10:00 (outside business hours: uncovered P1), responded in 30 min.
    s.opened(ny("2026-11-07 10:00"), "urgent", ticket_id="T-3")
    s.responded(ny("2026-11-07 10:30"), ticket_id="T-3")
    s.work(ny("2026-11-07 10:30"), ny("2026-11-07 12:00"), ticket_id="T-3")
    s.fault(ny("2026-11-07 12:00"), "customer", ticket_id="T-3")
    s.closed(ny("2026-11-07 12:30"), ticket_id="T-3")
    # T-4 low, Mon 30 Nov 16:00: still open at the month's end (answered in December).
    s.opened(ny("2026-11-30 16:00"), "low", ticket_id="T-4")
    # T-5 medium new install with after-hours support, Thu 5 Nov 16:00, 3 h of work to 19:00.
    s.opened(
        ny("2026-11-05 16:00"), "medium", ticket_id="T-5", category="new_install", after_hours_requested=True
    )
    s.responded(ny("2026-11-05 16:30"), ticket_id="T-5")
    s.work(ny("2026-11-05 16:00"), ny("2026-11-05 19:00"), ticket_id="T-5")
    s.closed(ny("2026-11-05 19:30"), ticket_id="T-5")
    # An invoice, paid before it is late: no suspension (and none of these is non_service).
    s.invoice_due(ny("2026-11-10 09:00"), "INV-1", ny("2026-11-20 09:00"))
    s.invoice_paid(ny("2026-11-25 09:00"), "INV-1")
    # After the month: T-4 answered, a December ticket, another customer's ticket.
    s.responded(ny("2026-12-01 10:00"), ticket_id="T-4")
    s.opened(ny("2026-12-02 10:00"), "low", ticket_id="T-6")
    s.opened(ny("2026-11-03 10:00"), "urgent", ticket_id="T-1", customer_id="globex")
    return s


def default_text() -> str:
    text = default_policy().text
    assert text is not None
    return text


def report_of(s: Story, month: str = "2026-11", now: datetime = LATER, **kw) -> MonthlyReport:
    return monthly_report(
        s.records, kw.pop("source", default_policy()), kw.pop("customer", "acme"), month, now
    )


def attainment(report: MonthlyReport) -> dict[tuple[str, str], tuple[int, int, str | None, str | None]]:
    return {
        (a.clock, a.priority): (a.evaluated, a.met, a.attainment, a.attainment_percent)
        for a in report.attainment
    }


# -- (1) a month computed by hand -------------------------------------------------------------


def test_a_month_computed_by_hand():
    report = report_of(november())
    # Complete (now is January): every ticket as of the first instant of December in New York,
    # 2026-12-01 00:00 EST = 05:00Z; the month began 2026-11-01 00:00 EDT = 04:00Z.
    assert (report.period_start, report.period_end) == ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
    assert (report.as_of, report.as_of_basis, report.complete) == ("2026-12-01T05:00:00Z", "month_end", True)
    assert report.time_zone == "America/New_York"
    # T-0 is October's, T-6 December's, globex's T-1 another customer's.
    assert [t.ticket_id for t in report.tickets] == ["T-1", "T-2", "T-3", "T-4", "T-5"]
    assert [(v.contract, v.policy_version, v.effective_from) for v in report.contract_versions] == [
        ("default", default_policy().version, None)
    ]
    assert report.contract_versions[0].digest == default_policy().digest

    # Response targets evaluated (each clock stopped by a response by the month's end):
    #   T-3 urgent: 30 min (24x7) <= 1 h: met.            urgent 1/1
    #   T-2 high: Wed 10:00-13:00 = 3 h > 2 h: breached.  high   0/1
    #   T-1 medium: 09:00-10:00 = 1 h <= 4 h: met.
    #   T-5 medium: 16:00-16:30 = 30 min <= 4 h: met.     medium 2/2
    #   T-4 low: not answered by 1 Dec, 16:00-17:00 = 1 h of 8 h: not evaluated yet.
    #   all: 3 met of 4 = 75 %.
    # Resolution targets (urgent and high have none):
    #   T-1 medium: Mon 09:00-17:00 (8 h) + Tue 09:00-12:00 (3 h) = 11 h > 8 h: breached.
    #   T-5 medium: closed at 19:30, 16:00-17:00 = 1 h counted <= 8 h: met.   medium 1/2
    #   T-4 low: running, 1 h of 48 h: not evaluated.                         all 1/2 = 50 %
    assert attainment(report) == {
        ("response", "urgent"): (1, 1, "1/1", "100.00"),
        ("response", "high"): (1, 0, "0/1", "0.00"),
        ("response", "medium"): (2, 2, "2/2", "100.00"),
        ("response", "low"): (0, 0, None, None),
        ("response", "all"): (4, 3, "3/4", "75.00"),
        ("resolution", "urgent"): (0, 0, None, None),
        ("resolution", "high"): (0, 0, None, None),
        ("resolution", "medium"): (2, 1, "1/2", "50.00"),
        ("resolution", "low"): (0, 0, None, None),
        ("resolution", "all"): (2, 1, "1/2", "50.00"),
    }

    # T-1's resolution: 8 h = 28,800 s reached at Mon 17:00; the breach is the next open second,
    # Tue 09:00:01 EST = 14:00:01Z; resolved with 39,600 s: overrun 39,600 - 28,800 = 10,800 s.
    # T-2's response: 7,201 s after Wed 10:00 is 12:00:01 EST = 17:00:01Z; 10,800 - 7,200 = 3,600 s.
    fields = "ticket_id clock cycle priority breached_at target_seconds elapsed_seconds overrun_seconds"
    assert [tuple(getattr(b, f) for f in fields.split()) for b in report.breaches] == [
        ("T-1", "resolution", 1, "medium", "2026-11-03T14:00:01Z", 8 * H, 11 * H, 3 * H),
        ("T-2", "response", 1, "high", "2026-11-04T17:00:01Z", 2 * H, 3 * H, 1 * H),
    ]

    # Each breach raised level 1 (on_breach); nothing reached 150 % of a resolution target.
    assert [(c.level, c.tickets_at_level, c.tickets_reached) for c in report.escalations.by_level] == [
        (1, 2, 2),
        (2, 0, 0),
        (3, 0, 0),
    ]
    assert [(t.ticket_id, t.level, t.reached_at, t.cause) for t in report.escalations.tickets] == [
        ("T-1", 1, "2026-11-03T14:00:01Z", "resolution_breached"),
        ("T-2", 1, "2026-11-04T17:00:01Z", "response_breached"),
    ]

    # T-3, uncovered P1, the customer's fault: Saturday's 10:30-12:00 is all after hours, 5,400 s
    # (over the 1 h minimum): 5,400 x 12,500 / 3,600 = 18,750 cents.
    # T-5, new install with after-hours support: of 16:00-19:00 only 17:00-19:00 is after hours,
    # 7,200 s (the 2 h minimum exactly): 7,200 x 12,500 / 3,600 = 25,000 cents.
    # Total: 18,750 + 25,000 = 43,750 cents for 5,400 + 7,200 = 12,600 s.
    assert [
        (line.ticket_id, line.rule, line.billing_status, line.billable_seconds, line.amount_cents)
        for line in report.billing.lines
    ] == [
        ("T-3", "uncovered_p1", "billable", 5400, 18_750),
        ("T-5", "new_install", "billable", 7200, 25_000),
    ]
    assert (report.billing.total_billable_seconds, report.billing.total_cents) == (12_600, 43_750)
    assert {line.policy_version for line in report.billing.lines} == {default_policy().version}

    # T-4 is open at the month's end: its December answer is not applied.
    [still] = report.open_at_end
    assert (still.ticket_id, still.priority, still.status, still.response, still.resolution) == (
        "T-4",
        "low",
        "open",
        "running",
        "running",
    )
    assert report.quarantined == []
    # Events used: T-1 3, T-2 3, T-3 5, T-4 1 (its answer is December's), T-5 4; the invoice's 2.
    assert (report.digest_inputs.ticket_events, report.digest_inputs.account_events) == (16, 2)
    assert report.reproduce.export == "slatrack export --customer acme > log.jsonl"
    assert report.reproduce.report == "slatrack report --events log.jsonl --customer acme --month 2026-11"


def test_the_digest_is_recomputed_as_docs_audit_says():
    """docs/audit.md, "Verifying a monthly report": the tickets' events (by ticket id, each in
    applied order), then the account's, each canonical and a newline; then the contracts' digest."""
    s = november()
    report = report_of(s)
    as_of = datetime(2026, 12, 1, 5, tzinfo=UTC)
    acme = [r for r in s.records if r.event.customer_id == "acme"]
    tickets = ["T-1", "T-2", "T-3", "T-4", "T-5"]
    lines = b""
    for ticket in tickets:
        lines += b"".join(
            encode_event(r.event) + b"\n"
            for r in history([r for r in acme if getattr(r.event, "ticket_id", None) == ticket], as_of)
        )
    lines += b"".join(
        encode_event(r.event) + b"\n"
        for r in history([r for r in acme if r.event.type.startswith("account.")])
    )
    contracts = Contracts.single(default_policy()).digest
    assert report.digest_inputs.contracts_digest == contracts
    assert report.digest == "sha256:" + hashlib.sha256(lines + contracts.encode()).hexdigest()
    # Another policy is another digest, with the same events.
    other = parse_policy(default_text().replace('version = "default-2026.1"', 'version = "other"'))
    assert report_of(s, source=other).digest != report.digest


def test_rounding_of_the_percentage_is_half_up_to_two_decimals():
    assert [percent(m, e) for m, e in [(2, 3), (1, 3), (1, 8), (1, 6), (0, 5), (5, 5), (1, 200_000)]] == [
        "66.67",
        "33.33",
        "12.50",
        "16.67",
        "0.00",
        "100.00",
        "0.00",  # 0.0005 % rounds half up to 0.00 (five thousandths of a hundredth would be 0.01)
    ]
    assert percent(1, 20_000) == "0.01"  # exactly 0.005 %: half up


# -- (2) the CSV is the JSON ------------------------------------------------------------------


def test_the_csv_parses_and_its_numbers_are_the_jsons():
    report = report_of(november())
    raw = render_csv(report)
    text = raw.decode("utf-8")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")  # CRLF, and only CRLF
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == COLUMNS
    assert all(len(row) == len(COLUMNS) for row in rows)
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows[1:]]
    document = orjson.loads(render_json(report))

    def section(name: str) -> list[dict[str, str]]:
        return [r for r in records if r["section"] == name]

    facts = {r["key"]: r["value"] for r in section("report")}
    assert facts["customer_id"] == "acme" and facts["month"] == "2026-11"
    assert facts["as_of"] == document["as_of"] and facts["complete"] == "true"
    assert facts["digest"] == document["digest"]
    assert int(facts["ticket_events"]) == document["digest_inputs"]["ticket_events"]
    for got, expected in zip(section("attainment"), document["attainment"], strict=True):
        assert (got["clock"], got["priority"]) == (expected["clock"], expected["priority"])
        assert (int(got["evaluated"]), int(got["met"])) == (expected["evaluated"], expected["met"])
        assert got["attainment"] == (expected["attainment"] or "")
        assert got["attainment_percent"] == (expected["attainment_percent"] or "")
    numbers = ("cycle", "target_seconds", "elapsed_seconds", "overrun_seconds")
    for got, expected in zip(section("breach"), document["breaches"], strict=True):
        assert {k: int(got[k]) for k in numbers} == {k: expected[k] for k in numbers}
        assert (got["ticket_id"], got["clock"], got["breached_at"]) == (
            expected["ticket_id"],
            expected["clock"],
            expected["breached_at"],
        )
    lines = section("billing_line")
    assert [(r["ticket_id"], int(r["billable_seconds"]), int(r["amount_cents"])) for r in lines] == [
        (line["ticket_id"], line["billable_seconds"], line["amount_cents"])
        for line in document["billing"]["lines"]
    ]
    [total] = section("billing_total")
    assert int(total["amount_cents"]) == document["billing"]["total_cents"] == 43_750
    assert sum(int(r["amount_cents"]) for r in lines) == int(total["amount_cents"])
    levels = section("escalation_level")
    assert [(int(r["level"]), int(r["tickets_at_level"])) for r in levels] == [
        (c["level"], c["tickets_at_level"]) for c in document["escalations"]["by_level"]
    ]
    assert [r["ticket_id"] for r in section("open_at_end")] == ["T-4"]
    assert [r["ticket_id"] for r in section("ticket")] == [t["ticket_id"] for t in document["tickets"]]


def test_the_csv_quotes_what_needs_quoting():
    s = Story("T-1", 'acme, "the" one')
    s.opened(ny("2026-11-02 09:00"), "medium", ticket_id='T,"1"')
    report = monthly_report(s.records, default_policy(), s.customer_id, "2026-11", LATER)
    rows = list(csv.reader(io.StringIO(render_csv(report).decode(), newline="")))
    values = {row[COLUMNS.index("key")]: row[COLUMNS.index("value")] for row in rows if row[0] == "report"}
    assert values["customer_id"] == s.customer_id
    assert [row[1] for row in rows if row[0] == "ticket"] == ['T,"1"']


# -- (3) the HTML page ------------------------------------------------------------------------


def test_the_html_page_is_self_contained_and_escapes_every_value():
    s = Story("T-1", "<b>x</b>")
    s.opened(ny("2026-11-02 09:00"), "high", ticket_id="<script>alert(1)</script>")
    s.responded(ny("2026-11-02 13:00"), ticket_id="<script>alert(1)</script>")  # breached: listed
    page = render_html(monthly_report(s.records, default_policy(), "<b>x</b>", "2026-11", LATER)).decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "<img" not in page and "url(" not in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Local time beside UTC: dispatch Mon 2 Nov 09:00 EST.
    assert "2026-11-02 09:00:00 EST" in page and "2026-11-02T14:00:00Z" in page
    assert "Provisional" not in page


def test_the_html_page_says_when_the_month_is_not_over():
    s = november()
    page = render_html(report_of(s, now=datetime(2026, 11, 20, tzinfo=UTC))).decode()
    assert "Provisional: the month was not over" in page


# -- (4) the same input, the same bytes -------------------------------------------------------


@pytest.mark.parametrize("form", ["json", "csv", "html"])
def test_the_same_log_gives_the_same_bytes(form):
    s = november()
    first = render(report_of(s), form)
    assert render(report_of(november()), form) == first
    # The same records handed over in another order, with duplicate copies recorded later; or
    # numbered as a store numbers them (offset x 1024 + partition): the same report.
    shuffled = list(s.records) + [Recorded(len(s.records) + i, r.event) for i, r in enumerate(s.records[:5])]
    random.Random(7).shuffle(shuffled)
    assert render(monthly_report(shuffled, default_policy(), "acme", "2026-11", LATER), form) == first
    stored = [Recorded(r.seq * 1024 + 3, r.event) for r in s.records]
    assert render(monthly_report(stored, default_policy(), "acme", "2026-11", LATER), form) == first
    # Computed at another instant after the month: the same (only `complete` may see the clock).
    assert render(report_of(s, now=datetime(2030, 1, 1, tzinfo=UTC)), form) == first


# -- (5) a ticket's month is that of its dispatch in the contract's zone -----------------------


def test_a_ticket_dispatched_late_on_november_30_in_new_york_is_in_novembers_report():
    s = Story("T-late", "acme")
    s.opened(ny("2026-11-30 23:30"), "urgent")  # = 2026-12-01T04:30:00Z
    assert s.records[0].at == utc("2026-12-01 04:30")
    november_report = report_of(s)
    assert [t.ticket_id for t in november_report.tickets] == ["T-late"]
    assert november_report.tickets[0].opened_at == "2026-12-01T04:30:00Z"
    assert report_of(s, "2026-12").tickets == []
    # Its charge is November's too: one function for both (projections.billing.month_of).
    [line] = november_report.billing.lines  # urgent, outside business hours: uncovered P1, pending
    assert (line.rule, line.billing_status) == ("uncovered_p1", "pending_review")
    assert month_of(default_policy(), s.records[0].at) == "2026-11"
    assert s.view(utc("2026-12-01 05:00"), "T-late")["billing"]["month"] == "2026-11"
    # As of the month's end (05:00Z) it had been unanswered 30 min: its response is not evaluated.
    assert attainment(november_report)[("response", "urgent")] == (0, 0, None, None)
    assert [t.ticket_id for t in november_report.open_at_end] == ["T-late"]


# -- the instant of the report ------------------------------------------------------------


def test_a_month_not_over_is_as_of_the_customers_latest_event():
    s = november()
    report = report_of(s, now=datetime(2026, 11, 20, 12, tzinfo=UTC))
    # The log holds December's events: the month is not over by `now`, but its end is before them.
    assert (report.complete, report.as_of_basis, report.as_of) == (False, "month_end", "2026-12-01T05:00:00Z")
    early = Story("T-1", "acme")
    early.opened(ny("2026-11-02 09:00"), "medium")
    early.responded(ny("2026-11-02 15:00"))  # 6 h: breached at 13:00:01
    provisional = report_of(early, now=datetime(2026, 11, 20, tzinfo=UTC))
    assert (provisional.complete, provisional.as_of_basis, provisional.as_of) == (
        False,
        "latest_event",
        "2026-11-02T20:00:00Z",
    )
    assert [b.overrun_seconds for b in provisional.breaches] == [2 * H]
    # A quiet customer, the month over: as of its end all the same (the clock ran on).
    quiet = Story("T-1", "acme")
    quiet.opened(ny("2026-11-02 09:00"), "medium")
    done = report_of(quiet, now=LATER)
    # Unanswered: its 4 h response breached Mon 13:00:01; as of 1 Dec it has counted every business
    # day from Mon 2 to Mon 30 November, 21 days x 8 h = 168 h (its 8 h resolution breached too).
    breaches = {b.clock: b for b in done.breaches}
    assert (breaches["response"].breached_at, breaches["response"].elapsed_seconds) == (
        "2026-11-02T18:00:01Z",
        168 * H,
    )
    assert breaches["resolution"].overrun_seconds == 160 * H
    assert done.as_of_basis == "month_end" and done.complete
    # No event since the month began, the month not over: as of its start, nothing in it.
    before = report_of(quiet, "2026-12", now=datetime(2026, 12, 5, tzinfo=UTC))
    assert (before.as_of_basis, before.as_of, before.tickets) == ("month_start", "2026-12-01T05:00:00Z", [])


@pytest.mark.parametrize(
    "month", ["2026-13", "2026-1", "2026-11-01", "", "nov", "1969-12", "3000-01", "0000-01"]
)
def test_a_month_must_be_yyyy_mm_from_1970_to_2999(month):
    with pytest.raises(MonthError):
        parse_month(month)
    with pytest.raises(MonthError):
        report_of(november(), month)


def test_an_unknown_customer_has_an_empty_report():
    report = report_of(november(), customer="nobody")
    assert report.tickets == [] and report.billing.total_cents == 0
    assert (report.digest_inputs.ticket_events, report.digest_inputs.account_events) == (0, 0)


def test_a_ticket_the_engine_raises_on_is_quarantined_and_left_out(monkeypatch):
    import projections.ticket

    real = projections.ticket.TicketState.view

    def broken(self):
        if self.opened.ticket_id == "T-2":
            raise RuntimeError("boom")
        return real(self)

    monkeypatch.setattr(projections.ticket.TicketState, "view", broken)
    report = report_of(november())
    assert [(q.ticket_id, q.error) for q in report.quarantined] == [("T-2", "RuntimeError: boom")]
    assert [t.state for t in report.tickets if t.ticket_id == "T-2"] == ["quarantined"]
    assert [b.ticket_id for b in report.breaches] == ["T-1"]
    assert attainment(report)[("response", "high")] == (0, 0, None, None)
    assert report.digest_inputs.ticket_events == 16  # its events were used all the same
    assert "T-2" in render_html(report).decode() and "quarantined" in render_csv(report).decode()


# -- contracts -----------------------------------------------------------------------------


def premium_version(effective: str, position: int = 0):
    text = (
        default_text()
        .replace('version = "default-2026.1"', 'version = "premium-2026.11"')
        .replace(
            'response = { target = "4h", calendar = "business" }',
            'response = { target = "2h", calendar = "business" }',
        )
    )
    policy = parse_policy(text)
    event = PolicyVersionPublished(
        event_id=f"pv-{position}",
        type="policy.version_published",
        schema_version=1,
        occurred_at=datetime(2026, 11, 1, tzinfo=UTC),
        contract="premium",
        effective_from=datetime.fromisoformat(effective),
        policy_version=policy.version,
        digest=policy.digest,
        policy=text,
    )
    return version_of(event, position)


def test_the_versions_in_force_during_the_month_and_which_measures_each_ticket():
    s = Story("T-1", "acme")
    # acme moves to premium from Mon 16 Nov 00:00 New York; premium's medium response is 2 h.
    s.add(
        "account.contract_changed",
        ny("2026-11-10 12:00"),
        {"contract": "premium", "effective_from": "2026-11-16T05:00:00Z"},
    )
    s.opened(ny("2026-11-09 09:00"), "medium", ticket_id="T-before")
    s.responded(ny("2026-11-09 12:00"), ticket_id="T-before")  # 3 h: met under default's 4 h
    s.resolved(ny("2026-11-09 13:00"), ticket_id="T-before")
    s.opened(ny("2026-11-16 09:00"), "medium", ticket_id="T-after")
    s.responded(ny("2026-11-16 12:00"), ticket_id="T-after")  # 3 h: breached under premium's 2 h
    s.resolved(ny("2026-11-16 13:00"), ticket_id="T-after")
    version = premium_version("2026-11-16T05:00:00Z")
    contracts = Contracts(default_policy(), [version])
    report = monthly_report(s.records, contracts, "acme", "2026-11", LATER)
    assert [(v.contract, v.policy_version, v.effective_from, v.digest) for v in report.contract_versions] == [
        ("default", "default-2026.1", None, default_policy().digest),
        ("premium", "premium-2026.11", "2026-11-16T05:00:00Z", version.policy.digest),
    ]
    assert [(t.ticket_id, t.contract, t.policy_version) for t in report.tickets] == [
        ("T-after", "premium", "premium-2026.11"),
        ("T-before", "default", "default-2026.1"),
    ]
    assert [(b.ticket_id, b.contract, b.target_seconds, b.overrun_seconds) for b in report.breaches] == [
        ("T-after", "premium", 2 * H, 1 * H)
    ]
    assert attainment(report)[("response", "medium")] == (2, 1, "1/2", "50.00")
    assert report.digest_inputs.contracts_digest == contracts.digest
    # December: premium only (the customer is on it all month).
    december = monthly_report(s.records, contracts, "acme", "2026-12", LATER)
    assert [v.contract for v in december.contract_versions] == ["premium"]


# -- contracts in two zones (found by a review) -------------------------------------------


REVIEW_OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
REVIEW_NOW = datetime(2027, 1, 15, tzinfo=UTC)


def review_contracts():
    from tests.contracts_helpers import premium_text, published

    return Contracts(default_policy(), [published(premium_text(), "premium", REVIEW_OCT_1, 0)])


def test_a_customer_moving_west_mid_month_keeps_its_late_november_ticket_in_november():
    """acme is on premium (Berlin) at the start of November and on default (New York) from the
    15th. T is dispatched Mon 30 Nov 20:00 New York (1 Dec 01:00Z), on default: its month is
    2026-11 in New York, its billing month too. November's bounds are the widest of the two
    zones', so T is in November's report (and not in December's)."""
    contracts = review_contracts()
    s = Story(customer_id="acme")
    s.contract(REVIEW_OCT_1, "premium", REVIEW_OCT_1)
    s.contract(ny("2026-11-15 00:00"), "default", ny("2026-11-15 00:00"))
    s.opened(ny("2026-11-30 20:00"), "urgent", ticket_id="T")
    s.opened(ny("2026-12-02 10:00"), "low", ticket_id="LATER")
    november = monthly_report(s.records, contracts, "acme", "2026-11", REVIEW_NOW)
    december = monthly_report(s.records, contracts, "acme", "2026-12", REVIEW_NOW)
    assert [t.ticket_id for t in november.tickets] == ["T"]
    assert [t.ticket_id for t in december.tickets] == ["LATER"]
    assert november.time_zone == "Europe/Berlin"  # the zone of its contract on the 1st
    assert (november.period_start, november.period_end) == ("2026-10-31T23:00:00Z", "2026-12-01T05:00:00Z")


def test_a_contract_change_recorded_after_the_month_does_not_change_its_report():
    """A change recorded on 10 December, backdated to 1 October, is not known by November's end:
    the November report (complete) is the same bytes before and after it."""
    contracts = review_contracts()
    s = Story(customer_id="acme")
    s.opened(ny("2026-11-30 18:30"), "medium", ticket_id="LATE")
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id="MID")
    before = monthly_report(s.records, contracts, "acme", "2026-11", REVIEW_NOW)
    s.contract(ny("2026-12-10 12:00"), "premium", REVIEW_OCT_1)
    after = monthly_report(s.records, contracts, "acme", "2026-11", REVIEW_NOW)
    assert render(after, "json") == render(before, "json")
    assert before.time_zone == "America/New_York" and [t.ticket_id for t in before.tickets] == ["LATE", "MID"]


def test_a_csv_text_a_spreadsheet_would_evaluate_is_shown_as_text():
    """An id from upstream that a spreadsheet takes for a formula gets a leading quote in the
    CSV (OWASP, CSV injection); numbers, negative ones included, are written as they are."""
    s = Story(customer_id="acme")
    s.opened(ny("2026-11-10 09:00"), "medium", ticket_id='=HYPERLINK("http://x","y")')
    s.opened(ny("2026-11-10 09:05"), "medium", ticket_id="@SUM(A1)")
    s.opened(ny("2026-11-10 09:10"), "medium", ticket_id="T-ok")
    report = monthly_report(s.records, default_policy(), "acme", "2026-11", REVIEW_NOW)
    rows = list(csv.DictReader(io.StringIO(render_csv(report).decode(), newline="")))
    ids = [r["ticket_id"] for r in rows if r["section"] == "ticket"]
    assert ids == ['\'=HYPERLINK("http://x","y")', "'@SUM(A1)", "T-ok"]
    assert orjson.loads(render_json(report))["tickets"][0]["ticket_id"].startswith("=")  # the JSON as it is


def test_a_customer_on_one_contract_all_month_has_its_zones_bounds():
    """On premium (Berlin) since October: November is Berlin's midnights, whatever other zones
    the other contracts have (and a breach at 23:30:01Z on the 30th is December's)."""
    contracts = review_contracts()
    s = Story(customer_id="bolt")
    s.contract(REVIEW_OCT_1, "premium", REVIEW_OCT_1)
    s.opened(ny("2026-11-30 17:30"), "urgent", ticket_id="LATE")  # 22:30Z, Berlin 23:30
    november = monthly_report(s.records, contracts, "bolt", "2026-11", REVIEW_NOW)
    assert november.time_zone == "Europe/Berlin"
    assert (november.period_start, november.period_end) == ("2026-10-31T23:00:00Z", "2026-11-30T23:00:00Z")
    assert november.as_of == "2026-11-30T23:00:00Z" and november.breaches == []  # due 23:30Z, not yet
