"""The audit trail (`projections.explain`, `slatrack explain`): every effect, in order, and the digest."""

import hashlib
import random

import orjson
import pytest
from click.testing import CliRunner

from events import encode_event
from projections.explain import canonical_policy, explain
from projections.policy import default_policy, parse_policy
from projections.timeline import Recorded
from services.cli.commands import main
from tests.engine_helpers import Story, ny, utc

AS_OF = ny("2026-11-13 12:00")  # 17:00Z


def everything() -> Story:
    """One urgent non_service ticket whose history produces every kind of effect.

    Dispatched Saturday 22:00 New York (03:00Z): uncovered P1. Its customer's
    invoice is more than 10 days late from 03:40Z until paid at 04:10Z, so
    both clocks pause for 30 minutes and the response falls due 30 minutes
    later. Priority changes, a pending stretch, a resolve and reopen, a close,
    and events that change nothing.
    """
    s = Story("T-1", "acme")
    s.invoice_due(utc("2026-10-15 12:00"), "INV-1", utc("2026-10-29 03:40"))  # e-1
    s.responded(ny("2026-11-07 21:00"))  # e-2: before the opening
    s.opened(ny("2026-11-07 22:00"), "urgent", category="non_service")  # e-3
    s.fault(utc("2026-11-08 03:50"), "customer")  # e-4
    s.invoice_paid(utc("2026-11-08 04:10"), "INV-1")  # e-5
    work = s.work(utc("2026-11-08 03:05"), utc("2026-11-08 05:05"))  # e-6: 2 h after hours
    s.responded(utc("2026-11-08 05:10"))  # e-7
    s.responded(utc("2026-11-08 05:30"))  # e-8: a second response
    s.status(utc("2026-11-08 05:20"), "pending_customer")  # e-9
    s.priority(ny("2026-11-09 09:00"), "medium")  # e-10: resolution restarts, paused
    s.status(ny("2026-11-09 10:00"), "open")  # e-11
    s.escalation_request(ny("2026-11-09 12:00"), 2)  # e-12
    s.work(ny("2026-11-09 17:00"), ny("2026-11-09 17:30"))  # e-13: 30 min after hours
    s.priority(ny("2026-11-11 11:00"), "low")  # e-14: resolution restarts, running
    s.priority(ny("2026-11-11 11:30"), "low")  # e-15: same priority
    s.resolved(ny("2026-11-12 10:00"))  # e-16
    s.resolved(ny("2026-11-12 10:30"))  # e-17: already resolved
    s.reopened(ny("2026-11-12 12:00"))  # e-18
    s.closed(ny("2026-11-13 09:00"))  # e-19
    s.reopened(ny("2026-11-13 10:00"))  # e-20: closed is final
    s.escalation_request(ny("2026-11-13 10:30"), 3)  # e-21: after the close
    s.record(work)  # a second copy of e-6
    return s


def split(records: list[Recorded]) -> tuple[list[Recorded], list[Recorded]]:
    tickets = [r for r in records if r.event.type.startswith("ticket.")]
    return tickets, [r for r in records if r.event.type.startswith("account.")]


def explained(records: list[Recorded], policy=None, as_of=AS_OF) -> dict:
    document = explain(*split(records), policy or default_policy(), as_of)
    assert document is not None
    return document


def effects(document: dict, kind: str) -> list[dict]:
    return [e for entry in document["entries"] for e in entry["effects"] if e["effect"] == kind]


def test_every_effect_in_applied_order():
    document = explained(everything().records)
    sequence = [
        (e["occurred_at"], e["event_id"] or e["type"], [f["effect"] for f in e["effects"]])
        for e in document["entries"]
    ]
    assert sequence == [
        ("2026-11-08T02:00:00Z", "e-2", ["ignored"]),
        ("2026-11-08T03:00:00Z", "e-3", ["clock_started", "clock_started"]),
        (
            "2026-11-08T03:40:00Z",
            "account.suspension",
            ["suspension_started", "clock_paused", "clock_paused"],
        ),
        ("2026-11-08T03:50:00Z", "e-4", ["fault_determined", "billable_added"]),
        (
            "2026-11-08T04:10:00Z",
            "account.suspension",
            ["suspension_ended", "clock_resumed", "due_moved", "clock_resumed"],
        ),
        ("2026-11-08T04:15:00Z", "time", ["clock_at_risk"]),
        ("2026-11-08T04:30:00Z", "time", ["clock_due"]),
        ("2026-11-08T04:30:01Z", "time", ["clock_breached", "escalated"]),
        ("2026-11-08T05:05:00Z", "e-6", ["work_logged", "billable_added"]),
        ("2026-11-08T05:05:00Z", "e-6", ["ignored"]),  # the duplicate copy
        ("2026-11-08T05:10:00Z", "e-7", ["clock_stopped"]),
        ("2026-11-08T05:20:00Z", "e-9", ["status_changed", "clock_paused"]),
        ("2026-11-08T05:30:00Z", "e-8", ["ignored"]),
        ("2026-11-09T14:00:00Z", "e-10", ["priority_changed", "cycle_restarted"]),
        ("2026-11-09T15:00:00Z", "e-11", ["status_changed", "clock_resumed", "due_moved"]),
        ("2026-11-09T17:00:00Z", "e-12", ["escalated"]),
        ("2026-11-09T21:00:00Z", "time", ["clock_at_risk"]),
        ("2026-11-09T22:30:00Z", "e-13", ["work_logged", "billable_added"]),
        ("2026-11-10T15:00:00Z", "time", ["clock_due"]),
        ("2026-11-10T15:00:01Z", "time", ["clock_breached", "escalation_recorded"]),
        ("2026-11-10T19:00:00Z", "time", ["escalation_recorded"]),
        ("2026-11-11T15:00:00Z", "time", ["escalated"]),
        ("2026-11-11T16:00:00Z", "e-14", ["priority_changed", "cycle_restarted", "due_moved"]),
        ("2026-11-11T16:30:00Z", "e-15", ["ignored"]),
        ("2026-11-12T15:00:00Z", "e-16", ["clock_stopped"]),
        ("2026-11-12T15:30:00Z", "e-17", ["ignored"]),
        ("2026-11-12T17:00:00Z", "e-18", ["clock_resumed", "due_moved"]),
        ("2026-11-13T14:00:00Z", "e-19", ["clock_stopped"]),
        ("2026-11-13T15:00:00Z", "e-20", ["ignored"]),
        ("2026-11-13T15:30:00Z", "e-21", ["ignored"]),
    ]
    positions = {e["event_id"]: e["position"] for e in document["entries"] if e["event_id"]}
    assert positions["e-3"] == 2 and document["entries"][9]["position"] == 21  # Story counts from 0


def test_the_details_say_from_what_to_what():
    document = explained(everything().records)
    moved = [(d["clock"], d["cycle"], d["from"], d["to"]) for d in effects(document, "due_moved")]
    assert moved == [
        # the suspension held the response clock 30 min: due 04:00Z -> 04:30Z
        ("response", 1, "2026-11-08T04:00:00Z", "2026-11-08T04:30:00Z"),
        # cycle 2 (medium, 8 business hours) starts paused, so its first due is at the resume
        ("resolution", 2, None, "2026-11-10T15:00:00Z"),
        # reached and fixed in cycle 2; cycle 3 (low, 48 business hours) from Wed 11:00
        ("resolution", 3, "2026-11-10T15:00:00Z", "2026-11-19T16:00:00Z"),
        # resolved Thu 10:00 - 12:00: two business hours later
        ("resolution", 3, "2026-11-19T16:00:00Z", "2026-11-19T18:00:00Z"),
    ]
    started = effects(document, "clock_started")
    assert [(s["clock"], s["target_seconds"], s["due_at"]) for s in started] == [
        ("response", 3600, "2026-11-08T04:00:00Z"),
        ("resolution", None, None),
    ]
    restarted = effects(document, "cycle_restarted")
    assert [(r["cycle"], r["priority"], r["target_seconds"], r["status"]) for r in restarted] == [
        (2, "medium", 28800, "paused"),
        (3, "low", 172800, "running"),
    ]
    assert [(d["clock"], d["cycle"]) for d in effects(document, "clock_breached")] == [
        ("response", 1),
        ("resolution", 2),
    ]
    assert [(e["level"], e["cause"]) for e in effects(document, "escalated")] == [
        (1, "response_breached"),
        (2, "requested_by_customer"),
        (3, "resolution_200_percent"),
    ]
    assert [(e["level"], e["current_level"]) for e in effects(document, "escalation_recorded")] == [
        (1, 2),
        (2, 2),
    ]
    billed = [
        (b["rule"], b["status"], b["seconds"], b["billable_seconds"], b["amount_cents"], b["minimum_applied"])
        for b in effects(document, "billable_added")
    ]
    assert billed == [
        ("uncovered_p1", "billable", 3600, 3600, 12500, True),  # the fault alone: the 1 h minimum
        ("uncovered_p1", "billable", 3600, 7200, 25000, False),  # 2 h after hours
        ("uncovered_p1", "billable", 1800, 9000, 31250, False),  # 30 min after 17:00
    ]
    assert [w["seconds"] for w in effects(document, "work_logged")] == [7200, 1800]
    assert [s.get("invoices") for s in effects(document, "suspension_started")] == [["INV-1"]]
    assert [s.get("events") for s in effects(document, "suspension_ended")] == [["e-5"]]
    reasons = [i["reason"] for i in effects(document, "ignored")]
    assert reasons == [
        "before ticket.opened",
        "duplicate event_id: the copy recorded first (position 5) is the event",
        "the response clock is already stopped (responded)",
        "priority already low",
        "the ticket is resolved",
        "closed is final",
        "the ticket is closed",
    ]


def test_view_and_billing_explanation():
    story = everything()
    document = explained(story.records)
    assert document["view"] == story.view(AS_OF)  # exactly what replay shows
    assert (document["ticket_id"], document["customer_id"], document["as_of"]) == (
        "T-1",
        "acme",
        "2026-11-13T17:00:00Z",
    )
    billing = document["billing"]
    assert billing["work"] == [
        ["2026-11-08T03:05:00Z", "2026-11-08T05:05:00Z"],
        ["2026-11-09T22:00:00Z", "2026-11-09T22:30:00Z"],
    ]
    assert {k: billing[k] for k in ("counted", "counted_seconds", "minimum_seconds", "minimum_applied")} == {
        "counted": "after_hours",
        "counted_seconds": 9000,
        "minimum_seconds": 3600,
        "minimum_applied": False,
    }
    assert (billing["billable_seconds"], billing["rate_cents_per_hour"], billing["exact_cents"]) == (
        9000,
        12500,
        "31250",
    )
    assert billing["amount_cents"] == document["view"]["billing"]["amount_cents"] == 31250


def test_rounding_is_shown_and_not_entitled_requests_are_effects():
    s = Story("B06", "acme")
    s.opened(ny("2026-11-02 10:00"), "medium", category="new_install", after_hours_requested=True)
    s.work(ny("2026-11-02 18:00:00"), ny("2026-11-02 20:00:18"))
    billing = explained(s.records, as_of=ny("2026-11-03 00:00"))["billing"]
    assert (billing["billable_seconds"], billing["exact_cents"], billing["amount_cents"]) == (
        7218,
        "25062.5",
        25063,
    )

    t = Story("E2", "acme")
    t.opened(ny("2026-11-02 09:00"), "medium", third_party_disconnect=True)
    t.escalation_request(ny("2026-11-02 11:00"), 2)
    document = explained(t.records, as_of=ny("2026-11-03 18:00"))
    assert effects(document, "escalation_not_entitled") == [
        {"effect": "escalation_not_entitled", "level_requested": 2, "cause": "requested_by_customer"}
    ]
    assert effects(document, "escalated") == []  # no automatic level either, though both clocks breached
    assert len(effects(document, "clock_breached")) == 2


def test_none_before_the_opening():
    records = everything().records
    assert explain(*split(records), default_policy(), ny("2026-11-07 21:59:59")) is None
    assert explain([], [], default_policy(), AS_OF) is None


# -- the digest -------------------------------------------------------------------------


def reshuffled(records: list[Recorded], seed: int) -> list[Recorded]:
    """The same events recorded in another order, some twice (positions renumbered)."""
    events = [r.event for r in records]
    random.Random(seed).shuffle(events)
    events += random.Random(seed + 1).sample(events, 8)
    return [Recorded(seq, event) for seq, event in enumerate(events)]


def test_digest_ignores_order_and_duplicates():
    records = everything().records
    digest = explained(records)["digest"]
    for seed in (1, 2, 3):
        again = explained(reshuffled(records, seed))
        assert again["digest"] == digest
        assert again["view"] == explained(records)["view"]
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64


def test_digest_changes_with_one_policy_setting_or_one_event():
    records = everything().records
    digest = explained(records)["digest"]
    text = default_policy_text()
    assert explained(records, parse_policy(text))["digest"] == digest
    cheaper = parse_policy(text.replace("rate_cents_per_hour = 12500", "rate_cents_per_hour = 12499"))
    assert explained(records, cheaper)["digest"] != digest

    story = everything()
    story.records[5] = Recorded(
        5, story.records[5].event.model_copy(update={"occurred_at": utc("2026-11-08 05:06")})
    )
    assert explained(story.records)["digest"] != digest


def test_digest_recipe_by_hand():
    """docs/audit.md: ticket events in applied order, then account events, each + newline, then the policy."""
    story = everything()
    document = explained(story.records)
    by_id = {r.event.event_id: r.event for r in story.records}
    # Entries are in applied order; the duplicate copy's entry names e-6 a second time.
    ticket_ids = list(dict.fromkeys(e["event_id"] for e in document["entries"] if e["event_id"]))
    lines = b"".join(encode_event(by_id[i]) + b"\n" for i in [*ticket_ids, "e-1", "e-5"])
    policy = orjson.dumps(default_policy().model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    assert policy == canonical_policy(default_policy())
    assert document["digest"] == "sha256:" + hashlib.sha256(lines + policy).hexdigest()
    assert document["digest_inputs"] == {"ticket_events": 19, "account_events": 2}


def test_account_events_count_only_for_tickets_a_suspension_can_pause():
    s = Story("S-1", "acme")
    s.invoice_due(utc("2026-10-15 12:00"), "INV-1", utc("2026-10-20 00:00"))
    s.opened(ny("2026-11-02 10:00"), "low", category="service")
    document = explained(s.records, as_of=ny("2026-11-02 12:00"))
    assert document["digest_inputs"] == {"ticket_events": 1, "account_events": 0}
    assert [e["type"] for e in document["entries"]] == ["ticket.opened"]


# -- the command ------------------------------------------------------------------------


def default_policy_text() -> str:
    from importlib import resources

    return resources.files("projections").joinpath("default_policy.toml").read_text(encoding="utf-8")


@pytest.fixture
def events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in everything().dicts) + b"\nnot json\n")
    return path


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_json_is_the_document(events_file):
    result = run("explain", "T-1", "--events", str(events_file), "--format", "json")
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    assert f"{events_file}:23: invalid_json" in result.stderr
    # Default as-of: the latest occurred_at in the file (the request after the close).
    assert document["as_of"] == "2026-11-13T15:30:00Z"
    expected = explained(everything().records, as_of=utc("2026-11-13 15:30"))
    assert document["digest"] == expected["digest"]
    assert document["view"] == expected["view"]
    assert [e["position"] for e in document["entries"]] == [
        None if p is None else p + 1 for p in (e["position"] for e in expected["entries"])
    ]  # positions are line numbers


def test_cli_table_for_people(events_file):
    result = run("explain", "T-1", "--events", str(events_file), "--as-of", "2026-11-13T12:00:00-05:00")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "ticket T-1   customer acme   as of 2026-11-13T17:00:00Z   policy default-2026.1"
    due = [line for line in lines if " due_moved " in line]
    assert len(due) == 4
    assert due[0].startswith("2026-11-08T04:10:00Z  -")
    assert due[0].endswith("clock=response cycle=1 from=2026-11-08T04:00:00Z to=2026-11-08T04:30:00Z")
    assert any("e-6 (6)" in line and "billable_added" in line and "seconds=3600" in line for line in lines)
    assert "  resolution  stopped  43200 s of 172800 s (business), due -, cycles 3  BREACHED" in lines
    assert lines[-1] == f"digest {explained(everything().records)['digest']}"
    assert "policy default-2026.1" in lines


def test_cli_unknown_ticket(events_file):
    result = run("explain", "T-404", "--events", str(events_file))
    assert result.exit_code == 1
    assert "unknown ticket 'T-404'" in result.stderr
    early = run("explain", "T-1", "--events", str(events_file), "--as-of", "2026-11-01T00:00:00Z")
    assert early.exit_code == 1
    assert "was not opened by 2026-11-01T00:00:00Z" in early.stderr


def test_cli_policy_option(events_file, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text(default_policy_text().replace('version = "default-2026.1"', 'version = "mine"'))
    result = run("explain", "T-1", "--events", str(events_file), "--policy", str(policy), "--format", "json")
    assert orjson.loads(result.stdout)["policy_version"] == "mine"


def test_cycles_say_when_each_clock_counted():
    """Per cycle, the stretches it ran less the calendar's closed parts add up to its elapsed time."""
    document = explained(everything().records)
    policy = default_policy()

    def instant(text: str):
        return utc(text.removesuffix("Z").replace("T", " "))

    cycles = [(c["clock"], c["cycle"], c["priority"], c["ended_at"]) for c in document["cycles"]]
    assert cycles == [
        ("response", 1, "urgent", None),
        ("resolution", 1, "urgent", "2026-11-09T14:00:00Z"),
        ("resolution", 2, "medium", "2026-11-11T16:00:00Z"),
        ("resolution", 3, "low", None),
    ]
    assert document["time_zone"] == "America/New_York"
    for cycle in document["cycles"]:
        ran = sum((instant(b) - instant(a)).total_seconds() for a, b in cycle["counting"])
        closed = sum((instant(b) - instant(a)).total_seconds() for a, b in cycle["closed"])
        assert ran - closed == cycle["elapsed_seconds"], cycle
        calendar = policy.calendar(cycle["calendar"])
        assert all(not calendar.is_open(instant(a)) for a, _ in cycle["closed"])
    # The response clock paused for the suspension (03:40-04:10Z) and stopped at the answer.
    assert document["cycles"][0]["counting"] == [
        ["2026-11-08T03:00:00Z", "2026-11-08T03:40:00Z"],
        ["2026-11-08T04:10:00Z", "2026-11-08T05:10:00Z"],
    ]
